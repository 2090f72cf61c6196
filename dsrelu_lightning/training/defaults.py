"""The study's default callbacks: one list that the CLI and Python users both build from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
from dsrelu_lightning.training.grad_flow import GradientFlow
from dsrelu_lightning.training.precise_bn import PreciseBN
from dsrelu_lightning.training.selection import SELECTION_METRIC
from dsrelu_lightning.training.slope_scheduler import SlopeScheduler
from dsrelu_lightning.training.train_eval import TrainEval
from dsrelu_lightning.training.unit_stats import UnitStats

__all__ = ["DEFAULT_CALLBACKS", "CallbackSpec", "default_callbacks"]


@dataclass(frozen=True)
class CallbackSpec:
    """A default callback: its CLI key (``--<key>.<arg>``), class and argument defaults."""

    key: str
    cls: type[Callback]
    defaults: Mapping[str, Any] = field(default_factory=dict)


DEFAULT_CALLBACKS: tuple[CallbackSpec, ...] = (
    CallbackSpec("slope_scheduler", SlopeScheduler),
    # As in the paper: validation loss, patience 15.
    CallbackSpec("early_stopping", EarlyStopping, {"monitor": SELECTION_METRIC, "patience": 15}),
    # The best validation loss as best-NNN.ckpt, plus last.ckpt.
    CallbackSpec(
        "checkpoint",
        ModelCheckpoint,
        {
            "monitor": SELECTION_METRIC,
            "save_last": True,
            "filename": "best-{epoch:03d}",
            "auto_insert_metric_name": False,
        },
    ),
    CallbackSpec("epoch_timer", EpochTimer),
    CallbackSpec("finite_loss_guard", FiniteLossGuard),
    # After the NaN guard: a diverged model is not recalibrated before it stops.
    CallbackSpec("precise_bn", PreciseBN),
    # After precise BN: it measures the statistics validation used.
    CallbackSpec("bn_staleness", BNStalenessMonitor),
    # After precise BN: scored and probed with the statistics validation used.
    CallbackSpec("train_eval", TrainEval),
    CallbackSpec("unit_stats", UnitStats),
    CallbackSpec("grad_flow", GradientFlow),
    # Last: the epoch's row holds what the callbacks above logged (time/epoch_s, bn/*).
    CallbackSpec("metrics_history", MetricsHistory),
)
"""The callbacks the command line always adds, in their order (each under its key)."""


def default_callbacks(**overrides: dict[str, Any] | None) -> list[Callback]:
    """New instances of :data:`DEFAULT_CALLBACKS`, in order, e.g.
    ``default_callbacks(early_stopping={"patience": 5}, precise_bn={"enabled": True})``:
    a keyword named after a callback's key overrides its arguments.

    Callbacks keep state across fits: call this once per ``Trainer``.
    """
    keys = {spec.key for spec in DEFAULT_CALLBACKS}
    unknown = sorted(set(overrides) - keys)
    if unknown:
        raise TypeError(f"default_callbacks got unknown keys {unknown}; valid: {sorted(keys)}")
    return [
        spec.cls(**{**spec.defaults, **(overrides.get(spec.key) or {})})
        for spec in DEFAULT_CALLBACKS
    ]
