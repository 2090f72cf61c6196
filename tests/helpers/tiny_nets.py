"""A small network for the tests whose behaviour does not depend on ResNet-34.

It calls its activations every way a network can: one nn.ReLU module at two sites, an
in-place functional call and a tensor method, so it also exercises replace_activations.
Used as ``--model.backbone tiny_nets.SmallCNN`` (tests/helpers is on the tests' path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """conv-BN x 3, one shared ReLU module (2 sites), F.relu(inplace=True), ``x.relu()``,
    global average pooling and a Linear head; 4 activation call sites in all."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(x)), inplace=True)
        y = self.relu(y + x)
        y = self.bn3(self.conv3(y)).relu()
        return self.head(y.mean((2, 3)))


class LateStemCNN(nn.Module):
    """The stem's activation is registered after the block's: forward order and registration
    order of its two ReLU sites differ (the authors'-code schedule must follow the forward)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.block_act = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.stem_act = nn.ReLU()
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block_act(self.conv2(self.stem_act(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class LinearNet(nn.Module):
    """No activation at all: a flattening linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.head = nn.Linear(in_channels * 64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x.flatten(1))


class CumMaxCNN(nn.Module):
    """A network ONNX cannot express: a running maximum along the rows (``torch.cummax``,
    which has no ONNX counterpart) after a convolution and its ReLU."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cummax(self.act(self.conv(x)), dim=2).values
        return self.head(x.mean((2, 3)))


def small_cnn(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A factory (not a class) for SmallCNN: the backbone may be either."""
    return SmallCNN(num_classes, in_channels)


WIDTH = 8
"""Not a network: a backbone path naming it is refused."""
