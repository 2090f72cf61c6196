"""A tuning worker: takes trials from the shared study until it holds N, one at a time.

Workers (``--workers``, a second command, SLURM array tasks) share the study's storage and the
output folder. Counting the study's trials and starting a new one happen under a lock file in
the output folder, so together they run exactly N trials. A trial holds its folder's lock while
it runs: a RUNNING trial whose folder lock is free lost its worker (killed), so it is failed and
rerun with the same parameters (as Optuna's heartbeat does for RDB storages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from dsrelu_lightning.atomic import atomic_write_json
from dsrelu_lightning.study.run.lock import cell_lock
from dsrelu_lightning.study.tune.objective import (
    FAILURE,
    Label,
    Setup,
    TrialFailed,
    make_objective,
    trial_folder,
)
from dsrelu_lightning.study.tune.storage import retry_dead_trial

try:
    import fcntl
except ImportError:  # not POSIX: one worker at a time
    fcntl = None  # type: ignore[assignment]

__all__ = ["ASK_LOCK", "TRIAL_FILE", "counted_trials", "progress_line", "run_worker"]

TRIAL_FILE = "trial.json"
"""A finished trial's record in its folder: state, parameters, objective, per-epoch values."""

ASK_LOCK = ".tune.lock"
"""The lock file in the output folder that workers hold while they count and start a trial."""


@contextmanager
def _ask_turn(output: Path) -> Iterator[Callable[[], None]]:
    """Hold the output folder's ask lock (waiting for it); yields a function that releases it
    early (the objective calls it once its trial's folder is locked)."""
    with (output / ASK_LOCK).open("a", encoding="utf-8") as handle:
        held = [fcntl is not None]
        if held[0]:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)

        def release() -> None:
            if held[0]:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                held[0] = False

        try:
            yield release
        finally:
            release()


def counted_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count towards N: all but those a retry replaced (a dead worker's)."""
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in replaced)]


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials() if t.number == number)


def _fail_dead_trials(study: optuna.Study, output: Path, label: str) -> None:
    """Fail and retry RUNNING trials whose folder lock is free: their worker is gone."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        with cell_lock(trial_folder(output, label, trial.number)) as free:
            fresh = _frozen(study, trial.number)  # its worker may have finished meanwhile
            finished = fresh.state != TrialState.RUNNING or "wall_s" in fresh.user_attrs
            if not free or finished:
                continue
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        print(
            f"trial {trial.number} {label}: its worker died; its parameters run again", flush=True
        )
        retry_dead_trial(study, _frozen(study, trial.number))


def progress_line(label: str, trial: FrozenTrial, objective: str) -> str:
    """One line per finished trial: number, parameters, objective, state, time."""
    params = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
    )
    if trial.state == TrialState.COMPLETE:
        outcome = f"{objective} {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values, default=None)
        outcome = f"pruned after epoch {last}" if last is not None else "pruned"
    else:
        outcome = f"failed: {trial.user_attrs.get(FAILURE, 'interrupted')}"
    seconds = trial.user_attrs.get("wall_s")
    took = f" ({seconds:.1f} s)" if isinstance(seconds, int | float) else ""
    return f"trial {trial.number} {label}: {params or '-'} -> {outcome} [{trial.state.name}]{took}"


def _has_room(study: optuna.Study, n_trials: int) -> bool:
    trials = study.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    return waiting or len(counted_trials(trials)) < n_trials


def _run_one(setup: Setup, label: Label, study: optuna.Study, release: Callable[[], None]) -> None:
    """Run one trial; a Ctrl-C fails it as Optuna does, and enqueues its rerun (as a kill's)."""
    started: list[int] = []

    def start(number: int) -> None:
        started.append(number)
        release()

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        atomic_write_json(trial_folder(setup.output, label.name, trial.number) / TRIAL_FILE, {
            "label": label.name, "number": trial.number, "state": trial.state.name,
            "params": trial.params, "value": trial.value, setup.objective: trial.value,
            "intermediate_values": trial.intermediate_values, "user_attrs": trial.user_attrs,
        })  # fmt: skip
        print(progress_line(label.name, trial, setup.objective), flush=True)

    try:
        study.optimize(
            make_objective(setup, label, start),
            n_trials=1,
            catch=(TrialFailed,),
            callbacks=[report],
            gc_after_trial=True,
        )
    except KeyboardInterrupt:
        if started:
            retry_dead_trial(study, _frozen(study, started[0]))
        raise


def run_worker(setup: Setup, label: Label, study: optuna.Study, n_trials: int) -> int:
    """Run trials of ``label``'s study until it counts ``n_trials``; returns how many ran here."""
    ran = 0
    while True:
        with _ask_turn(setup.output) as release:
            _fail_dead_trials(study, setup.output, label.name)
            if not _has_room(study, n_trials):
                return ran
            _run_one(setup, label, study, release)
        ran += 1
