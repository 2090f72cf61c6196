"""The benchmark grid: datasets x activation labels x folds, its grid file, and shards.

A grid file (YAML) names the datasets (LightningCLI configs), the activations and
the labelled variants to compare, and optionally the folds::

    datasets:                 # name -> LightningCLI config, relative to this file
      digits: digits.yaml
    folds: [0, 1, 2, 3, 4]    # optional; default: every fold of each config
    backbones: [resnet18, mobilenet_v3_small]   # optional; default: each config's network
    train_fractions: [0.05, 0.1, 0.25, 1.0]     # optional; default: each config's training set
    activations: [relu, leaky_relu, sigmoid, tanh, mish, dsrelu]   # registry defaults
    variants:                 # label -> activation, its arguments, per-cell overrides
      dsrelu_75_30: {activation: dsrelu, activation_args: {initial_angle: 75, final_angle: 30}}
      dsrelu_step:
        activation: dsrelu
        overrides: {slope_scheduler.granularity: step, model.lr: 0.0005}

Every key is optional except that the grid must define at least one label. A variant's
``overrides`` map dotted LightningCLI keys to values; they are passed to each of its cells
after the command line's overrides (``--slope_scheduler.granularity step``). Keys the grid
sets per cell (:data:`~dsrelu_lightning.study.run.keys.CELL_KEYS`), the model selection's keys
(:data:`~dsrelu_lightning.study.run.keys.SELECTION`) and the
activation's own keys (use ``activation``/``activation_args``) are refused.

Cells are ``dataset x backbone x training fraction x label x seed x fold``: each seed sets
both the fold assignment (``data.init_args.seed``) and ``seed_everything``, so several seeds
are repeated k-fold; each backbone sets ``model.backbone``, each training fraction
``data.init_args.train_fraction`` (a stratified share of the fold's training part, nested
across fractions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dsrelu_lightning.data.splits import MAX_SEED
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.backbones import resolve_backbone
from dsrelu_lightning.study.run.variants import (
    Variant,
    check_name,
    check_unique,
    make_variant,
    plain_variant,
)

__all__ = [
    "Cell",
    "Grid",
    "grid_cells",
    "load_grid",
    "parse_backbones",
    "parse_folds",
    "parse_seeds",
    "parse_shard",
    "parse_train_fractions",
    "shard_cells",
]

_GRID_KEYS = ("datasets", "folds", "activations", "variants", "backbones", "train_fractions")


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
    backbone: str | None = None
    train_fraction: float | None = None

    @property
    def name(self) -> str:
        """``dataset/[backbone/][fraction F/]label/seed s/fold k``, as the progress lines
        show it."""
        seed = "" if self.seed is None else f"seed {self.seed}/"
        backbone = "" if self.backbone is None else f"{self.backbone}/"
        fraction = "" if self.train_fraction is None else f"fraction {self.train_fraction:g}/"
        return f"{self.dataset}/{backbone}{fraction}{self.variant.label}/{seed}fold {self.fold}"

    def directory(self, output: str | Path) -> Path:
        """The cell's own folder:
        ``<output>/<dataset>/[<backbone>/][fraction<F>/]<label>/seed<s>/fold<k>``
        (``<label>/fold<k>`` without a seed or when ``flat``); a grid without --backbones
        keeps the config's network and no backbone folder, one without --train_fractions
        the config's training set and no fraction folder."""
        folder = Path(output) / self.dataset
        if self.backbone is not None:
            folder /= self.backbone
        if self.train_fraction is not None:
            folder /= f"fraction{self.train_fraction:g}"
        folder /= self.variant.label
        if self.seed is not None and not self.flat:
            folder /= f"seed{self.seed}"
        return folder / f"fold{self.fold}"

    def cli_args(self) -> list[str]:
        """The LightningCLI overrides that select this cell's network and activation."""
        backbone = [] if self.backbone is None else ["--model.backbone", self.backbone]
        if self.train_fraction is not None:
            backbone += ["--data.init_args.train_fraction", f"{self.train_fraction:g}"]
        return [*backbone, *self.variant.cli_args()]


