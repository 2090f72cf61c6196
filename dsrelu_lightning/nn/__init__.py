"""The network layer: DSReLU and the activation registry, DSReLU's kernel, backbones by name,
replace_activations (every activation call site its own module) and DSReLU frozen for export.

The names are the imports under ``TYPE_CHECKING``, each imported on first use (see
``dsrelu_lightning.lazy_exports``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrelu_lightning.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)

if TYPE_CHECKING:
    from dsrelu_lightning.nn.activations import ACTIVATIONS, DSReLU, build_activation, dsrelu_slope
    from dsrelu_lightning.nn.backbones import Backbone, build_backbone, torchvision_classifiers
    from dsrelu_lightning.nn.frozen import FrozenDSReLU, freeze_dsrelu
    from dsrelu_lightning.nn.replace import (
        ActivationReport,
        convert_activations,
        replace_activations,
    )
    from dsrelu_lightning.nn.resnet import build_resnet34
    from dsrelu_lightning.nn.schedules import SCHEDULES
