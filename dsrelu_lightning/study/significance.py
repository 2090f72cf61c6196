"""The report's statistics: paired tests per comparison (summary_tests.csv) and rank tests.

Cells pair by (seed, fold): two labels are compared on the cells both have, so r seeds x k
folds give r * k pairs. One table (one dataset and metric) is one Holm family.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from dsrelu_lightning.study.markdown import markdown_table
from dsrelu_lightning.study.ranks import RankTest, friedman_nemenyi
from dsrelu_lightning.study.results import CellResult, as_int, cell_seed, config_value
from dsrelu_lightning.study.stats import PairedComparison, compare_paired, holm

__all__ = [
    "ACROSS",
    "TESTED_METRICS",
    "TEST_COLUMNS",
    "CellKey",
    "Cells",
    "comparison_lines",
    "comparison_rows",
    "comparisons",
    "group_cells",
    "group_datasets",
    "key_order",
    "rank_lines",
    "rank_tests",
    "repeated_rank_test",
    "resolve_reference",
    "stats_section",
]

CellKey = tuple[int | None, int]
"""(seed, fold): the unit two labels are paired on."""
Cells = Mapping[str, Mapping[CellKey, CellResult]]
"""label -> (seed, fold) -> that cell's result."""

ACROSS = "all datasets"
"""The key of the rank test whose blocks are the datasets."""
TESTED_METRICS = (("acc", "val acc"), ("f1", "val F1"))
TEST_COLUMNS = (
    "dataset",
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


def group_cells(results: Sequence[CellResult]) -> dict[str, dict[CellKey, CellResult]]:
    """label -> (seed, fold) -> cell, in the table's label order."""
    table: dict[str, dict[CellKey, CellResult]] = {}
    for result in results:
        table.setdefault(result.label, {})[(cell_seed(result), result.fold)] = result
    return table


def group_datasets(results: Sequence[CellResult]) -> dict[str, Cells]:
    """dataset -> :func:`group_cells` of its results, datasets by name."""
    names = sorted({r.dataset for r in results})
    return {name: group_cells([r for r in results if r.dataset == name]) for name in names}


def _test_train_ratio(result: CellResult) -> float | None:
    """n_test / n_train of the cell's split: recorded sizes if any, else 1 / (k - 1) for k folds."""
    sizes = result.data.get("split_sizes") or {}
    train, val = as_int(sizes.get("train")), as_int(sizes.get("val"))
    if train and val:
        return val / train
    folds = as_int(result.data.get("num_folds")) or as_int(
        config_value(result, "data", "init_args", "num_folds")
    )
    return 1 / (folds - 1) if folds and folds > 1 else None


def _compare(cells: Cells, label: str, reference: str, metric: str) -> PairedComparison:
    keys = [
        key
        for key in sorted(set(cells[label]) & set(cells[reference]), key=key_order)
        if cells[label][key].value("val", metric) is not None
        and cells[reference][key].value("val", metric) is not None
    ]
    a = [cells[label][key].value("val", metric) for key in keys]
    b = [cells[reference][key].value("val", metric) for key in keys]
    ratios = [_test_train_ratio(cells[name][key]) for key in keys for name in (label, reference)]
    known = [r for r in ratios if r is not None]
    ratio = sum(known) / len(known) if known and len(known) == len(ratios) else None
    return compare_paired(a, b, ratio)  # type: ignore[arg-type]


def key_order(key: CellKey) -> tuple[int, int]:
    """Sort key of a (seed, fold) cell key: by seed, then fold; no seed first."""
    seed, fold = key
    return (-1 if seed is None else seed, fold)


def _pairs(labels: Sequence[str], reference: str, all_pairs: bool) -> list[tuple[str, str]]:
    if all_pairs:
        return list(itertools.combinations(labels, 2))
    return [(label, reference) for label in labels if label != reference]


def comparison_rows(
    dataset: str, cells: Cells, reference: str, all_pairs: bool = False
) -> list[dict[str, Any]]:
    """summary_tests.csv's rows for one dataset: each comparison on each tested metric.

    Holm's adjustment runs over the comparisons of one metric (one table of summary.md).
    """
    rows = []
    for metric, _ in TESTED_METRICS:
        table = []
        for label, other in _pairs(list(cells), reference, all_pairs):
            result = asdict(_compare(cells, label, other, metric))
            table.append({"dataset": dataset, "metric": f"val_{metric}", "label": label,
                          "reference": other, **result})  # fmt: skip
        for row, adjusted in zip(table, holm([r["p_corrected"] for r in table]), strict=True):
            row["p_holm"] = adjusted
        rows += [{column: row.get(column) for column in TEST_COLUMNS} for row in table]
    return rows


def _num(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(low: float | None, high: float | None) -> str:
    return "—" if low is None or high is None else f"[{low:+.4f}, {high:+.4f}]"


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def comparison_lines(rows: Sequence[Mapping[str, Any]], all_pairs: bool) -> list[str]:
    """summary.md's tables of ``comparison_rows``: one per metric, then how to read them."""
    lines: list[str] = []
    header = ["Label", "Reference", "n", "Mean diff", "Corrected t: p [95% CI]", "Holm p"]
    header += ["Plain t: p", "Wilcoxon p (min)", "Bootstrap 95% CI", "d_z", "P(label > ref)"]
    header += ["Detectable diff", "Note"]
    for metric, title in TESTED_METRICS:
        table = [row for row in rows if row["metric"] == f"val_{metric}"]
        body = [
            [
                row["label"],
                row["reference"],
                str(row["n"]),
                _num(row["mean_diff"], signed=True),
                f"{_p(row['p_corrected'])} {_interval(row['ci_low'], row['ci_high'])}",
                _p(row["p_holm"]),
                _p(row["p_plain"]),
                f"{_p(row['wilcoxon_p'])} ({_p(row['wilcoxon_min_p'])})",
                _interval(row["bootstrap_ci_low"], row["bootstrap_ci_high"]),
                _num(row["d_z"], 3),
                _num(row["p_improvement"], 2),
                _num(row["detectable_diff"]),
                row["note"],
            ]
            for row in table
        ]
        if body:
            lines += ["", f"#### {title}", "", *markdown_table(header, body)]
    if not lines:
        return []
    scope = "every pair of labels" if all_pairs else "each label against the reference"
    return [
        *lines,
        "",
        f"How to read: {scope}, paired on the (seed, fold) cells both have; differences are "
        "label - reference. Read the corrected resampled t-test (Nadeau-Bengio, Bouckaert-Frank: "
        "variance x (1/n + n_test/n_train), df n - 1) and its Holm-adjusted p over this table's "
        "comparisons; the plain t, the Wilcoxon test and the bootstrap CI ignore the folds' "
        "overlap (too optimistic), shown for comparison. The t tests can reach any p; "
        "Wilcoxon's smallest possible p at this n is in brackets. d_z = mean / sd of the "
        "differences; P(label > ref) counts ties 1/2. A |mean diff| below the detectable diff "
        "(80% power at alpha 0.05, observed spread) is no evidence of equality: the run is too "
        "small to tell.",
    ]


def _complete_blocks(cells: Cells, metric: str) -> dict[str, list[float]]:
    """label -> its val ``metric`` on each (seed, fold) cell that every label has a value for."""
    keys = [
        key
        for key in sorted(set.intersection(*map(set, cells.values())), key=key_order)
        if all(runs[key].value("val", metric) is not None for runs in cells.values())
    ]
    return {
        label: [float(runs[key].value("val", metric)) for key in keys]  # type: ignore[arg-type]
        for label, runs in cells.items()
    }


def repeated_rank_test(cells: Cells, metric: str = "acc") -> RankTest | None:
    """Friedman + Nemenyi over the labels measured on every (seed, fold) cell the
    most-measured label has, when they share more cells than all labels do: e.g. the labels
    a grid repeated over more seeds.

    None unless that is at least 3 labels and not all of them (then the rank test over all
    labels already uses every cell).
    """
    measured = {
        label: {key for key, result in runs.items() if result.value("val", metric) is not None}
        for label, runs in cells.items()
    }
    if not measured:
        return None
    most = max(measured.values(), key=len)
    subset = {label: cells[label] for label, keys in measured.items() if keys >= most}
    if not 3 <= len(subset) < len(cells):
        return None
    return friedman_nemenyi(_complete_blocks(subset, metric))


def _dataset_means(datasets: Mapping[str, Cells], metric: str) -> dict[str, list[float]]:
    """label -> its mean val ``metric`` per dataset, for the labels every dataset has a value of."""
    means: dict[str, list[float]] = {}
    for label in next(iter(datasets.values())):
        per_dataset = []
        for cells in datasets.values():
            values = [r.value("val", metric) for r in cells.get(label, {}).values()]
            present = [v for v in values if v is not None]
            per_dataset.append(sum(present) / len(present) if present else None)
        if all(v is not None for v in per_dataset):
            means[label] = per_dataset  # type: ignore[assignment]
    return means


def rank_tests(datasets: Mapping[str, Cells], metric: str = "acc") -> dict[str, RankTest]:
    """Friedman + Nemenyi per dataset over its complete (seed, fold) blocks, and across datasets.

    Across datasets (key ``ACROSS``, only with several) each block is one dataset, each
    label's score there its mean over that dataset's cells; labels missing from a dataset drop.
    """
    tests = {
        name: friedman_nemenyi(_complete_blocks(cells, metric)) for name, cells in datasets.items()
    }
    if len(datasets) > 1:
        tests[ACROSS] = friedman_nemenyi(_dataset_means(datasets, metric))
    return tests


def rank_lines(name: str, test: RankTest, unit: str) -> list[str]:
    """summary.md's lines for one rank test: mean ranks, Friedman, Nemenyi pairs apart by > CD."""
    heading = f"Friedman test on val acc over {test.blocks} {unit} ({name}): "
    if test.statistic is None:
        return [heading + f"not run: {test.reason}."]
    ranks = ", ".join(
        f"{label} {rank:.2f}"
        for label, rank in sorted(test.mean_ranks.items(), key=lambda kv: kv[1])
    )
    nemenyi = test.nemenyi
    assert nemenyi is not None
    apart = [
        f"{a} vs {b} (p {_p(float(nemenyi.loc[a, b]))})"
        for a, b in itertools.combinations(test.labels, 2)
        if float(nemenyi.loc[a, b]) < 0.05
    ]
    return [
        heading
        + f"chi2 {test.statistic:.3f}, p {_p(test.pvalue)}. Mean ranks (1 = best): {ranks}. "
        f"Nemenyi critical difference {test.critical_difference:.3f}; pairs apart at 0.05: "
        + (", ".join(apart) if apart else "none")
        + "."
    ]


def stats_section(
    dataset: str, cells: Cells, reference: str | None, wanted: str | None, all_pairs: bool
) -> list[str]:
    """summary.md's paired tests and rank test of one dataset."""
    scope = "between every pair of labels" if all_pairs else f"against {reference or 'DSReLU'}"
    lines = ["", f"### Paired tests over (seed, fold) cells {scope}"]
    if reference is None and not all_pairs:
        missing = f"label {wanted!r}" if wanted else "DSReLU label"
        lines += ["", f"No {missing} in this dataset: nothing to compare against."]
    elif len(cells) < 2:
        lines += ["", f"Only {next(iter(cells))} in this dataset: nothing to compare."]
    else:
        lines += comparison_lines(
            comparison_rows(dataset, cells, reference or "", all_pairs), all_pairs
        )
    ranks = rank_tests({dataset: cells})[dataset]
    lines += ["", "### Ranks", "", *rank_lines(dataset, ranks, "(seed, fold) cells")]
    if repeated := repeated_rank_test(cells):
        name = f"{dataset}: {', '.join(repeated.labels)}"
        lines += ["", *rank_lines(name, repeated, "(seed, fold) cells")]
    return lines


def comparisons(
    results: Sequence[CellResult], reference: str | None = None, all_pairs: bool = False
) -> list[dict[str, Any]]:
    """summary_tests.csv: one row per (dataset, metric, label, reference) comparison."""
    rows = []
    for dataset, cells in group_datasets(results).items():
        wanted = resolve_reference([r for r in results if r.dataset == dataset], reference)
        if len(cells) > 1 and (wanted is not None or all_pairs):
            rows += comparison_rows(dataset, cells, wanted or "", all_pairs)
    return rows
