"""DSReLU's op: ``y = s * x`` for ``x > 0``, ``negative_slope * x`` otherwise.

:func:`dsrelu` runs a custom autograd Function that saves one tensor for backward (``y``
when the slopes keep ``x``'s sign, else ``x``, as ``F.leaky_relu`` saves ``x``). Its
kernels are the exact eager ones (:mod:`~dsrelu_lightning.nn.dsrelu_eager`, public
torch ops only), unless ``DSRELU_KERNEL=fused`` (or :func:`set_kernel_mode`) opts in to
the TorchInductor-built CPU kernels of :mod:`~dsrelu_lightning.nn.dsrelu_fused_opt_in`.
Every path gives the formula's bits. docs/performance.md says what each costs.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.dsrelu_eager import (
    dsrelu_backward_eager,
    dsrelu_formula,
    dsrelu_forward_eager,
    dsrelu_gradient_formula,
    opmath_dtype,
)

__all__ = [
    "KERNEL_ENV",
    "KERNEL_MODES",
    "dsrelu",
    "dsrelu_backward_eager",
    "dsrelu_formula",
    "dsrelu_forward_eager",
    "dsrelu_gradient_formula",
    "kernel_mode",
    "opmath_dtype",
    "set_kernel_mode",
    "warm_up",
]

KERNEL_ENV = "DSRELU_KERNEL"
"""The environment variable that chooses DSReLU's kernels (read at the first call)."""

KERNEL_MODES = ("eager", "fused")
"""``eager``: the default, public torch ops; ``fused``: the opt-in inductor CPU kernels."""


class _Settings:
    mode: str | None = None  # None: not read from the environment yet


def _checked(mode: str, source: str) -> str:
    name = mode.strip().lower()
    if name not in KERNEL_MODES:
        raise ConfigurationError(
            f"{source}={mode!r} is not a DSReLU kernel: use 'eager' (the default) or "
            "'fused' (the opt-in TorchInductor CPU kernels)"
        )
    return name


def kernel_mode() -> str:
    """The kernel mode in use: :data:`KERNEL_ENV` at the first call, or the last
    :func:`set_kernel_mode`. Raises ConfigurationError for an unknown value."""
    if _Settings.mode is None:
        _Settings.mode = _checked(os.environ.get(KERNEL_ENV) or "eager", KERNEL_ENV)
    return _Settings.mode


def set_kernel_mode(mode: str) -> None:
    """Use ``"eager"`` (default) or ``"fused"`` kernels from now on, process-wide."""
    _Settings.mode = _checked(mode, "kernel mode")


def _opt_in() -> ModuleType | None:
    """The opt-in fused module when the mode is ``fused``, else None (never imported)."""
    if kernel_mode() != "fused":
        return None
    from dsrelu_lightning.nn import dsrelu_fused_opt_in

    return dsrelu_fused_opt_in


def warm_up(device: torch.device | str, dtype: torch.dtype) -> None:
    """Build the opt-in fused kernels for ``dtype`` on ``device`` now (before the first
    timed step); nothing to do for the eager kernels."""
    fused = _opt_in()
    if fused is not None:
        fused.warm_up(torch.device(device), dtype)


class _TransformableDSReLU(torch.autograd.Function):
    """DSReLU with a one-tensor backward state, for ``torch.func`` transforms
    (``setup_context``; vmap runs the kernels batched)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, slope: Tensor, negative_slope: float, positive: bool) -> Tensor:
        fused = _opt_in()
        y = None if fused is None else fused.forward(x, slope, negative_slope)
        if y is None:
            eager = dsrelu_forward_eager if positive else dsrelu_formula
            y = eager(x, slope, negative_slope)
        return y

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, slope, negative_slope, positive = inputs
        # With slope > 0 and negative_slope >= 0, y > 0 where x > 0 (unless slope * x
        # underflows to 0): y can stand in for x, and is what the next layer keeps anyway.
        keeps_sign = positive and negative_slope >= 0
        ctx.save_for_backward(output if keeps_sign else x, slope)
        ctx.negative_slope, ctx.positive = negative_slope, positive

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        saved, slope = ctx.saved_tensors
        negative_slope = ctx.negative_slope
        if torch.is_grad_enabled():  # create_graph: keep the backward differentiable
            return dsrelu_gradient_formula(grad, saved, slope, negative_slope), None, None, None
        fused = _opt_in()
        grad_input = None if fused is None else fused.backward(grad, saved, slope, negative_slope)
        if grad_input is None:
            eager = dsrelu_backward_eager if ctx.positive else dsrelu_gradient_formula
            grad_input = eager(grad, saved, slope, negative_slope)
        return grad_input, None, None, None


class _DSReLUFunction(torch.autograd.Function):
    """The same op with ``forward(ctx, ...)``: outside ``torch.func`` transforms, ``apply``
    then neither binds its arguments through ``inspect.signature`` nor calls
    ``setup_context`` (together about half a small call's cost)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, slope: Tensor, negative_slope: float, positive: bool
    ) -> Tensor:
        y = _TransformableDSReLU.forward(x, slope, negative_slope, positive)
        _TransformableDSReLU.setup_context(ctx, (x, slope, negative_slope, positive), y)
        return y

    backward = _TransformableDSReLU.backward


def dsrelu(
    x: Tensor, slope: Tensor, negative_slope: float = 1.0, *, positive_slope: bool = False
) -> Tensor:
    """DSReLU at a given slope: ``slope * x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Args:
        x: input tensor (any shape and layout, floating point).
        slope: 0-dim tensor with the positive-side slope on ``x``'s device; it is used in
            ``x``'s opmath dtype (float32 for float16/bfloat16 inputs, see
            :func:`opmath_dtype`), as ``negative_slope`` is.
        negative_slope: slope for ``x <= 0``.
        positive_slope: the caller guarantees ``slope > 0`` (DSReLU's always is; nothing
            reads it to check): the faster eager kernels run, and ``y`` is saved instead
            of ``x`` where ``negative_slope >= 0``. Otherwise the formula's own ops run.

    Inside ``torch.compile`` (and when ``slope`` needs a gradient) this is the plain
    formula, which the compiler fuses with its neighbours.
    """
    if torch.compiler.is_compiling() or slope.requires_grad:
        return dsrelu_formula(x, slope, negative_slope)
    positive = positive_slope and not slope.dim()  # (the fast kernels take a 0-dim slope)
    try:
        return _DSReLUFunction.apply(x, slope, negative_slope, positive)
    except RuntimeError as error:  # under torch.func, raised before anything ran
        if "setup_context" not in str(error):
            raise
    return _TransformableDSReLU.apply(x, slope, negative_slope, positive)
