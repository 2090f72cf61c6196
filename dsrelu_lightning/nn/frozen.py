"""DSReLU frozen at one slope, written with standard operators only, for deployment.

A trained network's DSReLU modules run a custom autograd Function (with a compiled kernel)
and compute their slope from a ``progress`` buffer; an exported program must need neither.
:func:`freeze_dsrelu` replaces each with :class:`FrozenDSReLU`, whose forward is
``where(x > 0, x * s, x * negative_slope)`` with ``s`` a constant: three ONNX operators
(Greater, Mul, Where; a fourth Mul where ``negative_slope`` is not 1), no custom domain, and
the same float32 values as DSReLU's kernels, bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dsrelu_lightning.nn.activations import DSReLU

__all__ = ["FrozenDSReLU", "freeze_dsrelu"]


class FrozenDSReLU(nn.Module):
    """DSReLU at a fixed slope: ``slope * x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Args:
        slope: the positive-side slope, a constant of exported graphs.
        negative_slope: the slope for ``x <= 0`` (DSReLU's default 1.0 costs no operator).

    No buffers, no parameters, no schedule: ``torch.export``, ONNX and TorchScript see
    standard elementwise operators.
    """

    def __init__(self, slope: float, negative_slope: float = 1.0) -> None:
        super().__init__()
        self.slope = float(slope)
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        negative = x if self.negative_slope == 1.0 else x * self.negative_slope
        return torch.where(x > 0, x * self.slope, negative)

    def extra_repr(self) -> str:
        return f"slope={self.slope!r}, negative_slope={self.negative_slope!r}"


def freeze_dsrelu(network: nn.Module) -> nn.Module:
    """Replace every DSReLU in ``network`` (in place) by a :class:`FrozenDSReLU` at its
    current slopes; return the network (the frozen module itself when ``network`` is a
    DSReLU; ``equivalent_leaky`` ones at slope 1 and ``negative_slope / s``). Other modules,
    parameters and buffers stay as they are."""
    if isinstance(network, DSReLU):
        return FrozenDSReLU(*network.applied_slopes)
    for name, child in list(network.named_children()):
        setattr(network, name, freeze_dsrelu(child))
    return network
