"""The SLURM paths on a real SLURM cluster: a grid as a job array, an array task cancelled
mid-cell and resubmitted, SIGUSR1's checkpoint-and-requeue, and DDP under srun.

Every test submits the project's own scripts (scripts/*.sbatch) with sbatch and waits for
the jobs; nothing of SLURM is mocked. They need a cluster that answers, e.g. the one-node
cluster of ``scripts/local_slurm.sh up`` (CI starts it), and are skipped without one, or
fail instead when ``DSRELU_REQUIRE_SLURM=1`` (CI sets it, so that they cannot silently
skip there). Jobs run the Python that runs pytest (its folder leads the exported PATH),
one thread and one CPU per task, with tests/helpers importable for the probe callbacks of
``slurm_probe``. A test's jobs still queued when it ends are cancelled.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DIGITS_CONFIG, ROOT, subprocess_env, tiny_args

pytestmark = pytest.mark.slurm

BENCHMARK = ROOT / "scripts" / "benchmark_slurm.sbatch"
FIT = ROOT / "scripts" / "fit_slurm.sbatch"
CPU_ONLY = ["--gres=none", "--cpus-per-task=1"]
"""sbatch options that replace the scripts' GPU requests on a CPU-only cluster."""
JOB_LIMIT_S = 420.0
"""Longest wait for a job of these tests (each takes well under a minute alone)."""


def _cluster_problem() -> str | None:
    """Why these tests cannot run here, or None when a SLURM cluster answers."""
    if shutil.which("sbatch") is None:
        return (
            "SLURM is not installed (no sbatch); start a local cluster: scripts/local_slurm.sh up"
        )
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scontrol ping failed ({exc}); start a cluster: scripts/local_slurm.sh up"
    if ping.returncode != 0 or " is UP" not in ping.stdout:
        answer = next(iter((ping.stdout + ping.stderr).strip().splitlines()), "no answer")
        return f"no SLURM controller answers ({answer}); start one: scripts/local_slurm.sh up"
    return None


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> None:
    problem = _cluster_problem()
    if problem is None:
        return
    if os.environ.get("DSRELU_REQUIRE_SLURM") == "1":
        pytest.fail(f"DSRELU_REQUIRE_SLURM=1 but {problem}", pytrace=False)
    pytest.skip(problem)


def job_env(**extra: str) -> dict[str, str]:
    """What sbatch passes to the jobs: this interpreter's folder first on PATH (a job's
    ``python`` is this one), tests/helpers and this clone importable, one thread, and no
    SLURM variables of an allocation pytest itself might run in."""
    env = {
        key: value
        for key, value in subprocess_env().items()
        if not (key.startswith(("SLURM_", "SBATCH_", "SRUN_")) and key != "SLURM_CONF")
        and not key.startswith("DSRELU_TEST_")
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "helpers"), str(ROOT)])
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


_JOB_FIELD = re.compile(r"\b(JobId|ArrayJobId|ArrayTaskId|JobState|ExitCode|Restarts)=(\S+)")
"""The fields of ``scontrol show job -o`` that the tests read."""


class Jobs:
    """Submits jobs with sbatch and waits for them; what is still queued at the end of the
    test is cancelled (:func:`jobs`)."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def sbatch(self, *args: str | Path, env: dict[str, str], cwd: Path) -> str:
        """``sbatch --parsable ARGS`` from ``cwd``; the job's id."""
        command = ["sbatch", "--parsable", *map(str, args)]
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
        assert done.returncode == 0, f"{shlex.join(command)}: {done.stderr}"
        job = done.stdout.strip().split(";")[0]
        self.submitted.append(job)
        return job

    @staticmethod
    def queued(job: str) -> bool:
        """Whether any task of ``job`` is still pending, running or completing (or squeue
        did not answer: asked again later)."""
        done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True)
        return done.returncode != 0 or bool(done.stdout.strip())

    def wait(self, job: str, logs: Path) -> dict[str, dict[str, str]]:
        """Wait until ``job`` (every task of an array) has left the queue; each task's
        JobState, ExitCode and Restarts by its id (``7`` or ``7_0``)."""
        waited_for(lambda: not self.queued(job), f"job {job} to end", logs)
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True
        )
        states = {}
        for line in shown.stdout.splitlines():
            fields = dict(_JOB_FIELD.findall(line))
            task = fields.get("ArrayTaskId")
            name = f"{fields['ArrayJobId']}_{task}" if task else fields["JobId"]
            states[name] = {k: fields[k] for k in ("JobState", "ExitCode", "Restarts")}
        return states

    def wait_for_hold(self, job: str, marker: Path, logs: Path) -> dict:
        """Wait until ``job`` is held by slurm_probe.Hold (its ``marker`` written); fail at
        once, with the logs, should the job end first."""
        waited_for(lambda: marker.exists() or not self.queued(job), f"job {job}'s hold", logs)
        if not marker.exists():
            pytest.fail(f"job {job} ended before its hold\n{log_tails(logs)}")
        return json.loads(marker.read_text())

    def cancel_all(self) -> None:
        for job in self.submitted:
            if self.queued(job):
                subprocess.run(["scancel", job], check=False)


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    submitted = Jobs()
    yield submitted
    submitted.cancel_all()


