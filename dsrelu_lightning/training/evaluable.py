"""What a LightningModule offers so that callbacks can evaluate it as its own steps do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

import lightning.pytorch as pl
from torch import Tensor
from torchmetrics import MetricCollection

__all__ = ["Evaluable", "EvaluationOutput", "batch_forward"]


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


def batch_forward(trainer: pl.Trainer, module: pl.LightningModule) -> Callable[[Any], object]:
    """Run one batch through ``module`` as its own steps do: moved to the device, in the
    trainer's precision, through ``evaluation_step`` (else ``module(batch[0])``)."""

    def forward(batch: Any) -> object:
        batch = trainer.strategy.batch_to_device(batch)
        with trainer.precision_plugin.forward_context():
            if isinstance(module, Evaluable):
                return module.evaluation_step(batch)
            return module(batch[0] if isinstance(batch, list | tuple) else batch)

    return forward
