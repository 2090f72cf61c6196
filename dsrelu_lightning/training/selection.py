"""The one rule that picks a run's best epoch from its per-epoch metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

__all__ = ["SELECTION_METRIC", "best_row"]

SELECTION_METRIC = "val/loss"
"""What checkpoints, early stopping and the study select on (lowest is best)."""


def best_row(
    rows: Sequence[Mapping[str, float]],
    monitor: str = SELECTION_METRIC,
    mode: Literal["min", "max"] = "min",
) -> Mapping[str, float] | None:
    """The epoch row with the best finite ``monitor`` value, the first one on ties (as
    ModelCheckpoint keeps the first); None when no row has a finite value."""
    scored = [
        row for row in rows if row.get(monitor) is not None and math.isfinite(float(row[monitor]))
    ]
    pick = min if mode == "min" else max
    return pick(scored, key=lambda row: float(row[monitor]), default=None)
