"""The benchmark runner: one isolated, resumable LightningCLI fit per grid cell.

A cell is exactly ``python -m dsrelu_lightning fit --config <config> <overrides> <cell
args>`` (see :func:`cell_args`; its ``result.json`` records the command), run in its own
folder ``<output>/<dataset>/<label>/fold<k>/`` with its TensorBoard logs, config.yaml,
epoch_metrics.csv, checkpoints/ and, once finished, ``result.json`` (written atomically).

On a rerun a cell with a ``result.json`` is skipped, provided its saved ``config.yaml``
matches the config this run would use (else the command stops: its result would be reported
as the new settings'); one without resumes from its own ``checkpoints/last.ckpt``, or starts
afresh when there is none, so a grid killed at any moment (kill -9 included) completes by
rerunning the same command. A cell is run under an exclusive lock on its ``.lock`` file: a
cell that another process is running is left alone.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import platform
import shlex
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal, get_args

import lightning
import lightning.pytorch as pl
import torch
import torchmetrics
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.cli import SaveConfigCallback

import dsrelu_lightning
from dsrelu_lightning.atomic import atomic_write_json
from dsrelu_lightning.errors import ConfigurationError, TrainingDivergedError
from dsrelu_lightning.study.command_parser import CommandParser
from dsrelu_lightning.study.grid import (
    ACTIVATION_KEYS,
    CELL_KEYS,
    PAPER_ACTIVATIONS,
    RESULT_FILE,
    SELECTION,
    SELECTION_RULE,
    Cell,
    Grid,
    Variant,
    check_override_key,
    cv_label,
    grid_cells,
    load_grid,
    parse_folds,
    parse_seeds,
    parse_shard,
    select_variants,
    shard_cells,
)
from dsrelu_lightning.study.progress import Progress
from dsrelu_lightning.study.report import write_report
from dsrelu_lightning.training.callbacks import MetricsHistory
from dsrelu_lightning.training.cli import build_cli

try:
    import fcntl
except ImportError:  # not POSIX: cells run unlocked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ConfigInfo",
    "KeepCheckpoints",
    "benchmark_main",
    "cell_args",
    "cv_main",
    "inspect_config",
    "prune_checkpoints",
    "run_benchmark",
    "run_cell",
]

STAGES = ("train", "val")
METRICS = ("acc", "f1", "auroc", "loss")

LOCK_FILE = ".lock"
"""Held (flock) by the process running a cell; it stays in the cell's folder."""

# Keys of a cell's config that do not change its result: where its folder lies (the same
# cell, its output given by a relative or absolute path) and what the console shows.
_COSMETIC_KEYS = frozenset(
    {
        "trainer.default_root_dir",
        "trainer.logger.init_args.save_dir",
        "checkpoint.dirpath",
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
    }
)
_SAVED_CONFIG = "config.yaml"  # SaveConfigCallback's config_filename, which build_cli keeps

CellOutcome = Literal["skipped", "finished", "resumed", "busy"]
# What a finished cell keeps of its checkpoints (~250 MB each for ResNet-34 with Adam):
# last.ckpt only serves a resume, so by default only the best epoch's stays.
KeepCheckpoints = Literal["best", "all", "none"]
KEEP_CHECKPOINTS: tuple[str, ...] = get_args(KeepCheckpoints)


@dataclass(frozen=True)
class ConfigInfo:
    """What the grid needs from a dataset config resolved with the user's overrides."""

    num_folds: int
    seed: int | bool
    activation: str
    activation_args: dict[str, Any] | None


def _build_cli(args: Sequence[str]) -> Any:
    with warnings.catch_warnings():
        # Each cell passes its own args while sys.argv still holds the grid command's.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        return build_cli(args, run=False)


def inspect_config(config: str | Path, overrides: Sequence[str] = ()) -> ConfigInfo:
    """Resolve ``config`` with ``overrides`` once, before any cell runs: bad input fails fast."""
    return _inspect(config, overrides)[0]


