"""DSReLU, its slope schedule, and the activation registry and its one resolver.

DSReLU (arXiv 2408.09156) scales the positive side of ReLU by a slope that moves
from steep to shallow over training progress ``t`` in [0, 1]::

    f(x; t) = s(t) * x               for x > 0
            = negative_slope * x     for x <= 0
    s(t)    = a + (b - a) / (1 + exp(-k * (t - 0.5))),  a = tan(initial), b = tan(final)
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.dsrelu_kernel import dsrelu, opmath_dtype

__all__ = [
    "ACTIVATIONS",
    "PAPER_ACTIVATIONS",
    "DSReLU",
    "activation_defaults",
    "activation_factory",
    "build_activation",
    "canonical_activation_name",
    "dsrelu_modules",
    "dsrelu_slope",
]


def dsrelu_slope(
    t: float | Tensor, initial_slope: float, final_slope: float, steepness: float
) -> float | Tensor:
    """Return the positive-side slope ``s(t)`` of DSReLU at progress ``t``.

    Works on Python floats and on tensors (elementwise, differentiable).
    """
    if isinstance(t, Tensor):
        gate = torch.sigmoid(steepness * (t - 0.5))
    else:
        gate = 1.0 / (1.0 + math.exp(-steepness * (t - 0.5)))
    return initial_slope + (final_slope - initial_slope) * gate


def _finite(name: str, value: Any) -> float:
    """``value`` as a finite float, or a ConfigurationError naming the argument."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigurationError(f"DSReLU {name}={value!r} must be a finite number")
    return number


def _check_angle(name: str, degrees: float) -> float:
    if not 0.0 < degrees < 90.0:
        raise ConfigurationError(
            f"DSReLU {name}={degrees!r} must lie strictly inside (0, 90) degrees"
        )
    return math.tan(math.radians(degrees))


