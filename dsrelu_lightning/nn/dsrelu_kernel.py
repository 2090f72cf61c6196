"""DSReLU's elementwise kernels: ``y = s * x`` for ``x > 0``, ``negative_slope * x`` otherwise.

:func:`dsrelu` runs a custom autograd Function that saves one tensor for backward, its input
``x``, as ``F.leaky_relu`` does (never its output, which networks may change in place); ``s``
is a 0-dim tensor on ``x``'s device, never read on the host. Two kernels give the same
values: a ``torch.compile``d one (one fused pass each way, compiled once per
:data:`KernelKey`) for large contiguous tensors, and an exact eager one for the rest,
``DSRELU_KERNEL=eager``, and after a compile failure (warned once). docs/performance.md says
how each works and what it costs.
"""

from __future__ import annotations

import os
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "COMPILED_KERNEL_MIN_NUMEL",
    "KernelKey",
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
# What dynamo raises under fullgraph=True once a code object reached its recompile limit
# (FailOnCacheLimitHit in earlier torch releases).
_RECOMPILE_LIMIT_ERRORS = ("FailOnRecompileLimitHit", "FailOnCacheLimitHit")
_MODES = ("auto", "compiled", "eager")


def dsrelu_formula(x: Tensor, slope: Tensor, negative_slope: float | Tensor) -> Tensor:
    """``x * where(x > 0, slope, negative_slope)``: the reference, and the compiled kernel.

    The compiled kernel receives ``negative_slope`` as a 0-dim tensor in ``x``'s dtype
    (a Python float would be a constant of the graph: one compilation per value).
    """
    return x * torch.where(x > 0, slope, negative_slope)


def dsrelu_gradient_formula(
    grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float | Tensor
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


KernelKey = tuple[int, torch.dtype, str, str, int]
"""(0 forward / 1 backward, dtype, device type, grad mode, rank of the input).

The grad mode is ``"autograd"`` for an input that requires grad (training),
``"no_grad"`` for one that does not (Lightning's validation inside ``fit``, and the
backward kernel), ``"inference"`` under ``torch.inference_mode`` (``validate``,
``test``, ``predict``): dynamo guards on ``requires_grad`` and on inference tensors.
"""


def _own_copy(formula: Callable[..., Tensor], key: KernelKey) -> Callable[..., Tensor]:
    """``formula`` with a code object of its own, named after ``key``.

    Dynamo keeps its compiled graphs, and counts recompilations against
    ``recompile_limit``, per code object: one compiled function per key needs a copy.
    """
    _, dtype, device, mode, rank = key
    name = f"{formula.__name__}_{str(dtype).removeprefix('torch.')}_{device}_{mode}_{rank}d"
    code = formula.__code__.replace(co_name=name)
    return types.FunctionType(code, formula.__globals__, name, None, None)


class _KernelState:
    """Process-wide kernel choice, the compiled kernels (created on first use per key),
    their fallbacks, and cached ``negative_slope`` tensors."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = self._mode_from_env()
        self.failed_devices: set[str] = set()
        self.eager_keys: set[KernelKey] = set()
        self.kernels: dict[KernelKey, Callable[..., Tensor]] = {}
        self.constants: dict[tuple[Any, ...], Tensor] = {}

    @staticmethod
    def _mode_from_env() -> str:
        mode = os.environ.get("DSRELU_KERNEL", "auto").strip().lower()
        return mode if mode in _MODES else "auto"

    def kernel(self, key: KernelKey) -> Callable[..., Tensor]:
        """The compiled forward (``key[0]`` 0) or backward (1) kernel for ``key``."""
        kernel = self.kernels.get(key)
        if kernel is None:
            with self.lock:
                kernel = self.kernels.get(key)
                if kernel is None:
                    formula = (dsrelu_formula, dsrelu_gradient_formula)[key[0]]
                    kernel = torch.compile(_own_copy(formula, key), dynamic=True, fullgraph=True)
                    self.kernels[key] = kernel
        return kernel

    def constant(self, value: float, like: Tensor) -> Tensor:
        """``value`` as a 0-dim tensor in ``like``'s dtype and device (cached: no host
        copy per call), created in the current inference mode as the slope is."""
        # float.hex tells -0.0 from 0.0, and a NaN matches itself.
        key = (float(value).hex(), like.dtype, like.device, torch.is_inference_mode_enabled())
        tensor = self.constants.get(key)
        if tensor is None:
            tensor = torch.tensor(value, dtype=like.dtype, device=like.device)
            self.constants[key] = tensor
        return tensor

    def eager_for_key(self, key: KernelKey, error: Exception) -> None:
        """``key`` recompiled past dynamo's ``recompile_limit``: eager for it from now on."""
        self.eager_keys.add(key)
        index, dtype, device, mode, rank = key
        what = "backward" if index else "forward"
        warnings.warn(
            f"DSReLU's compiled {what} kernel for {rank}-D {str(dtype)[6:]} tensors on "
            f"{device} ({mode}) reached torch._dynamo's recompile_limit "
            f"({_recompile_limit()}; {type(error).__name__}): those calls "
            "use the eager kernel from now on (same results, slower); other dtypes and "
            "modes stay compiled.",
            RuntimeWarning,
            stacklevel=4,
        )

    def disable_device(self, device: str, error: Exception) -> None:
        """Compiling or running a compiled kernel failed on ``device``: eager there."""
        self.failed_devices.add(device)
        warnings.warn(
            f"compiling or running DSReLU's fused kernel on {device} failed "
            f"({type(error).__name__}: {error}); using the eager kernel on {device} from "
            "now on (same results, slower). Set DSRELU_KERNEL=eager to skip the attempt.",
            RuntimeWarning,
            stacklevel=4,
        )


