"""The report: summary.csv/summary.md equal the result files, statistics, figures, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from dsrelu_lightning.__main__ import main
from dsrelu_lightning.atomic import atomic_write_json, atomic_write_text
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.report.summary import write_report
from dsrelu_lightning.study.report.table_tests import TEST_COLUMNS
from dsrelu_lightning.study.result_file import CellRecord

LABELS = ("relu", "mish", "dsrelu", "dsrelu_75_30")
SPLIT_SIZES = {"train": 1149, "val": 288, "test": 360}
"""The digits fold-0 sizes, as a cell records them."""
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
    seed: int | None = None,
    precise_bn: bool = False,
) -> dict:
    """Write a made-up result.json and epoch_metrics.csv where the benchmark puts them.

    With ``seed`` the record carries it and the cell lies in ``seed<s>/fold<k>``; without, the
    old layout and record: the seed is only in the saved config (42). ``precise_bn`` adds
    val_ema/acc and bn/stale_ratio to the epoch history.
    """
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
        seed=seed,
        activation=activation,
        activation_args={"initial_angle": 75, "final_angle": 30} if "75" in label else None,
        num_folds=5,
        split_sizes=SPLIT_SIZES,
        status=status,
        stop_reason="max_epochs",
        best_epoch=epochs - 1,
        epochs_run=epochs,
        stages=metrics,
        mean_epoch_time_s=float(rng.uniform(1, 2)),
        wall_time_s=10.0,
        config={
            "trainer": {"max_epochs": epochs},
            "model": {"lr": 0.001},
            "seed_everything": 42 if seed is None else seed,
        },
    )
    folder = output / dataset / label / f"fold{fold}"
    if seed is not None:
        folder = output / dataset / label / f"seed{seed}" / f"fold{fold}"
    data = record.to_json()
    if seed is None:
        del data["seed"]  # as the single-seed layout's records were written
    atomic_write_json(folder / "result.json", data)
    rows = ["epoch,step,dsrelu/slope,val/acc,val/f1,val/loss,val_ema/acc,bn/stale_ratio"]
    for epoch in range(epochs):
        slope = f"{10 - epoch:.1f}" if activation == "dsrelu" else ""
        ema = f"{rng.uniform()},{10.0**epoch}" if precise_bn else ","
        rows.append(
            f"{epoch},{epoch * 2},{slope},{rng.uniform()},{rng.uniform()},{rng.uniform()},{ema}"
        )
    atomic_write_text(folder / "epoch_metrics.csv", "\n".join(rows) + "\n")
    return data


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
    assert len(per_fold) == len(FOLDS) * 9  # train, val, test x acc, F1, AUC
    for row in per_fold:
        stage, metric = row[1].split()
        for label, text in zip(header[2:], row[2:], strict=True):
            value = results[("digits", label, int(row[0]))][stage.lower()][names[metric]]
            assert text == f"{value:.4f}"
    means = [row for row in rows if row[0] == "mean ± std"]
    assert len(means) == 9
    for row in means:
        stage, metric = row[1].split()
        for label, text in zip(header[2:], row[2:], strict=True):
            values = [results[("digits", label, f)][stage.lower()][names[metric]] for f in FOLDS]
            assert text == f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def test_test_set_and_epoch_time_tables_equal_the_result_files(grid: tuple[Path, dict]) -> None:
    output, results = grid
    markdown = section(write_report(output).read_text(), "cifar100")
    header, *rows = table(markdown, "### Held-out test split")
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


def read_tests(output: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((output / "summary_tests.csv").open()))


def _holm_by_hand(pvalues: list[float]) -> list[float]:
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def test_summary_tests_csv_recomputes_by_hand(grid: tuple[Path, dict]) -> None:
    output, results = grid
    write_report(output)
    header = (output / "summary_tests.csv").read_text().splitlines()[0].split(",")
    assert header == list(TEST_COLUMNS)
    rows = read_tests(output)
    # datasets x labels other than dsrelu x (test acc, test F1, val acc, val F1), test first
    assert len(rows) == 2 * 3 * 4
    assert [r["metric"] for r in rows[:6]] == ["test_acc"] * 3 + ["test_f1"] * 3
    for row in rows:
        stage, metric = row["metric"].split("_")
        a = np.array([results[(row["dataset"], row["label"], f)][stage][metric] for f in FOLDS])
        b = np.array([results[(row["dataset"], "dsrelu", f)][stage][metric] for f in FOLDS])
        # n_scored / n_train from the recorded sizes: the test split, or the validation fold
        d, n, ratio = a - b, len(FOLDS), SPLIT_SIZES[stage] / SPLIT_SIZES["train"]
        se = np.sqrt((1 / n + ratio) * d.var(ddof=1))  # Nadeau-Bengio's corrected variance
        t = d.mean() / se
        half = stats.t.ppf(0.975, n - 1) * se
        expected = {
            "mean_diff": d.mean(),
            "t_corrected": t,
            "p_corrected": 2 * stats.t.sf(abs(t), n - 1),
            "ci_low": d.mean() - half,
            "ci_high": d.mean() + half,
            "t_plain": d.mean() / (d.std(ddof=1) / np.sqrt(n)),
            "d_z": d.mean() / d.std(ddof=1),
            "p_improvement": ((d > 0).sum() + 0.5 * (d == 0).sum()) / n,
            "test_train_ratio": ratio,
        }
        assert row["reference"] == "dsrelu" and row["n"] == "5"
        for column, value in expected.items():
            assert float(row[column]) == pytest.approx(value), column
        low, high = float(row["bootstrap_ci_low"]), float(row["bootstrap_ci_high"])
        assert low <= d.mean() <= high
    for dataset in ("digits", "cifar100"):
        for metric in ("test_acc", "test_f1", "val_acc", "val_f1"):
            family = [r for r in rows if (r["dataset"], r["metric"]) == (dataset, metric)]
            adjusted = _holm_by_hand([float(r["p_corrected"]) for r in family])
            assert [float(r["p_holm"]) for r in family] == pytest.approx(adjusted)


def test_summary_md_shows_the_tests_of_the_csv(grid: tuple[Path, dict]) -> None:
    output, _ = grid
    markdown = section(write_report(output).read_text(), "digits")
    rows = [r for r in read_tests(output) if r["dataset"] == "digits"]
    header, *body = table(markdown, "#### test acc")
    assert header[:6] == [
        "Label",
        "Reference",
        "n",
        "Mean diff",
        "Corrected t: p [95% CI]",
        "Holm p",
    ]
    acc = [r for r in rows if r["metric"] == "test_acc"]
    assert (
        [line[0] for line in body] == [r["label"] for r in acc] == ["relu", "mish", "dsrelu_75_30"]
    )
    for line, row in zip(body, acc, strict=True):
        assert line[3] == f"{float(row['mean_diff']):+.4f}"
        assert line[4].startswith(f"{float(row['p_corrected']):.4f} [{float(row['ci_low']):+.4f}, ")
        assert line[7] == f"{float(row['wilcoxon_p']):.4f} (0.0625)"
    assert markdown.index("#### test F1") < markdown.index("#### val acc (selection data)")
    assert "How to read:" in markdown
    assert (
        "Optimistic (the cells share training data, not independent blocks): Friedman test on "
        "test acc over 5 (seed, fold) cells (digits): chi2" in markdown
    )


def test_cells_pair_by_seed_and_fold(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    results = {
        (label, seed, fold): fake_cell(tmp_path, "digits", label, fold, rng, seed=seed)
        for label in ("relu", "dsrelu")
        for seed in (42, 43)
        for fold in (0, 1)
    }
    markdown = write_report(tmp_path).read_text()
    rows = read_tests(tmp_path)
    assert [r["n"] for r in rows] == ["4"] * 4 and rows[0]["metric"] == "test_acc"
    cells = sorted((seed, fold) for seed in (42, 43) for fold in (0, 1))
    a = [results[("relu", *cell)]["test"]["acc"] for cell in cells]
    b = [results[("dsrelu", *cell)]["test"]["acc"] for cell in cells]
    d = np.array(a) - np.array(b)  # the pairs are the (seed, fold) cells both labels have
    assert float(rows[0]["mean_diff"]) == pytest.approx(d.mean())
    corrected_se = np.sqrt((1 / 4 + 360 / 1149) * d.var(ddof=1))
    assert float(rows[0]["t_corrected"]) == pytest.approx(d.mean() / corrected_se)
    summary = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert sorted((r["label"], int(r["seed"]), int(r["fold"])) for r in summary) == sorted(results)
    _, *per_cell = table(section(markdown, "digits"), "### Per fold")
    assert {line[0] for line in per_cell} >= {"seed 42 fold 0", "seed 43 fold 1"}
    assert "Friedman test on test acc over 4 (seed, fold) cells (digits): not run: needs >= 3" in (
        markdown
    )


def test_an_old_result_without_a_seed_reads_it_from_the_saved_config(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for label in ("relu", "dsrelu"):
        for fold in (0, 1):
            fake_cell(tmp_path, "digits", label, fold, rng)  # no "seed" in the record
    old = tmp_path / "digits" / "relu" / "fold0" / "result.json"
    assert "seed" not in json.loads(old.read_text())
    write_report(tmp_path)
    assert {r["seed"] for r in csv.DictReader((tmp_path / "summary.csv").open())} == {"42"}
    assert [r["n"] for r in read_tests(tmp_path)] == ["2"] * 4
    # A new-format cell with the same seed pairs with the old cells of that seed.
    fake_cell(tmp_path, "digits", "relu", 2, rng, seed=42)
    fake_cell(tmp_path, "digits", "dsrelu", 2, rng, seed=42)
    write_report(tmp_path)
    assert [r["n"] for r in read_tests(tmp_path)] == ["3"] * 4


def test_all_pairs_tests_every_pair_in_one_holm_family(grid: tuple[Path, dict]) -> None:
    output, _ = grid
    write_report(output, all_pairs=True)
    rows = [r for r in read_tests(output) if (r["dataset"], r["metric"]) == ("digits", "val_acc")]
    assert len(rows) == 6  # 4 labels choose 2
    assert {(r["label"], r["reference"]) for r in rows} >= {
        ("relu", "mish"),
        ("dsrelu", "dsrelu_75_30"),
    }
    adjusted = _holm_by_hand([float(r["p_corrected"]) for r in rows])
    assert [float(r["p_holm"]) for r in rows] == pytest.approx(adjusted)


def test_reference_option_changes_the_comparison(grid: tuple[Path, dict]) -> None:
    output, _ = grid
    markdown = write_report(output, reference="relu").read_text()
    _, *rows = table(section(markdown, "digits"), "#### val acc")
    assert {row[0] for row in rows} == {"mish", "dsrelu", "dsrelu_75_30"}
    assert {row[1] for row in rows} == {"relu"}
    markdown = write_report(output, reference="gelu").read_text()
    assert "No label 'gelu' in this table: nothing to compare against." in markdown


def test_figures_are_written_per_dataset(grid: tuple[Path, dict]) -> None:
    output, _ = grid
    markdown = write_report(output).read_text()
    for dataset in ("digits", "cifar100"):
        for name in ("val_curves", "dsrelu_slope", "dsrelu_schedules", "epoch_time", "cd_diagram"):
            path = output / "figures" / f"{dataset}_{name}.png"
            assert path.read_bytes().startswith(PNG)
            assert f"](figures/{path.name})" in markdown
        # every label has every cell: the one rank test already uses them all
        assert not (output / "figures" / f"{dataset}_cd_diagram_repeated.png").exists()


def test_figures_of_precise_bn_and_across_datasets(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for dataset in ("digits", "cifar100"):
        for label in ("relu", "mish", "dsrelu"):
            for fold in (0, 1, 2):
                fake_cell(tmp_path, dataset, label, fold, rng, precise_bn=label != "mish")
    markdown = write_report(tmp_path).read_text()
    for name in ("digits_val_vs_val_ema", "digits_bn_stale_ratio", "across_tables_cd_diagram"):
        assert (tmp_path / "figures" / f"{name}.png").read_bytes().startswith(PNG)
        assert f"](figures/{name}.png)" in markdown
    assert "Friedman test on test acc over 2 tables (across tables): chi2" in markdown


def test_labels_repeated_over_more_seeds_get_their_own_rank_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    scores: dict[str, list[float]] = {}
    for label in ("relu", "mish", "dsrelu", "tanh"):
        for seed in (42,) if label == "tanh" else (42, 43):
            for fold in (0, 1, 2):
                cell = fake_cell(tmp_path, "digits", label, fold, rng, seed=seed)
                scores.setdefault(label, []).append(cell["test"]["acc"])
    markdown = write_report(tmp_path).read_text()
    everyone = stats.friedmanchisquare(*(values[:3] for values in scores.values()))
    assert (
        "Friedman test on test acc over 3 (seed, fold) cells (digits): "
        f"chi2 {everyone.statistic:.3f}" in markdown
    )
    repeated = stats.friedmanchisquare(scores["relu"], scores["mish"], scores["dsrelu"])
    assert (
        "Friedman test on test acc over 6 (seed, fold) cells (digits: relu, mish, dsrelu): "
        f"chi2 {repeated.statistic:.3f}" in markdown
    )
    figure = tmp_path / "figures" / "digits_cd_diagram_repeated.png"
    assert figure.read_bytes().startswith(PNG)
    assert f"](figures/{figure.name})" in markdown


def test_bn_section_sets_precise_and_running_statistics_side_by_side(tmp_path: Path) -> None:
    """val_ema at the best epoch comes from the record, or (records written before it was
    recorded) from the history's best-epoch row; the last epoch and the ratio from the history.
    """
    rng = np.random.default_rng(3)
    written = {
        fold: fake_cell(tmp_path, "digits", "dsrelu", fold, rng, precise_bn=True)
        for fold in (0, 1, 2)
    }
    fake_cell(tmp_path, "digits", "relu", 0, rng)
    recorded = {"acc": 0.25, "f1": 0.5, "auroc": 0.75, "loss": 2.0}
    data = {**written[2], "val_ema": recorded}
    atomic_write_json(tmp_path / "digits" / "dsrelu" / "fold2" / "result.json", data)
    histories = {
        fold: list(
            csv.DictReader(
                (tmp_path / "digits" / "dsrelu" / f"fold{fold}" / "epoch_metrics.csv").open()
            )
        )
        for fold in (0, 1, 2)
    }
    best_ema = [float(histories[f][written[f]["best_epoch"]]["val_ema/acc"]) for f in (0, 1)] + [
        0.25
    ]

    markdown = write_report(tmp_path).read_text()
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    by_fold = {int(r["fold"]): r for r in rows if r["label"] == "dsrelu"}
    assert [float(by_fold[f]["val_ema_acc"]) for f in (0, 1, 2)] == best_ema
    assert float(by_fold[2]["val_ema_loss"]) == 2.0
    assert next(r for r in rows if r["label"] == "relu")["val_ema_acc"] == ""

    header, *body = table(markdown, "### Validation with recalibrated vs running BatchNorm")
    assert [row[0] for row in body] == ["dsrelu"]  # relu logged neither figure
    cells = dict(zip(header, body[0], strict=True))
    mean = statistics.mean
    assert cells["Val acc (precise BN)"].startswith(
        f"{mean(w['val']['acc'] for w in written.values()):.4f} ± "
    )
    assert (
        cells["Val acc (running BN)"] == f"{mean(best_ema):.4f} ± {statistics.stdev(best_ema):.4f}"
    )
    last = [float(h[-1]["val_ema/acc"]) for h in histories.values()]
    assert cells["Last epoch val acc (running BN)"].startswith(f"{mean(last):.4f} ± ")
    gaps = [
        sum(abs(float(r["val/acc"]) - float(r["val_ema/acc"])) > 0.1 for r in h)
        for h in histories.values()
    ]
    assert cells["Epochs with a gap > 0.1, mean per cell"] == f"{mean(gaps):.1f} of 3"
    assert cells["Max bn/stale_ratio, median (range)"] == "100 (100-100)"


def test_degenerate_grids_state_reasons_instead_of_crashing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fake_cell(tmp_path, "digits", "relu", 0, rng)
    fake_cell(tmp_path, "digits", "dsrelu", 0, rng, status="diverged")
    fake_cell(tmp_path, "digits", "tanh", 0, rng)
    markdown = write_report(tmp_path).read_text()
    assert "needs >= 2 pairs, has 1" in markdown
    assert "not run: needs >= 3 labels and >= 2 complete blocks, has 3 and 1" in markdown
    assert "nan" not in (tmp_path / "summary_tests.csv").read_text().lower()
    assert not (tmp_path / "figures" / "digits_cd_diagram.png").exists()
    assert not (tmp_path / "figures" / "digits_val_vs_val_ema.png").exists()
    assert "dsrelu/fold 0: diverged" in markdown
    assert "nan" not in markdown.lower()
    assert not (tmp_path / "figures" / "digits_missing.png").exists()


def test_a_grid_without_dsrelu_has_no_tests_and_no_slope_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for fold in (0, 1):
        fake_cell(tmp_path, "digits", "relu", fold, rng)
        fake_cell(tmp_path, "digits", "tanh", fold, rng)
    markdown = write_report(tmp_path).read_text()
    assert "No DSReLU label in this table: nothing to compare against." in markdown
    assert (tmp_path / "summary_tests.csv").read_text().strip() == ",".join(TEST_COLUMNS)
    assert not (tmp_path / "figures" / "digits_dsrelu_slope.png").exists()
    assert (tmp_path / "figures" / "digits_val_curves.png").is_file()
    assert "BatchNorm statistics" not in markdown
    assert "val_ema_acc" not in (tmp_path / "summary.csv").read_text()


def test_bad_result_folders_raise_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no result.json under"):
        write_report(tmp_path)
    with pytest.raises(ConfigurationError, match="is not a folder"):
        write_report(tmp_path / "missing")
    rng = np.random.default_rng(2)
    fake_cell(tmp_path / "a", "digits", "relu", 0, rng)
    fake_cell(tmp_path / "b", "digits", "relu", 0, rng)
    with pytest.raises(ConfigurationError, match="are both digits/resnet34/relu/seed 42/fold 0"):
        write_report(tmp_path)
    (tmp_path / "b" / "digits" / "relu" / "fold0" / "result.json").write_text("{trunc")
    with pytest.raises(ConfigurationError, match="is not a readable benchmark result"):
        write_report(tmp_path)
    assert not (tmp_path / "summary.md").exists()


def test_report_command(grid: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    output, _ = grid
    main(["report", "--output", str(output), "--reference", "relu", "--all-pairs"])
    assert f"report: {output / 'summary.md'}" in capsys.readouterr().out
    assert len(read_tests(output)) == 2 * 6 * 4  # datasets x pairs x (test, val) x (acc, F1)
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


RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.mark.parametrize("study", ["digits_precise_bn", "digits_networks"])
def test_report_rewrites_the_committed_study_from_its_cells(tmp_path: Path, study: str) -> None:
    committed = RESULTS / study
    if not (committed / "digits").is_dir():
        pytest.skip(f"the committed study {study} is not here")
    copy = tmp_path / "study"
    shutil.copytree(committed / "digits", copy / "digits")
    write_report(copy)
    for name in ("summary.csv", "summary_tests.csv"):
        assert (copy / name).read_text() == (committed / name).read_text(), name


@pytest.mark.parametrize(
    ("limit", "smoke"), [(None, False), (1.0, False), (1, True), (0.25, True), (3, True)]
)
def test_the_title_marks_a_grid_whose_batches_were_cut(
    tmp_path: Path, limit: float | None, smoke: bool
) -> None:
    # Lightning's limit_*_batches: a float is a fraction (1.0 = all), an int a batch count.
    rng = np.random.default_rng(0)
    for label in ("relu", "dsrelu"):
        for fold in range(2):
            fake_cell(tmp_path, "digits", label, fold, rng)
    for path in tmp_path.rglob("result.json"):
        data = json.loads(path.read_text())
        data["config"]["trainer"]["limit_train_batches"] = limit
        path.write_text(json.dumps(data))
    title = write_report(tmp_path).read_text().splitlines()[0]
    assert ("SMOKE RUN" in title) == smoke
    if smoke:
        assert f"limit_train_batches={json.dumps(limit)}" in title
