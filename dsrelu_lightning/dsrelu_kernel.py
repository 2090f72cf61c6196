"""DSReLU's elementwise kernels: few passes over memory, saving what LeakyReLU saves.

``y = s * x`` for ``x > 0`` and ``negative_slope * x`` otherwise, with ``s`` a 0-dim
tensor on ``x``'s device (never read on the host). :func:`dsrelu` runs it through a
custom autograd Function that saves ONE tensor of ``x``'s size for backward: the output
``y`` when ``negative_slope >= 0`` (its sign is ``x``'s sign), else ``x``; i.e. no more
bytes than ``F.leaky_relu`` (which saves ``x``), and the saved ``y`` is usually the same
tensor the next layer saves anyway.

Two kernels compute the same values, bit for bit:

- compiled: :func:`dsrelu_formula` through ``torch.compile`` (inductor: C++/OpenMP on
  CPU, Triton on CUDA), one fused pass each way; shapes dynamic and the slope a tensor
  input, so it compiles once per dtype and device and never as the slope changes. Used
  for contiguous tensors of at least :data:`COMPILED_KERNEL_MIN_NUMEL` elements, below
  which a compiled call's fixed cost (~25 us on CPU) outweighs its savings.
- eager: a few aten ops without boolean masks or ``torch.where`` (slow on CPU), exact
  by construction: ``addcmul(neg * min(x, 0), relu(x), s)`` adds an exact zero to the
  one non-zero product. Used below the size limit, for non-contiguous tensors, with
  ``DSRELU_KERNEL=eager``, or after a compilation failure (no C++ compiler or Triton;
  warned once).

Saving the output means an in-place change to ``y`` before backward raises autograd's
usual version-counter error (as for ``nn.ReLU``). Where ``s * x`` underflows to zero
(``0 < x`` below about ``1e-45 / s`` in float32) the gradient is ``negative_slope``.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "COMPILED_KERNEL_MIN_NUMEL",
    "dsrelu",
    "dsrelu_backward_eager",
    "dsrelu_formula",
    "dsrelu_forward_eager",
    "dsrelu_gradient_formula",
    "set_kernel_mode",
    "warm_up",
]

COMPILED_KERNEL_MIN_NUMEL = 1 << 17
"""Smaller tensors run the eager kernel (measured crossover on CPU, docs/performance.md)."""

_COMPILABLE_DEVICES = ("cpu", "cuda")
_MODES = ("auto", "compiled", "eager")


def dsrelu_formula(x: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
    """``x * where(x > 0, slope, negative_slope)``: the reference, and the compiled kernel."""
    return x * torch.where(x > 0, slope, negative_slope)


def dsrelu_gradient_formula(
    grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float
) -> Tensor:
    """Input gradient from ``saved`` (``x``, or ``y`` whose sign is ``x``'s)."""
    return grad * torch.where(saved > 0, slope, negative_slope)


def _negative_part(t: Tensor, negative_slope: float) -> Tensor:
    return t if negative_slope == 1.0 else t.mul_(negative_slope)


def dsrelu_forward_eager(x: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
    """:func:`dsrelu_formula` in three aten passes: ``neg*min(x,0) + relu(x)*s``."""
    negative = _negative_part(torch.clamp_max(x, 0), negative_slope)
    return torch.addcmul(negative, torch.relu(x), slope)


def dsrelu_backward_eager(
    grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float
) -> Tensor:
    """:func:`dsrelu_gradient_formula` in three aten passes (exact for finite gradients)."""
    positive = torch.ops.aten.threshold_backward(grad, saved, 0)  # grad where saved > 0
    return torch.addcmul(_negative_part(grad - positive, negative_slope), positive, slope)


class _KernelState:
    """Process-wide kernel choice and the compiled kernels (created on first use)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = self._mode_from_env()
        self.failed = False
        self.kernels: dict[int, Callable[..., Tensor]] = {}

    @staticmethod
    def _mode_from_env() -> str:
        mode = os.environ.get("DSRELU_KERNEL", "auto").strip().lower()
        return mode if mode in _MODES else "auto"

    def kernel(self, index: int) -> Callable[..., Tensor]:
        """The compiled forward (``index`` 0) or backward (1) kernel."""
        if index not in self.kernels:
            with self.lock:
                if index not in self.kernels:
                    formula = (dsrelu_formula, dsrelu_gradient_formula)[index]
                    self.kernels[index] = torch.compile(formula, dynamic=True, fullgraph=True)
        return self.kernels[index]

    def disable_after(self, error: Exception) -> None:
        self.failed = True
        warnings.warn(
            f"DSReLU's compiled kernel is unavailable ({type(error).__name__}: {error}); "
            "using the eager kernel (same results, slower). Set DSRELU_KERNEL=eager to "
            "skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )


_STATE = _KernelState()


def set_kernel_mode(mode: str) -> None:
    """Choose the kernel: ``"auto"`` (default; env ``DSRELU_KERNEL``), ``"compiled"``, ``"eager"``.

    ``"auto"`` compiles for contiguous CPU/CUDA tensors of at least
    :data:`COMPILED_KERNEL_MIN_NUMEL` elements; ``"compiled"`` drops the size limit
    (tests); ``"eager"`` never compiles. Resets a previous compilation failure.
    """
    if mode not in _MODES:
        raise ValueError(f"DSReLU kernel mode must be one of {_MODES}, got {mode!r}")
    _STATE.mode = mode
    _STATE.failed = False


def _use_compiled(first: Tensor, *others: Tensor) -> bool:
    if _STATE.mode == "eager" or _STATE.failed:
        return False
    if _STATE.mode == "auto" and first.numel() < COMPILED_KERNEL_MIN_NUMEL:
        return False
    return (
        first.device.type in _COMPILABLE_DEVICES
        and first.is_floating_point()
        and first.is_contiguous()
        and all(t.is_contiguous() and t.shape == first.shape for t in others)
    )


def _run(
    index: int, eager: Callable[..., Tensor], tensors: tuple[Tensor, ...], *args: Any
) -> Tensor:
    """Run kernel ``index`` (0 forward, 1 backward) compiled on flat views, else eagerly."""
    if _use_compiled(*tensors):
        try:
            flat = [t.view(-1) for t in tensors]
            return _STATE.kernel(index)(*flat, *args).view(tensors[0].shape)
        except Exception as error:  # no compiler/Triton: fall back once, for good
            _STATE.disable_after(error)
    return eager(*tensors, *args)


class _DSReLUFunction(torch.autograd.Function):
    """DSReLU with a one-tensor backward state (``y`` or ``x``, as LeakyReLU saves ``x``).

    Written with ``forward(ctx, ...)`` rather than ``setup_context``: ``apply`` then skips
    binding the arguments through ``inspect.signature`` on every call.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
        y = _run(0, dsrelu_forward_eager, (x,), slope, negative_slope)
        # y > 0 exactly where x > 0 when the negative side does not flip signs.
        ctx.save_for_backward(y if negative_slope >= 0 else x)
        ctx.slope = slope
        ctx.negative_slope = negative_slope
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (saved,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: keep the backward differentiable
            grad_input = dsrelu_gradient_formula(grad, saved, ctx.slope, ctx.negative_slope)
        else:
            grad_input = _run(
                1, dsrelu_backward_eager, (grad, saved), ctx.slope, ctx.negative_slope
            )
        return grad_input, None, None


def dsrelu(x: Tensor, slope: Tensor, negative_slope: float = 1.0) -> Tensor:
    """DSReLU at a given slope: ``slope * x`` for ``x > 0``, ``negative_slope * x`` otherwise.

    Args:
        x: input tensor (any shape, floating point).
        slope: 0-dim tensor with the positive-side slope, in ``x``'s dtype and device.
        negative_slope: slope for ``x <= 0``.

    Inside ``torch.compile`` (and when ``slope`` needs a gradient) this is the plain
    formula, which the compiler fuses with its neighbours; otherwise the custom autograd
    Function with the kernels described in the module docstring.
    """
    if torch.compiler.is_compiling() or slope.requires_grad:
        return dsrelu_formula(x, slope, negative_slope)
    return _DSReLUFunction.apply(x, slope, negative_slope)


def warm_up(device: torch.device | str, dtype: torch.dtype) -> None:
    """Compile the forward and backward kernels for ``device`` and ``dtype`` now.

    Otherwise the first large DSReLU call compiles them (seconds), e.g. inside the first
    timed training epoch. Does nothing where the eager kernel would run anyway.
    """
    x = torch.zeros(COMPILED_KERNEL_MIN_NUMEL, device=device, dtype=dtype, requires_grad=True)
    if _use_compiled(x):
        with torch.enable_grad():
            y = dsrelu(x, torch.ones((), device=device, dtype=dtype), 1.0)
            y.backward(torch.ones_like(y))