def _inspect(config: str | Path, overrides: Sequence[str]) -> tuple[ConfigInfo, Any]:
    """:func:`inspect_config`, and the parser that resolved it (it can resolve any cell)."""
    _check_overrides(overrides, CELL_KEYS)
    cli = _build_cli(["--config", str(config), *overrides, "--trainer.logger", "false"])
    if cli.trainer.fast_dev_run:
        raise ConfigurationError(
            "--trainer.fast_dev_run records no epochs or checkpoints, so a cell would have no "
            "result; use e.g. --trainer.max_epochs 1 --trainer.limit_train_batches 2 instead"
        )
    if cli.trainer.limit_val_batches == 0:
        raise ConfigurationError(
            "benchmark cells pick their best epoch by val/loss: validation must run "
            "(remove --trainer.limit_val_batches 0)"
        )
    _check_selection(cli.config, f"from {str(config)!r} or the overrides")
    model = cli.config["model"]
    args = model.get("activation_args")
    info = ConfigInfo(
        num_folds=int(cli.datamodule.num_folds),
        seed=cli.config["seed_everything"],
        activation=str(model["activation"]),
        activation_args=dict(args) if args is not None else None,
    )
    parser = cli.parser
    del cli
    gc.collect()
    return info, parser


def _check_selection(config: Any, where: str) -> None:
    """Refuse a resolved config whose model selection is not the grid's (:data:`SELECTION`)."""
    for key, needed in SELECTION.items():
        if config[key] != needed:
            raise ConfigurationError(
                f"{key}={config[key]!r} ({where}), but {SELECTION_RULE}; remove that setting"
            )


def cell_args(
    cell: Cell, output: str | Path, overrides: Sequence[str], seed: int | bool = 42
) -> list[str]:
    """The LightningCLI arguments (without ``fit``) of ``cell``'s run.

    The cell's seed sets ``seed_everything`` and the fold assignment
    (``data.init_args.seed``); a cell without one uses ``seed`` for ``seed_everything``
    and the config's fold assignment.
    """
    directory = str(cell.directory(output))
    seeds = ["--seed_everything", json.dumps(seed if cell.seed is None else cell.seed)]
    if cell.seed is not None:
        seeds += ["--data.init_args.seed", str(cell.seed)]
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": directory, "name": "", "version": ""},
    }
    return [
        "--config",
        str(cell.config),
        *overrides,
        *cell.variant.cli_args(),
        "--data.init_args.fold_index",
        str(cell.fold),
        *seeds,
        "--trainer.default_root_dir",
        directory,
        "--trainer.logger",
        json.dumps(logger),
        "--checkpoint.dirpath",
        str(Path(directory) / "checkpoints"),
    ]


class _KeepStopped(Callback):
    """End a resumed fit at once when the restored EarlyStopping had already stopped it.

    Lightning restores EarlyStopping's state but not ``trainer.should_stop``, so a fit
    resumed after an early stop would train on (and could find a new best epoch).
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if any(_stop_reason(cb) for cb in trainer.callbacks if isinstance(cb, EarlyStopping)):
            trainer.should_stop = True


def _stop_reason(early_stopping: EarlyStopping) -> str | None:
    reason = getattr(early_stopping, "stopping_reason", None)
    if reason is None or reason.value == 0:  # NOT_STOPPED
        return None
    return early_stopping.stopping_reason_message or reason.name.lower()


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch ``path`` was saved at, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError):
        print(f"  {path} is unreadable: starting the cell afresh", flush=True)
        return None
    return int(checkpoint.get("epoch", 0))


def _changed_keys(before: Any, after: Any, prefix: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        return [
            c for k in keys for c in _changed_keys(before.get(k), after.get(k), f"{prefix}{k}.")
        ]
    return [] if before == after else [prefix.rstrip(".")]


def _resolved(parser: Any, config: Any) -> dict[str, Any]:
    """``config`` as the cell's saved config.yaml holds it (SaveConfigCallback's dump)."""
    return yaml.safe_load(parser.dump(config, skip_none=False))


def _check_unchanged(cell: Cell, directory: Path, now: Mapping[str, Any], finished: bool) -> None:
    """Refuse to reuse ``cell``'s folder when the config saved there differs from ``now``.

    Cosmetic keys (:data:`_COSMETIC_KEYS`) do not count; a folder without a saved config
    has nothing to compare.
    """
    saved = directory / _SAVED_CONFIG
    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8"))
    changed = [k for k in _changed_keys(before, dict(now)) if k not in _COSMETIC_KEYS]
    if not changed:
        return
    keys = ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "")
    if finished:
        raise ConfigurationError(
            f"cell {cell.name} finished with another configuration ({keys} changed), so its "
            "result is not this command's: rerun with the original arguments, or use another "
            "--output for the new settings"
        )
    raise ConfigurationError(
        f"cell {cell.name} was started with another configuration ({keys} changed): rerun "
        f"with the original arguments, or delete {str(directory)!r} to start that cell afresh"
    )


def _allow_resume(cli: Any, cell: Cell, directory: Path) -> None:
    """Check the cell's saved config matches this run's, and let it be rewritten."""
    _check_unchanged(cell, directory, _resolved(cli.parser, cli.config), finished=False)
    for callback in cli.trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            callback.overwrite = True


def _try_lock(handle: IO[str]) -> bool:
    """Lock ``handle``'s file exclusively without waiting; False if another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without locks
        warnings.warn(
            f"cannot lock {handle.name} ({exc.strerror or exc}): the cell runs unlocked, so "
            "do not run it from two processes at once",
            stacklevel=3,
        )
    return True


