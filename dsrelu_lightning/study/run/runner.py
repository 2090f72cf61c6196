"""The grid runner: read each dataset config once, check the overrides, run the cells.

Configs are parsed (the CLI's parser, :func:`~dsrelu_lightning.cli.app.parse_config`),
never built: reading ``num_folds`` and the seed costs no model. Everything that can be
checked is checked before the first cell runs, so bad input ends with one line and
nothing written; then the shard's cells run in order (see :mod:`~dsrelu_lightning.study.run.cell`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from dsrelu_lightning.cli.app import parse_config
from dsrelu_lightning.cli.summaries import resolved, resolved_defaults
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import build_activation
from dsrelu_lightning.study.result_file import RESULT_FILE, CellRecord
from dsrelu_lightning.study.run.cell import (
    SAVED_CONFIG,
    CellOutcome,
    cell_args,
    check_unchanged,
    prune_checkpoints,
    run_cell,
)
from dsrelu_lightning.study.run.console import CELL_LOG
from dsrelu_lightning.study.run.grid import Cell, grid_cells, parse_folds, shard_cells
from dsrelu_lightning.study.run.keys import (
    ACTIVATION_KEYS,
    BACKBONE_KEYS,
    CELL_KEYS,
    KEEP_CHECKPOINTS,
    SELECTION,
    SELECTION_RULE,
    TRAIN_FRACTION_KEYS,
    KeepCheckpoints,
    check_override_key,
)
from dsrelu_lightning.study.run.progress import Progress
from dsrelu_lightning.study.run.variants import Variant, check_name

__all__ = ["ConfigInfo", "GridRun", "inspect_config", "run_benchmark"]


@dataclass(frozen=True)
class ConfigInfo:
    """What the grid needs from a dataset config resolved with the user's overrides."""

    num_folds: int
    seed: int | bool
    activation: str
    activation_args: dict[str, Any] | None
    data_class: str = ""


@dataclass(frozen=True)
class GridRun:
    """What one shard's run left: its cells' ``result.json`` paths, and the cells it found
    running in another process (the grid's report waits for them)."""

    results: list[Path]
    busy: list[str]


@dataclass(frozen=True)
class _Dataset:
    """A dataset config as the grid read it: its info, the parser, the CLI's defaults."""

    info: ConfigInfo
    parser: Any
    defaults: Mapping[str, Any]


def inspect_config(config: str | Path, overrides: Sequence[str] = ()) -> ConfigInfo:
    """Resolve ``config`` with ``overrides`` once, before any cell runs: bad input fails fast."""
    return _inspect(config, overrides).info


def _inspect(config: str | Path, overrides: Sequence[str]) -> _Dataset:
    """:func:`inspect_config`, with the parser that resolved it (it can resolve any cell)."""
    _check_overrides(overrides, CELL_KEYS)
    parser, parsed = parse_config(["--config", str(config), *overrides])
    trainer = parsed["trainer"]
    if trainer.get("fast_dev_run"):
        raise ConfigurationError(
            "--trainer.fast_dev_run records no epochs or checkpoints, so a cell would have no "
            "result; use e.g. --trainer.max_epochs 1 --trainer.limit_train_batches 2 instead"
        )
    if trainer.get("limit_val_batches") == 0:
        raise ConfigurationError(
            "benchmark cells pick their best epoch by val/loss: validation must run "
            "(remove --trainer.limit_val_batches 0)"
        )
    _check_selection(parsed, f"from {str(config)!r} or the overrides")
    model = parsed["model"]
    args = model.get("activation_args")
    build_activation(str(model["activation"]), **dict(args or {}))  # bad arguments fail here
    info = ConfigInfo(
        num_folds=int(parsed["data"]["init_args"]["num_folds"]),
        seed=parsed["seed_everything"],
        activation=str(model["activation"]),
        activation_args=dict(args) if args is not None else None,
        data_class=str(parsed["data"]["class_path"]),
    )
    return _Dataset(info, parser, resolved_defaults(parser, parsed))


def _dataset_name(name: str, config: str | Path, dataset: _Dataset) -> str:
    """``name``, unless the overrides replaced the config's data module (``--data
    my_pkg.MyDataModule``): then the data actually used names the cells and the report."""
    own = dataset.parser.parse_args(["--config", str(config)])["data"]["class_path"]
    if own == dataset.info.data_class:
        return name
    return check_name("dataset", dataset.info.data_class.rsplit(".", 1)[-1])


