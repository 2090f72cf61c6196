"""tune's searches: scored on validation only, best configs that reproduce, pruning, several
workers on one SQLite study, and a worker killed with -9 whose trial is rerun."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import DIGITS_CONFIG, ROOT, run_main, subprocess_env, tiny_args

from dsrelu_lightning.study.tune.workers import counted_trials

SPACE = """
model.lr: {float: [1.0e-4, 0.5], log: true}
model.activation_args.initial_angle: {float: [30, 89]}
"""


def _space(tmp_path: Path) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return str(path)


def _tune_args(tmp_path: Path, trials: int, *extra: str, epochs: int = 3) -> list[str]:
    return [
        "tune", "--config", DIGITS_CONFIG, "--space", _space(tmp_path), "--trials", str(trials),
        "--output", str(tmp_path / "out"), "--data", "tune_probe.NoTestDigits",
        *tiny_args(max_epochs=epochs, limit_val_batches=2), "--precise_bn.enabled", "false",
        *extra,
    ]  # fmt: skip


def _trials(out: Path, label: str = "dsrelu") -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{out / 'study.db'}"
    return optuna.load_study(study_name=label, storage=storage).get_trials()


def _best_val(run_dir: Path, metric: str) -> float:
    rows = list(csv.DictReader((run_dir / "epoch_metrics.csv").open()))
    best = min(rows, key=lambda r: float(r["val/loss"]))
    return float(best[metric])


@pytest.mark.slow
def test_search_prunes_writes_reproducible_best_configs_and_never_reads_test(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    pruner = ["--pruner_startup_trials", "1", "--pruner_warmup_epochs", "0"]
    result = run_main(*_tune_args(tmp_path, 5, "--baselines", "relu", *pruner))
    stdout = result.ok()
    trials = _trials(out)
    states = [t.state.name for t in trials]
    # NoTestDigits raises in setup("test") and test_dataloader(): a failure would show here.
    assert "FAIL" not in states, [t.user_attrs for t in trials]
    assert len(trials) == 5 and "PRUNED" in states and "COMPLETE" in states
    assert len(_trials(out, "relu")) == 5  # the same budget for the baseline
    assert set(_trials(out, "relu")[0].params) == {"model.lr"}  # its own space: no angles
    lines = [line for line in stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 10 and all("[" in line and " s)" in line for line in lines)
    # The best config trains the best trial's fold again: the same val metric, exactly.
    best = min((t for t in trials if t.value is not None), key=lambda t: t.value)
    config = out / "best_dsrelu.yaml"
    run_main("fit", "--config", str(config)).ok()
    (run_dir,) = (out / "best" / "dsrelu").rglob("epoch_metrics.csv")
    assert _best_val(run_dir.parent, "val/loss") == best.value
    trial_dir = out / "dsrelu" / f"trial_{best.number:04d}" / "fold0"
    assert _best_val(trial_dir, "val/loss") == best.value
    assert not list(trial_dir.rglob("*.ckpt"))  # trials keep no checkpoints
    record = json.loads((trial_dir.parent / "trial.json").read_text())
    assert record["state"] == "COMPLETE" and record["val/loss"] == best.value
    report = run_main("tune", "--report", str(out))
    report.ok()
    assert (out / "tune.md").is_file() and (out / "figures" / "dsrelu_history.png").is_file()
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 10 and {r["label"] for r in rows} == {"dsrelu", "relu"}


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dsrelu_lightning", *args], cwd=ROOT, env=subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_two_workers_share_one_study_and_run_n_trials_in_all(tmp_path: Path) -> None:
    done = _spawn(
        [
            *_tune_args(tmp_path, 4, "--workers", "2", "--pruner", "none")[0:],
        ]
    )
    out, _ = done.communicate(timeout=600)
    assert done.returncode == 0, out
    trials = _trials(tmp_path / "out")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in trials), out
    # One progress line per trial, whichever worker ran it; the best config once, by this process.
    numbers = sorted(int(line.split()[1]) for line in out.splitlines() if line.startswith("trial "))
    assert numbers == [0, 1, 2, 3]
    assert out.count("best config:") == 1 and (tmp_path / "out" / "best_dsrelu.yaml").is_file()


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_only_that_trial_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    args = _tune_args(tmp_path, 3, "--pruner", "none", epochs=4)
    worker = _spawn(args)
    db = tmp_path / "out" / "study.db"
    deadline = time.monotonic() + 300
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        if db.is_file():
            with sqlite3.connect(db, timeout=30) as connection:
                # RUNNING with its parameters drawn (killed before that, it has none to rerun:
                # its retry draws its own)
                running = connection.execute(
                    "SELECT DISTINCT t.number FROM trials t JOIN trial_params p "
                    "ON p.trial_id = t.trial_id WHERE t.state = 'RUNNING' AND t.number >= 1"
                ).fetchall()
    assert running, "no second trial started"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    run_main(*args).ok()
    trials = _trials(tmp_path / "out")
    killed = [t for t in trials if t.state.name == "FAIL"]
    counted = counted_trials(trials)
    assert len(killed) == 1 and len(counted) == 3
    assert all(t.state.name == "COMPLETE" for t in counted)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number)
    assert retry.params == killed[0].params  # the killed trial was rerun, not lost
    assert len({t.number for t in trials}) == len(trials)


@pytest.mark.slow
def test_confirm_benchmarks_the_best_configs_on_test_after_equal_budgets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = _tune_args(tmp_path, 1, "--baselines", "relu", "--pruner", "none", epochs=1)
    args[args.index("tune_probe.NoTestDigits")] = "dsrelu_lightning.data.DigitsDataModule"
    journal = f"journal:{out / 'journal.log'}"  # Optuna's journal file, in the new --output
    stdout = run_main(*args, "--storage", journal, "--confirm", "--folds", "0,1").ok()
    summary = (out / "confirm" / "summary.md").read_text()
    title, _, preface = summary.splitlines()[:3]  # smoke-run batch limits mark the title
    assert title.startswith("# After equal-budget tuning")
    assert preface.startswith(
        "Each label's configuration is the best of its own Optuna search (trials: dsrelu 1, relu 1;"
    )
    assert "# Benchmark summary" not in summary  # one heading
    assert "report: " in stdout and "test" in summary
    results = sorted(p.relative_to(out / "confirm") for p in out.rglob("result.json"))
    assert [(p.parts[1], p.parts[-2]) for p in results] == [
        ("dsrelu", "fold0"), ("dsrelu", "fold1"), ("relu", "fold0"), ("relu", "fold1")
    ]  # fmt: skip
    run_main("tune", "--report", str(out), "--storage", journal).ok()
    assert "| relu | 1 | 1 |" in (out / "tune.md").read_text()


def test_a_diverging_trial_is_recorded_as_failed_with_its_reason_and_the_search_goes_on(
    tmp_path: Path,
) -> None:
    args = _tune_args(tmp_path, 2, "--pruner", "none", epochs=1)
    (tmp_path / "space.yaml").write_text("model.lr: {categorical: [1.0e+12]}\n")
    stdout = run_main(*args).ok()
    trials = _trials(tmp_path / "out")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # the second ran all the same
    assert all(t.user_attrs["failure"].startswith("diverged") for t in trials), trials[0].user_attrs
    assert stdout.count("failed: diverged") == 2
    assert "best config: none (no trial completed)" in stdout