class DSReLU(nn.Module):
    """ReLU variant whose positive-side slope follows a sigmoid schedule over training.

    Args:
        initial_angle: angle in degrees of the positive side at the start (paper: 85).
        final_angle: angle in degrees of the positive side at the end (paper: 10).
        steepness: ``k`` of the sigmoid schedule (paper: 5).
        negative_slope: slope for ``x <= 0`` (paper and its code: 1.0, the identity).
        inplace: accepted and ignored (DSReLU always returns a new tensor), so that DSReLU
            can be given where networks build ``act_layer(inplace=True)`` (timm's
            ``act_layer``, torchvision's ``activation_layer``).

    ``progress`` is a registered scalar buffer, so it is saved in checkpoints and
    follows ``.to(device)``; :class:`~dsrelu_lightning.SlopeScheduler` advances it. It
    stays float32 (or float64) when the module is converted to float16/bfloat16, and the
    slope is computed from it in the input's opmath dtype (float32 for float16/bfloat16
    inputs), so a bf16 model applies, and logs, the scheduled slope to float32 precision.
    """

    progress: Tensor

    def __init__(
        self,
        initial_angle: float = 85.0,
        final_angle: float = 10.0,
        steepness: float = 5.0,
        negative_slope: float = 1.0,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        self.initial_angle = _finite("initial_angle", initial_angle)
        self.final_angle = _finite("final_angle", final_angle)
        self.initial_slope = _check_angle("initial_angle", self.initial_angle)
        self.final_slope = _check_angle("final_angle", self.final_angle)
        self.steepness = _finite("steepness", steepness)
        self.negative_slope = _finite("negative_slope", negative_slope)
        self.register_buffer("progress", torch.zeros((), dtype=torch.float32))
        self._slope_cache: tuple[Tensor, tuple[Any, ...], Tensor] | None = None
        self._progress_set = False  # set_progress was called: something schedules this layer

    @property
    def is_scheduled(self) -> bool:
        """Whether the slope changes with progress (False for a fixed-slope variant)."""
        return self.initial_angle != self.final_angle

    def set_progress(self, t: float) -> None:
        """Set training progress ``t`` in [0, 1] (in place: no host-device sync)."""
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"DSReLU progress must lie in [0, 1], got {t!r}")
        self.progress.fill_(t)
        self._progress_set = True

    def slope_at(self, t: float) -> float:
        """The positive-side slope at progress ``t`` (host arithmetic, no device sync)."""
        return float(dsrelu_slope(t, self.initial_slope, self.final_slope, self.steepness))

    @property
    def slope(self) -> float:
        """The positive-side slope ``s(t)`` this layer applies now, as a float.

        Computed from ``progress`` in its own precision (float32 unless the module was
        converted to float64), exactly as the layer applies it to inputs of that
        precision or lower (reads one device value).
        """
        return float(self._slope_tensor(self.progress.dtype))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> DSReLU:
        """As ``nn.Module._apply``, except that ``progress`` never narrows below float32.

        ``.to(torch.bfloat16)`` (``precision="bf16-true"``) would round it (0.34 ->
        0.3398): the layer would apply a slope other than the scheduled one.
        """
        before = self.progress
        super()._apply(fn, recurse)
        after = self.progress
        if after.is_floating_point() and after.dtype.itemsize < 4:
            wide = torch.promote_types(before.dtype, torch.float32)
            self.progress = before.to(device=after.device, dtype=wide)
        return self

    def _slope_tensor(self, dtype: torch.dtype) -> Tensor:
        """``s(progress)`` as a 0-dim tensor on progress's device, in the opmath dtype of
        inputs of ``dtype`` (float32 for float16/bfloat16/float32, float64 for float64).

        In eager mode it is computed once per change of ``progress`` (its version counter
        moves with every in-place write: set_progress, load_state_dict, copy_) instead of
        five tiny kernels per call; under torch.compile it is part of the graph. Writes
        through ``progress.data`` bypass the version counter: use set_progress.
        """
        progress = self._buffers["progress"]  # (self.progress: nn.Module.__getattr__, 0.5 us)
        if torch.compiler.is_compiling() or progress.is_inference():
            return self._compute_slope(progress, opmath_dtype(dtype))
        # Keyed by the input dtype, not its opmath: no dtype promotion on a cache hit.
        key = (progress._version, dtype, torch.is_inference_mode_enabled())
        cached = self._slope_cache
        if cached is None or cached[0] is not progress or cached[1] != key:
            with torch.no_grad():
                cached = (progress, key, self._compute_slope(progress, opmath_dtype(dtype)))
            self._slope_cache = cached
        return cached[2]

    def _compute_slope(self, progress: Tensor, dtype: torch.dtype) -> Tensor:
        t = progress.to(dtype)
        return dsrelu_slope(t, self.initial_slope, self.final_slope, self.steepness)

    def forward(self, x: Tensor) -> Tensor:
        if not self._progress_set and x.requires_grad and not torch.compiler.is_compiling():
            self._warn_if_unscheduled()
        # The slope stays a 0-dim tensor on x's device: no .item(), no host sync, no
        # recompilation under torch.compile as progress changes. It is > 0 (both angles
        # lie in (0, 90) degrees), which lets dsrelu() use its fast exact kernels.
        slope = self._slope_tensor(x.dtype)
        return dsrelu(x, slope, self.negative_slope, positive_slope=True)

    def _warn_if_unscheduled(self) -> None:
        """Warn (once per layer) when a scheduled layer trains with its progress never set."""
        if self.training and self.is_scheduled and torch.is_grad_enabled():
            self._progress_set = True  # warned: do not ask again
            warnings.warn(
                "DSReLU is training but nothing advances its progress (set_progress was never "
                f"called), so its slope stays frozen at its t=0 value {self.slope_at(0.0):.3g}. "
                "With Lightning add dsrelu_lightning.SlopeScheduler() to the Trainer's "
                "callbacks; in your own loop call set_progress(t) on every DSReLU.",
                UserWarning,
                stacklevel=1,  # one location: shown once per process, not once per layer
            )

    def extra_repr(self) -> str:
        return (
            f"initial_angle={self.initial_angle}, final_angle={self.final_angle}, "
            f"steepness={self.steepness}, negative_slope={self.negative_slope}"
        )


