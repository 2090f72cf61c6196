"""BNStalenessMonitor: how far BatchNorm's running variance is from the current batch's,
measured inside one real training forward per epoch."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from dsrelu_lightning.nn.compiled import is_compiled
from dsrelu_lightning.training.bn_stats import batch_norms
from dsrelu_lightning.training.precise_bn import PreciseBN

__all__ = ["BNStalenessMonitor"]

SETTLED_INITIAL_WEIGHT = 0.05
"""A layer is judged once its initial statistics weigh less than this in its running average."""


class BNStalenessMonitor(Callback):
    """Log ``bn/stale_ratio``: on the last training batch of each epoch (the statistics the
    epoch's validation will use), the largest over BatchNorm layers of

        mean over channels of (running_var + eps) / (batch_var + eps)

    with ``batch_var`` the unbiased per-channel variance of the layer's input in that batch
    (what BN normalises with in training), read by forward pre-hooks inside the real
    training forward (no extra forward, nothing updated; the hooks live for one batch).
    ~1 means the running statistics fit the network; a ratio above ``threshold`` warns once,
    naming the layer and what to switch on (``--precise_bn.enabled true``), unless precise
    BN is already on. A layer counts once its initial statistics weigh less than 5% of its
    running average (``(1 - momentum) ** num_batches_tracked < 0.05``), so the first epoch
    of a short one does not warn about BN's initial values. Skipped for a compiled model
    (adding hooks would recompile it).

    Args:
        enabled: on by default (``--bn_staleness.enabled false`` switches it off).
        threshold: the ratio above which it warns.
    """

    def __init__(self, enabled: bool = True, threshold: float = 2.0) -> None:
        self.enabled = enabled
        self.threshold = threshold
        self._handles: list[RemovableHandle] = []
        self._ratios: dict[str, Tensor] = {}
        self._warned = False

    def _measured_batch(self, trainer: pl.Trainer) -> int:
        batches = trainer.num_training_batches
        return int(batches) - 1 if batches != float("inf") and batches >= 1 else 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.enabled or batch_idx != self._measured_batch(trainer):
            return
        if is_compiled(pl_module):
            return
        self.arm(pl_module)

    def arm(self, module: nn.Module) -> None:
        """Hook the settled, training-mode BatchNorm layers of ``module`` for its next forward."""
        self.disarm()
        layers = {k: m for k, m in batch_norms(module).items() if m.training}
        if not layers:
            return
        tracked = torch.stack([m.num_batches_tracked for m in layers.values()]).tolist()
        for (name, layer), count in zip(layers.items(), tracked, strict=True):
            if _settled(layer, count):  # one host read for all layers, before the forward
                self._handles.append(layer.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str) -> Any:
        def read(layer: _BatchNorm, args: tuple[Tensor, ...]) -> None:
            with torch.no_grad():
                x = args[0].detach()
                dims = [d for d in range(x.dim()) if d != 1]
                batch_var = x.float().var(dim=dims, unbiased=True)
                ratio = (layer.running_var.float() + layer.eps) / (batch_var + layer.eps)
                self._ratios[name] = ratio.mean()

        return read

    def disarm(self) -> tuple[list[str], Tensor] | None:
        """Remove the hooks; the hooked layers' names and ratios (on the device), if any."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        ratios, self._ratios = self._ratios, {}
        return (list(ratios), torch.stack(list(ratios.values()))) if ratios else None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        measured = self.disarm()
        if measured is None:
            return
        names, ratios = measured
        worst, index = ratios.max(dim=0)
        pl_module.log(
            "bn/stale_ratio",
            worst,
            on_step=False,
            on_epoch=True,
            batch_size=1,
            reduce_fx="max",
            sync_dist=True,
        )
        if self._warned or self._precise_bn_on(trainer):
            return
        value = float(worst)  # one host sync per epoch
        if value > self.threshold:
            self._warned = True
            rank_zero_warn(
                f"BatchNorm layer {names[int(index)]!r}: its running variance is {value:.1f}x "
                f"the variance of its input in the current training batch (epoch "
                f"{trainer.current_epoch}): the running statistics lag behind the network, so "
                "validation and test with them can look far worse than the model is "
                "(bn/stale_ratio). Recompute them before each validation with "
                "--precise_bn.enabled true"
            )

    def _precise_bn_on(self, trainer: pl.Trainer) -> bool:
        return any(isinstance(cb, PreciseBN) and cb.enabled for cb in trainer.callbacks)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.disarm()  # a batch that raised leaves no hook behind

    def state_dict(self) -> dict[str, Any]:
        return {"warned": self._warned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._warned = bool(state_dict.get("warned", False))


def _settled(layer: _BatchNorm, tracked: int) -> bool:
    """Whether the running statistics no longer carry much of their initial values."""
    if layer.momentum is None:  # cumulative average: the first batch replaces the init
        return tracked >= 1
    return (1.0 - layer.momentum) ** tracked < SETTLED_INITIAL_WEIGHT
