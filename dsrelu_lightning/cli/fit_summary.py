"""The few lines printed when ``fit`` ends: where the run is, how it went, what to do next."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from dsrelu_lightning.training.callbacks import MetricsHistory
from dsrelu_lightning.training.selection import best_row

__all__ = ["fit_summary"]

_SHOWN = ("val/", "val_ema/")


def _metrics(row: dict[str, float]) -> str:
    shown = {k: v for k, v in row.items() if k.startswith(_SHOWN)}
    return "  ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())) or "no val metrics"


def fit_summary(trainer: pl.Trainer, log_dir: str | None, config_path: str | None = None) -> str:
    """The end-of-fit summary for ``trainer`` (call on rank 0 after ``trainer.fit``).

    Names the run folder, the best and the last epoch with their ``val/*`` and
    ``val_ema/*`` metrics (from :class:`MetricsHistory`), the checkpoints that exist
    on disk, and the commands to resume, to test the best checkpoint and to open
    TensorBoard. ``log_dir`` is ``trainer.log_dir`` (a collective under DDP: ask for it on
    every rank); ``config_path`` is the run's saved config, used in those commands.
    """
    lines = [f"Run folder: {log_dir}"]
    history = next((cb for cb in trainer.callbacks if isinstance(cb, MetricsHistory)), None)
    rows = history.rows if history is not None else []
    checkpoint = trainer.checkpoint_callback
    monitor = checkpoint.monitor if isinstance(checkpoint, ModelCheckpoint) else "val/loss"
    mode = checkpoint.mode if isinstance(checkpoint, ModelCheckpoint) else "min"
    best = best_row(rows, monitor, mode) if monitor else None
    if best is not None:
        extreme = "lowest" if mode == "min" else "highest"
        lines.append(f"Best epoch {int(best['epoch'])} ({extreme} {monitor}): {_metrics(best)}")
    if rows:
        lines.append(f"Last epoch {int(rows[-1]['epoch'])}: {_metrics(rows[-1])}")
    best_path = last_path = ""
    if isinstance(checkpoint, ModelCheckpoint):
        best_path, last_path = checkpoint.best_model_path, checkpoint.last_model_path
    if best_path and Path(best_path).is_file():
        lines.append(f"Best checkpoint: {best_path}")
    if last_path and Path(last_path).is_file():
        lines.append(f"Last checkpoint: {last_path}")
    config = f"--config {config_path}" if config_path else "<same arguments>"
    if last_path and Path(last_path).is_file():
        lines.append(f"Resume: python -m dsrelu_lightning fit {config} --ckpt_path last")
    if best_path and Path(best_path).is_file():
        lines.append(f"Test: python -m dsrelu_lightning test {config} --ckpt_path {best_path}")
    board = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is not None:
        lines.append(f"TensorBoard: tensorboard --logdir {board.root_dir}")
    return "\n".join(lines)
