"""Checks before ``fit`` trains: a schedule length DSReLU can use, and checkpoint settings
that let a killed run resume and fit on the disk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import dsrelu_modules

__all__ = ["check_schedule_length", "checkpoint_bytes", "warn_if_last_only_at_the_end"]


def check_schedule_length(config: Mapping[str, Any], model: pl.LightningModule) -> None:
    """Refuse an unset ``max_epochs`` while DSReLU's per-epoch schedule needs it.

    Lightning turns an unset max_epochs into 1000 before any callback sees it: the
    per-epoch schedule would then barely move (the original code's frozen slope).
    """
    trainer, scheduler = config["trainer"], config["slope_scheduler"]
    if (
        any(m.is_scheduled for m in dsrelu_modules(model))
        and scheduler.get("granularity") == "epoch"
        and trainer.get("max_epochs") is None
        and trainer.get("max_steps", -1) == -1
    ):
        raise ConfigurationError(
            "trainer.max_epochs is not set: Lightning would train up to 1000 epochs and "
            "DSReLU's schedule (t = epoch / max_epochs) would barely move; "
            "set --trainer.max_epochs N"
        )


def warn_if_last_only_at_the_end(trainer: pl.Trainer) -> None:
    """Lightning writes save_last only after a top-k save in the same step, so with
    save_top_k=0 there is no last.ckpt to resume from until training ends."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "save_top_k", 1) == 0 and getattr(callback, "save_last", None):
            rank_zero_warn(
                "--checkpoint.save_top_k 0: Lightning then writes last.ckpt only when "
                "training ends, so a killed run cannot resume; to keep one checkpoint "
                "file per run use --checkpoint.monitor null --checkpoint.save_last link"
            )


def checkpoint_bytes(trainer: pl.Trainer, model: pl.LightningModule) -> int:
    """About the disk the checkpoint callbacks keep: each copy holds the weights and,
    unless weights-only, Adam's two moments."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    total = 0
    for callback in trainer.checkpoint_callbacks:
        # save_top_k=-1 keeps every epoch: count at least one copy; "link" adds none.
        top_k, last = getattr(callback, "save_top_k", 1), getattr(callback, "save_last", None)
        copies = abs(top_k) + bool(last and not (last == "link" and top_k))
        total += copies * param_bytes * (1 if getattr(callback, "save_weights_only", 0) else 3)
    return total
