"""torchvision's ResNet-34 with its own activation module at every activation call site."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dsrelu_lightning.nn.backbones import Stem, build_backbone
from dsrelu_lightning.nn.replace import convert_activations

__all__ = ["build_resnet34"]


def build_resnet34(
    num_classes: int,
    make_activation: Callable[[], nn.Module],
    in_channels: int = 3,
    stem: Stem = "imagenet",
) -> nn.Module:
    """torchvision's ResNet-34 (random init) with every activation call site from
    ``make_activation``: ``build_backbone("resnet34", ...)`` through ``convert_activations``."""
    backbone = build_backbone("resnet34", num_classes, in_channels, stem)
    network, _ = convert_activations(backbone.network, make_activation)
    return network
