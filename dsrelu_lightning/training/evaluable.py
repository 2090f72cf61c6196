"""What a LightningModule offers so that callbacks can evaluate it as its own steps do."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor
from torchmetrics import MetricCollection

__all__ = ["Evaluable", "EvaluationOutput"]


class EvaluationOutput(NamedTuple):
    """One batch as the module scores it: mean loss, class probabilities, targets."""

    loss: Tensor
    probs: Tensor
    targets: Tensor


@runtime_checkable
class Evaluable(Protocol):
    """A module whose validation can be repeated outside Lightning's loop (PreciseBN's
    ``val_ema/*`` pass and its recalibration): the same loss, precision and metrics."""

    def evaluation_step(self, batch: Any) -> EvaluationOutput:
        """Forward ``batch`` (as the dataloader yields it, on the device) and score it."""
        ...

    def evaluation_metrics(self, prefix: str) -> MetricCollection:
        """A new, empty collection of the stage metrics, names prefixed by ``prefix``."""
        ...
