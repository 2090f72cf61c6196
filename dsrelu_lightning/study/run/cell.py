"""One grid cell's life: its ``fit`` arguments, lock, stale-folder clean-up, resume, record.

A cell is exactly ``python -m dsrelu_lightning fit --config <config> <overrides> <cell
args>`` (see :func:`cell_args`; its ``result.json`` records the command), run in its own
folder with its TensorBoard logs, config.yaml, epoch_metrics.csv, checkpoints/, what it
printed (``cell.log``) and, once finished, ``result.json`` (written atomically). A cell
with a ``result.json`` is reused only when its saved ``config.yaml`` matches the config of
this run; one without resumes from its own ``checkpoints/last.ckpt``, or starts afresh when
there is none. A cell is run under an exclusive lock on its ``.lock`` file: a cell another
process runs is left alone. Each cell runs in a process of its own
(:func:`~dsrelu_lightning.study.run.isolated.call_isolated`), so no state of one cell's
process (dynamo's caches, DSReLU's kernels, warning registries) reaches the next.
"""

from __future__ import annotations

import gc
import json
import pickle
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.cli import SaveConfigCallback

from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.cli.summaries import changed_keys, resolved, resolved_defaults
from dsrelu_lightning.errors import ConfigurationError, TrainingDivergedError
from dsrelu_lightning.nn.dsrelu_kernel import kernel_mode, set_kernel_mode
from dsrelu_lightning.study.result_file import (
    RESULT_FILE,
    STAGE_METRICS,
)
from dsrelu_lightning.study.run.console import CELL_LOG, output_to
from dsrelu_lightning.study.run.grid import Cell
from dsrelu_lightning.study.run.isolated import Say, call_isolated
from dsrelu_lightning.study.run.keys import KeepCheckpoints
from dsrelu_lightning.study.run.lock import cell_lock, clear_folder
from dsrelu_lightning.study.run.record_from_fit import cell_record, history_rows, stop_reason
from dsrelu_lightning.training.selection import best_row

__all__ = [
    "COSMETIC_KEYS",
    "SAVED_CONFIG",
    "CellOutcome",
    "cell_args",
    "check_unchanged",
    "prune_checkpoints",
    "run_cell",
]

SAVED_CONFIG = "config.yaml"
"""SaveConfigCallback's config_filename, which build_cli keeps."""

COSMETIC_KEYS = frozenset(
    {
        "trainer.default_root_dir",
        "trainer.logger.init_args.save_dir",
        "checkpoint.dirpath",
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
    }
)
"""Keys of a cell's config that do not change its result: where its folder lies (the same
cell, its output given by a relative or absolute path) and what the console shows."""

CellOutcome = Literal["skipped", "finished", "resumed", "busy"]


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
        *cell.cli_args(),
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
        if any(stop_reason(cb) for cb in trainer.callbacks if isinstance(cb, EarlyStopping)):
            trainer.should_stop = True


