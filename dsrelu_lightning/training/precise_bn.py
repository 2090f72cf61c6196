"""PreciseBN: recompute BatchNorm statistics from training batches before each validation,
and log what the running (EMA) statistics gave as ``val_ema/*``."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
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
)

__all__ = ["PreciseBN"]

EMA_GAP_WARNING = 0.1
"""|val_ema/acc - val/acc| above which the run warns (once)."""


class PreciseBN(Callback):
    """Precise BatchNorm (Wu & Johnson 2021; fvcore's ``update_bn_stats``): before each
    validation of a fit, recompute every BatchNorm's running statistics from up to
    ``num_batches`` training batches (train mode, no grad, cumulative average), so that
    validation, the checkpoints and what is evaluated from them use statistics of the
    current weights instead of BN's running averages, which lag behind a moving network.

    Args:
        enabled: switch it on (``--precise_bn.enabled true``); off, it does nothing.
        num_batches: training batches per recalibration (fvcore's and detectron2's default
            200); every batch where the epoch has fewer (``limit_train_batches`` counts).
        log_ema: also log ``val_ema/*`` (below); it costs one more pass over the
            validation loader per validation (docs/performance.md).

    Before recalibrating, it evaluates the validation loader once more with the running
    statistics (``log_ema``) and logs ``val_ema/loss|acc|f1|auroc`` beside ``val/*``
    (warning once when the accuracies differ by more than 0.1); model selection and early
    stopping keep using ``val/*``. The running statistics are put back before the next
    training batch (and kept in this callback's checkpoint state until then), so the
    training, its random streams, its batch order and the ``val_ema/*`` figures are
    exactly those of a run without precise BN. Under DDP the ranks' statistics are
    pooled, so that every rank holds the same buffers.
    """

    def __init__(self, enabled: bool = False, num_batches: int = 200, log_ema: bool = True) -> None:
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ConfigurationError(f"precise_bn.num_batches must be >= 1, got {num_batches!r}")
        self.enabled = enabled
        self.num_batches = num_batches
        self.log_ema = log_ema
        self._running: dict[str, Tensor] | None = None  # the EMA buffers to put back
        self._ema: dict[str, Tensor] = {}
        self._warned_gap = False

    def _active(self, trainer: pl.Trainer) -> bool:
        return self.enabled and trainer.state.fn == "fit" and not trainer.sanity_checking

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.enabled and stage == "fit" and not batch_norms(pl_module):
            rank_zero_warn(
                "--precise_bn.enabled true: the model has no BatchNorm layer with running "
                "statistics, so there is nothing to recalibrate; precise BN does nothing"
            )

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layers = batch_norms(pl_module)
        if not self._active(trainer) or not layers:
            return
        with torch.no_grad(), preserved_rng(pl_module.device, trainer.train_dataloader):
            if self._running is None:  # the EMA buffers, unless already put aside this epoch
                self._running = {k: v.detach().clone() for k, v in _buffers(layers).items()}
            self._ema = self._evaluate(trainer, pl_module) if self.log_ema else {}
            limit = min(self.num_batches, trainer.num_training_batches)
            batches = loader_batches(trainer.train_dataloader, limit)
            inputs = (_inputs(trainer, batch) for batch in batches)
            with trainer.precision_plugin.forward_context():
                count = recalibrate(pl_module, inputs)
            if trainer.world_size > 1:
                pool_across_ranks(layers.values(), count, trainer.strategy)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        """val_ema/*: the validation loaders with the current (running) statistics."""
        metrics = getattr(pl_module, "val_metrics", None)
        if metrics is None:
            return {}
        metrics = metrics.clone(prefix="val_ema/")
        metrics.reset()
        loss_sum = torch.zeros((), device=pl_module.device)
        samples = torch.zeros((), device=pl_module.device)
        loaders = trainer.val_dataloaders
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        limits = trainer.num_val_batches
        for loader, limit in zip(loaders, limits, strict=False):
            for batch in loader_batches(loader, limit):
                inputs, targets = trainer.strategy.batch_to_device(batch)[:2]
                with trainer.precision_plugin.forward_context():
                    logits = pl_module(inputs)
                loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum")
                samples += targets.shape[0]
                metrics.update(logits.detach().float().softmax(dim=-1), targets)
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
                "statistics lag behind the network; val/* (used for selection) is the reliable one"
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


def _inputs(trainer: pl.Trainer, batch: Any) -> Tensor:
    batch = trainer.strategy.batch_to_device(batch)
    return batch[0] if isinstance(batch, list | tuple) else batch
