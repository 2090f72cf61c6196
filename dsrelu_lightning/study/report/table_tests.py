"""The report's statistics: paired tests per comparison (summary_tests.csv) and rank tests
(summary.md shows them: :mod:`~dsrelu_lightning.study.report.table_tests_markdown`).

Each cell's model is selected on its validation fold (lowest val/loss) and scored on the
held-out test split: the test metrics are the answer, the validation ones the data that chose
it (optimistic, shown as such). Cells pair by (seed, fold): two labels are compared on the
cells both have, so r seeds x k folds give r * k pairs. A table is a dataset (and backbone,
where a dataset ran on several); one table, stage and metric is one Holm family.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from dsrelu_lightning.study.report.hypothesis_tests import (
    PairedComparison,
    RankTest,
    compare_paired,
    friedman_nemenyi,
    holm,
)
from dsrelu_lightning.study.report.results import (
    CellResult,
    Cells,
    as_int,
    group_tables,
    key_order,
)

__all__ = [
    "ACROSS",
    "SCORED",
    "TESTED_METRICS",
    "TEST_COLUMNS",
    "comparison_rows",
    "comparisons",
    "paired_values",
    "rank_tests",
    "repeated_rank_test",
    "resolve_reference",
    "test_train_ratio",
]

ACROSS = "across tables"
"""The key of the rank test whose blocks are the tables (datasets, backbones)."""
SCORED = "test"
"""The stage that scores a cell's selected model: the held-out test split."""
TESTED_METRICS = (
    ("test", "acc", "test acc"),
    ("test", "f1", "test F1"),
    ("val", "acc", "val acc (selection data)"),
    ("val", "f1", "val F1 (selection data)"),
)
"""(stage, metric, title) of the paired tests, the held-out answer first."""
TEST_COLUMNS = (
    "dataset",
    "backbone",
    "metric",
    "label",
    "reference",
    "n",
    "mean_diff",
    "t_corrected",
    "p_corrected",
    "ci_low",
    "ci_high",
    "p_holm",
    "t_plain",
    "p_plain",
    "wilcoxon_p",
    "bootstrap_ci_low",
    "bootstrap_ci_high",
    "d_z",
    "p_improvement",
    "wilcoxon_min_p",
    "detectable_diff",
    "test_train_ratio",
    "note",
)


def resolve_reference(results: Sequence[CellResult], wanted: str | None) -> str | None:
    """``wanted`` if a cell has that label; by default ``dsrelu``, else the first DSReLU label."""
    labels = {r.label: r for r in results}
    if wanted is not None:
        return wanted if wanted in labels else None
    if "dsrelu" in labels:
        return "dsrelu"
    return next(
        (label for label, r in labels.items() if r.data.get("activation") == "dsrelu"), None
    )


def test_train_ratio(result: CellResult, stage: str) -> float | None:
    """n_scored / n_train of the cell: the recorded size of ``stage``'s split (the held-out
    test split, or the validation fold) over its fold's training part; None when the record
    has no sizes (the corrected test is then left out, with a note).

    A cell trained on a ``train_fraction`` of that part counts the whole part: the penalty is
    the fold design's (its training parts overlap), and the subsets overlap less, not more.
    Their own size would make the penalty grow as the overlap shrinks (docs/benchmark.md).
    """
    sizes = result.data.get("split_sizes") or {}
    train, scored = as_int(sizes.get("train")), as_int(sizes.get(stage))
    if not train or not scored:
        return None
    return scored * result.train_fraction / train  # train / train_fraction: the whole part


def paired_values(
    cells: Cells, label: str, reference: str, stage: str, metric: str, split: str | None = None
) -> tuple[list[float], list[float], float | None]:
    """``label``'s and ``reference``'s ``stage`` ``metric`` on the (seed, fold) cells both
    measured, in key order, and the mean n_scored / n_train of ``split`` (``stage`` unless
    given) over them: None where a record lacks its sizes."""
    keys = [
        key
        for key in sorted(set(cells[label]) & set(cells[reference]), key=key_order)
        if cells[label][key].value(stage, metric) is not None
        and cells[reference][key].value(stage, metric) is not None
    ]
    a = [float(cells[label][key].value(stage, metric)) for key in keys]  # type: ignore[arg-type]
    b = [float(cells[reference][key].value(stage, metric)) for key in keys]  # type: ignore[arg-type]
    scored = split or stage
    ratios = [test_train_ratio(cells[n][key], scored) for key in keys for n in (label, reference)]
    known = [r for r in ratios if r is not None]
    ratio = sum(known) / len(known) if known and len(known) == len(ratios) else None
    return a, b, ratio