_STATE = _KernelState()


def set_kernel_mode(mode: str) -> None:
    """Choose the kernel: ``"auto"`` (default; env ``DSRELU_KERNEL``), ``"compiled"``, ``"eager"``.

    ``"auto"`` compiles for contiguous CPU/CUDA tensors of at least
    :data:`COMPILED_KERNEL_MIN_NUMEL` elements; ``"compiled"`` drops the size limit
    (tests); ``"eager"`` never compiles. Resets previous fallbacks (failed devices,
    keys past the recompile limit).
    """
    if mode not in _MODES:
        raise ValueError(f"DSReLU kernel mode must be one of {_MODES}, got {mode!r}")
    _STATE.mode = mode
    _STATE.failed_devices.clear()
    _STATE.eager_keys.clear()


def _use_compiled(first: Tensor, *others: Tensor) -> bool:
    if _STATE.mode == "eager" or first.device.type in _STATE.failed_devices:
        return False
    if _STATE.mode == "auto" and first.numel() < COMPILED_KERNEL_MIN_NUMEL:
        return False
    return (
        first.device.type in _COMPILABLE_DEVICES
        and first.is_floating_point()
        and first.is_contiguous()
        and all(t.is_contiguous() and t.shape == first.shape for t in others)
    )


def _recompile_limit() -> object:
    config = torch._dynamo.config
    return getattr(config, "recompile_limit", getattr(config, "cache_size_limit", "?"))


def _grad_mode(x: Tensor) -> str:
    if torch.is_inference_mode_enabled():
        return "inference"
    return "autograd" if x.requires_grad else "no_grad"


def _run(
    index: int,
    eager: Callable[..., Tensor],
    tensors: tuple[Tensor, ...],
    slope: Tensor,
    negative_slope: float,
) -> Tensor:
    """Run kernel ``index`` (0 forward, 1 backward) compiled on flat views, else eagerly."""
    first = tensors[0]
    if _use_compiled(*tensors):
        key = (index, first.dtype, first.device.type, _grad_mode(first), first.dim())
        if key not in _STATE.eager_keys:
            try:
                negative = _STATE.constant(negative_slope, first)
                flat = [t.view(-1) for t in tensors]
                return _STATE.kernel(key)(*flat, slope, negative).view(first.shape)
            except torch.cuda.OutOfMemoryError:
                raise  # not a compiler problem; the eager kernel needs more memory still
            except Exception as error:
                if type(error).__name__ in _RECOMPILE_LIMIT_ERRORS:
                    _STATE.eager_for_key(key, error)
                else:  # no C++ compiler or Triton, an inductor bug, ...
                    _STATE.disable_device(first.device.type, error)
    return eager(*tensors, slope, negative_slope)


class _DSReLUFunction(torch.autograd.Function):
    """DSReLU with a one-tensor backward state (``y`` or ``x``, as LeakyReLU saves ``x``).

    Written with ``forward(ctx, ...)`` rather than ``setup_context``: ``apply`` then skips
    binding the arguments through ``inspect.signature`` on every call.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, slope: Tensor, negative_slope: float) -> Tensor:
        y = _run(0, dsrelu_forward_eager, (x,), slope, negative_slope)
        # The input, as F.leaky_relu saves it: networks write into an activation's output
        # in place (torchvision's MobileNetV3 runs Dropout(inplace=True) after Hardswish).
        ctx.save_for_backward(x)
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


def _warm_up_shape() -> tuple[int, int, int, int]:
    """4-D like a convolution's activations, at least the compiled-kernel size, every size
    distinct and above 1: dynamo then neither specialises a size to 1 nor assumes two
    sizes equal, so any later 4-D activation (rank is part of the key) reuses the graph."""
    return (2, 3, 5, -(-COMPILED_KERNEL_MIN_NUMEL // 30))


def warm_up(device: torch.device | str, dtype: torch.dtype) -> None:
    """Compile the kernels a training run uses, for ``device`` and ``dtype``, now.

    Otherwise the first large DSReLU call compiles them (seconds), e.g. inside the first
    timed training epoch. Compiles, for 4-D inputs (a convolution's activations), the
    forward and backward kernels of a training step, the forward kernel without grad
    (Lightning's validation inside ``fit``) and under ``torch.inference_mode``
    (``validate``, ``test``). Does nothing where the eager kernel would run anyway.
    """
    shape = _warm_up_shape()
    x = torch.zeros(shape, device=device, dtype=dtype, requires_grad=True)
    if not _use_compiled(x):
        return
    with torch.enable_grad():
        y = dsrelu(x, torch.ones((), device=device, dtype=dtype), 1.0)
        y.backward(torch.ones_like(y))
    with torch.no_grad():
        dsrelu(x.detach(), torch.ones((), device=device, dtype=dtype), 1.0)
    with torch.inference_mode():
        slope = torch.ones((), device=device, dtype=dtype)
        dsrelu(torch.zeros(shape, device=device, dtype=dtype), slope, 1.0)
