"""``tune --report DIR``: tune.md, a CSV of every trial and figures (optimization history,
fANOVA parameter importances, slice plots, the objective against DSReLU's angles)."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from dsrelu_lightning.atomic import atomic_write_bytes, atomic_write_text
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.tune.best import best_config_path
from dsrelu_lightning.study.tune.objective import FAILURE
from dsrelu_lightning.study.tune.storage import DEFAULT_DB, open_storage
from dsrelu_lightning.study.tune.studies import SETTINGS_ATTR

__all__ = ["TRIALS_CSV", "TUNE_MD", "write_tune_report"]

TUNE_MD = "tune.md"
TRIALS_CSV = "trials.csv"
FIGURES = "figures"
ANGLES = ("initial_angle", "final_angle")
TOP_TRIALS = 5
"""How many of a label's best trials tune.md lists, with their parameters."""
PRUNING_NOTE = (
    "Pruned trials were judged on their first epochs, when a DSReLU schedule is least like its "
    "final self: this report's best values and importances come from the trials the pruner "
    "let finish. Rerunning pruned trials to the end shows what pruning cost (docs/tuning.md, "
    "Pruning)."
)


def _save(fig: Any, path: Path) -> str:
    """Write ``fig`` as PNG (atomically), close it; returns its link from the report."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    if not isinstance(fig, Figure) or fig.canvas.manager is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return f"{FIGURES}/{path.name}"


def _figure_of(axes: Any) -> Any:
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def _tilt_categories(axes: Any, study: optuna.Study) -> Any:
    """Tilt the tick labels of categorical parameters' slices, which overlap when level."""
    categorical = {
        name
        for trial in study.get_trials(deepcopy=False)
        for name, distribution in trial.distributions.items()
        if isinstance(distribution, CategoricalDistribution)
    }
    for ax in getattr(axes, "flat", [axes]):
        if ax.get_xlabel() in categorical:
            ax.tick_params(axis="x", labelrotation=40)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
    return axes


def _angles_figure(study: optuna.Study, objective: str) -> Figure | None:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    shown = [a for a in ANGLES if any(a in t.params for t in trials)]
    if not shown:
        return None
    fig = Figure(figsize=(4.5 * len(shown), 3.6), layout="constrained")
    for ax, angle in zip(fig.subplots(1, len(shown), squeeze=False)[0], shown, strict=True):
        points = [(t.params[angle], t.value) for t in trials if angle in t.params]
        ax.scatter(*zip(*points, strict=True), s=18)
        ax.set_xlabel(f"{angle} (deg)")
        ax.set_ylabel(objective)
    fig.suptitle(f"{study.study_name}: {objective} against DSReLU's angles")
    return fig


def _label_figures(study: optuna.Study, folder: Path, objective: str) -> tuple[list[str], str]:
    """Each figure the study supports (as links), and the importances as a table (or why not)."""
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as plots

    name, links = study.study_name, []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are "experimental"
        if complete:
            links.append(
                _save(
                    _figure_of(plots.plot_optimization_history(study)),
                    folder / f"{name}_history.png",
                )
            )
            slices = _tilt_categories(plots.plot_slice(study), study)
            links.append(_save(_figure_of(slices), folder / f"{name}_slice.png"))
        angles = _angles_figure(study, objective)
        if angles is not None:
            links.append(_save(angles, folder / f"{name}_angles.png"))
        varied = len({tuple(sorted(t.params.items())) for t in complete})
        if varied < 2 or not study.best_trial.params:
            return links, "not enough completed trials with different parameters for importances"
        evaluator = FanovaImportanceEvaluator(seed=0)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        links.append(
            _save(
                _figure_of(plots.plot_param_importances(study, evaluator=evaluator)),
                folder / f"{name}_importances.png",
            )
        )
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in importances.items())
    return links, f"| parameter | fANOVA importance |\n|---|---|\n{rows}"


def _value(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_param(value)}" for name, value in params.items())


def _best_trials(study: optuna.Study, objective: str) -> str:
    """A table of the label's TOP_TRIALS best completed trials and their parameters."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = sorted(complete, key=lambda t: t.value, reverse=maximize)[:TOP_TRIALS]
    if not best:
        return ""
    names = sorted({name for t in best for name in t.params})
    rows = [
        f"| {t.number} | {_value(t.value)} | "
        + " | ".join(_param(t.params[n]) if n in t.params else "" for n in names)
        + " |"
        for t in best
    ]
    return "\n".join(
        [
            f"The {len(best)} best trials (of {len(complete)} completed):",
            "",
            f"| trial | {objective} | {' | '.join(names)} |",
            "|---|---|" + "---|" * len(names),
            *rows,
        ]
    )


def _csv(studies: list[optuna.Study]) -> str:
    import pandas as pd

    frames = []
    for study in studies:
        frame = study.trials_dataframe(
            attrs=("number", "value", "state", "params", "user_attrs", "duration")
        )
        frame.insert(0, "label", study.study_name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def write_tune_report(output: Path, storage_url: str | None = None) -> Path:
    """Write ``output``/tune.md, trials.csv and figures/ for every study in the storage."""
    if storage_url is None and not (output / DEFAULT_DB).is_file():
        raise ConfigurationError(
            f"--report {output}: no {DEFAULT_DB} there; give the search's --output folder, "
            "or its --storage"
        )
    storage = open_storage(storage_url, output)
    names = optuna.get_all_study_names(storage)
    if not names:
        raise ConfigurationError(f"--report {output}: the storage holds no study")
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    atomic_write_text(output / TRIALS_CSV, _csv(studies))
    settings = studies[0].user_attrs.get(SETTINGS_ATTR, {})
    objective = settings.get("objective", "objective")
    lines = [
        "# Tuning report",
        "",
        f"Every label was searched with its own Optuna study, scored on {objective} of the "
        f"validation folds {settings.get('folds', '?')} of the training pool; the held-out test "
        "split was not read. Best values are optimistic (the best of many tries on the same "
        "folds): `tune --confirm` scores the best configurations on test. All trials: "
        f"[{TRIALS_CSV}]({TRIALS_CSV}).",
        "",
        f"| label | trials | complete | pruned | failed | best {objective} | best parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    sections, pruned = [], 0
    for study in studies:
        trials = study.get_trials(deepcopy=False)
        count = {s: sum(t.state == s for t in trials) for s in TrialState}
        pruned += count[TrialState.PRUNED]
        complete = count[TrialState.COMPLETE]
        best = study.best_trial if complete else None
        lines.append(
            f"| {study.study_name} | {len(trials)} | {complete} | {count[TrialState.PRUNED]} | "
            f"{count[TrialState.FAIL]} | {_value(best.value if best else None)} | "
            f"{_params(best.params) if best else ''} |"
        )
        links, importances = _label_figures(study, output / FIGURES, objective)
        died = "interrupted (its worker died)"
        failures = [
            f"- trial {t.number}: {t.user_attrs.get(FAILURE, died)}"
            for t in trials
            if t.state == TrialState.FAIL
        ]
        best_file = best_config_path(output, study.study_name)
        sections += [
            "",
            f"## {study.study_name}",
            "",
            *(
                [f"Best configuration: [{best_file.name}]({best_file.name})", ""]
                if best_file.is_file()
                else []
            ),
            _best_trials(study, objective),
            "",
            importances,
            "",
            *(f"![{link}]({link})" for link in links),
            *(["", "Failed trials:", *failures] if failures else []),
        ]
    if pruned:
        lines += ["", PRUNING_NOTE]
    return atomic_write_text(output / TUNE_MD, "\n".join([*lines, *sections]) + "\n")
