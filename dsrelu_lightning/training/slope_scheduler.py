"""SlopeScheduler: the callback that advances DSReLU's progress over training."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import DSReLU, dsrelu_modules
from dsrelu_lightning.nn.dsrelu_kernel import warm_up
from dsrelu_lightning.nn.probing import modules_called

__all__ = ["SlopeScheduler"]

Schedule = Literal["paper", "authors_code"]

GATE_FLAT = {nn.Hardsigmoid: 3.0, nn.Sigmoid: 6.0}
"""Gates and the input magnitude beyond which they pass (almost) no gradient: Hardsigmoid's
slope is 0 there, Sigmoid's below 1% of its peak."""
GATE_WARNING = 0.5
"""Share of gate inputs in the flat region, in the first training batch, that warns."""


class SlopeScheduler(Callback):
    """Advance the progress ``t`` of the model's DSReLU layers over training.

    The callback sets ``t`` only; the shape of the slope ``s(t)`` is each layer's own
    (``DSReLU(schedule=...)``, e.g. ``--model.activation_args '{"schedule": "cosine"}'``),
    ``equivalent_leaky`` layers (the ``leaky_relu_equiv`` ablation) included.

    Args:
        granularity: ``"epoch"`` sets ``t = current_epoch / max_epochs`` at each training
            epoch start (the paper's schedule); ``"step"`` sets
            ``t = global_step / estimated_stepping_batches`` before each batch.
        schedule: which layers advance, and how far: ``"paper"`` (default) moves EVERY
            DSReLU layer as above.
            ``"authors_code"`` emulates the authors' published code, for ablations only:
            only the first DSReLU in forward order (the stem's) advances, by
            ``t = current_epoch / len(train_dataloader)`` (Lightning's
            ``num_training_batches``), so ``t`` stays near 0; every other DSReLU stays
            at ``t = 0``. Per-epoch only. The order is read from one forward of the first
            training batch in eval mode without grad (nothing in the model changes).

    Progress is set in training hooks, never in ``setup``, so a resumed fit continues
    the schedule from the restored epoch/step; a fit resumed from a mid-epoch checkpoint
    (Lightning's ``hpc_ckpt_<n>.ckpt``, saved on SLURM's SIGUSR1), for which Lightning
    skips that epoch's ``on_train_epoch_start``, gets it at its first batch instead. Logs
    ``dsrelu/slope``, the first layer's ``s(t)``, once per epoch. At the start of
    training it builds DSReLU's fused kernels for the activations' dtype and the weights'
    (unless the model is ``torch.compile``-d), so that no epoch, validation or resumed fit
    compiles anything. In the first training batch of a fit it also watches the network's
    gates (Sigmoid, Hardsigmoid: squeeze-excitation) and warns where DSReLU's steep start
    drives most of their inputs into the flat region, where no gradient passes.
    """

    def __init__(
        self, granularity: Literal["epoch", "step"] = "epoch", schedule: Schedule = "paper"
    ) -> None:
        if granularity not in ("epoch", "step"):
            raise ConfigurationError(
                f"SlopeScheduler granularity must be 'epoch' or 'step', got {granularity!r}"
            )
        if schedule not in ("paper", "authors_code"):
            raise ConfigurationError(
                f"SlopeScheduler schedule must be 'paper' or 'authors_code', got {schedule!r}"
            )
        if schedule == "authors_code" and granularity == "step":
            raise ConfigurationError(
                "--slope_scheduler.schedule authors_code advances once per epoch (as the "
                "published code did); it cannot be combined with --slope_scheduler.granularity "
                "step"
            )
        self.granularity = granularity
        self.schedule = schedule
        self._layers: list[DSReLU] = []
        self._in_forward_order = False
        self._epoch_started: int | None = None  # the epoch on_train_epoch_start last set
        self._watch_gates = False
        self._gates: _GateWatch | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._layers = dsrelu_modules(pl_module)
        self._in_forward_order = False
        if stage != "fit" or not self._layers or self.schedule == "authors_code":
            return
        if self.granularity == "epoch" and (trainer.max_epochs is None or trainer.max_epochs < 1):
            raise ConfigurationError(
                f"SlopeScheduler(granularity='epoch') needs a finite trainer.max_epochs "
                f"(got {trainer.max_epochs}): DSReLU's progress is current_epoch / max_epochs. "
                "Set --trainer.max_epochs N, or use --slope_scheduler.granularity step "
                "with --trainer.max_steps N"
            )

    def _progress(self, trainer: pl.Trainer) -> float:
        if self.schedule == "authors_code":
            batches = trainer.num_training_batches
            if not math.isfinite(batches) or batches < 1:
                raise ConfigurationError(
                    "SlopeScheduler(schedule='authors_code') needs a training loader with a "
                    "length: t = current_epoch / len(train_dataloader)"
                )
            return trainer.current_epoch / batches
        if self.granularity == "epoch":
            return trainer.current_epoch / trainer.max_epochs
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            raise ConfigurationError(
                "SlopeScheduler(granularity='step') needs a finite number of training steps: "
                "set --trainer.max_steps or --trainer.max_epochs"
            )
        return trainer.global_step / total

    def _apply(self, trainer: pl.Trainer) -> None:
        t = min(max(self._progress(trainer), 0.0), 1.0)
        if self.schedule == "authors_code":
            self._layers[0].set_progress(t)
            for layer in self._layers[1:]:
                layer.set_progress(0.0)
            return
        for layer in self._layers:
            layer.set_progress(t)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = None
        # Compile DSReLU's fused kernels before the first timed epoch (time/epoch_s), so
        # the epoch-time comparison with other activations stays fair.
        if self._layers and not getattr(pl_module, "compiled", False):
            # Under mixed precision some activations can stay in the weights' dtype (after
            # an op autocast keeps in float32); the kernels serve every shape and layout.
            for dtype in dict.fromkeys((_activation_dtype(trainer, pl_module), pl_module.dtype)):
                warm_up(pl_module.device, dtype)
            self._watch_gates = trainer.global_step == 0  # a fit's first batch, not a resume

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._gates is not None:  # the first batch failed: leave no hook behind
            self._gates.close()
            self._gates = None
        self._watch_gates = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self._gates is None:
            return
        watched, self._gates = self._gates, None
        share = watched.close()
        if share is not None and share > GATE_WARNING:
            rank_zero_warn(
                f"at DSReLU's starting slope {self._layers[0].slope:.3g}, {share:.0%} of the "
                f"inputs of this network's {watched.count} gates (Sigmoid/Hardsigmoid, e.g. "
                "squeeze-excitation) fell where the gate is flat in the first training batch: "
                "little gradient passes them until the slope falls (MobileNetV3-small on digits "
                "stays near chance for 10 of 15 epochs; docs/networks.md). A gentler start "
                "(e.g. --model.activation_args '{initial_angle: 60}') or fewer DSReLU sites "
                "(--model.activation_targets) keeps the gates working"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._layers:
            self._start_epoch(trainer, pl_module)

    def _start_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer)
        self._epoch_started = trainer.current_epoch
        # The slope the layer applies (computed from its float32 progress), not slope_at(t).
        pl_module.log("dsrelu/slope", self._layers[0].slope, on_step=False, on_epoch=True)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._layers:
            return
        if self.schedule == "authors_code" and not self._in_forward_order:
            self._layers = _forward_order(pl_module, self._layers, batch)
            self._in_forward_order = True
            self._apply(trainer)
        if self._epoch_started != trainer.current_epoch:  # resumed mid-epoch
            self._start_epoch(trainer, pl_module)
        if self.granularity == "step":
            self._apply(trainer)
        if self._watch_gates:  # after the authors'-code order forward: the training one only
            self._watch_gates = False
            self._gates = _GateWatch(pl_module)


