"""OPT-IN (``DSRELU_KERNEL=fused``): DSReLU's one-pass CPU kernels, built by TorchInductor.

This module rests on PRIVATE torch APIs and is never imported unless the fused mode is
chosen: ``torch._inductor.compile`` and ``torch._inductor.config.patch``, ``make_fx``
placeholders' ``meta["val"]``, the compiled module's ``current_callable`` and the layout
of its generated C++ source (a regex finds the kernel and its argument order, which is
then called with raw pointers), ``torch._C._len_torch_dispatch_stack`` and
``torch._C._are_functorch_transforms_active``. A torch release may change any of them:
every kernel is checked bit for bit against the formula when built, and a build that
fails for any reason leaves that kernel's calls on the exact eager kernel, with one
warning. Only torch 2.14 has been tested.

A kernel is :func:`~dsrelu_lightning.nn.dsrelu_eager.dsrelu_formula` (forward) or
:func:`~dsrelu_lightning.nn.dsrelu_eager.dsrelu_gradient_formula` (backward) traced over
1-D inputs of symbolic length and compiled once per :data:`KernelKey`. It walks storage,
so one kernel serves every dense tensor of its dtype (any shape, rank or layout), slope
and grad mode. CPU only: CUDA uses the eager kernel until this path has run on a GPU.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dsrelu_lightning.nn.dsrelu_eager import (
    dsrelu_formula,
    dsrelu_gradient_formula,
    opmath_dtype,
    same_bits,
)

__all__ = ["MIN_NUMEL", "PARALLEL_MIN_NUMEL", "KernelKey", "backward", "forward", "warm_up"]

MIN_NUMEL = 2
"""The fewest elements a fused kernel takes (``make_fx`` specialises sizes 0 and 1)."""

PARALLEL_MIN_NUMEL = 1 << 15
"""From this many elements a kernel runs parallel over torch's threads, below it serially:
where ATen's elementwise kernels split (``at::internal::GRAIN_SIZE``)."""

KernelKey = tuple[int, torch.dtype, int]
"""(0 forward / 1 backward, input dtype, threads: 1 for the serial kernel, else the torch
thread count the parallel kernel was generated for)."""

# float64 stays eager: make_fx turns its 0-dim CPU slope tensors into Python scalars,
# which inductor's scalar pass rejects.
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_TRACE_NUMEL = 4099  # the traced length: any size above 1


class _Plan:
    """The kernels for one kind of call (dtype, threads, negative_slope, inference mode);
    ``None`` for a kernel that failed to build (the eager kernel runs)."""

    __slots__ = ("backward", "forward", "negative", "opmath")

    def __init__(self, forward: Any, backward: Any, negative: Tensor, opmath: torch.dtype):
        self.forward, self.backward = forward, backward
        self.negative = negative  # negative_slope as a 0-dim opmath tensor
        self.opmath = opmath


