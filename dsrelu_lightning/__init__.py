"""dsrelu_lightning: train and honestly compare activation functions, built around DSReLU."""

from dsrelu_lightning.errors import ConfigurationError, TrainingDivergedError, UserFacingError
from dsrelu_lightning.nn.activations import ACTIVATIONS, DSReLU, build_activation, dsrelu_slope
from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
from dsrelu_lightning.training.module import ResNetClassifier
from dsrelu_lightning.training.precise_bn import PreciseBN
from dsrelu_lightning.training.slope_scheduler import SlopeScheduler

__all__ = [
    "ACTIVATIONS",
    "BNStalenessMonitor",
    "ConfigurationError",
    "DSReLU",
    "EpochTimer",
    "FiniteLossGuard",
    "MetricsHistory",
    "PreciseBN",
    "ResNetClassifier",
    "SlopeScheduler",
    "TrainingDivergedError",
    "UserFacingError",
    "build_activation",
    "dsrelu_slope",
]
__version__ = "0.1.0"