def _forward_order(pl_module: pl.LightningModule, layers: list[DSReLU], batch: Any) -> list[DSReLU]:
    """``layers`` in the order a forward of ``batch`` calls them (eval mode, no grad);
    layers it never calls last, in their given order."""
    inputs = batch[0] if isinstance(batch, list | tuple) else batch
    called = modules_called(pl_module, DSReLU, inputs.to(pl_module.device))
    first_calls = [m for m in dict.fromkeys(called) if any(m is layer for layer in layers)]
    return first_calls + [layer for layer in layers if layer not in first_calls]


class _GateWatch:
    """Counts, over the forwards until :meth:`close`, the gate inputs in the flat region."""

    def __init__(self, module: nn.Module) -> None:
        self.flat = self.total = 0
        gates = [(m, bound) for m in module.modules() for k, bound in GATE_FLAT.items()
                 if type(m) is k]  # fmt: skip
        self.count = len(gates)
        self._handles = [gate.register_forward_pre_hook(self._hook(bound)) for gate, bound in gates]

    def _hook(self, bound: float) -> Any:
        def count(_: nn.Module, args: tuple[Tensor, ...]) -> None:
            with torch.no_grad():
                self.flat += int((args[0].abs() >= bound).sum())
                self.total += args[0].numel()

        return count

    def close(self) -> float | None:
        """Remove the hooks; the share of inputs in the flat region (None if none seen)."""
        for handle in self._handles:
            handle.remove()
        return self.flat / self.total if self.total else None


def _activation_dtype(trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.dtype:
    """The dtype activations run in: autocast's under mixed precision, else the weights'."""
    precision = str(trainer.precision)
    if precision.endswith("-mixed"):
        return torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return pl_module.dtype
