"""dsrelu_lightning: train and honestly compare activation functions, built around DSReLU."""

from dsrelu_lightning.activations import ACTIVATIONS, DSReLU, build_activation, dsrelu_slope
from dsrelu_lightning.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory, SlopeScheduler
from dsrelu_lightning.errors import ConfigurationError, TrainingDivergedError, UserFacingError
from dsrelu_lightning.models import ResNetClassifier

__all__ = [
    "ACTIVATIONS",
    "ConfigurationError",
    "DSReLU",
    "EpochTimer",
    "FiniteLossGuard",
    "MetricsHistory",
    "ResNetClassifier",
    "SlopeScheduler",
    "TrainingDivergedError",
    "UserFacingError",
    "build_activation",
    "dsrelu_slope",
]
__version__ = "0.1.0"
