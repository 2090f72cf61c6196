"""DSReLU, its slope schedule, and the activation registry and its one resolver.

DSReLU (arXiv 2408.09156) scales the positive side of ReLU by a slope that moves
from steep to shallow over training progress ``t`` in [0, 1]::

    f(x; t) = s(t) * x               for x > 0
            = negative_slope * x     for x <= 0
    s(t)    = a + (b - a) / (1 + exp(-k * (t - 0.5))),  a = tan(initial), b = tan(final)

``s(t)`` above is the paper's (``schedule="sigmoid"``); :mod:`~dsrelu_lightning.nn.schedules`
holds the other shapes and reads the user's own.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.dsrelu_kernel import dsrelu, opmath_dtype
from dsrelu_lightning.nn.schedules import (
    ScheduleFn,
    angle_slope,
    check_schedule,
    dsrelu_slope,
    finite_argument,
    resolve_schedule,
)

# The public surface, as timm's create_act.py: DSReLU, the registry and its two functions
# (and dsrelu_slope, DESIGN's name); the other helpers serve this package's own layers.
__all__ = ["ACTIVATIONS", "DSReLU", "activation_factory", "build_activation", "dsrelu_slope"]


class DSReLU(nn.Module):
    """ReLU variant whose positive-side slope follows a schedule over training progress.

    Args:
        initial_angle: angle in degrees of the positive side at the start (paper: 85).
        final_angle: angle in degrees of the positive side at the end (paper: 10).
        steepness: ``k`` of the sigmoid schedules (paper: 5).
        negative_slope: slope for ``x <= 0`` (paper and its code: 1.0, the identity).
        inplace: accepted and ignored (DSReLU always returns a new tensor), so that DSReLU
            can be given where networks build ``act_layer(inplace=True)`` (timm's
            ``act_layer``, torchvision's ``activation_layer``).
        schedule: the shape of ``s(t)`` from ``a = tan(initial_angle)`` to
            ``b = tan(final_angle)``: ``sigmoid`` (the paper's), ``linear``, ``cosine``,
            ``exponential`` (geometric), ``step`` (``a`` until t = 0.5, then ``b``),
            ``constant`` (``constant_slope`` throughout), ``reverse_sigmoid`` (``b`` to
            ``a``), or an import path to your own ``fn(t, initial_slope, final_slope,
            steepness) -> slope`` (checked once: finite and > 0 for t in [0, 1]).
        constant_slope: the slope of ``schedule="constant"`` (default ``a``).
        equivalent_leaky: apply ``f(x; t) / s(t)`` instead: the LeakyReLU with positive
            slope 1 and negative slope ``negative_slope / s(t)`` on the same schedule.

    ``progress`` is a registered scalar buffer, so it is saved in checkpoints and
    follows ``.to(device)``; :class:`~dsrelu_lightning.SlopeScheduler` advances it through
    :meth:`set_progress`. Write it only through set_progress or ``load_state_dict``: the
    slope is computed once per change, and other in-place writes are not seen. It
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
        schedule: str | ScheduleFn = "sigmoid",
        constant_slope: float | None = None,
        equivalent_leaky: bool = False,
    ) -> None:
        super().__init__()
        self.initial_angle = finite_argument("initial_angle", initial_angle)
        self.final_angle = finite_argument("final_angle", final_angle)
        self.initial_slope = angle_slope("initial_angle", self.initial_angle)
        self.final_slope = angle_slope("final_angle", self.final_angle)
        self.steepness = finite_argument("steepness", steepness)
        self.negative_slope = finite_argument("negative_slope", negative_slope)
        self.schedule, self._schedule_fn = resolve_schedule(schedule)
        self.constant_slope = None
        self._ends = (self.initial_slope, self.final_slope)  # a and b as the schedule sees them
        if constant_slope is not None:
            if self.schedule != "constant":
                raise ConfigurationError(
                    f"DSReLU constant_slope={constant_slope!r} applies to schedule 'constant' "
                    f"only, not {self.schedule!r}"
                )
            self.constant_slope = finite_argument("constant_slope", constant_slope)
            if self.constant_slope <= 0:
                raise ConfigurationError(f"DSReLU constant_slope={constant_slope!r} must be > 0")
            self._ends = (self.constant_slope, self.constant_slope)
        self.equivalent_leaky = bool(equivalent_leaky)
        self._checked = check_schedule(
            self._schedule_fn, self.schedule, *self._ends, self.steepness
        )
        self.register_buffer("progress", torch.zeros((), dtype=torch.float32))
        self._slopes: dict[tuple[Any, ...], Tensor] = {}  # s(progress) per input dtype
        self._slopes_of: Tensor | None = None  # the progress tensor _slopes were computed from
        self.register_load_state_dict_post_hook(_forget_slopes)
        self._progress_set = False  # set_progress was called: something schedules this layer

    @property
    def is_scheduled(self) -> bool:
        """Whether the slope changes with progress (False for a fixed-slope variant)."""
        return len(set(self._checked)) > 1

    def set_progress(self, t: float) -> None:
        """Set training progress ``t`` in [0, 1] (in place: no host-device sync)."""
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"DSReLU progress must lie in [0, 1], got {t!r}")
        self.progress.fill_(t)
        self._slopes.clear()
        self._progress_set = True

    def slope_at(self, t: float) -> float:
        """The positive-side slope at progress ``t`` (float64 on the host, no device sync)."""
        progress = torch.tensor(float(t), dtype=torch.float64)
        return float(self._schedule_fn(progress, *self._ends, self.steepness))

    @property
    def slope(self) -> float:
        """The positive-side slope ``s(t)`` of the schedule now, as a float (with
        ``equivalent_leaky`` the layer applies 1 and ``negative_slope / s(t)`` instead).

        Computed from ``progress`` in its own precision (float32 unless the module was
        converted to float64), exactly as the layer applies it to inputs of that
        precision or lower (reads one device value).
        """
        return float(self._slope_tensor(self.progress.dtype))

    @property
    def applied_slopes(self) -> tuple[float, float]:
        """The slopes the layer applies now to ``x > 0`` and to ``x <= 0`` (as :attr:`slope`)."""
        if self.equivalent_leaky:
            return 1.0, float(self._slope_tensor(self.progress.dtype, leaky=True))
        return self.slope, self.negative_slope

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
        self._slopes.clear()
        return self

    def _slope_tensor(self, dtype: torch.dtype, leaky: bool = False) -> Tensor:
        """``s(progress)`` as a 0-dim tensor on progress's device, in the opmath dtype of
        inputs of ``dtype`` (float32 for float16/bfloat16/float32, float64 for float64);
        ``leaky``: ``negative_slope / s`` as prelu's 1-element weight, in ``dtype``.

        In eager mode it is computed once per change of ``progress`` (set_progress,
        load_state_dict and ``.to()`` forget it) instead of a few tiny kernels per call;
        under torch.compile it is part of the graph.
        """
        progress = self._buffers["progress"]  # (self.progress: nn.Module.__getattr__, 0.5 us)
        if torch.compiler.is_compiling() or progress.is_inference():
            return self._compute_slope(progress, dtype, leaky)
        if self._slopes_of is not progress:  # a new tensor, e.g. load_state_dict(assign=True)
            self._slopes.clear()
            self._slopes_of = progress
        # Keyed by the input dtype, not its opmath: no dtype promotion on a cache hit.
        key = (dtype, torch.is_inference_mode_enabled(), leaky)
        slope = self._slopes.get(key)
        if slope is None:
            with torch.no_grad():
                slope = self._slopes[key] = self._compute_slope(progress, dtype, leaky)
        return slope

    def _compute_slope(self, progress: Tensor, dtype: torch.dtype, leaky: bool) -> Tensor:
        opmath = opmath_dtype(dtype)
        slope = self._schedule_fn(progress.to(opmath), *self._ends, self.steepness)
        slope = torch.as_tensor(slope, dtype=opmath, device=progress.device).reshape(())
        return (self.negative_slope / slope).to(dtype).reshape(1) if leaky else slope

    def forward(self, x: Tensor) -> Tensor:
        if not self._progress_set and x.requires_grad and not torch.compiler.is_compiling():
            self._warn_if_unscheduled()
        if self.equivalent_leaky:  # LeakyReLU with a tensor slope: no sync, no recompile
            return F.prelu(x, self._slope_tensor(x.dtype, leaky=True))
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
        extra = [] if self.schedule == "sigmoid" else [f"schedule={self.schedule!r}"]
        if self.constant_slope is not None:
            extra.append(f"constant_slope={self.constant_slope}")
        if self.equivalent_leaky:
            extra.append("equivalent_leaky=True")
        angles = f"initial_angle={self.initial_angle}, final_angle={self.final_angle}"
        slopes = f"steepness={self.steepness}, negative_slope={self.negative_slope}"
        return ", ".join([angles, slopes, *extra])


def _forget_slopes(module: DSReLU, incompatible_keys: Any) -> None:
    """load_state_dict wrote ``progress``: the next call computes the slope anew."""
    module._slopes.clear()


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
