"""DSReLU's formula (the reference) and its exact eager kernels, made of public aten ops.

``y = slope * x`` for ``x > 0``, ``negative_slope * x`` otherwise; the input gradient is
``grad * slope`` where the saved tensor (``x``, or ``y`` whose sign is ``x``'s) is
positive, ``grad * negative_slope`` elsewhere. Every function here computes in the
input's *opmath* dtype (float32 for float16 and bfloat16 inputs, as PyTorch's own
elementwise kernels do, so neither slope is rounded to the input's dtype) and rounds
once to the input's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "dsrelu_backward_eager",
    "dsrelu_formula",
    "dsrelu_forward_eager",
    "dsrelu_gradient_formula",
    "opmath_dtype",
    "same_bits",
]


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype DSReLU computes in for inputs of ``dtype``: float64 stays, others float32."""
    return torch.promote_types(dtype, torch.float32)


def same_bits(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` hold the same bits (so ``-0.0`` differs from ``0.0``), NaNs
    apart: those only need to sit at the same places (their payloads are unspecified)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan = a.isnan()
    if not torch.equal(nan, b.isnan()):
        return False
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a[~nan].view(bits), b[~nan].view(bits))


def dsrelu_formula(x: Tensor, slope: Tensor, negative_slope: float | Tensor) -> Tensor:
    """``x * where(x > 0, slope, negative_slope)`` in opmath, rounded once to ``x``'s dtype.

    The reference every kernel must equal bit for bit, and what runs inside
    ``torch.compile`` (where inductor fuses it with its neighbours). ``negative_slope``
    is a float or a 0-dim opmath tensor.
    """
    factor = torch.where(x > 0, slope.to(opmath_dtype(x.dtype)), negative_slope)
    return (x * factor).to(x.dtype)


def dsrelu_gradient_formula(
    grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float | Tensor
) -> Tensor:
    """``grad * where(saved > 0, slope, negative_slope)`` in opmath, rounded once to
    ``grad``'s dtype: the input gradient from ``saved`` (``x``, or ``y`` if its sign is ``x``'s)."""
    factor = torch.where(saved > 0, slope.to(opmath_dtype(grad.dtype)), negative_slope)
    return (grad * factor).to(grad.dtype)


def _factor(t: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
    """A new opmath tensor: ``slope`` where ``t > 0``, else ``negative_slope``; needs
    ``slope > 0`` (``sign(t) * slope > 0`` exactly where ``t > 0``; NaN's sign is 0).

    ``torch.where`` with a scalar is a slow, unvectorised loop on CPU; these three
    passes are vectorised and write one buffer.
    """
    wide = opmath_dtype(t.dtype)
    sign = torch.sign(t if t.dtype == wide else t.to(wide))
    return torch.threshold_(sign.mul_(slope.to(wide)), 0.0, negative_slope)


def dsrelu_forward_eager(x: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
    """:func:`dsrelu_formula` for a 0-dim ``slope > 0``: the formula's own factor and
    product, so the same bits (signed zeros, infinities and NaN included)."""
    return _factor(x, slope, negative_slope).mul_(x).to(x.dtype)


def dsrelu_backward_eager(
    grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float
) -> Tensor:
    """:func:`dsrelu_gradient_formula` for a 0-dim ``slope > 0``, bit for bit."""
    return _factor(saved, slope, negative_slope).mul_(grad).to(grad.dtype)
