"""SlopeScheduler: the callback that advances every DSReLU layer's progress over training."""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import DSReLU, dsrelu_modules

__all__ = ["SlopeScheduler"]


class SlopeScheduler(Callback):
    """Advance the progress of EVERY DSReLU layer in the model over training.

    Args:
        granularity: ``"epoch"`` sets ``t = current_epoch / max_epochs`` at each training
            epoch start (the paper's schedule); ``"step"`` sets
            ``t = global_step / estimated_stepping_batches`` before each batch.

    Progress is set in training hooks, never in ``setup``, so a resumed fit continues
    the schedule from the restored epoch/step. Logs ``dsrelu/slope`` once per epoch.
    """

    def __init__(self, granularity: Literal["epoch", "step"] = "epoch") -> None:
        if granularity not in ("epoch", "step"):
            raise ConfigurationError(
                f"SlopeScheduler granularity must be 'epoch' or 'step', got {granularity!r}"
            )
        self.granularity = granularity
        self._layers: list[DSReLU] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._layers = dsrelu_modules(pl_module)
        if stage != "fit" or not self._layers:
            return
        if self.granularity == "epoch" and (trainer.max_epochs is None or trainer.max_epochs < 1):
            raise ConfigurationError(
                f"SlopeScheduler(granularity='epoch') needs a finite trainer.max_epochs "
                f"(got {trainer.max_epochs}): DSReLU's progress is current_epoch / max_epochs. "
                "Set --trainer.max_epochs N, or use --slope_scheduler.granularity step "
                "with --trainer.max_steps N"
            )

    def _progress(self, trainer: pl.Trainer) -> float:
        if self.granularity == "epoch":
            return trainer.current_epoch / trainer.max_epochs
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total) or total < 1:
            raise ConfigurationError(
                "SlopeScheduler(granularity='step') needs a finite number of training steps: "
                "set --trainer.max_steps or --trainer.max_epochs"
            )
        return trainer.global_step / total

    def _apply(self, trainer: pl.Trainer) -> float:
        t = min(max(self._progress(trainer), 0.0), 1.0)
        for layer in self._layers:
            layer.set_progress(t)
        return t

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._layers:
            return
        t = self._apply(trainer)
        pl_module.log("dsrelu/slope", self._layers[0].slope_at(t), on_step=False, on_epoch=True)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._layers and self.granularity == "step":
            self._apply(trainer)
