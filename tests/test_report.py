"""The report: summary.csv/summary.md equal the result files, statistics, figures, bad input."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from dsrelu_lightning.__main__ import main
from dsrelu_lightning.atomic import atomic_write_text
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.record import CellRecord
from dsrelu_lightning.study.report import write_report
from dsrelu_lightning.study.stats import paired_tests

LABELS = ("relu", "mish", "dsrelu", "dsrelu_75_30")
FOLDS = (0, 1, 2, 3, 4)
PNG = b"\x89PNG\r\n\x1a\n"


def fake_cell(
    output: Path,
    dataset: str,
    label: str,
    fold: int,
    rng: np.random.Generator,
    epochs: int = 3,
    status: str = "finished",
) -> dict:
    """Write a made-up result.json and epoch_metrics.csv where the benchmark puts them."""
    activation = "dsrelu" if label.startswith("dsrelu") else label
    metrics = {
        stage: {
            "acc": float(rng.uniform(0.5, 1)),
            "f1": float(rng.uniform(0.5, 1)),
            "auroc": float(rng.uniform(0.8, 1)),
            "loss": float(rng.uniform(0.1, 1)),
        }
        for stage in ("train", "val", "test")
    }
    record = CellRecord(
        dataset=dataset,
        label=label,
        fold=fold,
        seed=42,
        activation=activation,
        activation_args={"initial_angle": 75, "final_angle": 30} if "75" in label else None,
        num_folds=5,
        status=status,
        stop_reason="max_epochs",
        best_epoch=epochs - 1,
        epochs_run=epochs,
        stages=metrics,
        mean_epoch_time_s=float(rng.uniform(1, 2)),
        wall_time_s=10.0,
        config={"trainer": {"max_epochs": epochs}, "model": {"lr": 0.001}},
    )
    folder = output / dataset / label / "seed42" / f"fold{fold}"
    record.write(folder)
    rows = ["epoch,step,dsrelu/slope,val/acc,val/f1,val/loss"]
    for epoch in range(epochs):
        slope = f"{10 - epoch:.1f}" if activation == "dsrelu" else ""
        rows.append(f"{epoch},{epoch * 2},{slope},{rng.uniform()},{rng.uniform()},{rng.uniform()}")
    atomic_write_text(folder / "epoch_metrics.csv", "\n".join(rows) + "\n")
    return record.to_json()


@pytest.fixture
def grid(tmp_path: Path) -> tuple[Path, dict]:
    """Two datasets, four labels, five folds of made-up results."""
    rng = np.random.default_rng(7)
    output = tmp_path / "out"
    results = {
        (dataset, label, fold): fake_cell(output, dataset, label, fold, rng)
        for dataset in ("digits", "cifar100")
        for label in LABELS
        for fold in FOLDS
    }
    return output, results


def table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (header first, separator dropped) of the first table after ``heading``."""
    lines = markdown[markdown.index(heading) :].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return [rows[0], *rows[2:]]


