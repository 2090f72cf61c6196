"""torchvision's ResNet-34 with its own activation module at every activation site."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn
from torchvision.models import resnet34
from torchvision.models.resnet import BasicBlock

from dsrelu_lightning.errors import ConfigurationError

__all__ = ["ActivatedBasicBlock", "Stem", "build_resnet34"]

Stem = Literal["imagenet", "cifar"]


class ActivatedBasicBlock(nn.Module):
    """torchvision's BasicBlock with its own activation module at each of its two sites.

    torchvision's block calls one shared ``self.relu`` twice; a scheduled activation
    needs one module per site. Weights keep torchvision's names (conv1, bn1, ...).
    """

    def __init__(self, block: BasicBlock, make_activation: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.downsample = block.downsample
        self.stride = block.stride
        self.act1 = make_activation()
        self.act2 = make_activation()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.act2(out)


def _fresh_each_call(make_activation: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``make_activation``, refusing a module it already returned (a shared module would
    tie all sites' state, e.g. one DSReLU progress or one PReLU weight for the network)."""
    seen: set[int] = set()

    def make() -> nn.Module:
        module = make_activation()
        if id(module) in seen:
            raise ConfigurationError(
                f"the activation factory returned the same {type(module).__name__} module "
                "twice; every activation site needs its own: pass a class or a function that "
                "builds a new module per call"
            )
        seen.add(id(module))
        return module

    return make


def build_resnet34(
    num_classes: int,
    make_activation: Callable[[], nn.Module],
    in_channels: int = 3,
    stem: Stem = "imagenet",
) -> nn.Module:
    """torchvision's ResNet-34 (random init) with every activation site from ``make_activation``.

    ``stem="imagenet"`` keeps torchvision's 7x7/2 convolution and max-pool (the paper's
    setting); ``stem="cifar"`` uses a 3x3/1 convolution and no max-pool for small images.
    """
    if num_classes < 2:
        raise ConfigurationError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ConfigurationError(f"in_channels must be >= 1, got {in_channels}")
    model = resnet34(weights=None, num_classes=num_classes)
    if stem == "imagenet":
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif stem == "cifar":
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        raise ConfigurationError(f"unknown stem {stem!r}; valid: 'imagenet', 'cifar'")
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    make_activation = _fresh_each_call(make_activation)
    model.relu = make_activation()
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for index, block in enumerate(stage):
            stage[index] = ActivatedBasicBlock(block, make_activation)
    return model
