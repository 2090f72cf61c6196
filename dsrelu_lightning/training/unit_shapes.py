"""Where an activation's derivative is zero, constant or saturated: what decides whether one of
its units (a channel at one call site) is dead, linear or saturated on a set of inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dsrelu_lightning.nn.activations import DSReLU

__all__ = ["SATURATION_SHARE", "UnitShape", "unit_shape"]

SATURATION_SHARE = 0.99
"""A smooth unit is saturated when this share of its inputs has a derivative below 1% of the
activation's largest derivative."""


def _beyond_one_percent_sigmoid() -> float:
    # sigmoid'(x) = s (1 - s) < 0.01 * 0.25 where s < (1 - sqrt(0.99)) / 2
    low = (1.0 - math.sqrt(0.99)) / 2.0
    return -math.log(low / (1.0 - low))


SIGMOID_SATURATION = _beyond_one_percent_sigmoid()
"""|x| beyond which sigmoid's derivative is below 1% of its maximum 0.25 (about 5.99)."""
TANH_SATURATION = math.atanh(math.sqrt(0.99))
"""|x| beyond which tanh's derivative 1 - tanh(x)^2 is below 1% of its maximum 1 (about 2.99)."""


@dataclass(frozen=True)
class UnitShape:
    """A piecewise-linear activation's ``kinks`` and the ``slopes`` of the regions between
    them (``x <= kinks[0]`` is region 0), or a smooth one's ``saturation`` threshold on |x|."""

    kinks: tuple[float, ...] = ()
    slopes: tuple[float, ...] = ()
    saturation: float | None = None

    @property
    def piecewise_linear(self) -> bool:
        return bool(self.kinks)

    def _region(self, values: Tensor) -> Tensor:
        """Region index of each value: how many kinks lie strictly below it."""
        kinks = torch.tensor(self.kinks, dtype=values.dtype, device=values.device)
        return (values.unsqueeze(-1) > kinks).sum(-1)

    def linear(self, low: Tensor, high: Tensor) -> Tensor:
        """Per channel of per-channel input minima ``low`` and maxima ``high``: every input
        in one region, where the unit computes one linear function of its input."""
        if not self.piecewise_linear:
            return torch.zeros_like(low, dtype=torch.bool)
        return self._region(low) == self._region(high)

    def dead(self, low: Tensor, high: Tensor) -> Tensor:
        """Per channel: the derivative is zero for every input (every region that the inputs
        span between their minimum and maximum has slope 0)."""
        if not self.piecewise_linear:
            return torch.zeros_like(low, dtype=torch.bool)
        flat = torch.tensor([s == 0.0 for s in self.slopes], device=low.device)
        first, last = self._region(low), self._region(high)
        regions = torch.arange(len(self.slopes), device=low.device)
        spanned = (regions >= first.unsqueeze(-1)) & (regions <= last.unsqueeze(-1))
        return (spanned <= flat).all(-1)

    def saturated(self, beyond: Tensor, count: Tensor) -> Tensor:
        """Per channel of ``beyond`` (inputs with |x| past the threshold) of ``count``."""
        if self.saturation is None:
            return torch.zeros_like(beyond, dtype=torch.bool)
        return beyond >= SATURATION_SHARE * count


def unit_shape(module: nn.Module) -> UnitShape:
    """The shape of ``module``'s nonlinearity; an activation neither piecewise linear nor
    saturating (Mish, GELU, SiLU, ELU...) has none of the three kinds of unit."""
    if isinstance(module, DSReLU):
        return UnitShape((0.0,), (module.negative_slope, module.slope))
    if isinstance(module, nn.ReLU6):
        return UnitShape((0.0, 6.0), (0.0, 1.0, 0.0))
    if isinstance(module, nn.Hardtanh):
        return UnitShape((module.min_val, module.max_val), (0.0, 1.0, 0.0))
    if isinstance(module, nn.ReLU):
        return UnitShape((0.0,), (0.0, 1.0))
    if isinstance(module, nn.LeakyReLU):
        return UnitShape((0.0,), (float(module.negative_slope), 1.0))
    if isinstance(module, nn.PReLU):
        return UnitShape((0.0,), (float(module.weight.detach().abs().min()), 1.0))
    if isinstance(module, nn.Sigmoid):
        return UnitShape(saturation=SIGMOID_SATURATION)
    if isinstance(module, nn.Tanh):
        return UnitShape(saturation=TANH_SATURATION)
    return UnitShape()