def section(markdown: str, dataset: str) -> str:
    start = markdown.index(f"## {dataset}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end > 0 else None]


def test_summary_csv_has_one_row_per_cell_with_the_exact_values(grid: tuple[Path, dict]) -> None:
    output, results = grid
    write_report(output)
    rows = list(csv.DictReader((output / "summary.csv").open()))
    assert len(rows) == len(results)
    for row in rows:
        result = results[(row["dataset"], row["label"], int(row["fold"]))]
        for stage in ("train", "val", "test"):
            for metric in ("acc", "f1", "auroc", "loss"):
                assert float(row[f"{stage}_{metric}"]) == result[stage][metric]
        assert float(row["mean_epoch_time_s"]) == result["mean_epoch_time_s"]
        assert int(row["epochs_run"]) == result["epochs_run"]


def test_per_fold_table_equals_the_result_files(grid: tuple[Path, dict]) -> None:
    output, results = grid
    markdown = section(write_report(output).read_text(), "digits")
    header, *rows = table(markdown, "### Per fold")
    assert header[:2] == ["Fold", "Metric"]
    assert header[2:] == ["relu", "mish", "dsrelu", "dsrelu_75_30"]  # paper order, then others
    names = {"Acc": "acc", "F1": "f1", "AUC": "auroc"}
    per_fold = [row for row in rows if row[0] != "mean ± std"]
    assert len(per_fold) == len(FOLDS) * 6
    for row in per_fold:
        stage, metric = row[1].split()
        for label, text in zip(header[2:], row[2:], strict=True):
            value = results[("digits", label, int(row[0]))][stage.lower()][names[metric]]
            assert text == f"{value:.4f}"
    means = [row for row in rows if row[0] == "mean ± std"]
    assert len(means) == 6
    for row in means:
        stage, metric = row[1].split()
        for label, text in zip(header[2:], row[2:], strict=True):
            values = [results[("digits", label, f)][stage.lower()][names[metric]] for f in FOLDS]
            assert text == f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def test_test_set_and_epoch_time_tables_equal_the_result_files(grid: tuple[Path, dict]) -> None:
    output, results = grid
    markdown = section(write_report(output).read_text(), "cifar100")
    header, *rows = table(markdown, "### Test set")
    acc = rows[0]
    assert acc[0] == "Test Acc"
    for label, text in zip(header[1:], acc[1:], strict=True):
        values = [results[("cifar100", label, f)]["test"]["acc"] for f in FOLDS]
        assert text == f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
    header, *rows = table(markdown, "### Mean epoch time")
    reference = statistics.mean(
        results[("cifar100", "dsrelu", f)]["mean_epoch_time_s"] for f in FOLDS
    )
    for row in rows:
        times = [results[("cifar100", row[0], f)]["mean_epoch_time_s"] for f in FOLDS]
        assert row[1] == f"{statistics.mean(times):.3f} ± {statistics.stdev(times):.3f}"
        assert row[3] == f"{statistics.mean(times) / reference:.3f}"


def test_paired_tests_against_dsrelu_equal_the_statistics(grid: tuple[Path, dict]) -> None:
    output, results = grid
    markdown = section(write_report(output).read_text(), "digits")
    header, *rows = table(markdown, "### Paired tests")
    assert header[3] == "Mean diff (label - dsrelu)"
    assert {row[0] for row in rows} == {"relu", "mish", "dsrelu_75_30"}
    assert len(rows) == 6  # val acc and val F1 for each
    for row in rows:
        metric = {"val acc": "acc", "val F1": "f1"}[row[1]]
        a = [results[("digits", row[0], f)]["val"][metric] for f in FOLDS]
        b = [results[("digits", "dsrelu", f)]["val"][metric] for f in FOLDS]
        expected = paired_tests(a, b)
        assert row[2] == "5"
        assert row[3] == f"{expected.mean_difference:+.4f}"
        assert row[4:10] == [
            f"{expected.t_statistic:.3f}",
            f"{expected.t_pvalue:.4f}",
            f"{expected.wilcoxon_statistic:.1f}",
            f"{expected.wilcoxon_pvalue:.4f}",
            f"{expected.cohens_d:.3f}",
            "",
        ]


def test_reference_option_changes_the_comparison(grid: tuple[Path, dict]) -> None:
    output, _ = grid
    markdown = write_report(output, reference="relu").read_text()
    header, *rows = table(section(markdown, "digits"), "### Paired tests")
    assert header[3] == "Mean diff (label - relu)"
    assert {row[0] for row in rows} == {"mish", "dsrelu", "dsrelu_75_30"}
    markdown = write_report(output, reference="gelu").read_text()
    assert "No label 'gelu' in this dataset: nothing to compare against." in markdown


def test_figures_are_written_per_dataset(grid: tuple[Path, dict]) -> None:
    output, _ = grid
    markdown = write_report(output).read_text()
    for dataset in ("digits", "cifar100"):
        for name in ("val_curves", "dsrelu_slope", "epoch_time"):
            path = output / "figures" / f"{dataset}_{name}.png"
            assert path.read_bytes().startswith(PNG)
            assert f"](figures/{path.name})" in markdown


def test_degenerate_grids_state_reasons_instead_of_crashing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fake_cell(tmp_path, "digits", "relu", 0, rng)
    fake_cell(tmp_path, "digits", "dsrelu", 0, rng, status="diverged")
    markdown = write_report(tmp_path).read_text()
    assert "needs >= 2 folds, has 1" in markdown
    assert "dsrelu/fold 0: diverged" in markdown
    assert "nan" not in markdown.lower()
    assert not (tmp_path / "figures" / "digits_missing.png").exists()


def test_a_grid_without_dsrelu_has_no_tests_and_no_slope_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for fold in (0, 1):
        fake_cell(tmp_path, "digits", "relu", fold, rng)
        fake_cell(tmp_path, "digits", "tanh", fold, rng)
    markdown = write_report(tmp_path).read_text()
    assert "No DSReLU label in this dataset: nothing to compare against." in markdown
    assert not (tmp_path / "figures" / "digits_dsrelu_slope.png").exists()
    assert (tmp_path / "figures" / "digits_val_curves.png").is_file()


def test_bad_result_folders_raise_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no result.json under"):
        write_report(tmp_path)
    with pytest.raises(ConfigurationError, match="is not a folder"):
        write_report(tmp_path / "missing")
    rng = np.random.default_rng(2)
    fake_cell(tmp_path / "a", "digits", "relu", 0, rng)
    fake_cell(tmp_path / "b", "digits", "relu", 0, rng)
    with pytest.raises(ConfigurationError, match="are both digits/relu/seed 42/fold 0"):
        write_report(tmp_path)
    (tmp_path / "b" / "digits" / "relu" / "seed42" / "fold0" / "result.json").write_text("{trunc")
    with pytest.raises(ConfigurationError, match="is not a readable benchmark result"):
        write_report(tmp_path)
    assert not (tmp_path / "summary.md").exists()


def test_report_command(grid: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    output, _ = grid
    main(["report", "--output", str(output)])
    assert f"report: {output / 'summary.md'}" in capsys.readouterr().out
    assert json.loads(json.dumps(list(csv.DictReader((output / "summary.csv").open()))))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report"], "the following arguments are required: --output"),
        (["report", "--output", "{tmp}/none"], "is not a folder of benchmark results"),
        (["report", "--output", "{tmp}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_report_command_bad_input_is_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([arg.replace("{tmp}", str(tmp_path)) for arg in args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("dsrelu-lightning: error:")