ActivationFactory = Callable[..., nn.Module]

PAPER_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "mish", "dsrelu")
"""The six activations of the DSReLU study, in the order of its tables."""

ACTIVATIONS: dict[str, ActivationFactory] = {
    "relu": nn.ReLU,
    # A partial, not a lambda: its signature shows the 0.01 (activation_defaults reads it).
    "leaky_relu": functools.partial(nn.LeakyReLU, negative_slope=0.01),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "dsrelu": DSReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "prelu": nn.PReLU,
}
"""Registered activation names (lower case) -> factory returning a new module."""


ActivationSpec = str | type[nn.Module] | Callable[[], nn.Module]


def canonical_activation_name(spec: str) -> str:
    """The registered name ``spec`` refers to: stripped, lower case, ``-`` read as ``_``.

    Raises:
        ConfigurationError: (a ValueError) for a name that is not in :data:`ACTIVATIONS`,
            listing the valid names.
    """
    key = spec.strip().lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise ConfigurationError(
            f"unknown activation {spec!r}; valid names: {', '.join(sorted(ACTIVATIONS))}"
        )
    return key


def activation_defaults(name: str) -> dict[str, Any]:
    """The keyword defaults of a registered activation's factory, e.g. leaky_relu's
    ``{"negative_slope": 0.01, "inplace": False}``; empty where the factory's signature
    cannot be read (a lambda taking ``**kwargs``, some builtins)."""
    factory = ACTIVATIONS[canonical_activation_name(name)]
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _resolve(spec: ActivationSpec) -> tuple[Callable[..., Any], str]:
    """The factory ``spec`` stands for and the name its errors use."""
    if isinstance(spec, str):
        name = canonical_activation_name(spec)
        return ACTIVATIONS[name], name
    if callable(spec):
        return spec, getattr(spec, "__name__", repr(spec))
    raise ConfigurationError(
        f"activation must be a name, an nn.Module class or a callable, got {spec!r}"
    )


def _create(factory: Callable[..., Any], name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        module = factory(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"bad arguments {kwargs} for activation {name!r}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise ConfigurationError(
            f"activation factory {name!r} returned {type(module).__name__}, not an nn.Module"
        )
    return module


def activation_factory(spec: ActivationSpec, **kwargs: Any) -> Callable[[], nn.Module]:
    """A zero-argument factory that returns a NEW activation module for ``spec`` per call.

    ``spec`` and ``kwargs`` are as for :func:`build_activation`. The factory is validated
    by building one module now, so a bad name or argument fails here, before any network
    is built. The factory pickles where ``spec`` does (a registered name always).
    """
    factory, name = _resolve(spec)
    arguments = dict(kwargs)
    _create(factory, name, arguments)  # fail fast on bad arguments or a non-module
    return functools.partial(_create, factory, name, arguments)


def build_activation(spec: ActivationSpec, **kwargs: Any) -> nn.Module:
    """Return a NEW activation module for ``spec``.

    Args:
        spec: a registered name (case-insensitive, see :data:`ACTIVATIONS`), an
            ``nn.Module`` class, or a zero-argument callable returning a module.
        **kwargs: keyword arguments for the factory, e.g. ``initial_angle=75``
            for ``"dsrelu"``.

    Raises:
        ValueError: for an unknown name, bad keyword arguments, or a factory
            that does not return an ``nn.Module``.
    """
    return _create(*_resolve(spec), dict(kwargs))


def dsrelu_modules(module: nn.Module) -> list[DSReLU]:
    """Every DSReLU inside ``module`` (in registration order)."""
    return [m for m in module.modules() if isinstance(m, DSReLU)]
