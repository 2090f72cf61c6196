"""The training layer: the LightningModule and its callbacks (imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrelu_lightning.lazy_exports import lazy_exports

_EXPORTS = {
    "BNStalenessMonitor": "bn_staleness",
    "EpochTimer": "callbacks",
    "FiniteLossGuard": "callbacks",
    "MetricsHistory": "callbacks",
    "PreciseBN": "precise_bn",
    "Classifier": "module",
    "ResNetClassifier": "module",
    "SlopeScheduler": "slope_scheduler",
    "default_callbacks": "defaults",
    "deployment_network": "deployment",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
    from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
    from dsrelu_lightning.training.defaults import default_callbacks
    from dsrelu_lightning.training.deployment import deployment_network
    from dsrelu_lightning.training.module import Classifier, ResNetClassifier
    from dsrelu_lightning.training.precise_bn import PreciseBN
    from dsrelu_lightning.training.slope_scheduler import SlopeScheduler