def _compare(cells: Cells, label: str, reference: str, stage: str, metric: str) -> PairedComparison:
    return compare_paired(*paired_values(cells, label, reference, stage, metric))


def _pairs(labels: Sequence[str], reference: str, all_pairs: bool) -> list[tuple[str, str]]:
    if all_pairs:
        return list(itertools.combinations(labels, 2))
    return [(label, reference) for label in labels if label != reference]


def comparison_rows(cells: Cells, reference: str, all_pairs: bool = False) -> list[dict[str, Any]]:
    """summary_tests.csv's rows for one table: each comparison on each tested metric.

    Holm's adjustment runs over the comparisons of one metric (one table of summary.md).
    """
    first = next(iter(next(iter(cells.values())).values()))
    where = {"dataset": first.dataset, "backbone": first.backbone}
    where["train_fraction"] = first.train_fraction
    rows = []
    for stage, metric, _ in TESTED_METRICS:
        table = []
        for label, other in _pairs(list(cells), reference, all_pairs):
            result = asdict(_compare(cells, label, other, stage, metric))
            table.append({**where, "metric": f"{stage}_{metric}", "label": label,
                          "reference": other, **result})  # fmt: skip
        for row, adjusted in zip(table, holm([r["p_corrected"] for r in table]), strict=True):
            row["p_holm"] = adjusted
        rows += [{c: row.get(c) for c in ("train_fraction", *TEST_COLUMNS)} for row in table]
    return rows


def _complete_blocks(cells: Cells, metric: str, stage: str) -> dict[str, list[float]]:
    """label -> its ``stage`` ``metric`` on each (seed, fold) cell every label has it for."""
    keys = [
        key
        for key in sorted(set.intersection(*map(set, cells.values())), key=key_order)
        if all(runs[key].value(stage, metric) is not None for runs in cells.values())
    ]
    return {
        label: [float(runs[key].value(stage, metric)) for key in keys]  # type: ignore[arg-type]
        for label, runs in cells.items()
    }


def repeated_rank_test(cells: Cells, metric: str = "acc", stage: str = SCORED) -> RankTest | None:
    """Friedman + Nemenyi over the labels measured on every (seed, fold) cell the
    most-measured label has, when they share more cells than all labels do: e.g. the labels
    a grid repeated over more seeds.

    None unless that is at least 3 labels and not all of them (then the rank test over all
    labels already uses every cell).
    """
    measured = {
        label: {key for key, result in runs.items() if result.value(stage, metric) is not None}
        for label, runs in cells.items()
    }
    if not measured:
        return None
    most = max(measured.values(), key=len)
    subset = {label: cells[label] for label, keys in measured.items() if keys >= most}
    if not 3 <= len(subset) < len(cells):
        return None
    return friedman_nemenyi(_complete_blocks(subset, metric, stage))


def _table_means(tables: Mapping[str, Cells], metric: str, stage: str) -> dict[str, list[float]]:
    """label -> its mean ``stage`` ``metric`` per table, for the labels every table has."""
    means: dict[str, list[float]] = {}
    for label in next(iter(tables.values())):
        per_table = []
        for cells in tables.values():
            values = [r.value(stage, metric) for r in cells.get(label, {}).values()]
            present = [v for v in values if v is not None]
            per_table.append(sum(present) / len(present) if present else None)
        if all(v is not None for v in per_table):
            means[label] = per_table  # type: ignore[assignment]
    return means


def rank_tests(
    tables: Mapping[str, Cells], metric: str = "acc", stage: str = SCORED
) -> dict[str, RankTest]:
    """Friedman + Nemenyi per table over its complete (seed, fold) blocks, and across tables.

    Within a table the blocks are (seed, fold) cells, which share training data: they are
    not independent, and those tests are optimistic. Across tables (key ``ACROSS``, only
    with several: datasets, or backbones of a dataset) each block is one table, each label's
    score there its mean over that table's cells; labels missing from a table drop.
    """
    tests = {
        name: friedman_nemenyi(_complete_blocks(cells, metric, stage))
        for name, cells in tables.items()
    }
    if len(tables) > 1:
        tests[ACROSS] = friedman_nemenyi(_table_means(tables, metric, stage))
    return tests


def comparisons(
    results: Sequence[CellResult], reference: str | None = None, all_pairs: bool = False
) -> list[dict[str, Any]]:
    """summary_tests.csv: one row per (table, metric, label, reference) comparison."""
    rows = []
    for cells in group_tables(results).values():
        members = [r for runs in cells.values() for r in runs.values()]
        wanted = resolve_reference(members, reference)
        if len(cells) > 1 and (wanted is not None or all_pairs):
            rows += comparison_rows(cells, wanted or "", all_pairs)
    return rows
