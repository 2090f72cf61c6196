"""The training layer: the LightningModule and its callbacks (imported on first use: the names
are the imports under ``TYPE_CHECKING``, see ``dsrelu_lightning.lazy_exports``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrelu_lightning.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)

if TYPE_CHECKING:
    from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
    from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
    from dsrelu_lightning.training.defaults import default_callbacks
    from dsrelu_lightning.training.deployment import deployment_network
    from dsrelu_lightning.training.module import Classifier, ResNetClassifier
    from dsrelu_lightning.training.precise_bn import PreciseBN
    from dsrelu_lightning.training.slope_scheduler import SlopeScheduler
