"""torchvision's MobileNetV3-small with a chosen BatchNorm momentum (torchvision's is 0.01), as
a user's backbone factory: does the momentum alone explain val_ema/* at chance? Run from the
repository's root:

    for m in 0.01 0.1; do PYTHONPATH=docs/results/digits_networks OMP_NUM_THREADS=1 \\
      python -m dsrelu_lightning fit --config configs/digits.yaml --model.activation relu \\
      --model.backbone bn_momentum.mobilenet_v3_small \\
      --model.backbone_args "{\\"momentum\\": $m}" --trainer.default_root_dir runs/bn_$m; done
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision import models


def mobilenet_v3_small(num_classes: int = 10, momentum: float = 0.01) -> nn.Module:
    """torchvision's network, its BatchNorm layers with ``momentum`` (eps 0.001 as there)."""
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=momentum)
    return models.mobilenet_v3_small(num_classes=num_classes, norm_layer=norm_layer)
