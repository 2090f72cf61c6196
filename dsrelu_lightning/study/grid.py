"""The benchmark grid: datasets x activation labels x folds, its grid file, and shards.

A grid file (YAML) names the datasets (LightningCLI configs), the activations and
the labelled variants to compare, and optionally the folds::

    datasets:                 # name -> LightningCLI config, relative to this file
      digits: digits.yaml
    folds: [0, 1, 2, 3, 4]    # optional; default: every fold of each config
    activations: [relu, leaky_relu, sigmoid, tanh, mish, dsrelu]   # registry defaults
    variants:                 # label -> activation, its arguments, per-cell overrides
      dsrelu_75_30: {activation: dsrelu, activation_args: {initial_angle: 75, final_angle: 30}}
      dsrelu_step:
        activation: dsrelu
        overrides: {slope_scheduler.granularity: step, model.lr: 0.0005}

Every key is optional except that the grid must define at least one label. A variant's
``overrides`` map dotted LightningCLI keys to values; they are passed to each of its cells
after the command line's overrides (``--slope_scheduler.granularity step``). Keys the grid
sets per cell (:data:`~dsrelu_lightning.study.keys.CELL_KEYS`), the model selection's keys
(:data:`~dsrelu_lightning.study.keys.SELECTION`) and the
activation's own keys (use ``activation``/``activation_args``) are refused.

Cells are ``dataset x label x seed x fold``: each seed sets both the fold assignment
(``data.init_args.seed``) and ``seed_everything``, so several seeds are repeated k-fold.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dsrelu_lightning.data.kfold import MAX_SEED
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import (
    activation_defaults,
    activation_factory,
    canonical_activation_name,
)
from dsrelu_lightning.study.keys import ACTIVATION_KEYS, CELL_KEYS, check_override_key

__all__ = [
    "PAPER_ACTIVATIONS",
    "Cell",
    "Grid",
    "Variant",
    "cv_label",
    "grid_cells",
    "load_grid",
    "parse_folds",
    "parse_seeds",
    "parse_shard",
    "select_variants",
    "shard_cells",
]

PAPER_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "mish", "dsrelu")
"""The six activations of the DSReLU study, in the order of its tables."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_GRID_KEYS = ("datasets", "folds", "activations", "variants")
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


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a dataset config, an activation variant, a seed and a fold.

    ``seed=None`` keeps the config's own seeds (a cell of the single-seed layout).
    ``flat`` marks a cell found in that layout (``<label>/fold<k>``, which grids made
    before seeds had): it is reused where it lies.
    """

    dataset: str
    config: Path
    variant: Variant
    fold: int
    seed: int | None = None
    flat: bool = False

    @property
    def name(self) -> str:
        """``dataset/label/seed s/fold k``, as the progress lines show it."""
        seed = "" if self.seed is None else f"seed {self.seed}/"
        return f"{self.dataset}/{self.variant.label}/{seed}fold {self.fold}"

    def directory(self, output: str | Path) -> Path:
        """The cell's own folder: ``<output>/<dataset>/<label>/seed<s>/fold<k>``
        (``<label>/fold<k>`` without a seed or when ``flat``)."""
        folder = Path(output) / self.dataset / self.variant.label
        if self.seed is not None and not self.flat:
            folder /= f"seed{self.seed}"
        return folder / f"fold{self.fold}"


@dataclass(frozen=True)
class Grid:
    """What a grid file defines: datasets (may be empty), labelled variants, folds."""

    datasets: dict[str, Path] = field(default_factory=dict, hash=False)
    variants: tuple[Variant, ...] = ()
    folds: tuple[int, ...] | None = None


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


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file (see the module docstring for its format)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read grid file {str(path)!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"grid file {str(path)!r} is not valid YAML: {exc}") from exc
    source = f"grid file {str(path)!r}"
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source} must be a mapping with keys {', '.join(_GRID_KEYS)}")
    unknown = sorted(set(data) - set(_GRID_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{source} has unknown keys {unknown}; valid keys: {', '.join(_GRID_KEYS)}"
        )
    datasets = _grid_datasets(data.get("datasets") or {}, path.parent, source)
    names = data.get("activations") or []
    entries = data.get("variants") or {}
    if not isinstance(names, list) or not isinstance(entries, Mapping):
        raise ConfigurationError(
            f"{source}: 'activations' must be a list of names and 'variants' a mapping "
            "label -> {activation, activation_args}"
        )
    variants = [plain_variant(str(name)) for name in names]
    variants += [make_variant(label, spec, source) for label, spec in entries.items()]
    if not variants:
        raise ConfigurationError(f"{source} defines no activations or variants")
    _check_unique([v.label for v in variants], f"labels in {source}")
    folds = data.get("folds")
    if folds is not None:
        if not isinstance(folds, list):
            raise ConfigurationError(f"{source}: 'folds' must be a list such as [0, 1, 2]")
        folds = parse_folds(",".join(str(f) for f in folds))
    return Grid(datasets, tuple(variants), folds)


def _grid_datasets(entries: object, base: Path, source: str) -> dict[str, Path]:
    if not isinstance(entries, Mapping):
        raise ConfigurationError(
            f"{source}: 'datasets' must map a dataset name to its config, e.g. digits: digits.yaml"
        )
    datasets: dict[str, Path] = {}
    for name, config in entries.items():
        check_name(f"dataset name in {source}", name)
        resolved = base / str(config)
        if not resolved.is_file():
            raise ConfigurationError(
                f"{source}: config {str(resolved)!r} of dataset {name!r} does not exist "
                "(paths are relative to the grid file)"
            )
        datasets[name] = resolved
    return datasets


def select_variants(names: Sequence[str], defined: Sequence[Variant] = ()) -> tuple[Variant, ...]:
    """The variants for ``names``: labels from ``defined`` first, else registered activations."""
    by_label = {v.label: v for v in defined}
    chosen = tuple(by_label.get(name) or plain_variant(name) for name in names)
    if not chosen:
        raise ConfigurationError("--activations is empty; give e.g. relu,dsrelu")
    _check_unique([v.label for v in chosen], "--activations")
    return chosen


def parse_folds(text: str, num_folds: int | None = None) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``; checked against ``num_folds`` when given."""
    items = [item.strip() for item in str(text).split(",")]
    try:
        folds = tuple(int(item) for item in items)
    except ValueError:
        folds = ()
    if not folds or any(f < 0 for f in folds):
        raise ConfigurationError(
            f"folds must be a comma-separated list of fold indices >= 0 such as 0,1,2; got {text!r}"
        )
    _check_unique([str(f) for f in folds], "folds")
    if num_folds is not None and max(folds) >= num_folds:
        raise ConfigurationError(
            f"fold {max(folds)} does not exist: the config has num_folds={num_folds} "
            f"(folds 0-{num_folds - 1}); change --folds or --data.init_args.num_folds"
        )
    return folds


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"42,43,44"`` -> ``(42, 43, 44)``: distinct seeds in ``[0, 2**32 - 1]``."""
    items = [item.strip() for item in str(text).split(",")]
    try:
        seeds = tuple(int(item) for item in items)
    except ValueError:
        seeds = ()
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise ConfigurationError(
            f"--seeds must be a comma-separated list of integer seeds in [0, {MAX_SEED}] "
            f"such as 42,43,44; got {text!r}"
        )
    _check_unique([str(s) for s in seeds], "--seeds")
    return seeds


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    index, count = (int(match[1]), int(match[2])) if match else (-1, 0)
    if count < 1 or not 0 <= index < count:
        raise ConfigurationError(
            f"--shard must be i/n with 0 <= i < n (0-based, e.g. 0/4 ... 3/4), got {text!r}; "
            "with SLURM use --array=0-<n-1> and "
            "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"
        )
    return index, count


def grid_cells(
    datasets: Mapping[str, Path],
    variants: Iterable[Variant],
    folds: Mapping[str, Sequence[int]],
    seeds: Mapping[str, Sequence[int]] | None = None,
) -> list[Cell]:
    """Every cell, in a fixed order: dataset, then label, then seed, then fold.

    Without ``seeds`` the cells keep their configs' seeds (``Cell.seed`` None).
    """
    variants = tuple(variants)
    return [
        Cell(dataset, Path(config), variant, fold, seed)
        for dataset, config in datasets.items()
        for variant in variants
        for seed in (seeds[dataset] if seeds is not None else (None,))
        for fold in folds[dataset]
    ]


def shard_cells(cells: Sequence[Cell], index: int, count: int) -> list[Cell]:
    """Shard ``index`` of ``count``: every ``count``-th cell from ``index`` on.

    Shards are disjoint and together cover the grid; striding (rather than blocks)
    gives each shard a mix of activations, so shards take similar times.
    """
    return list(cells[index::count])


def _check_unique(names: Sequence[str], where: str) -> None:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ConfigurationError(f"{where} repeat {', '.join(duplicates)}; give each once")
