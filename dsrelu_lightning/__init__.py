"""dsrelu_lightning: train and honestly compare activation functions, built around DSReLU.

The public names are the imports under ``TYPE_CHECKING`` below; each is imported on first use
(``dsrelu_lightning.lazy_exports``), so ``python -m dsrelu_lightning --help`` answers without
importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrelu_lightning.lazy_exports import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)

if TYPE_CHECKING:
    from dsrelu_lightning.errors import ConfigurationError, TrainingDivergedError, UserFacingError
    from dsrelu_lightning.nn.activations import ACTIVATIONS, DSReLU, build_activation, dsrelu_slope
    from dsrelu_lightning.nn.replace import replace_activations
    from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
    from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
    from dsrelu_lightning.training.module import Classifier, ResNetClassifier
    from dsrelu_lightning.training.precise_bn import PreciseBN
    from dsrelu_lightning.training.slope_scheduler import SlopeScheduler
