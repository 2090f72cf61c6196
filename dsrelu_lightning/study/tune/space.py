"""A search space file: LightningCLI keys mapped to Optuna distributions, checked before any trial.

    model.lr: {float: [1.0e-4, 1.0e-2], log: true}
    model.activation_args.initial_angle: {float: [45, 89]}
    data.init_args.batch_size: {int: [32, 128], step: 32}
    slope_scheduler.granularity: {categorical: [epoch, step]}

Keys under ``model.activation_args.`` are the tuned activation's own arguments; a baseline
(``--baselines``) tunes the other keys only.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from dsrelu_lightning.errors import ConfigurationError

__all__ = ["ACTIVATION_ARGS", "Param", "check_keys", "load_space", "shared_params"]

ACTIVATION_ARGS = "model.activation_args."
"""Prefix of the keys that are the tuned activation's own arguments."""

_KINDS = ("float", "int", "categorical")
_OPTIONS = {"float": {"log", "step"}, "int": {"log", "step"}, "categorical": set()}
_EXAMPLE = "e.g. {float: [1.0e-4, 1.0e-2], log: true}, {int: [1, 4]} or {categorical: [a, b]}"


@dataclass(frozen=True)
class Param:
    """One tuned key: its LightningCLI name (dotted, no ``--``) and Optuna distribution."""

    key: str
    distribution: BaseDistribution

    @property
    def name(self) -> str:
        """The parameter's name in the study: the key without ``model.activation_args.``."""
        return self.key.removeprefix(ACTIVATION_ARGS)

    @property
    def is_activation_arg(self) -> bool:
        """Whether this is an argument of the tuned activation."""
        return self.key.startswith(ACTIVATION_ARGS)

    def suggest(self, trial: optuna.Trial) -> Any:
        """This parameter's value in ``trial`` (Optuna's suggest_* for its distribution)."""
        dist = self.distribution
        if isinstance(dist, FloatDistribution):
            return trial.suggest_float(self.name, dist.low, dist.high, log=dist.log, step=dist.step)
        if isinstance(dist, IntDistribution):
            return trial.suggest_int(self.name, dist.low, dist.high, log=dist.log, step=dist.step)
        return trial.suggest_categorical(self.name, dist.choices)  # type: ignore[attr-defined]

    def extremes(self) -> list[Any]:
        """Values that bound what a trial may get: each end of a range, or every choice."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        return [dist.low, dist.high]  # type: ignore[attr-defined]


def _number(value: object, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and (not integer or float(value).is_integer())


def _distribution(key: str, spec: object, source: str) -> BaseDistribution:
    """The distribution of one entry; every problem is one ConfigurationError line."""
    where = f"space {source}: {key}"
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where} must be a mapping, {_EXAMPLE}; got {spec!r}")
    kinds = [k for k in _KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigurationError(
            f"{where} needs exactly one of {', '.join(_KINDS)}, {_EXAMPLE}; got {dict(spec)}"
        )
    kind = kinds[0]
    unknown = sorted(set(spec) - {kind} - _OPTIONS[kind])
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[kind])) or "none"
        raise ConfigurationError(
            f"{where}: unknown option(s) {unknown} for {kind} (allowed: {allowed})"
        )
    values = spec[kind]
    if kind == "categorical":
        if not isinstance(values, list) or not values:
            raise ConfigurationError(f"{where}: categorical needs a non-empty list of choices")
        if any(v is not None and not isinstance(v, bool | int | float | str) for v in values):
            raise ConfigurationError(f"{where}: categorical choices must be numbers, strings, "
                                     f"booleans or null; got {values!r}")  # fmt: skip
        if len(set(map(repr, values))) != len(values):
            raise ConfigurationError(f"{where}: categorical choices repeat; give each once")
        return CategoricalDistribution(values)
    integer = kind == "int"
    if (
        not isinstance(values, list)
        or len(values) != 2
        or not all(_number(v, integer) for v in values)
    ):
        what = "integers" if integer else "numbers"
        raise ConfigurationError(
            f"{where}: {kind} needs [low, high], two finite {what}; got {values!r}"
        )
    low, high = values
    if not low < high:
        raise ConfigurationError(f"{where}: the range [{low}, {high}] is empty; give low < high")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ConfigurationError(f"{where}: log must be true or false; got {log!r}")
    if log and low <= 0:
        raise ConfigurationError(f"{where}: a log range needs low > 0; got [{low}, {high}]")
    if step is not None and (not _number(step, integer) or step <= 0 or log):
        raise ConfigurationError(
            f"{where}: step must be a positive {kind} without log; got {step!r}"
        )
    if integer:
        return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
    return FloatDistribution(float(low), float(high), log=log, step=step)


def load_space(path: str | Path) -> list[Param]:
    """The parameters of the space file at ``path``, each entry's syntax checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the space file {str(path)!r}: {exc.strerror or exc}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigurationError(f"space {path} is not valid YAML{line}") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigurationError(
            f"space {path} must map LightningCLI keys to distributions, e.g. "
            "'model.lr: {float: [1.0e-4, 1.0e-2], log: true}'"
        )
    return [Param(str(key), _distribution(str(key), spec, str(path))) for key, spec in data.items()]


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        yield dotted
        if isinstance(value, Mapping):
            yield from _leaves(value, dotted + ".")


def check_keys(
    params: Sequence[Param],
    resolved: Mapping[str, Any],
    activation_args: Sequence[str],
    reserved: Sequence[str],
    source: str,
) -> None:
    """Refuse a key the resolved config does not hold (naming the closest valid key), one of
    ``reserved`` (set by ``tune`` itself), and an argument the activation does not take."""
    valid = [k for k in _leaves(resolved) if not k.startswith(ACTIVATION_ARGS)]
    valid += [ACTIVATION_ARGS + name for name in activation_args]
    for param in params:
        key = param.key
        if any(key == r or key.startswith(r + ".") for r in reserved):
            raise ConfigurationError(
                f"space {source}: {key} is set by tune itself (activations with --baselines, "
                "folds with --tune_folds, seeds with --seed and the folders under --output); "
                "remove it from the space"
            )
        if key in valid and not isinstance(_value(resolved, key), Mapping):
            continue
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        if key.startswith(ACTIVATION_ARGS):
            name = key.removeprefix(ACTIVATION_ARGS)
            hint = f"its arguments: {', '.join(activation_args) or 'none'}"
            raise ConfigurationError(f"space {source}: the activation takes no {name!r} ({hint})")
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigurationError(
            f"space {source}: {key} is not a key of the config{hint}; "
            "`fit --print_config` lists every key"
        )


def _value(tree: Mapping[str, Any], dotted: str) -> Any:
    value: Any = tree
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def shared_params(params: Sequence[Param]) -> list[Param]:
    """The parameters a baseline tunes: all but the tuned activation's own arguments."""
    return [p for p in params if not p.is_activation_arg]
