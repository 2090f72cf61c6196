"""``python -m dsrelu_lightning tune``: search, in one process or many, then write the best
configurations (and with ``--confirm`` their benchmark); ``tune --report DIR`` reports a search.
The parser imports no torch, so ``--help`` and argument errors answer at once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dsrelu_lightning.cli import PROG
from dsrelu_lightning.cli.errors import CommandParser
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["tune_main"]

_PRUNERS = ("median", "hyperband", "none")


def _parser() -> CommandParser:
    parser = CommandParser(
        prog=f"{PROG} tune",
        description="Search an activation's parameters (and the baselines') with Optuna, "
        "scored on validation folds only (docs/tuning.md).",
    )
    add = parser.add_argument
    add("--config", help="the dataset's LightningCLI config")
    add("--space", help="search space YAML: LightningCLI key -> {float|int|categorical: ...}")
    add("--trials", type=int, help="trials per label (the config's activation and each baseline)")
    add("--output", help="the search's folder: study.db, trial folders, best_<label>.yaml")
    add(
        "--baselines", help="comma-separated activations tuned with the same budget, e.g. relu,mish"
    )
    add("--objective", default="val/loss", choices=("val/loss", "val/acc"), help="trial score")
    add("--tune_folds", type=int, default=1, help="inner validation folds per trial (0..k-1)")
    add("--pruner", default="median", choices=_PRUNERS, help="stop poor trials early")
    add("--pruner_startup_trials", type=int, default=5, help="trials before the median pruner acts")
    add("--pruner_warmup_epochs", type=int, default=2, help="epochs before the median pruner acts")
    add(
        "--storage", help="Optuna storage: an RDB URL or journal:PATH (default: sqlite in --output)"
    )
    add("--workers", type=int, default=1, help="processes on this machine sharing the study")
    add("--sampler_seed", type=int, default=0, help="seed of the TPE sampler")
    add("--heartbeat", type=int, default=30, help="RDB heartbeat interval in seconds")
    add("--confirm", action="store_true", help="benchmark the best configurations on test")
    add("--seeds", help="--confirm's seeds of repeated k-fold, e.g. 42,43,44")
    add("--folds", help="--confirm's folds (default: every fold)")
    add("--report", metavar="DIR", help="write DIR/tune.md, figures and trials.csv, and stop")
    add(
        "--worker_index",
        type=int,
        default=None,
        help="this worker's index: seeds its sampler (set by --workers, tune_slurm.sbatch)",
    )
    parser.epilog = "Any other argument is a LightningCLI override for every trial."
    return parser


def _check(args: object) -> None:
    missing = [
        f"--{k}" for k in ("config", "space", "trials", "output") if getattr(args, k) is None
    ]
    if missing:
        raise ConfigurationError(
            f"tune needs {', '.join(missing)} (or --report DIR to report a search); "
            "run with --help for the options"
        )
    for name in ("trials", "workers", "tune_folds", "heartbeat"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"--{name} must be at least 1, got {getattr(args, name)}")


def _spawn(argv: Sequence[str], workers: int) -> None:
    """Run ``workers`` worker processes of this command and wait for all of them."""
    base = [sys.executable, "-m", "dsrelu_lightning", "tune", *argv]
    children = [subprocess.Popen([*base, "--worker_index", str(i)]) for i in range(workers)]
    codes = [child.wait() for child in children]
    failed = [f"worker {i} (exit {c})" for i, c in enumerate(codes) if c != 0]
    if failed:
        raise ConfigurationError(f"tune: {', '.join(failed)} failed; see the lines above")


def tune_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning tune``."""
    parser = _parser()
    args, overrides = parser.parse_known_args(list(argv))
    try:
        import optuna
        import optuna_integration  # noqa: F401  (its Lightning pruning callback)
    except ImportError as exc:
        raise ConfigurationError(
            f"tune needs Optuna ({exc.name} is not installed): pip install 'dsrelu_lightning[tune]'"
        ) from None
    if args.report is not None:
        from dsrelu_lightning.study.tune.report import write_tune_report

        print(f"report: {write_tune_report(Path(args.report), args.storage)}", flush=True)
        return
    _check(args)
    from dsrelu_lightning.study.run.grid import parse_folds, parse_seeds
    from dsrelu_lightning.study.tune.best import confirm, write_best_config
    from dsrelu_lightning.study.tune.setup import prepare
    from dsrelu_lightning.study.tune.studies import open_studies
    from dsrelu_lightning.study.tune.workers import run_worker

    checked = prepare(
        args.config, args.space, overrides, args.output, args.objective, args.tune_folds,
        args.baselines,
    )  # fmt: skip
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    folds = parse_folds(args.folds) if args.folds is not None else None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = open_studies(checked, args)
    if args.workers > 1 and args.worker_index is None:
        own = [a for a in argv if a not in ("--confirm",)]
        _spawn(own, args.workers)
    else:
        for label, study in zip(checked.labels, studies, strict=True):
            run_worker(checked.setup, label, study, args.trials)
        if args.workers > 1:  # one of --workers' processes: the command's own process reports
            return
    for label, study in zip(checked.labels, studies, strict=True):
        path = write_best_config(checked.setup, label, study)
        done = {s.name: 0 for s in optuna.trial.TrialState}
        for trial in study.get_trials(deepcopy=False):
            done[trial.state.name] += 1
        counts = ", ".join(f"{n.lower()} {c}" for n, c in done.items() if c)
        print(f"{label.name}: {counts}; best config: {path or 'none (no trial completed)'}")
    if args.confirm:
        summary = confirm(checked.setup, checked.labels, studies, seeds, folds)
        print(f"report: {summary}", flush=True)
