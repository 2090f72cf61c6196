"""Write ``predict``'s class probabilities to a CSV file, one row per sample."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from dsrelu_lightning.atomic import atomic_write_text

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Collect every predict batch and write ``path`` atomically when the epoch ends.

    Columns: ``index`` (the sample's position in the predict dataset), ``label`` (the
    true class, where the batch carries one), ``predicted`` (argmax) and ``prob_0`` ...
    ``prob_{C-1}``. Expects ``predict_step`` to return class probabilities. Under
    several processes each rank writes its own shard, ``<stem>.rank<R><suffix>``.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self._parts: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        self.written: Path | None = None

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._parts = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probs = prediction.detach().float().cpu()
        if batch_indices is None:  # a sampler without indices: number the rows in order
            start = sum(len(part[0]) for part in self._parts)
            batch_indices = range(start, start + len(probs))
        labels = batch[1] if isinstance(batch, list | tuple) and len(batch) > 1 else None
        if labels is not None:
            labels = labels.detach().cpu()
        self._parts.append((torch.as_tensor(list(batch_indices)), labels, probs))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        atomic_write_text(path, self.to_csv())
        self.written = path

    def to_csv(self) -> str:
        """The collected rows as CSV text."""
        has_labels = bool(self._parts) and all(part[1] is not None for part in self._parts)
        num_classes = self._parts[0][2].shape[-1] if self._parts else 0
        header = ["index", *(["label"] if has_labels else []), "predicted"]
        header += [f"prob_{c}" for c in range(num_classes)]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for indices, labels, probs in self._parts:
            predicted = probs.argmax(dim=-1)
            for row in range(len(indices)):
                values = [int(indices[row])]
                values += [int(labels[row])] if has_labels and labels is not None else []
                values.append(int(predicted[row]))
                values += [f"{p:.6g}" for p in probs[row].tolist()]
                writer.writerow(values)
        return buffer.getvalue()
