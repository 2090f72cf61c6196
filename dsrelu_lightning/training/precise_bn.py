"""PreciseBN: recompute BatchNorm statistics from training batches before each validation,
and log what the running (EMA) statistics gave as ``val_ema/*``."""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.training.bn_stats import (
    batch_norms,
    loader_batches,
    pool_across_ranks,
    preserved_rng,
    recalibrate,
    recalibrate_eval_consistent,
)
from dsrelu_lightning.training.evaluable import Evaluable, batch_forward

__all__ = ["PreciseBN"]

EMA_GAP_WARNING = 0.1
"""|val_ema/acc - val/acc| above which the run warns (once)."""


class PreciseBN(Callback):
    """Precise BatchNorm (Wu & Johnson 2021; fvcore's ``update_bn_stats``): before each
    validation of a fit, recompute every BatchNorm's running statistics from up to
    ``num_batches`` training batches with the current weights, so that validation, the
    checkpoints and what is evaluated from them do not use running averages that lag
    behind a moving network.

    Args:
        enabled: switch it on (``--precise_bn.enabled true``); off, it does nothing.
        num_batches: training batches per recalibration; every batch where the epoch has
            fewer (``limit_train_batches`` counts).
        log_ema: also log ``val_ema/*``: the same validation with the running statistics
            (one more pass over the validation loader); selection keeps using ``val/*``.
        eval_consistent: each layer gets the statistics of the inputs it receives in eval
            mode, its predecessors already recalibrated (one eval-mode forward of all
            ``num_batches`` batches at once: memory for all their activations); off, the
            classic train-mode estimate (fvcore's, ``torch.optim.swa_utils.update_bn``), whose
            statistics evaluation can shift out of place in a network that shrinks its
            per-sample signal (docs/performance.md).

    The module must be :class:`~dsrelu_lightning.training.evaluable.Evaluable`: the
    recalibration and the ``val_ema/*`` pass run its ``evaluation_step``, so they use its
    loss, precision and metrics. The running statistics are put back before the next
    training batch, so training is exactly that of a run without precise BN. Under DDP
    the ranks' statistics are pooled. A compiled network is recalibrated eagerly, as the
    staleness monitor probes it: nothing recompiles. docs/performance.md has the cost.
    """

    def __init__(
        self,
        enabled: bool = False,
        num_batches: int = 200,
        log_ema: bool = True,
        eval_consistent: bool = True,
    ) -> None:
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ConfigurationError(f"precise_bn.num_batches must be >= 1, got {num_batches!r}")
        self.enabled = enabled
        self.num_batches = num_batches
        self.log_ema = log_ema
        self.eval_consistent = eval_consistent
        self._running: dict[str, Tensor] | None = None  # the EMA buffers to put back
        self._ema: dict[str, Tensor] = {}
        self._warned_gap = False

    @property
    def recalibrated(self) -> bool:
        """Whether the model holds recalibrated statistics now (between a validation and
        the next training batch, when the running ones are put back)."""
        return self._running is not None

    def _active(self, trainer: pl.Trainer) -> bool:
        return self.enabled and trainer.state.fn == "fit" and not trainer.sanity_checking

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit":
            return
        if not batch_norms(pl_module):
            rank_zero_warn(
                "--precise_bn.enabled true: the model has no BatchNorm layer with running "
                "statistics, so there is nothing to recalibrate; precise BN does nothing"
            )
        elif not isinstance(pl_module, Evaluable):
            raise ConfigurationError(
                f"--precise_bn.enabled true needs a module with evaluation_step and "
                f"evaluation_metrics (dsrelu_lightning.training.evaluable.Evaluable); "
                f"{type(pl_module).__name__} has not both"
            )

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layers = batch_norms(pl_module)
        if not self._active(trainer) or not layers:
            return
        module: Evaluable = pl_module  # type: ignore[assignment]  # checked in setup
        forward = batch_forward(trainer, pl_module)
        with torch.no_grad(), preserved_rng(pl_module.device, trainer.train_dataloader):
            if self._running is None:  # the EMA buffers, unless already put aside this epoch
                self._running = {k: v.detach().clone() for k, v in _buffers(layers).items()}
            self._ema = self._evaluate(trainer, module) if self.log_ema else {}
            limit = min(self.num_batches, trainer.num_training_batches)
            batches = loader_batches(trainer.train_dataloader, limit)
            ranks = trainer.world_size > 1
            reduce = partial(trainer.strategy.reduce, reduce_op="sum") if ranks else None
            if self.eval_consistent:
                recalibrate_eval_consistent(pl_module, batches, forward, reduce)
            else:
                count = recalibrate(pl_module, batches, forward)
                if reduce is not None:
                    pool_across_ranks(layers.values(), count, reduce)

    def _evaluate(self, trainer: pl.Trainer, module: Evaluable) -> dict[str, Tensor]:
        """val_ema/*: the validation loaders with the current (running) statistics, scored
        by the module's own evaluation_step; the loss averaged over samples as ``self.log``
        averages ``val/loss``."""
        metrics = module.evaluation_metrics("val_ema/")
        device = trainer.strategy.root_device
        loss_sum = torch.zeros((), device=device)
        samples = torch.zeros((), device=device)
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        for loader, limit in zip(loaders, trainer.num_val_batches, strict=False):
            for batch in loader_batches(loader, limit):
                with trainer.precision_plugin.forward_context():
                    loss, probs, targets = module.evaluation_step(
                        trainer.strategy.batch_to_device(batch)
                    )
                loss_sum += loss.float() * targets.shape[0]
                samples += targets.shape[0]
                metrics.update(probs, targets)
        totals = trainer.strategy.reduce(torch.stack([loss_sum, samples]), reduce_op="sum")
        values = {k: v.detach() for k, v in metrics.compute().items()}  # synced by torchmetrics
        values["val_ema/loss"] = totals[0] / totals[1].clamp_min(1.0)
        return values

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer) and self._ema:
            # Already reduced over ranks: no further sync.
            pl_module.log_dict(self._ema, on_step=False, on_epoch=True, sync_dist=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active(trainer) or self._warned_gap or "val_ema/acc" not in self._ema:
            return
        val_acc = trainer.callback_metrics.get("val/acc")
        if val_acc is None:
            return
        ema_acc = float(self._ema["val_ema/acc"])
        if abs(ema_acc - float(val_acc)) > EMA_GAP_WARNING:
            self._warned_gap = True
            rank_zero_warn(
                f"epoch {trainer.current_epoch}: validation accuracy with BatchNorm's running "
                f"statistics (val_ema/acc {ema_acc:.3f}) differs from the recalibrated one "
                f"(val/acc {float(val_acc):.3f}) by more than {EMA_GAP_WARNING}: the running "
                f"statistics lag behind the network{self._lag(pl_module)}; val/* (used for "
                "selection) is the reliable one"
            )

    def _lag(self, pl_module: pl.LightningModule) -> str:
        """How far back the slowest running average reaches, from its momentum and the
        batches it has seen (e.g. torchvision's MobileNetV3 uses 0.01, MNASNet 0.0003)."""
        if self._running is None:
            return ""
        momenta = {k: m.momentum for k, m in batch_norms(pl_module).items() if m.momentum}
        if not momenta:
            return ""
        name = min(momenta, key=momenta.__getitem__)
        momentum = momenta[name]
        seen = int(self._running[f"{name}.num_batches_tracked"])
        return (
            f" (BatchNorm momentum {momentum:g} in {name!r}: its running averages span about "
            f"{1 / momentum:.0f} training batches and, after {seen}, still weigh their initial "
            f"values by {(1 - momentum) ** seen:.2f})"
        )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._running is None:
            return
        current = _buffers(batch_norms(pl_module))
        with torch.no_grad():
            for name, value in self._running.items():
                current[name].copy_(value)
        self._running = None

    def state_dict(self) -> dict[str, Any]:
        running = None if self._running is None else {k: v.cpu() for k, v in self._running.items()}
        return {"running_buffers": running, "warned_gap": self._warned_gap}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._running = state_dict.get("running_buffers")
        self._warned_gap = bool(state_dict.get("warned_gap", False))


def _buffers(layers: dict[str, Any]) -> dict[str, Tensor]:
    """Every running-statistics buffer of ``layers``, by ``layer.buffer`` name."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    return {f"{k}.{n}": getattr(m, n) for k, m in layers.items() for n in names}