def _check_selection(config: Any, where: str) -> None:
    """Refuse a resolved config whose model selection is not the grid's (:data:`SELECTION`)."""
    for key, needed in SELECTION.items():
        if config[key] != needed:
            raise ConfigurationError(
                f"{key}={config[key]!r} ({where}), but {SELECTION_RULE}; remove that setting"
            )


def _check_overrides(overrides: Sequence[str], grid_keys: Sequence[str]) -> None:
    """Refuse overrides of keys the grid sets per cell and of the selection's keys.

    A whole section (``--checkpoint '{...}'``) is left to :func:`inspect_config`'s check
    of the resolved values.
    """
    for token in overrides:
        if token.startswith("--"):
            check_override_key(token[2:].split("=", 1)[0], grid_keys)


def _diverged_or(directory: Path, outcome: CellOutcome) -> str:
    """``"diverged"`` when the cell's record says so, else ``outcome``."""
    try:
        status = CellRecord.read(directory / RESULT_FILE).status
    except (OSError, ValueError, KeyError, TypeError):
        return outcome
    return "diverged" if status == "diverged" else outcome


def _located(cell: Cell, output: Path) -> Cell:
    """``cell``, or its folder of the single-seed layout when a run with its seed lies there.

    Grids made before seeds named their cells ``<label>/fold<k>``; such a cell is reused
    as the seed its saved config ran with.
    """
    if cell.seed is None:
        return cell
    flat = replace(cell, flat=True)
    saved = flat.directory(output) / SAVED_CONFIG
    if not saved.is_file():
        return cell
    try:
        config = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return cell
    ran_with = config.get("seed_everything") if isinstance(config, Mapping) else None
    return flat if ran_with == cell.seed else cell


def _check_cells(
    cells: Sequence[Cell], output: Path, overrides: Sequence[str], data: Mapping[str, _Dataset]
) -> None:
    """Before any cell runs: every variant's overrides parse and keep the model selection,
    and no finished cell was produced by another configuration.

    Each cell's config is only parsed (with the parser that resolved its dataset's
    config), not built: a few tens of milliseconds per cell.
    """
    checked: set[tuple[str, str]] = set()
    for cell in cells:
        directory = cell.directory(output)
        finished = (directory / RESULT_FILE).is_file()
        if not finished and (cell.dataset, cell.variant.label) in checked:
            continue
        checked.add((cell.dataset, cell.variant.label))
        dataset = data[cell.dataset]
        config = dataset.parser.parse_args(cell_args(cell, output, overrides, dataset.info.seed))
        _check_selection(config, f"from variant {cell.variant.label!r}")
        if finished:
            now = resolved(dataset.parser, config)
            check_unchanged(cell, directory, now, finished=True, default=dataset.defaults)


def _grid_seeds(
    seeds: Sequence[int] | None, data: Mapping[str, _Dataset]
) -> dict[str, tuple[int, ...]]:
    """Each dataset's seeds: ``seeds``, else its config's ``seed_everything``."""
    if seeds is not None:
        return {name: tuple(seeds) for name in data}
    for name, dataset in data.items():
        seed = dataset.info.seed
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigurationError(
                f"the config of dataset {name!r} has seed_everything={seed!r}, but grid "
                "cells need an integer seed: set seed_everything in it or give --seeds"
            )
    return {name: (int(dataset.info.seed),) for name, dataset in data.items()}


