"""What a finished search leaves: each label's best configuration as a config ``fit`` accepts,
and (``--confirm``) the benchmark of those configurations, scored on the held-out test split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from dsrelu_lightning.atomic import atomic_write_text
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.run.cell import SAVED_CONFIG
from dsrelu_lightning.study.tune.objective import Label, Setup, trial_folder

__all__ = ["CONFIRM_DIR", "best_config_path", "confirm", "write_best_config"]

CONFIRM_DIR = "confirm"
"""The benchmark folder of ``--confirm`` inside the tuning folder."""


def best_config_path(output: Path, label: str) -> Path:
    """Where ``label``'s best configuration is written."""
    return output / f"best_{label}.yaml"


def write_best_config(setup: Setup, label: Label, study: optuna.Study) -> Path | None:
    """Write the best trial's fit config (its first inner fold's), to train anew with
    ``fit --config``; None while no trial has completed."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    fold = setup.folds[0]
    saved = trial_folder(setup.output, label.name, best.number) / f"fold{fold}" / SAVED_CONFIG
    config = yaml.safe_load(saved.read_text(encoding="utf-8"))
    config["trainer"]["default_root_dir"] = str(setup.output / "best" / label.name)
    config["trainer"]["logger"] = None  # TensorBoard under default_root_dir, a new version
    config["checkpoint"]["dirpath"] = None
    config["ckpt_path"] = None
    scores = best.user_attrs.get("fold_scores", {})
    header = [
        f"# The best of {label.name}'s trials: trial {best.number}, {setup.objective} "
        f"{best.value:.6g} (mean over validation folds {', '.join(map(str, setup.folds))}).",
        f"# This file trains fold {fold} with the trial's seed: {setup.objective} "
        f"{scores.get(str(fold), best.value):.6g} again.",
        f"#   python -m dsrelu_lightning fit --config {best_config_path(setup.output, label.name)}",
        f"# Parameters: {best.params}",
    ]
    text = "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False)
    return atomic_write_text(best_config_path(setup.output, label.name), text)


def confirm(
    setup: Setup,
    labels: Sequence[Label],
    studies: Sequence[optuna.Study],
    seeds: Sequence[int] | None,
    folds: Sequence[int] | None,
) -> Path:
    """Run each label's best configuration through the benchmark protocol (seeds x folds,
    selected on val, scored on test) and write its report, headed "after equal-budget tuning"."""
    from dsrelu_lightning.study.report.summary import write_report
    from dsrelu_lightning.study.run.runner import run_benchmark

    variants = []
    for label, study in zip(labels, studies, strict=True):
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        if running:
            raise ConfigurationError(
                f"--confirm: {len(running)} trial(s) of {label.name} still run in another "
                "worker; rerun with --confirm when they have finished"
            )
        try:
            variants.append(label.variant(study.best_trial.params))
        except ValueError:
            raise ConfigurationError(
                f"--confirm: {label.name} has no completed trial to confirm; run more --trials"
            ) from None
    output = setup.output / CONFIRM_DIR
    run = run_benchmark(
        output,
        {setup.config.stem: setup.config},
        variants,
        folds,
        setup.overrides,
        seeds=seeds,
    )
    if run.busy:
        raise ConfigurationError(
            f"--confirm: {len(run.busy)} benchmark cell(s) run in another process; rerun "
            "with --confirm when they have finished"
        )
    n_trials = ", ".join(f"{s.study_name} {len(s.get_trials(deepcopy=False))}" for s in studies)
    preface = (
        f"Each label's configuration is the best of its own Optuna search (trials: {n_trials}; "
        f"scored on {setup.objective} of validation folds {list(setup.folds)} only; the test "
        "split was not read by the search). The benchmark below reruns each best configuration "
        "over its seeds and folds, selects on val and scores on the held-out test split."
    )
    title = "After equal-budget tuning"
    return write_report(output, reference=labels[0].name, title=title, preface=preface)
