"""The network layer: activations (DSReLU and the registry), DSReLU's kernel, ResNet-34."""

from dsrelu_lightning.nn.activations import (
    ACTIVATIONS,
    DSReLU,
    activation_defaults,
    activation_factory,
    build_activation,
    canonical_activation_name,
    dsrelu_slope,
)
from dsrelu_lightning.nn.resnet import ActivatedBasicBlock, build_resnet34

__all__ = [
    "ACTIVATIONS",
    "ActivatedBasicBlock",
    "DSReLU",
    "activation_defaults",
    "activation_factory",
    "build_activation",
    "build_resnet34",
    "canonical_activation_name",
    "dsrelu_slope",
]
