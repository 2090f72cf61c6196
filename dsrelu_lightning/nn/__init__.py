"""The network layer: activations (DSReLU, the registry), DSReLU's kernel, backbones by name,
replace_activations (every activation call site its own module) and DSReLU frozen for export."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrelu_lightning.lazy_exports import lazy_exports

_EXPORTS = {
    "ACTIVATIONS": "activations",
    "PAPER_ACTIVATIONS": "activations",
    "DSReLU": "activations",
    "activation_defaults": "activations",
    "activation_factory": "activations",
    "build_activation": "activations",
    "canonical_activation_name": "activations",
    "dsrelu_slope": "activations",
    "SCHEDULES": "schedules",
    "FrozenDSReLU": "frozen",
    "freeze_dsrelu": "frozen",
    "build_resnet34": "resnet",
    "Backbone": "backbones",
    "build_backbone": "backbones",
    "torchvision_classifiers": "backbones",
    "ActivationReport": "replace",
    "convert_activations": "replace",
    "replace_activations": "replace",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from dsrelu_lightning.nn.activations import (
        ACTIVATIONS,
        PAPER_ACTIVATIONS,
        DSReLU,
        activation_defaults,
        activation_factory,
        build_activation,
        canonical_activation_name,
        dsrelu_slope,
    )
    from dsrelu_lightning.nn.backbones import Backbone, build_backbone, torchvision_classifiers
    from dsrelu_lightning.nn.frozen import FrozenDSReLU, freeze_dsrelu
    from dsrelu_lightning.nn.replace import (
        ActivationReport,
        convert_activations,
        replace_activations,
    )
    from dsrelu_lightning.nn.resnet import build_resnet34
    from dsrelu_lightning.nn.schedules import SCHEDULES
