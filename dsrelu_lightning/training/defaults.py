"""The study's default callbacks, shared by the CLI and Python users so the two cannot drift."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
from dsrelu_lightning.training.precise_bn import PreciseBN
from dsrelu_lightning.training.slope_scheduler import SlopeScheduler

__all__ = ["CHECKPOINT_DEFAULTS", "EARLY_STOPPING_DEFAULTS", "default_callbacks"]

EARLY_STOPPING_DEFAULTS: dict[str, Any] = {"monitor": "val/loss", "patience": 15}
"""EarlyStopping as in the paper: validation loss, patience 15."""

CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "monitor": "val/loss",
    "save_last": True,
    "filename": "best-{epoch:03d}",
    "auto_insert_metric_name": False,
}
"""ModelCheckpoint: the best validation loss as ``best-NNN.ckpt``, plus ``last.ckpt``."""


def default_callbacks(
    *,
    early_stopping: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
    precise_bn: dict[str, Any] | None = None,
) -> list[Callback]:
    """New instances of the callbacks the command line always adds, in its order.

    SlopeScheduler, EarlyStopping (val/loss, patience 15), ModelCheckpoint (best val/loss
    as ``best-NNN.ckpt`` and ``last.ckpt``), EpochTimer, MetricsHistory (writes
    ``epoch_metrics.csv`` into the logger's folder), FiniteLossGuard, PreciseBN (off unless
    ``precise_bn={"enabled": True}``) and BNStalenessMonitor (``bn/stale_ratio``).
    ``early_stopping``, ``checkpoint`` and ``precise_bn`` override those callbacks'
    arguments, e.g. ``early_stopping={"patience": 5}``.
    Callbacks keep state across fits: call this once per ``Trainer``.
    """
    return [
        SlopeScheduler(),
        EarlyStopping(**{**EARLY_STOPPING_DEFAULTS, **(early_stopping or {})}),
        ModelCheckpoint(**{**CHECKPOINT_DEFAULTS, **(checkpoint or {})}),
        # EpochTimer logs time/epoch_s before MetricsHistory records the epoch.
        EpochTimer(),
        MetricsHistory(),
        FiniteLossGuard(),
        # After the NaN guard: a diverged model is not recalibrated before it stops.
        PreciseBN(**(precise_bn or {})),
        BNStalenessMonitor(),
    ]
