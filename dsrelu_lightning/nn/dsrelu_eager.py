"""DSReLU's formula (the reference) and its exact eager kernels, made of aten ops only.

``y = slope * x`` for ``x > 0``, ``negative_slope * x`` otherwise; the input gradient is
``grad * slope`` where the saved tensor (``x``, or ``y`` whose sign is ``x``'s) is
positive, ``grad * negative_slope`` elsewhere. Every function here computes in the
input's *opmath* dtype (float32 for float16 and bfloat16 inputs, as PyTorch's own
elementwise kernels do, so neither slope is rounded to the input's dtype) and rounds
once to the input's dtype; the fused kernels (``dsrelu_fused``) give the same bits.
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
]

_REDUCED = (torch.float16, torch.bfloat16)


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype DSReLU computes in for inputs of ``dtype``: float64 stays, others float32."""
    return torch.promote_types(dtype, torch.float32)


def dsrelu_formula(x: Tensor, slope: Tensor, negative_slope: float | Tensor) -> Tensor:
    """``x * where(x > 0, slope, negative_slope)`` in opmath, rounded once to ``x``'s dtype.

    The reference, the traced fused forward kernel, and what runs inside
    ``torch.compile`` (where inductor fuses it with its neighbours). ``negative_slope``
    is a float or a 0-dim opmath tensor (the fused kernel's input).
    """
    factor = torch.where(x > 0, slope.to(opmath_dtype(x.dtype)), negative_slope)
    return (x * factor).to(x.dtype)


def dsrelu_gradient_formula(
    grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float | Tensor
) -> Tensor:
    """Input gradient from ``saved`` (``x``, or ``y`` whose sign is ``x``'s), as
    :func:`dsrelu_formula` computes: in opmath, rounded once to ``grad``'s dtype."""
    factor = torch.where(saved > 0, slope.to(opmath_dtype(grad.dtype)), negative_slope)
    return (grad * factor).to(grad.dtype)


def _negative_part(t: Tensor, negative_slope: float) -> Tensor:
    return t if negative_slope == 1.0 else t.mul_(negative_slope)


def dsrelu_forward_eager(x: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
    """:func:`dsrelu_formula` in three aten passes: ``neg*min(x,0) + relu(x)*s``.

    No boolean mask and no ``torch.where`` (both slow on CPU); float16 and bfloat16
    inputs are computed in float32 and rounded once.
    """
    if x.dtype in _REDUCED:
        return dsrelu_forward_eager(x.float(), slope, negative_slope).to(x.dtype)
    negative = _negative_part(torch.clamp_max(x, 0), negative_slope)
    return torch.addcmul(negative, torch.relu(x), slope)


def dsrelu_backward_eager(
    grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float
) -> Tensor:
    """:func:`dsrelu_gradient_formula` in three aten passes (exact for finite gradients)."""
    if grad.dtype in _REDUCED:
        wide = dsrelu_backward_eager(grad.float(), saved.float(), slope, negative_slope)
        return wide.to(grad.dtype)
    positive = torch.ops.aten.threshold_backward(grad, saved, 0)  # grad where saved > 0
    return torch.addcmul(_negative_part(grad - positive, negative_slope), positive, slope)
