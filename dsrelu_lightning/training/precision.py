"""The dtype a Trainer runs a module's activations in."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

__all__ = ["activation_dtype"]


def activation_dtype(trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.dtype:
    """The dtype activations run in: autocast's under mixed precision, else the weights'."""
    precision = str(trainer.precision)
    if precision.endswith("-mixed"):
        return torch.bfloat16 if precision.startswith("bf16") else torch.float16
    return pl_module.dtype
