"""A grid with --train_fractions: cells per fraction, result.json's train_fraction, a
learning curve per network and the report's Claims section."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DIGITS_CONFIG, run_main, tiny_args

from dsrelu_lightning.study.report.claims import CLAIMS
from dsrelu_lightning.study.report.learning_curve import mean_interval

TINY = tiny_args(max_epochs=1, limit_val_batches=2, limit_test_batches=2)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    output = tmp_path_factory.mktemp("claims") / "out"
    command = ["benchmark", "--config", DIGITS_CONFIG, "--activations", "relu,mish,dsrelu"]
    command += ["--folds", "0,1", "--train_fractions", "0.5,1.0", "--output", str(output)]
    run_main(*command, *TINY).ok()
    yield output


@pytest.mark.slow
def test_a_fraction_grid_records_and_reports_each_fraction(grid: Path) -> None:
    results = sorted(grid.glob("**/result.json"))
    assert len(results) == 12
    half = json.loads((grid / "digits/fraction0.5/relu/seed42/fold0/result.json").read_text())
    full = json.loads((grid / "digits/fraction1/relu/seed42/fold0/result.json").read_text())
    assert half["train_fraction"] == 0.5 and full["train_fraction"] == 1.0
    assert half["split_sizes"]["train"] == pytest.approx(full["split_sizes"]["train"] / 2, abs=5)
    assert half["split_sizes"]["val"] == full["split_sizes"]["val"]
    assert half["gap"]["acc"] is not None and half["train_eval"]["acc"] is not None
    rows = list(csv.DictReader((grid / "summary.csv").open()))
    assert sorted({r["train_fraction"] for r in rows}) == ["0.5", "1.0"]
    tests = list(csv.DictReader((grid / "summary_tests.csv").open()))
    assert {r["train_fraction"] for r in tests} == {"0.5", "1.0"}
    # The corrected test's penalty is the fold design's, whatever share of the part trained.
    ratio = {r["train_fraction"]: float(r["test_train_ratio"]) for r in tests}
    assert ratio["0.5"] == pytest.approx(ratio["1.0"], rel=0.02)
    summary = (grid / "summary.md").read_text()
    assert "## digits/fraction 0.5" in summary and "## digits/fraction 1" in summary
    assert (grid / "figures" / "digits_tiny_nets.SmallCNN_learning_curve.png").stat().st_size
    assert "learning_curve.png)" in summary
    across = summary[summary.index("## across tables") : summary.index("## Claims")]
    assert "Optimistic (the cells share training data" in across  # fraction tables: not independent
    # Every figure the summary shows exists under a name a markdown link can hold (no spaces).
    linked = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", summary)
    assert "figures/digits_fraction_0.5_val_curves.png" in linked
    assert all(" " not in link and (grid / link).is_file() for link in linked), linked


@pytest.mark.slow
def test_the_claims_section_gives_each_claim_a_verdict_per_table(grid: Path) -> None:
    summary = (grid / "summary.md").read_text()
    claims = summary[summary.index("## Claims of the paper") :]
    for claim in CLAIMS:
        assert claim.wording in claims
        for measurement in claim.measurements:
            assert f"`{measurement.name}`" in claims
    assert claims.count("#### digits/fraction 0.5") == len(CLAIMS)
    # two comparisons (relu, mish) per measurement and table, each with a verdict
    verdicts = [
        line
        for line in claims.splitlines()
        if line.startswith(("| relu |", "| mish |")) and line.count(" | ") == 6
    ]
    measurements = sum(len(c.measurements) for c in CLAIMS)
    assert len(verdicts) == 2 * 2 * measurements
    assert all("dsrelu's" in line or "cannot be tested" in line for line in verdicts), verdicts


def test_the_interval_band_is_the_t_interval_of_the_mean() -> None:
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    # t(0.975, 2) = 4.303, sd 1, n 3
    assert high - mean == pytest.approx(4.302653 / 3**0.5, rel=1e-5)
    assert mean - low == pytest.approx(high - mean)
    assert mean_interval([5.0]) == (5.0, 5.0, 5.0)
