"""DSReLU's op: ``y = s * x`` for ``x > 0``, ``negative_slope * x`` otherwise.

:func:`dsrelu` runs a custom autograd Function that saves one tensor for backward (``y``,
or ``x`` when ``negative_slope < 0``), as ``F.leaky_relu`` saves ``x``; ``s`` is a 0-dim
tensor on ``x``'s device, never read on the host. Each direction is one fused pass
(:mod:`~dsrelu_lightning.nn.dsrelu_fused`) for dense CPU/CUDA tensors of at least
:data:`COMPILED_KERNEL_MIN_NUMEL` elements, else the exact eager kernel
(:mod:`~dsrelu_lightning.nn.dsrelu_eager`); both give the same bits. docs/performance.md
says how each works and what it costs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dsrelu_lightning.nn.dsrelu_eager import (
    dsrelu_backward_eager,
    dsrelu_formula,
    dsrelu_forward_eager,
    dsrelu_gradient_formula,
    opmath_dtype,
)
from dsrelu_lightning.nn.dsrelu_fused import (
    COMPILED_KERNEL_MIN_NUMEL,
    KernelKey,
    fused_plan,
    set_kernel_mode,
    warm_up,
)

__all__ = [
    "COMPILED_KERNEL_MIN_NUMEL",
    "KernelKey",
    "dsrelu",
    "dsrelu_backward_eager",
    "dsrelu_formula",
    "dsrelu_forward_eager",
    "dsrelu_gradient_formula",
    "opmath_dtype",
    "set_kernel_mode",
    "warm_up",
]


class _DSReLUFunction(torch.autograd.Function):
    """DSReLU with a one-tensor backward state (``y`` or ``x``, as LeakyReLU saves ``x``).

    Written with ``forward(ctx, ...)`` rather than ``setup_context``: ``apply`` then skips
    binding the arguments through ``inspect.signature`` on every call.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
        plan = fused_plan(x, negative_slope)
        y = None if plan is None else plan.run_forward(x, slope)
        if y is None:
            y = dsrelu_forward_eager(x, slope, negative_slope)
        # y > 0 exactly where x > 0 when the negative side does not flip signs.
        ctx.save_for_backward(y if negative_slope >= 0 else x)
        ctx.slope, ctx.negative_slope, ctx.plan = slope, negative_slope, plan
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (saved,) = ctx.saved_tensors
        slope, negative_slope, plan = ctx.slope, ctx.negative_slope, ctx.plan
        if torch.is_grad_enabled():  # create_graph: keep the backward differentiable
            return dsrelu_gradient_formula(grad, saved, slope, negative_slope), None, None
        grad_input = None if plan is None else plan.run_backward(grad, saved, slope)
        if grad_input is None:
            grad_input = dsrelu_backward_eager(grad, saved, slope, negative_slope)
        return grad_input, None, None


def dsrelu(x: Tensor, slope: Tensor, negative_slope: float = 1.0) -> Tensor:
    """DSReLU at a given slope: ``slope * x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Args:
        x: input tensor (any shape and layout, floating point).
        slope: 0-dim tensor with the positive-side slope on ``x``'s device; it is used in
            ``x``'s opmath dtype (float32 for float16/bfloat16 inputs, see
            :func:`opmath_dtype`), as ``negative_slope`` is.
        negative_slope: slope for ``x <= 0``.

    Inside ``torch.compile`` (and when ``slope`` needs a gradient) this is the plain
    formula, which the compiler fuses with its neighbours; otherwise the custom autograd
    Function with the kernels described in the module docstring.
    """
    if torch.compiler.is_compiling() or slope.requires_grad:
        return dsrelu_formula(x, slope, negative_slope)
    return _DSReLUFunction.apply(x, slope, negative_slope)
