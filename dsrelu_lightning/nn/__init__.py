"""The network layer: activations (DSReLU, the registry), DSReLU's kernel, networks."""

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
    "ActivatedBasicBlock": "resnet",
    "build_resnet34": "resnet",
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
    from dsrelu_lightning.nn.resnet import ActivatedBasicBlock, build_resnet34
