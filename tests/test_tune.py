"""tune's input checks (docs/bad_inputs.md's tune table), its space file and its trial count."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from conftest import DIGITS_CONFIG, ROOT, run_main
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.tune.space import load_space, shared_params
from dsrelu_lightning.study.tune.workers import counted_trials, progress_line

ROW = re.compile(r"^\| (t\d+) \| (.+?) \| `(.*?)` \| `(.*?)` \| (.+?) \|$")


def tune_rows() -> list[tuple[str, str, str, str]]:
    text = (ROOT / "docs" / "bad_inputs.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| t")]
    rows = [ROW.match(line) for line in lines]
    assert all(rows), [line for line, row in zip(lines, rows, strict=True) if not row]
    return [(m[1], m[3], m[4], m[5]) for m in rows if m]


def test_the_tune_table_is_numbered_without_gaps() -> None:
    assert [row[0] for row in tune_rows()] == [f"t{i}" for i in range(1, len(tune_rows()) + 1)]


@pytest.mark.parametrize(("row", "space", "arguments", "message"), tune_rows(), ids=lambda v: v)
def test_bad_tune_input(row: str, space: str, arguments: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text(space + "\n")
    tune = (
        f"tune --config {DIGITS_CONFIG} --space {tmp_path / 'space.yaml'} --trials 2 "
        f"--output {tmp_path / 'tune'}"
    )
    args = arguments.replace("{tune}", tune).replace("{tmp}", str(tmp_path)).split()
    result = run_main(*args)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert message in result.err, f"{row}: {result.err}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # nothing written


def test_space_parses_each_distribution_and_splits_the_baselines_keys(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "model.lr: {float: [1.0e-4, 1.0e-2], log: true}\n"
        "model.activation_args.steepness: {float: [1, 20]}\n"
        "data.init_args.batch_size: {int: [16, 64], step: 16}\n"
        "slope_scheduler.granularity: {categorical: [epoch, step]}\n"
    )
    params = load_space(path)
    assert [p.name for p in params] == [
        "model.lr", "steepness", "data.init_args.batch_size", "slope_scheduler.granularity"
    ]  # fmt: skip
    assert params[0].distribution == FloatDistribution(1e-4, 1e-2, log=True)
    assert params[2].extremes() == [16, 64] and params[3].extremes() == ["epoch", "step"]
    assert [p.key for p in shared_params(params)] == [
        "model.lr", "data.init_args.batch_size", "slope_scheduler.granularity"
    ]  # fmt: skip
    path.write_text("model.lr: {float: [1, 2], step: 0.5, log: true}\n")
    with pytest.raises(ConfigurationError, match="step must be a positive float without log"):
        load_space(path)


def _trial(number: int, state: TrialState, **system: object) -> optuna.trial.FrozenTrial:
    trial = create_trial(
        state=state,
        value=1.0 if state == TrialState.COMPLETE else None,
        params={"lr": 0.1},
        distributions={"lr": FloatDistribution(0.01, 1)},
        system_attrs=dict(system),
    )
    trial.number = number
    return trial


def test_a_dead_workers_trial_replaced_by_its_retry_does_not_count() -> None:
    trials = [
        _trial(0, TrialState.COMPLETE),
        _trial(1, TrialState.FAIL),  # its worker was killed; trial 3 reruns it
        _trial(2, TrialState.FAIL),  # failed by itself (NaN loss): a result, it counts
        _trial(3, TrialState.COMPLETE, failed_trial=1, retry_history=[1]),
        _trial(4, TrialState.PRUNED),
    ]
    assert [t.number for t in counted_trials(trials)] == [0, 2, 3, 4]
    line = progress_line("dsrelu", trials[0], "val/loss")
    assert line == "trial 0 dsrelu: lr=0.1 -> val/loss 1.0000 [COMPLETE]"


def test_the_report_lists_each_labels_best_trials_in_the_studys_direction(tmp_path: Path) -> None:
    from dsrelu_lightning.study.tune.report import PRUNING_NOTE, TOP_TRIALS, write_tune_report
    from dsrelu_lightning.study.tune.studies import SETTINGS_ATTR

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    angle = FloatDistribution(45, 89)
    values = {"minimize": [0.5, 0.1, float("nan"), 0.3, 0.9, 0.2, 0.7, 0.4], "maximize": [0.2, 0.8]}
    for direction, scores in values.items():
        study = optuna.create_study(storage=storage, study_name=direction, direction=direction)
        study.set_user_attr(SETTINGS_ATTR, {"objective": "val/x", "folds": [0]})
        for i, value in enumerate(scores):
            state = TrialState.FAIL if value != value else TrialState.COMPLETE
            study.add_trial(
                create_trial(
                    state=state,
                    value=None if state == TrialState.FAIL else value,
                    params={"initial_angle": 50.0 + i},
                    distributions={"initial_angle": angle},
                )
            )
    text = write_tune_report(tmp_path).read_text()
    assert PRUNING_NOTE not in text  # no trial was pruned
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"initial_angle": 88.0},
            distributions={"initial_angle": angle},
            intermediate_values={0: 0.9},
        )
    )
    text = write_tune_report(tmp_path).read_text()
    assert PRUNING_NOTE in text and "| maximize | 3 | 2 | 1 | 0 | 0.8000 |" in text
    minimize = text.split("## minimize")[1].split("## ")[0]
    rows = [line for line in minimize.splitlines() if re.match(r"^\| \d+ \| 0\.", line)]
    # the five lowest of the seven scored trials, lowest first; the failed trial 2 is not listed
    assert TOP_TRIALS == 5 and "The 5 best trials (of 7 completed)" in minimize
    assert rows == [
        "| 1 | 0.1000 | 51 |",
        "| 5 | 0.2000 | 55 |",
        "| 3 | 0.3000 | 53 |",
        "| 7 | 0.4000 | 57 |",
        "| 0 | 0.5000 | 50 |",
    ]
    maximize = text.split("## maximize")[1].split("## ")[0]
    assert maximize.index("| 1 | 0.8000 |") < maximize.index("| 0 | 0.2000 |")
    assert "| minimize | 8 | 7 | 0 | 1 | 0.1000 | initial_angle=51 |" in text


def test_the_slice_plot_tilts_only_categorical_parameters_labels() -> None:
    from optuna.distributions import CategoricalDistribution
    from optuna.visualization.matplotlib import plot_slice

    from dsrelu_lightning.study.tune.report import _tilt_categories

    study = optuna.create_study()
    distributions = {
        "steepness": FloatDistribution(1, 20),
        "schedule": CategoricalDistribution(["sigmoid", "reverse_sigmoid", "exponential"]),
    }
    for i, schedule in enumerate(["sigmoid", "reverse_sigmoid", "exponential"]):
        params = {"steepness": 1.0 + i, "schedule": schedule}
        study.add_trial(create_trial(value=i, params=params, distributions=distributions))
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        axes = _tilt_categories(plot_slice(study), study)
    tilt = {ax.get_xlabel(): {t.get_rotation() for t in ax.get_xticklabels()} for ax in axes}
    assert tilt == {"schedule": {40.0}, "steepness": {0.0}}
