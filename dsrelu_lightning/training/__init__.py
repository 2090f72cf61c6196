"""The training layer: the LightningModule, callbacks, preflight checks and the CLI."""

from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
from dsrelu_lightning.training.defaults import default_callbacks
from dsrelu_lightning.training.module import ResNetClassifier
from dsrelu_lightning.training.precise_bn import PreciseBN
from dsrelu_lightning.training.slope_scheduler import SlopeScheduler

__all__ = [
    "BNStalenessMonitor",
    "EpochTimer",
    "FiniteLossGuard",
    "MetricsHistory",
    "PreciseBN",
    "ResNetClassifier",
    "SlopeScheduler",
    "default_callbacks",
]