def run_benchmark(
    output: str | Path,
    datasets: Mapping[str, str | Path],
    variants: Sequence[Variant],
    folds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    shard: tuple[int, int] = (0, 1),
    keep_checkpoints: KeepCheckpoints = "best",
    seeds: Sequence[int] | None = None,
    backbones: Sequence[str] | None = None,
    train_fractions: Sequence[float] | None = None,
) -> GridRun:
    """Run this shard's cells of the grid.

    Args:
        output: the grid's folder, shared by all shards.
        datasets: dataset name -> LightningCLI config.
        variants: the labelled activations (a variant with ``activation=None`` keeps the
            config's own activation, as ``cv`` does).
        folds: fold indices; None runs every fold of each config.
        overrides: LightningCLI arguments passed to every cell, e.g.
            ``["--trainer.max_epochs", "30"]``.
        shard: ``(i, n)``: run every n-th cell from the i-th on.
        keep_checkpoints: what each finished cell keeps: its best epoch's checkpoint
            (``"best"``), also ``last.ckpt`` (``"all"``), or nothing (``"none"``).
        seeds: the seeds of repeated k-fold (each sets ``seed_everything`` and the fold
            assignment); None: each config's ``seed_everything``.
        backbones: the networks to compare (``model.backbone`` of each cell); None: each
            config's own.
        train_fractions: shares of each fold's training part to train on
            (``data.init_args.train_fraction`` of each cell); None: each config's own.

    Returns:
        This shard's ``result.json`` paths and the cells another process was running.
    """
    if keep_checkpoints not in KEEP_CHECKPOINTS:
        raise ConfigurationError(
            f"--keep_checkpoints {keep_checkpoints!r} is not one of {', '.join(KEEP_CHECKPOINTS)}"
        )
    grid_keys = CELL_KEYS + (ACTIVATION_KEYS if any(v.activation for v in variants) else ())
    grid_keys += BACKBONE_KEYS if backbones is not None else ()
    grid_keys += TRAIN_FRACTION_KEYS if train_fractions is not None else ()
    _check_overrides(overrides, grid_keys)
    per_cell = (BACKBONE_KEYS if backbones is not None else ()) + (
        TRAIN_FRACTION_KEYS if train_fractions is not None else ()
    )
    for variant in variants if per_cell else ():
        for key in variant.overrides:
            check_override_key(str(key), per_cell, f"variant {variant.label!r}:")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigurationError(f"--output {str(output)!r} is a file; give a folder")
    data = {name: _inspect(config, overrides) for name, config in datasets.items()}
    names = {name: _dataset_name(name, datasets[name], dataset) for name, dataset in data.items()}
    datasets = {names[name]: config for name, config in datasets.items()}
    data = {names[name]: dataset for name, dataset in data.items()}
    cell_folds = {
        name: parse_folds(",".join(map(str, folds)), dataset.info.num_folds)
        if folds is not None
        else tuple(range(dataset.info.num_folds))
        for name, dataset in data.items()
    }
    configs = {k: Path(v) for k, v in datasets.items()}
    cells = grid_cells(
        configs, variants, cell_folds, _grid_seeds(seeds, data), backbones, train_fractions
    )
    mine = [_located(cell, output) for cell in shard_cells(cells, *shard)]
    _check_cells(mine, output, overrides, data)
    where = f" (shard {shard[0]}/{shard[1]}: {len(mine)} here)" if shard[1] > 1 else ""
    print(f"benchmark: {len(cells)} cells{where} under {output}", flush=True)
    progress = Progress(len(mine))
    busy: dict[str, Path] = {}
    for cell in mine:
        line = progress.start(cell.name)
        directory = cell.directory(output)
        if (directory / RESULT_FILE).is_file():
            prune_checkpoints(directory, keep_checkpoints)
            progress.done("skipped", f"{line} (finished earlier, skipped)")
            continue
        print(line, end="", flush=True)  # the cell's one line, finished below
        seed = data[cell.dataset].info.seed
        try:
            outcome = run_cell(cell, output, overrides, seed, keep_checkpoints)
        except BaseException:
            print(f": failed (what it printed: {directory / CELL_LOG})", flush=True)
            raise
        if outcome == "busy":
            busy[cell.name] = directory
            text = ": running in another process"
        elif outcome == "skipped":
            text = ": finished by another process meanwhile, skipped"
        else:
            outcome = _diverged_or(directory, outcome)  # type: ignore[assignment]
            text = f": {outcome}"
        progress.done(outcome, text)
    print(progress.summary(), flush=True)
    # Two processes on one grid each find the other's cells busy: those finished by now are
    # not, so the last process to end writes the report.
    still_busy = [name for name, d in busy.items() if not (d / RESULT_FILE).is_file()]
    if len(still_busy) < len(busy):
        print(f"cells: {len(busy) - len(still_busy)} of the busy ones have finished since")
    return GridRun([cell.directory(output) / RESULT_FILE for cell in mine], still_busy)
