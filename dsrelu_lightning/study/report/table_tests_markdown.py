"""The report's statistics as summary.md shows them: the paired tests' tables, the rank
tests' lines, and each dataset's section of both."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from dsrelu_lightning.study.report.hypothesis_tests import RankTest
from dsrelu_lightning.study.report.markdown import (
    format_interval,
    format_p,
    format_value,
    markdown_table,
)
from dsrelu_lightning.study.report.results import Cells
from dsrelu_lightning.study.report.table_tests import (
    SCORED,
    TESTED_METRICS,
    comparison_rows,
    rank_tests,
    repeated_rank_test,
)

__all__ = ["comparison_lines", "rank_lines", "stats_section"]


def comparison_lines(rows: Sequence[Mapping[str, Any]], all_pairs: bool) -> list[str]:
    """summary.md's tables of ``comparison_rows``: one per metric, then how to read them."""
    lines: list[str] = []
    header = ["Label", "Reference", "n", "Mean diff", "Corrected t: p [95% CI]", "Holm p"]
    header += ["Plain t: p", "Wilcoxon p (min)", "Bootstrap 95% CI", "d_z", "P(label > ref)"]
    header += ["Detectable diff", "Note"]
    for stage, metric, title in TESTED_METRICS:
        table = [row for row in rows if row["metric"] == f"{stage}_{metric}"]
        body = [
            [
                row["label"],
                row["reference"],
                str(row["n"]),
                format_value(row["mean_diff"], signed=True),
                f"{format_p(row['p_corrected'])} {format_interval(row['ci_low'], row['ci_high'])}",
                format_p(row["p_holm"]),
                format_p(row["p_plain"]),
                f"{format_p(row['wilcoxon_p'])} ({format_p(row['wilcoxon_min_p'])})",
                format_interval(row["bootstrap_ci_low"], row["bootstrap_ci_high"]),
                format_value(row["d_z"], 3),
                format_value(row["p_improvement"], 2),
                format_value(row["detectable_diff"]),
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
        "label - reference. Each cell's model was selected on its validation fold and scored "
        "on the held-out test split: the test tables are the answer; the val tables score the "
        "data that chose the model (optimistic, for comparison). Read the corrected resampled "
        "t-test (Nadeau-Bengio, Bouckaert-Frank: variance x (1/n + n_scored/n_train) with the "
        "cells' recorded split sizes, df n - 1) and its Holm-adjusted p over one table's "
        "comparisons; it covers the variation between training sets (folds, seeds), not that "
        "of drawing another test set (docs/benchmark.md). The plain t, the Wilcoxon test and "
        "the bootstrap CI ignore the folds' overlap (too optimistic), shown for comparison. "
        "The t tests can reach any p; "
        "Wilcoxon's smallest possible p at this n is in brackets. d_z = mean / sd of the "
        "differences; P(label > ref) counts ties 1/2. A |mean diff| below the detectable diff "
        "(80% power at alpha 0.05, observed spread) is no evidence of equality: the run is too "
        "small to tell.",
    ]


def rank_lines(name: str, test: RankTest, unit: str, optimistic: bool = False) -> list[str]:
    """summary.md's lines for one rank test: mean ranks, Friedman, Nemenyi pairs apart by > CD;
    ``optimistic`` says its blocks are not independent."""
    heading = f"Friedman test on {SCORED} acc over {test.blocks} {unit} ({name}): "
    if optimistic:
        heading = "Optimistic (the cells share training data, not independent blocks): " + heading
    if test.statistic is None:
        return [heading + f"not run: {test.reason}."]
    ranks = ", ".join(
        f"{label} {rank:.2f}"
        for label, rank in sorted(test.mean_ranks.items(), key=lambda kv: kv[1])
    )
    nemenyi = test.nemenyi
    assert nemenyi is not None
    apart = [
        f"{a} vs {b} (p {format_p(float(nemenyi.loc[a, b]))})"
        for a, b in itertools.combinations(test.labels, 2)
        if float(nemenyi.loc[a, b]) < 0.05
    ]
    return [
        heading
        + f"chi2 {test.statistic:.3f}, p {format_p(test.pvalue)}. Mean ranks (1 = best): {ranks}. "
        f"Nemenyi critical difference {test.critical_difference:.3f}; pairs apart at 0.05: "
        + (", ".join(apart) if apart else "none")
        + "."
    ]


def stats_section(
    table: str, cells: Cells, reference: str | None, wanted: str | None, all_pairs: bool
) -> list[str]:
    """summary.md's paired tests and rank test of one table."""
    scope = "between every pair of labels" if all_pairs else f"against {reference or 'DSReLU'}"
    lines = ["", f"### Paired tests over (seed, fold) cells {scope}"]
    if reference is None and not all_pairs:
        missing = f"label {wanted!r}" if wanted else "DSReLU label"
        lines += ["", f"No {missing} in this table: nothing to compare against."]
    elif len(cells) < 2:
        lines += ["", f"Only {next(iter(cells))} in this table: nothing to compare."]
    else:
        lines += comparison_lines(comparison_rows(cells, reference or "", all_pairs), all_pairs)
    ranks = rank_tests({table: cells})[table]
    lines += ["", "### Ranks", "", *rank_lines(table, ranks, "(seed, fold) cells", True)]
    if repeated := repeated_rank_test(cells):
        name = f"{table}: {', '.join(repeated.labels)}"
        lines += ["", *rank_lines(name, repeated, "(seed, fold) cells", True)]
    return lines
