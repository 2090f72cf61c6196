"""Probes for the DDP test: each rank writes the DSReLU progress and the samples it saw,
and the data module records which ranks ran ``prepare_data``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn.activations import dsrelu_modules


class RankProbe(Callback):
    """Writes ``rank<r>.json`` into ``$DDP_PROBE_DIR`` at the end of training."""

    def __init__(self) -> None:
        self.progress: list[list[float]] = []
        self.val_samples = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.progress.append([float(m.progress) for m in dsrelu_modules(pl_module)])

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val_samples = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *_):
        self.val_samples += int(batch[1].shape[0])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "progress": self.progress,
            "val_samples": self.val_samples,
            "val_acc": float(trainer.callback_metrics["val/acc"]),
            "units": [float(trainer.callback_metrics[f"units/{k}"]) for k in ("dead", "linear")],
        }
        out = Path(os.environ["DDP_PROBE_DIR"]) / f"rank{trainer.global_rank}.json"
        out.write_text(json.dumps(record))


class PrepareCountingDigits(DigitsDataModule):
    """Digits whose ``prepare_data`` leaves a ``prepared_by_rank<r>`` file in ``$DDP_PROBE_DIR``."""

    def prepare_data(self) -> None:
        rank = os.environ.get("LOCAL_RANK", "0")
        (Path(os.environ["DDP_PROBE_DIR"]) / f"prepared_by_rank{rank}").touch()
