"""Labelled activations of a grid: a :class:`Variant` is a table column and its cells'
folder name (an activation, its arguments, per-cell LightningCLI overrides)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import (
    activation_defaults,
    activation_factory,
    canonical_activation_name,
)
from dsrelu_lightning.study.run.keys import ACTIVATION_KEYS, CELL_KEYS, check_override_key

__all__ = [
    "Variant",
    "check_name",
    "check_unique",
    "cv_label",
    "make_variant",
    "plain_variant",
    "select_variants",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_VARIANT_KEYS = ("activation", "activation_args", "overrides")


@dataclass(frozen=True)
class Variant:
    """An activation under a label: the column of the tables and the cells' folder name.

    ``activation=None`` means "as the dataset config says" (the ``cv`` command).
    ``activation_args=None`` means the activation's own defaults (DSReLU: 85/10 deg, k=5).
    ``overrides`` maps further LightningCLI keys (dotted, no ``--``) to this label's values.
    """

    label: str
    activation: str | None = None
    activation_args: Mapping[str, Any] | None = field(default=None, hash=False)
    overrides: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def cli_args(self) -> list[str]:
        """The LightningCLI overrides that select this variant's activation and settings."""
        args: list[str] = []
        if self.activation is not None:
            kwargs = None if self.activation_args is None else dict(self.activation_args)
            args += ["--model.activation", self.activation]
            args += ["--model.activation_args", json.dumps(kwargs)]
        for key, value in self.overrides.items():
            args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        return args


def check_name(kind: str, name: object) -> str:
    """``name`` if it is usable as a folder name (letters, digits, ``_ . + -``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{kind} {name!r} must be a non-empty name of letters, digits, '_', '.', '+' or '-' "
            "(it names a folder)"
        )
    return name


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cv_label(activation: str, activation_args: Mapping[str, Any] | None = None) -> str:
    """The label of ``cv``'s cells: the activation's name, plus every argument that
    differs from the activation's default, e.g. ``dsrelu_initial_angle75_final_angle30``.

    So cross-validating another DSReLU setting into an existing grid folder does not
    land in (and reuse) the default-setting cells.
    """
    try:
        key = canonical_activation_name(activation)
        defaults = activation_defaults(key)
    except ConfigurationError:  # not a registered name: labelled as given, no defaults
        key, defaults = activation, {}
    parts = [
        f"{name}{_label_value(value)}"
        for name, value in (activation_args or {}).items()
        if name not in defaults or defaults[name] != value
    ]
    label = "_".join([key, *parts])
    if not _NAME.fullmatch(label):
        raise ConfigurationError(
            f"cannot name cv's cells after activation {activation!r} with arguments "
            f"{dict(activation_args or {})} ({label!r} is not a folder name of letters, "
            "digits, '_', '.', '+', '-'); define a labelled variant in a --grid file and "
            "run benchmark instead"
        )
    return label


def plain_variant(name: str) -> Variant:
    """The variant for a registered activation name with its default arguments."""
    try:
        key = canonical_activation_name(name)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{exc} (or a label defined under 'variants' in a --grid file)"
        ) from None
    return Variant(label=key, activation=key)


def make_variant(label: object, spec: object, source: str) -> Variant:
    """Validate one ``variants`` entry of a grid file and build its Variant."""
    label = check_name(f"variant label in {source}", label)
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"variant {label!r} in {source} must be a mapping such as "
            "{activation: dsrelu, activation_args: {initial_angle: 75}}"
        )
    unknown = sorted(set(spec) - set(_VARIANT_KEYS))
    if unknown or "activation" not in spec:
        problem = f"unknown keys {unknown}" if unknown else "no 'activation'"
        raise ConfigurationError(
            f"variant {label!r} in {source} has {problem}; valid keys: {', '.join(_VARIANT_KEYS)}"
        )
    activation = plain_variant(str(spec["activation"])).activation
    args = spec.get("activation_args")
    if args is not None and not isinstance(args, Mapping):
        raise ConfigurationError(
            f"activation_args of variant {label!r} in {source} must be a mapping, got {args!r}"
        )
    activation_factory(activation, **dict(args or {}))  # bad angles etc. fail before any run
    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ConfigurationError(
            f"overrides of variant {label!r} in {source} must map LightningCLI keys to values, "
            f"e.g. {{slope_scheduler.granularity: step}}; got {overrides!r}"
        )
    where = f"variant {label!r} in {source}: overrides key"
    for key in overrides:
        check_override_key(str(key), (*CELL_KEYS, *ACTIVATION_KEYS), where, whole_sections=True)
    return Variant(
        label,
        activation,
        dict(args) if args is not None else None,
        {str(k): v for k, v in overrides.items()},
    )


def select_variants(names: Sequence[str], defined: Sequence[Variant] = ()) -> tuple[Variant, ...]:
    """The variants for ``names``: labels from ``defined`` first, else registered activations."""
    by_label = {v.label: v for v in defined}
    chosen = tuple(by_label.get(name) or plain_variant(name) for name in names)
    if not chosen:
        raise ConfigurationError("--activations is empty; give e.g. relu,dsrelu")
    check_unique([v.label for v in chosen], "--activations")
    return chosen


def check_unique(names: Sequence[str], where: str) -> None:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ConfigurationError(f"{where} repeat {', '.join(duplicates)}; give each once")
