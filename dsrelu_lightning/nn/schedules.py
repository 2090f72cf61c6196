"""DSReLU's slope schedules ``s(t)``: the built-ins by name, the user's own by import path.

A schedule is a function ``fn(t, initial_slope, final_slope, steepness) -> slope`` of training
progress ``t`` in [0, 1], with ``initial_slope = tan(initial_angle)`` (``a``) and
``final_slope = tan(final_angle)`` (``b``). The built-ins work on Python floats and on tensors
(elementwise, on the tensor's device, differentiable), so DSReLU computes its slope on the
device with no host sync. A user's function is called with ``t`` a 0-dim tensor: write it with
torch operations (``torch.exp``, not ``math.exp``; ``torch.where``, not ``if t < 0.5``) to keep
it on the device and free of recompilations under ``torch.compile``.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dsrelu_lightning.errors import ConfigurationError

__all__ = [
    "SCHEDULES",
    "ScheduleFn",
    "angle_slope",
    "check_schedule",
    "dsrelu_slope",
    "finite_argument",
    "resolve_schedule",
]

ScheduleFn = Callable[[float | Tensor, float, float, float], float | Tensor]
"""``fn(t, initial_slope, final_slope, steepness) -> slope``."""

CHECK_POINTS = 101
"""A schedule is checked at ``t = 0, 0.01, ..., 1``: finite and > 0 at every point."""


def dsrelu_slope(
    t: float | Tensor, initial_slope: float, final_slope: float, steepness: float
) -> float | Tensor:
    """The paper's sigmoid schedule: ``a + (b - a) / (1 + exp(-k (t - 0.5)))``.

    Works on Python floats and on tensors (elementwise, differentiable).
    """
    if isinstance(t, Tensor):
        gate = torch.sigmoid(steepness * (t - 0.5))
    else:
        gate = 1.0 / (1.0 + math.exp(-steepness * (t - 0.5)))
    return initial_slope + (final_slope - initial_slope) * gate


def linear_schedule(t: float | Tensor, a: float, b: float, steepness: float) -> float | Tensor:
    """``a + (b - a) t``."""
    return a + (b - a) * t


def cosine_schedule(t: float | Tensor, a: float, b: float, steepness: float) -> float | Tensor:
    """``a + (b - a) (1 - cos(pi t)) / 2``: flat at both ends."""
    cos = torch.cos(math.pi * t) if isinstance(t, Tensor) else math.cos(math.pi * t)
    return a + (b - a) * (1 - cos) / 2


def exponential_schedule(t: float | Tensor, a: float, b: float, steepness: float) -> float | Tensor:
    """``a (b / a)^t``: geometric from ``a`` to ``b`` (the same factor every step of ``t``)."""
    return a * (b / a) ** t


def step_schedule(t: float | Tensor, a: float, b: float, steepness: float) -> float | Tensor:
    """``a`` until ``t = 0.5``, then ``b``."""
    late = (t >= 0.5).to(t.dtype) if isinstance(t, Tensor) else float(t >= 0.5)
    return a + (b - a) * late


def constant_schedule(t: float | Tensor, a: float, b: float, steepness: float) -> float | Tensor:
    """``a`` at every ``t`` (DSReLU's ``constant_slope`` sets ``a``)."""
    return a + 0 * t


def reverse_sigmoid_schedule(
    t: float | Tensor, a: float, b: float, steepness: float
) -> float | Tensor:
    """The paper's sigmoid run backwards: from ``b`` to ``a``."""
    return dsrelu_slope(t, b, a, steepness)


SCHEDULES: dict[str, ScheduleFn] = {
    "sigmoid": dsrelu_slope,
    "linear": linear_schedule,
    "cosine": cosine_schedule,
    "exponential": exponential_schedule,
    "step": step_schedule,
    "constant": constant_schedule,
    "reverse_sigmoid": reverse_sigmoid_schedule,
}
"""The built-in schedules by name; ``sigmoid`` is the paper's (and the default)."""


def finite_argument(name: str, value: Any) -> float:
    """``value`` as a finite float, or a ConfigurationError naming the argument."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigurationError(f"DSReLU {name}={value!r} must be a finite number")
    return number


def angle_slope(name: str, degrees: float) -> float:
    """``tan(degrees)``, or a ConfigurationError unless ``degrees`` lies inside (0, 90)."""
    if not 0.0 < degrees < 90.0:
        raise ConfigurationError(
            f"DSReLU {name}={degrees!r} must lie strictly inside (0, 90) degrees"
        )
    return math.tan(math.radians(degrees))


def _import(path: str) -> ScheduleFn:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # "mypkg.schedules.fn" from the working directory
    module_name, _, attribute = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"cannot import DSReLU schedule {path!r} ({_one_line(exc)}); give one of "
            f"{', '.join(SCHEDULES)} or an import path (module.function) importable from the "
            "working directory or PYTHONPATH"
        ) from None
    if not callable(function):
        raise ConfigurationError(
            f"DSReLU schedule {path!r} is a {type(function).__name__}, not a function "
            "fn(t, initial_slope, final_slope, steepness) -> slope"
        )
    return function


def resolve_schedule(spec: str | ScheduleFn) -> tuple[str, ScheduleFn]:
    """The name and the function of ``spec``: a built-in name (case-insensitive), an import
    path ``module.function``, or (from Python) the function itself."""
    if callable(spec):
        return f"{spec.__module__}.{spec.__qualname__}", spec
    if not isinstance(spec, str):
        raise ConfigurationError(f"DSReLU schedule must be a name or a function, got {spec!r}")
    name = spec.strip()
    if name.lower() in SCHEDULES:
        return name.lower(), SCHEDULES[name.lower()]
    if "." in name.strip("."):
        return name, _import(name)
    raise ConfigurationError(
        f"unknown DSReLU schedule {spec!r}; valid: {', '.join(SCHEDULES)}, or an import path "
        "to your own function fn(t, initial_slope, final_slope, steepness) -> slope"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@functools.lru_cache(maxsize=256)
def check_schedule(
    fn: ScheduleFn, name: str, initial_slope: float, final_slope: float, steepness: float
) -> tuple[float, ...]:
    """The slopes ``fn`` gives at ``t = 0, 0.01, ..., 1`` (``t`` a float64 0-dim tensor).

    Raises:
        ConfigurationError: where ``fn`` fails, returns other than one number, or gives a
            slope that is not finite and > 0.
    """
    values = []
    for i in range(CHECK_POINTS):
        t = i / (CHECK_POINTS - 1)
        try:
            progress = torch.tensor(t, dtype=torch.float64)
            value = torch.as_tensor(fn(progress, initial_slope, final_slope, steepness))
            slope = float(value) if value.numel() == 1 else math.nan
        except Exception as exc:  # the user's function: any failure is theirs to fix
            raise ConfigurationError(
                f"DSReLU schedule {name!r} failed at t={t:g}: {_one_line(exc)}; a schedule is "
                "called as fn(t, initial_slope, final_slope, steepness) with t a 0-dim tensor "
                "and returns the slope"
            ) from None
        if not (math.isfinite(slope) and slope > 0):
            got = f"{slope:.6g}" if value.numel() == 1 else f"shape {tuple(value.shape)}"
            raise ConfigurationError(
                f"DSReLU schedule {name!r} gives slope {got} at t={t:g} (initial_slope="
                f"{initial_slope:.6g}, final_slope={final_slope:.6g}); the slope must be one "
                "finite number > 0 for every t in [0, 1]"
            )
        values.append(slope)
    return tuple(values)