@dataclass(frozen=True)
class Grid:
    """What a grid file defines: datasets (may be empty), labelled variants, folds, the
    backbones to compare (None: each config's own network) and the training fractions
    (None: each config's own training set)."""

    datasets: dict[str, Path] = field(default_factory=dict, hash=False)
    variants: tuple[Variant, ...] = ()
    folds: tuple[int, ...] | None = None
    backbones: tuple[str, ...] | None = None
    train_fractions: tuple[float, ...] | None = None


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
    check_unique([v.label for v in variants], f"labels in {source}")
    folds = data.get("folds")
    if folds is not None:
        if not isinstance(folds, list):
            raise ConfigurationError(f"{source}: 'folds' must be a list such as [0, 1, 2]")
        folds = parse_folds(",".join(str(f) for f in folds))
    backbones = data.get("backbones")
    if backbones is not None:
        if not isinstance(backbones, list):
            raise ConfigurationError(f"{source}: 'backbones' must be a list such as [resnet18]")
        backbones = parse_backbones(",".join(str(b) for b in backbones))
    fractions = data.get("train_fractions")
    if fractions is not None:
        if not isinstance(fractions, list):
            raise ConfigurationError(
                f"{source}: 'train_fractions' must be a list such as [0.1, 0.25, 1.0]"
            )
        fractions = parse_train_fractions(",".join(str(f) for f in fractions))
    return Grid(datasets, tuple(variants), folds, backbones, fractions)


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
    check_unique([str(f) for f in folds], "folds")
    if num_folds is not None and max(folds) >= num_folds:
        raise ConfigurationError(
            f"fold {max(folds)} does not exist: the config has num_folds={num_folds} "
            f"(folds 0-{num_folds - 1}); change --folds or --data.init_args.num_folds"
        )
    return folds


def parse_backbones(text: str) -> tuple[str, ...]:
    """``"resnet18,mobilenet_v3_small"`` -> the names, each a torchvision classification
    model or an import path that imports (checked now, before any cell runs)."""
    names = tuple(item.strip() for item in str(text).split(",") if item.strip())
    if not names:
        raise ConfigurationError(
            f"--backbones must name networks such as resnet18,resnet34; got {text!r}"
        )
    for name in names:
        check_name("backbone", name)
        resolve_backbone(name)
    check_unique(list(names), "--backbones")
    return names


def parse_train_fractions(text: str) -> tuple[float, ...]:
    """``"0.05,0.1,1.0"`` -> ``(0.05, 0.1, 1.0)``: distinct fractions in (0, 1]."""
    items = [item.strip() for item in str(text).split(",")]
    try:
        fractions = tuple(float(item) for item in items)
    except ValueError:
        fractions = ()
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ConfigurationError(
            "--train_fractions must be a comma-separated list of shares of the training set "
            f"in (0, 1] such as 0.05,0.1,0.25,1.0; got {text!r}"
        )
    check_unique([f"{f:g}" for f in fractions], "--train_fractions")
    return fractions


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
    check_unique([str(s) for s in seeds], "--seeds")
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
    backbones: Sequence[str] | None = None,
    train_fractions: Sequence[float] | None = None,
) -> list[Cell]:
    """Every cell, in a fixed order: dataset, backbone, training fraction, label, seed, fold.

    Without ``seeds`` the cells keep their configs' seeds (``Cell.seed`` None); without
    ``backbones`` their configs' network (``Cell.backbone`` None); without
    ``train_fractions`` their configs' training set (``Cell.train_fraction`` None).
    """
    variants = tuple(variants)
    return [
        Cell(dataset, Path(config), variant, fold, seed, backbone=backbone, train_fraction=frac)
        for dataset, config in datasets.items()
        for backbone in (backbones if backbones is not None else (None,))
        for frac in (train_fractions if train_fractions is not None else (None,))
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