@contextmanager
def _cell_lock(directory: Path) -> Iterator[bool]:
    """Hold ``directory``'s lock file (created if needed) while the block runs.

    Yields False, holding nothing, when another process holds it. Closing the file
    releases the lock, also when this process is killed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_FILE).open("a", encoding="utf-8") as handle:
        yield _try_lock(handle)


def _clear(directory: Path) -> None:
    """Empty the folder of a cell killed before its first checkpoint, keeping its lock file.

    The lock file stays: deleting it while held would let another process lock a new one.
    """
    for path in directory.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _fit(cli: Any, ckpt_path: Path | None) -> str | None:
    """Fit as LightningCLI's ``fit`` subcommand does (with its before/after hooks).

    Returns the message of a training divergence (a finished, if failed, run), else None.
    """
    before, after = getattr(cli, "before_fit", None), getattr(cli, "after_fit", None)
    if callable(before):
        before()
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    except TrainingDivergedError as exc:
        return str(exc)
    if callable(after):
        after()
    return None


def _best_row(rows: Sequence[Mapping[str, float]]) -> Mapping[str, float] | None:
    """The epoch with the lowest finite val/loss (the first one on ties, as ModelCheckpoint)."""
    finite = [r for r in rows if r.get("val/loss") is not None and r["val/loss"] == r["val/loss"]]
    return min(finite, key=lambda r: r["val/loss"], default=None)


def _test_metrics(cli: Any) -> dict[str, float] | None:
    """Test metrics of the best checkpoint, where the data module has a test set."""
    checkpoint = cli.trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.best_model_path:
        return None
    cli.datamodule.setup("test")
    if getattr(cli.datamodule, "test_dataset", None) is None:
        return None
    (logged,) = cli.trainer.test(
        cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False
    )
    return {name: float(logged[f"test/{name}"]) for name in METRICS if f"test/{name}" in logged}


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "dsrelu_lightning": dsrelu_lightning.__version__,
    }


def _device(trainer: pl.Trainer) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({_cpu_model()}, {os.cpu_count()} logical CPUs)"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


@dataclass(frozen=True)
class _Run:
    """What one attempt at a cell produced."""

    rows: Sequence[Mapping[str, float]]
    test: dict[str, float] | None
    diverged: str | None
    resumed_from: int | None
    wall_time_s: float
    keep_checkpoints: KeepCheckpoints = "best"


def _result(cell: Cell, cli: Any, args: Sequence[str], run: _Run) -> dict[str, Any]:
    rows, diverged = run.rows, run.diverged
    best = _best_row(rows)
    model = cli.config["model"]
    early_stop = [_stop_reason(cb) for cb in cli.trainer.callbacks if isinstance(cb, EarlyStopping)]
    times = [r["time/epoch_s"] for r in rows if r.get("time/epoch_s") is not None]
    checkpoint = cli.trainer.checkpoint_callback
    best_path = (
        Path(checkpoint.best_model_path) if checkpoint and checkpoint.best_model_path else None
    )
    return {
        "dataset": cell.dataset,
        "label": cell.variant.label,
        "activation": str(model["activation"]),
        "activation_args": model.get("activation_args"),
        "overrides": dict(cell.variant.overrides),
        "seed": cli.config["seed_everything"],
        "fold": cell.fold,
        "num_folds": int(cli.datamodule.num_folds),
        "status": "diverged" if diverged else "finished",
        "stop_reason": diverged or next((r for r in early_stop if r), None) or "max_epochs",
        "best_epoch": int(best["epoch"]) if best else None,
        "epochs_run": len(rows),
        **{stage: _stage(best, stage) for stage in STAGES},
        "test": run.test,
        "mean_epoch_time_s": sum(times) / len(times) if times else None,
        "wall_time_s": run.wall_time_s,
        "resumed_from_epoch": run.resumed_from,
        "best_checkpoint": best_path.name if best_path and run.keep_checkpoints != "none" else None,
        "command": "python -m dsrelu_lightning fit " + shlex.join(args),
        "config": json.loads(cli.parser.dump(cli.config, format="json", skip_none=False)),
        "versions": _versions(),
        "device": _device(cli.trainer),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _stage(row: Mapping[str, float] | None, stage: str) -> dict[str, float | None] | None:
    if row is None:
        return None
    return {name: row.get(f"{stage}/{name}") for name in METRICS}


def prune_checkpoints(directory: Path, keep: KeepCheckpoints) -> None:
    """Delete the checkpoints a finished cell no longer needs (see ``KeepCheckpoints``)."""
    if keep == "all":
        return
    pattern = "last*.ckpt" if keep == "best" else "*.ckpt"
    for path in (directory / "checkpoints").glob(pattern):
        path.unlink(missing_ok=True)


def run_cell(
    cell: Cell,
    output: str | Path,
    overrides: Sequence[str] = (),
    seed: int | bool = 42,
    keep_checkpoints: KeepCheckpoints = "best",
) -> CellOutcome:
    """Run ``cell`` to its ``result.json``: skip it if finished, resume it if interrupted.

    Once ``result.json`` is written, the checkpoints ``keep_checkpoints`` does not keep
    are deleted (a kill in between leaves them for the next run to delete).

    Returns ``"busy"``, touching nothing, while another process runs the cell (holds its
    lock). A finished or interrupted cell whose saved config differs from this run's
    raises ConfigurationError.
    """
    directory = cell.directory(output)
    with _cell_lock(directory) as locked:
        if not locked:
            return "busy"
        args = cell_args(cell, output, overrides, seed)
        outcome = _run_locked(cell, directory, args, keep_checkpoints)
        prune_checkpoints(directory, keep_checkpoints)
        return outcome


def _run_locked(
    cell: Cell, directory: Path, args: Sequence[str], keep_checkpoints: KeepCheckpoints
) -> CellOutcome:
    start = time.perf_counter()
    finished = (directory / RESULT_FILE).is_file()  # e.g. by another process meanwhile
    resumed_from = None if finished else _checkpoint_epoch(directory / "checkpoints" / "last.ckpt")
    if not finished and resumed_from is None:
        _clear(directory)  # killed before its first checkpoint: nothing to keep
    cli = _build_cli(args)
    try:
        if finished:
            _check_unchanged(cell, directory, _resolved(cli.parser, cli.config), finished=True)
            return "skipped"
        if resumed_from is not None:
            _allow_resume(cli, cell, directory)
            print(f"  resuming from checkpoints/last.ckpt (epoch {resumed_from})", flush=True)
        cli.trainer.callbacks.append(_KeepStopped())
        last = directory / "checkpoints" / "last.ckpt" if resumed_from is not None else None
        diverged = _fit(cli, last)
        rows = next(cb for cb in cli.trainer.callbacks if isinstance(cb, MetricsHistory)).rows
        test = _test_metrics(cli) if _best_row(rows) else None
        elapsed = time.perf_counter() - start
        run = _Run(rows, test, diverged, resumed_from, elapsed, keep_checkpoints)
        atomic_write_json(directory / RESULT_FILE, _result(cell, cli, args, run))
    finally:
        del cli
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return "finished" if resumed_from is None else "resumed"


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
        status = json.loads((directory / RESULT_FILE).read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError):
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
    saved = flat.directory(output) / _SAVED_CONFIG
    if not saved.is_file():
        return cell
    try:
        config = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return cell
    ran_with = config.get("seed_everything") if isinstance(config, Mapping) else None
    return flat if ran_with == cell.seed else cell


def _check_cells(
    cells: Sequence[Cell],
    output: Path,
    overrides: Sequence[str],
    infos: Mapping[str, tuple[ConfigInfo, Any]],
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
        info, parser = infos[cell.dataset]
        config = parser.parse_args(cell_args(cell, output, overrides, info.seed))
        _check_selection(config, f"from variant {cell.variant.label!r}")
        if finished:
            _check_unchanged(cell, directory, _resolved(parser, config), finished=True)


def _grid_seeds(seeds: Sequence[int] | None, infos: Mapping[str, tuple[ConfigInfo, Any]]):
    """Each dataset's seeds: ``seeds``, else its config's ``seed_everything``."""
    if seeds is not None:
        return {name: tuple(seeds) for name in infos}
    for name, (info, _) in infos.items():
        if isinstance(info.seed, bool) or not isinstance(info.seed, int):
            raise ConfigurationError(
                f"the config of dataset {name!r} has seed_everything={info.seed!r}, but grid "
                "cells need an integer seed: set seed_everything in it or give --seeds"
            )
    return {name: (int(info.seed),) for name, (info, _) in infos.items()}


def run_benchmark(
    output: str | Path,
    datasets: Mapping[str, str | Path],
    variants: Sequence[Variant],
    folds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    shard: tuple[int, int] = (0, 1),
    report: bool = True,
    reference: str | None = None,
    keep_checkpoints: KeepCheckpoints = "best",
    seeds: Sequence[int] | None = None,
) -> list[Path]:
    """Run this shard's cells of the grid and (by default) write the report.

    Args:
        output: the grid's folder, shared by all shards.
        datasets: dataset name -> LightningCLI config.
        variants: the labelled activations (a variant with ``activation=None`` keeps the
            config's own activation, as ``cv`` does).
        folds: fold indices; None runs every fold of each config.
        overrides: LightningCLI arguments passed to every cell, e.g.
            ``["--trainer.max_epochs", "30"]``.
        shard: ``(i, n)``: run every n-th cell from the i-th on.
        report: write the report of everything under ``output`` at the end.
        reference: the report's reference label for the paired tests.
        keep_checkpoints: what each finished cell keeps: its best epoch's checkpoint
            (``"best"``), also ``last.ckpt`` (``"all"``), or nothing (``"none"``).
        seeds: the seeds of repeated k-fold (each sets ``seed_everything`` and the fold
            assignment); None: each config's ``seed_everything``.

    Returns:
        The ``result.json`` paths of this shard's cells.
    """
    if keep_checkpoints not in KEEP_CHECKPOINTS:
        raise ConfigurationError(
            f"--keep_checkpoints {keep_checkpoints!r} is not one of {', '.join(KEEP_CHECKPOINTS)}"
        )
    grid_keys = CELL_KEYS + (ACTIVATION_KEYS if any(v.activation for v in variants) else ())
    _check_overrides(overrides, grid_keys)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigurationError(f"--output {str(output)!r} is a file; give a folder")
    infos = {name: _inspect(config, overrides) for name, config in datasets.items()}
    cell_folds = {
        name: parse_folds(",".join(map(str, folds)), info.num_folds)
        if folds is not None
        else tuple(range(info.num_folds))
        for name, (info, _) in infos.items()
    }
    configs = {k: Path(v) for k, v in datasets.items()}
    cells = grid_cells(configs, variants, cell_folds, _grid_seeds(seeds, infos))
    mine = [_located(cell, output) for cell in shard_cells(cells, *shard)]
    _check_cells(mine, output, overrides, infos)
    where = f" (shard {shard[0]}/{shard[1]}: {len(mine)} here)" if shard[1] > 1 else ""
    print(f"benchmark: {len(cells)} cells{where} under {output}", flush=True)
    progress = Progress(len(mine))
    for cell in mine:
        line = progress.start(cell.name)
        if (cell.directory(output) / RESULT_FILE).is_file():
            prune_checkpoints(cell.directory(output), keep_checkpoints)
            progress.done(cell.name, "skipped", f"{line} (finished earlier, skipped)")
            continue
        print(line, flush=True)
        outcome = run_cell(cell, output, overrides, infos[cell.dataset][0].seed, keep_checkpoints)
        if outcome == "busy":
            text = f"{line}: running in another process"
        elif outcome == "skipped":
            text = f"{line}: finished by another process meanwhile, skipped"
        else:
            outcome = _diverged_or(cell.directory(output), outcome)
            text = f"{line}: {outcome}"
        progress.done(cell.name, outcome, text)
    print(progress.summary(), flush=True)
    busy = progress.names("busy")
    if report and busy:
        print(
            f"report: not written: {len(busy)} cell(s) still running in another process "
            f"({', '.join(busy[:3])}{', ...' if len(busy) > 3 else ''}); rerun this command "
            "when they have finished",
            flush=True,
        )
    elif report:
        summary = write_report(output, reference=reference)
        print(f"report: {summary}", flush=True)
    return [cell.directory(output) / RESULT_FILE for cell in mine]


def _grid_parser(prog: str, description: str, cv: bool) -> CommandParser:
    parser = CommandParser(prog=f"python -m dsrelu_lightning {prog}", description=description)
    parser.add_argument(
        "--config", required=cv, help="the dataset's LightningCLI config (its stem names it)"
    )
    if not cv:
        parser.add_argument("--grid", help="grid file: datasets, activations, variants, folds")
        parser.add_argument(
            "--activations",
            help="comma-separated activation names or grid labels "
            f"(default: the grid's labels, else {','.join(PAPER_ACTIVATIONS)})",
        )
        parser.add_argument("--reference", help="the report's reference label (default dsrelu)")
    parser.add_argument("--folds", help="comma-separated fold indices (default: every fold)")
    parser.add_argument(
        "--seeds",
        help="comma-separated seeds of repeated k-fold, e.g. 42,43,44; each sets "
        "seed_everything and the fold assignment (default: the config's seed_everything)",
    )
    parser.add_argument("--output", required=True, help="the grid's folder (shared by shards)")
    parser.add_argument("--shard", default="0/1", help="run shard i of n (0-based), e.g. 1/4")
    parser.add_argument(
        "--keep_checkpoints",
        default="best",
        choices=KEEP_CHECKPOINTS,
        help="what a finished cell keeps: its best checkpoint (default), also last.ckpt "
        "(all), or none (each ResNet-34 checkpoint is about 250 MB)",
    )
    parser.epilog = "Any other argument is a LightningCLI override for every cell."
    return parser


def benchmark_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning benchmark``: the activations x folds grid."""
    parser = _grid_parser("benchmark", "Run a grid of activations x folds (x datasets).", False)
    args, overrides = parser.parse_known_args(list(argv))
    grid = load_grid(args.grid) if args.grid else Grid()
    if grid.datasets and args.config:
        raise ConfigurationError("give the datasets either in the --grid file or by --config")
    datasets = dict(grid.datasets) or ({Path(args.config).stem: args.config} if args.config else {})
    if not datasets:
        raise ConfigurationError("no dataset: give --config <dataset config> or a --grid file")
    names = args.activations.split(",") if args.activations else None
    labels = names or [v.label for v in grid.variants] or list(PAPER_ACTIVATIONS)
    run_benchmark(
        args.output,
        datasets,
        select_variants([n.strip() for n in labels], grid.variants),
        parse_folds(args.folds) if args.folds else grid.folds,
        overrides,
        parse_shard(args.shard),
        reference=args.reference,
        keep_checkpoints=args.keep_checkpoints,
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
    )


def cv_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning cv``: every fold of the config's own activation."""
    parser = _grid_parser("cv", "Cross-validate the config's activation over its folds.", True)
    args, overrides = parser.parse_known_args(list(argv))
    info = inspect_config(args.config, overrides)
    label = cv_label(info.activation, info.activation_args)
    run_benchmark(
        args.output,
        {Path(args.config).stem: args.config},
        [Variant(label=label)],
        parse_folds(args.folds) if args.folds else None,
        overrides,
        parse_shard(args.shard),
        reference=label,
        keep_checkpoints=args.keep_checkpoints,
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
    )