def _checkpoint_epoch(path: Path, say: Say) -> int | None:
    """The epoch ``path`` was saved at, or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError):
        say(f"  {path} is unreadable: starting the cell afresh\n")
        return None
    return int(checkpoint.get("epoch", 0))


def check_unchanged(
    cell: Cell,
    directory: Path,
    now: Mapping[str, Any],
    finished: bool,
    default: Mapping[str, Any] | None = None,
) -> None:
    """Refuse to reuse ``cell``'s folder when the config saved there differs from ``now``.

    Cosmetic keys (:data:`COSMETIC_KEYS`) do not count, nor keys the CLI gained after the
    cell ran that hold their ``default`` value; a folder without a saved config has
    nothing to compare.
    """
    saved = directory / SAVED_CONFIG
    if not saved.is_file():
        return
    before = yaml.safe_load(saved.read_text(encoding="utf-8"))
    changed = [k for k in changed_keys(before, now, default) if k not in COSMETIC_KEYS]
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


def _check_cli_unchanged(cli: Any, cell: Cell, directory: Path, finished: bool) -> None:
    now = resolved(cli.parser, cli.config)
    check_unchanged(cell, directory, now, finished, resolved_defaults(cli.parser, cli.config))


def _fit(cli: Any, ckpt_path: Path | None) -> str | None:
    """Fit as LightningCLI's ``fit`` subcommand does, with its ``before_fit`` checks.

    Its ``after_fit`` (the run's summary and how to resume it) is left out: in a grid the
    cell's progress line says how it ended, and resuming means rerunning the grid.
    Returns the message of a training divergence (a finished, if failed, run), else None.
    """
    cli.before_fit()
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    except TrainingDivergedError as exc:
        return str(exc)
    return None


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
    return {
        name: float(logged[f"test/{name}"]) for name in STAGE_METRICS if f"test/{name}" in logged
    }


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
    raises ConfigurationError. The cell runs in a fresh process (what it prints goes to its
    ``cell.log``); its exceptions are raised here.
    """
    args = (cell, output, tuple(overrides), seed, keep_checkpoints, _torch_settings())
    return call_isolated(_run_cell_here, *args, say=_print)


def _torch_settings() -> tuple[int, str, bool, str]:
    """The process-wide settings a cell's process takes from the grid's: intra-op threads,
    float32 matmul precision, deterministic algorithms, DSReLU's kernel mode."""
    return (
        torch.get_num_threads(),
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        kernel_mode(),
    )


def _apply_torch_settings(settings: tuple[int, str, bool, str]) -> None:
    threads, matmul_precision, deterministic, mode = settings
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(matmul_precision)
    torch.use_deterministic_algorithms(deterministic)
    set_kernel_mode(mode)


def _print(text: str) -> None:
    print(text, end="", flush=True)


def _run_cell_here(
    cell: Cell,
    output: str | Path,
    overrides: Sequence[str],
    seed: int | bool,
    keep_checkpoints: KeepCheckpoints,
    settings: tuple[int, str, bool, str],
    say: Say,
) -> CellOutcome:
    """:func:`run_cell` in this process, with the grid's :func:`_torch_settings`; ``say``
    shows a note on the grid's progress line."""
    _apply_torch_settings(settings)
    directory = cell.directory(output)
    with cell_lock(directory) as locked:
        if not locked:
            return "busy"
        args = cell_args(cell, output, overrides, seed)
        outcome = _run_locked(cell, directory, args, overrides, keep_checkpoints, say)
        prune_checkpoints(directory, keep_checkpoints)
        return outcome


def _run_locked(
    cell: Cell,
    directory: Path,
    args: Sequence[str],
    overrides: Sequence[str],
    keep_checkpoints: KeepCheckpoints,
    say: Say,
) -> CellOutcome:
    start = time.perf_counter()
    finished = (directory / RESULT_FILE).is_file()  # e.g. by another process meanwhile
    last = directory / "checkpoints" / "last.ckpt"
    resumed_from = None if finished else _checkpoint_epoch(last, say)
    if not finished and resumed_from is None:
        clear_folder(directory)  # killed before its first checkpoint: nothing to keep
    if resumed_from is not None:
        say(f" resuming from checkpoints/last.ckpt (epoch {resumed_from})")
    with output_to(directory / CELL_LOG):
        cli = build_cli(args, run=False)
        try:
            if finished:
                _check_cli_unchanged(cli, cell, directory, finished=True)
                return "skipped"
            if resumed_from is not None:
                _check_cli_unchanged(cli, cell, directory, finished=False)
                for callback in cli.trainer.callbacks:
                    if isinstance(callback, SaveConfigCallback):
                        callback.overwrite = True  # the resumed fit rewrites the same config
            cli.trainer.callbacks.append(_KeepStopped())
            diverged = _fit(cli, last if resumed_from is not None else None)
            # Before testing: testing "best" restores MetricsHistory's state from that checkpoint.
            rows = history_rows(cli)
            test = _test_metrics(cli) if best_row(rows) else None
            elapsed = time.perf_counter() - start
            record = cell_record(
                cell, cli, args, overrides, rows, diverged, test, resumed_from, elapsed,
                keep_checkpoints,
            )  # fmt: skip
            record.write(directory)
        finally:
            del cli
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return "finished" if resumed_from is None else "resumed"
