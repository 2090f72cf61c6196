"""Probe for the DDP precise-BN test: each rank writes its BatchNorm buffers after the
(eval-consistent) recalibration, and its own statistics from before each layer's were pooled
across ranks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from dsrelu_lightning.training import precise_bn
from dsrelu_lightning.training.bn_stats import batch_norms


class BufferProbe(Callback):
    """Writes ``bn_rank<r>.json`` into ``$DDP_PROBE_DIR`` after the fit's validation."""

    def __init__(self) -> None:
        self.local: list[float] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        recalibrate = precise_bn.recalibrate_eval_consistent

        def recording(module, batches, forward=None, sum_across_ranks=None):
            def summing(totals):
                if totals.dim() == 2:  # a layer's (mean, variance) totals over this rank's batches
                    self.local.append(float(totals[1].sum()))
                return sum_across_ranks(totals)

            return recalibrate(module, batches, forward, summing if sum_across_ranks else None)

        precise_bn.recalibrate_eval_consistent = recording

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layers = batch_norms(pl_module).values()
        record = {
            "buffers": [[m.running_mean.tolist(), m.running_var.tolist()] for m in layers],
            "tracked": [int(m.num_batches_tracked) for m in layers],
            "local": self.local,
        }
        out = Path(os.environ["DDP_PROBE_DIR"]) / f"bn_rank{trainer.global_rank}.json"
        out.write_text(json.dumps(record))
