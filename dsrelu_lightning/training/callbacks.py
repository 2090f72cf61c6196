"""Callbacks: epoch timing, a per-epoch metrics file, and a guard against a diverged loss."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from dsrelu_lightning.atomic import atomic_write_text
from dsrelu_lightning.errors import TrainingDivergedError

__all__ = ["EpochTimer", "FiniteLossGuard", "MetricsHistory"]


class EpochTimer(Callback):
    """Log ``time/epoch_s``: wall time of each training epoch, its validation pass included."""

    def __init__(self) -> None:
        self._start: float | None = None

    def _synchronize(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._synchronize(pl_module)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None:
            return
        self._synchronize(pl_module)
        pl_module.log("time/epoch_s", time.perf_counter() - self._start, on_epoch=True)


class MetricsHistory(Callback):
    """Write every epoch's logged metrics to ``<log_dir>/epoch_metrics.csv`` (atomically).

    One row per finished training epoch with all epoch-level metrics (train, val,
    ``dsrelu/slope``, ``time/epoch_s``). Rows are part of the callback's checkpoint
    state, so a resumed fit keeps the whole history. Place it after :class:`EpochTimer`.
    """

    filename = "epoch_metrics.csv"

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        row: dict[str, float] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                row[key] = float(value)
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask for it
        if trainer.is_global_zero and log_dir is not None:
            atomic_write_text(Path(log_dir) / self.filename, self.to_csv())

    def to_csv(self) -> str:
        """The history as CSV text (columns: epoch, step, then metric names sorted)."""
        names = sorted({key for row in self.rows for key in row} - {"epoch", "step"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["epoch", "step", *names], lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({**row, "epoch": int(row["epoch"]), "step": int(row["step"])})
        return buffer.getvalue()

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class FiniteLossGuard(Callback):
    """Stop training with a clear error when the training loss becomes NaN or infinite.

    The check stays on the device during the epoch (no host sync per step): the first
    non-finite batch is kept in a device tensor and read once before each validation
    and at the epoch's end, i.e. before ModelCheckpoint saves, so the checkpoints on
    disk stay the last good ones.
    """

    def __init__(self) -> None:
        self._first_bad_batch: torch.Tensor | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_bad_batch = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if self._first_bad_batch is None:
            self._first_bad_batch = torch.full((), -1, dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss.detach()) & (self._first_bad_batch < 0)
        self._first_bad_batch = torch.where(
            bad, torch.full_like(self._first_bad_batch, batch_idx), self._first_bad_batch
        )

    def _check(self, trainer: pl.Trainer) -> None:
        # Every rank takes part in the reduction, so all ranks stop together (no hang
        # when only one rank's shard diverges); "min" gives the earliest bad step.
        no_bad_step = torch.iinfo(torch.long).max
        first = self._first_bad_batch
        if first is None:
            first = torch.tensor(-1, dtype=torch.long, device=trainer.strategy.root_device)
        first = torch.where(first < 0, torch.full_like(first, no_bad_step), first)
        batch_idx = int(trainer.strategy.reduce(first, reduce_op="min"))
        if batch_idx == no_bad_step:
            return
        kept = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
        raise TrainingDivergedError(
            f"the training loss became NaN or infinite at epoch {trainer.current_epoch}, "
            f"step {batch_idx} of the epoch; training stopped (last good checkpoint: {kept}). "
            "Try a lower --model.lr or --trainer.gradient_clip_val 1.0"
        )

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)