def waited_for(condition: Callable[[], bool], what: str, logs: Path) -> None:
    """Poll ``condition``; on timeout fail with the tail of every SLURM log under ``logs``."""
    deadline = time.monotonic() + JOB_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {JOB_LIMIT_S:.0f} s for {what}\n{log_tails(logs)}")
        time.sleep(0.5)


def log_tails(logs: Path) -> str:
    """The end of every SLURM log under ``logs``."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.out")))


def done_ok(state: dict[str, str]) -> bool:
    return state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0"


def grid_args(output: Path, *extra: str) -> list[str]:
    """relu and dsrelu on folds 0 and 1 (4 cells, 2 epochs of 2 batches each)."""
    args = ["--config", DIGITS_CONFIG, "--activations", "relu,dsrelu", "--folds", "0,1"]
    return [*args, "--output", str(output), *tiny_args(max_epochs=2), *extra]


def cell_dir(output: Path, label: str, fold: int) -> Path:
    return output / "digits" / label / "seed42" / f"fold{fold}"


def result(cell: Path) -> dict:
    return json.loads((cell / "result.json").read_text())


def epochs(cell: Path) -> list[int]:
    return [int(row["epoch"]) for row in csv.DictReader((cell / "epoch_metrics.csv").open())]


# --- the grid as a job array --------------------------------------------------------------


def test_a_grid_runs_as_a_job_array_into_one_folder(tmp_path: Path, jobs: Jobs) -> None:
    output = tmp_path / "grid"
    env = job_env()
    array = jobs.sbatch("--array=0-1", *CPU_ONLY, BENCHMARK, *grid_args(output), env=env,
                        cwd=tmp_path)  # fmt: skip
    # The complete report: a job that starts once every array task has ended well.
    report = ["python", "-m", "dsrelu_lightning", "report", "--output", str(output)]
    reporter = jobs.sbatch(f"--dependency=afterok:{array}", "--output=report-%j.out",
                           "--wrap", shlex.join(report), env=env, cwd=tmp_path)  # fmt: skip
    states = jobs.wait(array, tmp_path)
    assert states.keys() == {f"{array}_0", f"{array}_1"}
    assert all(done_ok(s) for s in states.values()), states
    assert done_ok(jobs.wait(reporter, tmp_path)[reporter])

    logs = {task: (tmp_path / f"slurm-{array}_{task}.out").read_text() for task in (0, 1)}
    for task, log in logs.items():
        assert f"benchmark: 4 cells (shard {task}/2: 2 here)" in log
        assert log.count(": finished in ") == 2
        # Shards stride the grid: task 0 runs fold 0 of each label, task 1 fold 1.
        for label in ("relu", "dsrelu"):
            assert f"digits/{label}/seed 42/fold {task}: finished in" in log
        # The srun-less task is one plain process: no "prepend srun" advice.
        assert "`srun` command is available" not in log
    for label in ("relu", "dsrelu"):
        for fold in (0, 1):
            data = result(cell_dir(output, label, fold))
            assert (data["status"], data["epochs_run"], data["resumed_from_epoch"]) == (
                "finished",
                2,
                None,
            )
            assert epochs(cell_dir(output, label, fold)) == [0, 1]
    assert len(list(output.glob("**/result.json"))) == 4
    summary = list(csv.DictReader((output / "summary.csv").open()))
    assert sorted((row["label"], row["fold"]) for row in summary) == [
        ("dsrelu", "0"),
        ("dsrelu", "1"),
        ("relu", "0"),
        ("relu", "1"),
    ]
    assert "4 cells" in (output / "summary.md").read_text()


def test_a_cancelled_array_task_resubmitted_resumes_its_interrupted_cell(
    tmp_path: Path, jobs: Jobs
) -> None:
    output = tmp_path / "grid"
    args = [BENCHMARK, *grid_args(output, "--trainer.callbacks+=slurm_probe.Hold")]
    held = tmp_path / "held.json"
    # Task 1 runs relu/fold 1, then dsrelu/fold 1: held before its epoch 1's first batch
    # (epoch 0 saved). Not at the epoch's last batch: after SIGTERM Lightning finishes the
    # batch and, at an epoch's end, validates and saves before it stops.
    hold = job_env(
        DSRELU_TEST_HOLD=str(held),
        DSRELU_TEST_HOLD_AT="1:0",
        DSRELU_TEST_HOLD_CELL="digits/dsrelu/seed42/fold1",
    )
    array = jobs.sbatch("--array=0-1", *CPU_ONLY, *args, env=hold, cwd=tmp_path)
    assert jobs.wait_for_hold(array, held, tmp_path)["epoch"] == 1
    subprocess.run(["scancel", f"{array}_1"], check=True)
    states = jobs.wait(array, tmp_path)
    assert done_ok(states[f"{array}_0"]) and states[f"{array}_1"]["JobState"] == "CANCELLED"

    interrupted = cell_dir(output, "dsrelu", 1)
    assert not (interrupted / "result.json").exists()
    assert (interrupted / "checkpoints" / "last.ckpt").is_file()
    finished = [cell_dir(output, label, fold) for label, fold in
                (("relu", 0), ("dsrelu", 0), ("relu", 1))]  # fmt: skip
    before = {cell: snapshot(cell) for cell in finished}

    # Resubmit the cancelled task alone: the array's size (2) is given by DSRELU_SHARDS.
    again = jobs.sbatch("--array=1", *CPU_ONLY, *args, env=job_env(DSRELU_SHARDS="2"),
                        cwd=tmp_path)  # fmt: skip
    assert done_ok(jobs.wait(again, tmp_path)[f"{again}_1"])
    log = (tmp_path / f"slurm-{again}_1.out").read_text()
    assert "benchmark: 4 cells (shard 1/2: 2 here)" in log
    assert "cell 1/2: digits/relu/seed 42/fold 1 (finished earlier, skipped)" in log
    assert "resuming from checkpoints/last.ckpt (epoch 0)" in log
    assert {cell: snapshot(cell) for cell in finished} == before  # untouched
    data = result(interrupted)
    assert (data["status"], data["resumed_from_epoch"], data["epochs_run"]) == ("finished", 0, 2)
    assert epochs(interrupted) == [0, 1]  # epoch 1 redone, not repeated
    assert len(list(output.glob("**/result.json"))) == 4


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, modification time in ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# --- fits under srun --------------------------------------------------------------------------


def fit_args(root: Path, *extra: str) -> list[str]:
    """A digits fit of 3 epochs of 2 batches on CPU, writing under ``root`` (the script
    adds ``--trainer.devices``: one per task)."""
    tiny = tiny_args(max_epochs=3, default_root_dir=str(root), devices=None)
    return ["--config", DIGITS_CONFIG, *tiny, *extra]


def metric_rows(log_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((log_dir / "epoch_metrics.csv").open()))


def progress_records(folder: Path, task: int = 0) -> list[dict]:
    lines = (folder / f"progress_task{task}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_sigusr1_saves_an_hpc_checkpoint_requeues_and_the_schedule_continues(
    tmp_path: Path, jobs: Jobs
) -> None:
    one_task = ["--nodes=1", "--ntasks-per-node=1", *CPU_ONLY]
    callbacks = ["--trainer.callbacks+=slurm_probe.ProgressLog"]
    # The uninterrupted run, meanwhile on the node's other CPU.
    reference = tmp_path / "reference"
    reference.mkdir()
    uninterrupted = jobs.sbatch(*one_task, FIT, *fit_args(reference / "run", *callbacks),
                                env=job_env(DSRELU_TEST_PROBE_DIR=str(reference)),
                                cwd=tmp_path)  # fmt: skip
    # The run held before its epoch 1's second batch, where the test sends SIGUSR1.
    probes, held = tmp_path / "requeued", tmp_path / "held.json"
    probes.mkdir()
    root = probes / "run"
    env = job_env(DSRELU_TEST_PROBE_DIR=str(probes), DSRELU_TEST_HOLD=str(held),
                  DSRELU_TEST_HOLD_AT="1:1")  # fmt: skip
    callbacks.append("--trainer.callbacks+=slurm_probe.Hold")
    job = jobs.sbatch(*one_task, FIT, *fit_args(root, *callbacks), env=env, cwd=tmp_path)
    assert jobs.wait_for_hold(job, held, tmp_path)["epoch"] == 1
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    states = jobs.wait(job, tmp_path)
    assert states[job] == {"JobState": "COMPLETED", "ExitCode": "0:0", "Restarts": "1"}
    assert done_ok(jobs.wait(uninterrupted, tmp_path)[uninterrupted])

    log = (tmp_path / f"slurm-{job}.out").read_text()  # both attempts: --open-mode=append
    hpc = root / "hpc_ckpt_1.ckpt"
    assert hpc.is_file()
    assert "Handling auto-requeue signal" in log and f"Requeued SLURM job: {job}" in log
    assert f"Restoring states from the checkpoint path at {hpc}" in log
    assert "nothing advances its progress" not in log  # the scheduler took the resumed epoch
    # Lightning names the log folder after the job: both attempts write to one, config.yaml
    # included, and every epoch is there once, with its slope as the uninterrupted run's.
    (folder,) = (root / "lightning_logs").iterdir()
    assert folder.name == f"version_{job}"
    slopes = {int(r["epoch"]): r["dsrelu/slope"] for r in metric_rows(folder)}
    (reference_folder,) = (reference / "run" / "lightning_logs").iterdir()
    assert slopes == {int(r["epoch"]): r["dsrelu/slope"] for r in metric_rows(reference_folder)}
    assert sorted(slopes) == [0, 1, 2] and all(slopes.values())

    expected = {r["epoch"]: r["progress"] for r in progress_records(reference)}
    assert {e: p[0] for e, p in expected.items()} == pytest.approx({0: 0, 1: 1 / 3, 2: 2 / 3})
    assert all(len(p) == 4 for p in expected.values())  # the small network's 4 sites
    records = progress_records(probes)
    first = [r for r in records if r["attempt"] == 0]
    resumed = [r for r in records if r["attempt"] == 1]
    assert max(r["epoch"] for r in first) == 1 and first[-1]["batch"] == 1
    # The requeued job started from the checkpoint, not from scratch...
    start, batches = resumed[0], resumed[1:]
    assert start["batch"] is None and start["epoch"] == 1
    assert start["global_step"] == first[-1]["global_step"] == 3
    assert sorted({r["epoch"] for r in batches}) == [1, 2]
    # ... with every layer's progress what the uninterrupted run had at each epoch.
    assert start["progress"] == expected[1]
    for record in batches:
        assert record["progress"] == expected[record["epoch"]], record


def test_ddp_on_two_tasks_under_srun(tmp_path: Path, jobs: Jobs) -> None:
    two_tasks = ["--nodes=1", "--ntasks-per-node=2", *CPU_ONLY]
    args = fit_args(
        tmp_path / "run",
        "--trainer.strategy=ddp",
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=1.0",
        "--trainer.callbacks+=ddp_probe.RankProbe",
        "--trainer.callbacks+=slurm_probe.ProgressLog",
        "--data=slurm_probe.PrepareCountingDigits",
        "--checkpoint.monitor=null",
        "--checkpoint.save_last=false",
        "--checkpoint.save_top_k=0",
    )
    env = job_env(DDP_PROBE_DIR=str(tmp_path), DSRELU_TEST_PROBE_DIR=str(tmp_path))
    job = jobs.sbatch(*two_tasks, FIT, *args, env=env, cwd=tmp_path)
    assert done_ok(jobs.wait(job, tmp_path)[job])

    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    # SLURM's tasks are Lightning's ranks: task r logged rank r.
    for task in (0, 1):
        assert {r["rank"] for r in progress_records(tmp_path, task)} == {task}
    # prepare_data ran on local rank 0 only; both ranks at the same scheduled progress.
    assert sorted(p.name for p in tmp_path.glob("prepared_by_task*")) == ["prepared_by_task0"]
    assert ranks[0]["progress"] == ranks[1]["progress"]
    assert [p[0] for p in ranks[0]["progress"]] == pytest.approx([0, 0, 0.5, 0.5])
    # Every validation sample seen once over both ranks, and the metric synchronised.
    assert sum(r["val_samples"] for r in ranks) == 288  # digits' fold-0 validation set
    assert ranks[0]["val_acc"] == ranks[1]["val_acc"]
