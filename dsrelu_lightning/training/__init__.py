"""The training layer: the LightningModule, callbacks, preflight checks and the CLI."""

from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
from dsrelu_lightning.training.defaults import default_callbacks
from dsrelu_lightning.training.module import ResNetClassifier
from dsrelu_lightning.training.slope_scheduler import SlopeScheduler

__all__ = [
    "EpochTimer",
    "FiniteLossGuard",
    "MetricsHistory",
    "ResNetClassifier",
    "SlopeScheduler",
    "default_callbacks",
]
