"""The network layer: activations (DSReLU and the registry), DSReLU's kernel, ResNet-34."""

from dsrelu_lightning.nn.activations import ACTIVATIONS, DSReLU, build_activation, dsrelu_slope
from dsrelu_lightning.nn.resnet import ActivatedBasicBlock, build_resnet34

__all__ = [
    "ACTIVATIONS",
    "ActivatedBasicBlock",
    "DSReLU",
    "build_activation",
    "build_resnet34",
    "dsrelu_slope",
]
