"""One trial: a CLI fit per inner fold, each exactly a grid cell's fit (no test), in the trial's
own folder ``<output>/<label>/trial_NNNN/fold<k>``; its score is the mean validation metric."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
from optuna_integration import PyTorchLightningPruningCallback

from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.errors import TrainingDivergedError
from dsrelu_lightning.study.run.cell import cell_args, prune_checkpoints
from dsrelu_lightning.study.run.console import CELL_LOG, output_to
from dsrelu_lightning.study.run.grid import Cell
from dsrelu_lightning.study.run.lock import cell_lock, clear_folder
from dsrelu_lightning.study.run.record_from_fit import history_rows
from dsrelu_lightning.study.run.variants import Variant
from dsrelu_lightning.study.tune.space import Param
from dsrelu_lightning.training.selection import best_row

__all__ = ["FAILURE", "Label", "Setup", "TrialFailed", "make_objective", "trial_folder"]

FAILURE = "failure"
"""User attribute of a trial the objective failed: why (divergence, a crash)."""


class TrialFailed(Exception):
    """A trial that ran and failed (NaN loss, a crash): recorded as failed, the search goes on."""


@dataclass(frozen=True)
class Setup:
    """What every trial of a ``tune`` command shares."""

    config: Path
    overrides: tuple[str, ...]
    output: Path
    objective: str
    folds: tuple[int, ...]
    seed: int | bool


@dataclass(frozen=True)
class Label:
    """One tuned activation: its label (study name, folder), activation, base arguments and
    the parameters it tunes."""

    name: str
    activation: str
    activation_args: Mapping[str, Any] | None
    params: tuple[Param, ...]

    def variant(self, values: Mapping[str, Any], label: str | None = None) -> Variant:
        """The grid variant of this label with a trial's parameter ``values``."""
        args = dict(self.activation_args or {})
        args.update({p.name: values[p.name] for p in self.params if p.is_activation_arg})
        overrides = {p.key: values[p.name] for p in self.params if not p.is_activation_arg}
        return Variant(label or self.name, self.activation, args or None, overrides)


class _Pruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, except that a non-finite objective fails the trial
    (it diverged) instead of pruning it."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking and value is not None and not math.isfinite(float(value)):
            epoch = trainer.current_epoch
            raise TrialFailed(f"diverged: {self.monitor} is {float(value)} at epoch {epoch}")
        super().on_validation_end(trainer, pl_module)


def trial_folder(output: Path, label: str, number: int) -> Path:
    """The folder of trial ``number`` of ``label``."""
    return output / label / f"trial_{number:04d}"


def trial_cell(
    setup: Setup, label: Label, values: Mapping[str, Any], number: int, fold: int
) -> Cell:
    """Trial ``number``'s fit of ``fold`` as a grid cell (its folder: :func:`trial_folder`)."""
    variant = label.variant(values, f"trial_{number:04d}")
    return Cell(dataset=label.name, config=setup.config, variant=variant, fold=fold)


def _fit(args: Sequence[str], folder: Path, callback: Any) -> list[dict[str, float]]:
    """Fit as a grid cell does, without testing; its console output goes to the fold's log."""
    folder.mkdir(parents=True, exist_ok=True)
    with output_to(folder / CELL_LOG):
        cli = build_cli(args, run=False)
        try:
            if callback is not None:
                cli.trainer.callbacks.append(callback)
            cli.before_fit()
            try:
                cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            except TrainingDivergedError as exc:
                raise TrialFailed(f"diverged: {exc}") from None
            return history_rows(cli)
        finally:
            del cli
            gc.collect()


def _fold_score(rows: Sequence[Mapping[str, float]], metric: str) -> tuple[float, int]:
    """The fold's ``metric`` at its best epoch (selected on val/loss, as every fit is)."""
    best = best_row(rows)
    if best is None or not math.isfinite(float(best.get(metric, math.nan))):
        raise TrialFailed(f"diverged: no epoch has a finite val/loss and {metric}")
    return float(best[metric]), int(best["epoch"])


def run_trial(setup: Setup, label: Label, trial: optuna.Trial, values: Mapping[str, Any]) -> float:
    """Fit every inner fold of ``trial``; prune on the first fold's per-epoch objective."""
    scores: dict[str, float] = {}
    for index, fold in enumerate(setup.folds):
        cell = trial_cell(setup, label, values, trial.number, fold)
        args = cell_args(cell, setup.output, setup.overrides, setup.seed)
        pruning = _Pruning(trial, setup.objective) if index == 0 else None
        try:
            rows = _fit(args, cell.directory(setup.output), pruning)
        finally:
            prune_checkpoints(cell.directory(setup.output), "none")
        score, epoch = _fold_score(rows, setup.objective)
        scores[str(fold)] = score
        trial.set_user_attr(f"fold{fold}_best_epoch", epoch)
        trial.set_user_attr(f"fold{fold}_epochs", len(rows))
    trial.set_user_attr("fold_scores", scores)
    return sum(scores.values()) / len(scores)


def make_objective(
    setup: Setup, label: Label, started: Callable[[int], None]
) -> Callable[[optuna.Trial], float]:
    """Optuna's objective for ``label``: suggest, lock the trial's folder, call ``started``
    with the trial's number (the worker's turn to ask ends), fit. Failures raise
    :class:`TrialFailed` with a reason."""

    def objective(trial: optuna.Trial) -> float:
        values = {p.name: p.suggest(trial) for p in label.params}
        folder = trial_folder(setup.output, label.name, trial.number)
        with cell_lock(folder):
            started(trial.number)
            clear_folder(folder)  # a study started afresh in an old --output reuses numbers
            start = time.perf_counter()
            trial.set_user_attr("folder", str(folder.relative_to(setup.output)))
            try:
                return run_trial(setup, label, trial, values)
            except optuna.TrialPruned:
                raise
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if not isinstance(exc, TrialFailed):
                    reason = f"{type(exc).__name__}: {reason}"
                trial.set_user_attr(FAILURE, reason[:500])
                raise TrialFailed(reason) from exc
            finally:
                trial.set_user_attr("wall_s", round(time.perf_counter() - start, 3))

    return objective