class _State:
    """The built kernels, the keys that failed to build, and the plans using them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kernels: dict[KernelKey, Callable[..., Tensor]] = {}
        self.failed: dict[KernelKey, str] = {}
        self.plans: dict[tuple[Any, ...], _Plan] = {}

    def forget_kernels(self) -> None:
        """Drop every kernel and failure (tests: as in a new process)."""
        self.kernels.clear()
        self.failed.clear()
        self.plans.clear()


_STATE = _State()


def _is_dense(t: Tensor) -> bool:
    """Whether ``t``'s elements fill ``numel`` consecutive storage slots, in any order."""
    if t.is_contiguous():
        return True
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return True
    expected = 1
    dims = zip(t.shape, t.stride(), strict=True)
    for stride, size in sorted((stride, size) for size, stride in dims if size != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_order(a: Tensor, b: Tensor) -> bool:
    """Whether dense ``a`` and ``b`` (one shape) hold each element at the same flat offset
    (a size-1 dimension's stride is arbitrary)."""
    if a.stride() == b.stride():
        return True
    dims = zip(a.shape, a.stride(), b.stride(), strict=True)
    return all(x == y for size, x, y in dims if size != 1)


def _threads(t: Tensor) -> int:
    """The ``threads`` of the kernel that serves ``t`` (see :data:`KernelKey`)."""
    return torch.get_num_threads() if t.numel() >= PARALLEL_MIN_NUMEL else 1


def _threading(threads: int) -> contextlib.AbstractContextManager[Any]:
    """Inductor settings that make a kernel serial (1) or parallel over ``threads``,
    whatever size hint a cached compilation of the same graph had."""
    return torch._inductor.config.patch({"cpp.threads": threads, "cpp.min_chunk_size": 1})


def _check_vector(dtype: torch.dtype, finite: bool) -> Tensor:
    special = [-3.0, -1e-30, -0.0, 0.0, 1e-30, 1e-40, -1e-40, 0.5, 3.0]
    special += [] if finite else [float("-inf"), float("inf"), float("nan")]
    ramp = torch.linspace(-4.0, 4.0, 997, dtype=torch.float64)
    return torch.cat([torch.tensor(special, dtype=torch.float64), ramp]).to(dtype)


def _build(key: KernelKey) -> Callable[..., Tensor]:
    """Trace, compile and check one kernel (raises on any failure)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    index, dtype, threads = key
    opmath = opmath_dtype(dtype)
    formula = (dsrelu_formula, dsrelu_gradient_formula)[index]
    tensors = [torch.zeros(_TRACE_NUMEL, dtype=dtype) for _ in range(index + 1)]
    scalars = [torch.ones((), dtype=opmath) for _ in range(2)]
    graph = make_fx(formula, tracing_mode="symbolic")(*tensors, *scalars)
    inputs = [node.meta["val"] for node in graph.graph.nodes if node.op == "placeholder"]
    with _threading(threads):
        compiled = torch._inductor.compile(graph, inputs)
    direct = _direct_call(compiled)
    if direct is None:
        raise RuntimeError("inductor's generated code is not the single C++ kernel expected")
    _check(direct, index, dtype)
    return direct


# The one kernel call in inductor's generated ``call``: ``cpp_fused_...(arg0_1, ..., buf0, s9)``.
_KERNEL_CALL = re.compile(r"^\s*(cpp_fused_\w+)\(([\w, ]*)\)\s*$", re.MULTILINE)


def _direct_call(compiled: Any) -> Callable[..., Tensor] | None:
    """The C++ kernel inductor generated, called with an output made by ``empty_like``
    (a dense tensor's strides kept), without the generated ``call``'s and AOTAutograd's
    wrappers; None unless the code has the expected shape: one kernel taking the inputs
    in order, the output, then the length."""
    call = getattr(compiled, "current_callable", None)
    module = inspect.getmodule(call) if callable(call) else None
    path = getattr(module, "__file__", None)
    if path is None:
        return None
    with open(path, encoding="utf-8") as source:
        calls = _KERNEL_CALL.findall(source.read())
    if len(calls) != 1:
        return None
    name, arguments = calls[0]
    *inputs, output, length = (argument.strip() for argument in arguments.split(","))
    expected = [f"arg{position}_1" for position in range(len(inputs))]
    kernel = getattr(module, name, None)
    if inputs != expected or output != "buf0" or not re.fullmatch(r"s\d+", length):
        return None
    if not callable(kernel):
        return None

    def run(*tensors: Tensor) -> Tensor:
        out = torch.empty_like(tensors[0])
        kernel(*tensors, out, out.numel())
        return out

    run.generated_code = path  # type: ignore[attr-defined]  # (tests read it)
    return run


def _check(kernel: Callable[..., Tensor], index: int, dtype: torch.dtype) -> None:
    """Raise unless ``kernel`` gives the formula's bits on a fixed vector: slopes bfloat16
    cannot represent, a negative one, signed zeros, subnormals, and for the forward
    infinities and NaN (the gradient at a NaN input is unspecified)."""
    opmath = opmath_dtype(dtype)
    slope = torch.tensor(1.3, dtype=opmath)
    x = _check_vector(dtype, finite=bool(index))
    for negative_slope in (0.3, -0.7):
        negative = torch.tensor(negative_slope, dtype=opmath)
        if index == 0:
            got, expected = kernel(x, slope, negative), dsrelu_formula(x, slope, negative_slope)
        else:
            grad = x.flip(0)
            got = kernel(grad, x, slope, negative)
            expected = dsrelu_gradient_formula(grad, x, slope, negative_slope)
        if not same_bits(got, expected):
            raise RuntimeError("the compiled kernel's bits differ from the formula's")


def _kernel(index: int, t: Tensor) -> Callable[..., Tensor] | None:
    """The fused kernel for ``t`` (built on first use), or None for the eager kernel."""
    key = (index, t.dtype, _threads(t))
    kernel = _STATE.kernels.get(key)
    if kernel is not None or key in _STATE.failed:
        return kernel
    with _STATE.lock:
        if key not in _STATE.kernels and key not in _STATE.failed:
            try:
                with torch.inference_mode(False), torch.no_grad():
                    _STATE.kernels[key] = _build(key)
            except Exception as error:  # no C++ compiler, an inductor change, ...
                _STATE.failed[key] = f"{type(error).__name__}: {error}"
                _warn_failed(key)
    return _STATE.kernels.get(key)


def _warn_failed(key: KernelKey) -> None:
    index, dtype, _ = key
    what = ("forward", "backward")[index]
    warnings.warn(
        f"building DSReLU's opt-in fused {what} kernel for {str(dtype)[6:]} failed "
        f"({_STATE.failed[key].splitlines()[0][:300]}); those calls use the eager kernel "
        "(same results). Unset DSRELU_KERNEL to skip the attempt.",
        RuntimeWarning,
        stacklevel=6,
    )


def _plan(t: Tensor, negative_slope: float) -> _Plan | None:
    """The plan for a DSReLU call on ``t`` (made, its kernels built, on first use); None
    where the eager kernel runs: other devices and dtypes, fewer than :data:`MIN_NUMEL`
    elements, tensor subclasses, under a dispatch mode (a FakeTensor's or a tracer's
    tensors have no memory to read) and under ``torch.func`` transforms."""
    if t.numel() < MIN_NUMEL or t.device.type != "cpu" or t.dtype not in _DTYPES:
        return None
    if type(t) is not Tensor or torch._C._len_torch_dispatch_stack():
        return None
    if torch._C._are_functorch_transforms_active():
        return None
    # float.hex tells -0.0 from 0.0, and a NaN matches itself.
    inference = torch.is_inference_mode_enabled()
    key = (t.dtype, _threads(t), float(negative_slope).hex(), inference)
    plan = _STATE.plans.get(key)
    if plan is None:
        opmath = opmath_dtype(t.dtype)
        # Created in the current inference mode, as DSReLU's slope is.
        negative = torch.tensor(negative_slope, dtype=opmath)
        plan = _STATE.plans[key] = _Plan(_kernel(0, t), _kernel(1, t), negative, opmath)
    return plan


def _usable_slope(slope: Tensor, plan: _Plan) -> Tensor | None:
    """``slope`` as the kernels read it (0-dim, CPU, opmath), or None where it cannot be."""
    if slope.dim() or slope.device.type != "cpu" or type(slope) is not Tensor:
        return None
    return slope if slope.dtype == plan.opmath else slope.to(plan.opmath)


def forward(x: Tensor, slope: Tensor, negative_slope: float) -> Tensor | None:
    """DSReLU of ``x`` in one pass with ``x``'s strides; None where the eager kernel must
    run (the raw-pointer kernel takes only a dense plain CPU tensor and a 0-dim slope)."""
    plan = _plan(x, negative_slope)
    if plan is None or plan.forward is None or not _is_dense(x):
        return None
    wide = _usable_slope(slope, plan)
    return None if wide is None else plan.forward(x, wide, plan.negative)


def backward(grad: Tensor, saved: Tensor, slope: Tensor, negative_slope: float) -> Tensor | None:
    """The input gradient in one pass; None where the eager kernel must run: as for
    :func:`forward`, and unless ``grad`` matches ``saved`` in dtype, shape and element
    order (the same dispatch-mode and subclass guards as the forward's)."""
    plan = _plan(saved, negative_slope)
    if plan is None or plan.backward is None or type(grad) is not Tensor:
        return None
    if grad.dtype != saved.dtype or grad.shape != saved.shape or grad.device != saved.device:
        return None
    if not (_is_dense(grad) and _same_order(grad, saved)):
        return None
    wide = _usable_slope(slope, plan)
    return None if wide is None else plan.backward(grad, saved, wide, plan.negative)


def warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """Build ``dtype``'s forward and backward kernels now: serial ones, and parallel ones
    on several threads. Nothing where the eager kernel runs anyway (CUDA, float64)."""
    if device.type != "cpu":
        return
    for numel in (MIN_NUMEL, PARALLEL_MIN_NUMEL):
        if _plan(torch.empty(numel, dtype=dtype), 1.0) is None:
            return
