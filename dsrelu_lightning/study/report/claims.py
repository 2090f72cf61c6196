"""The report's Claims section: each claim of the DSReLU paper, its measurement per table
(dataset, network, training fraction) and a verdict worded from the paired tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsrelu_lightning.study.report.hypothesis_tests import (
    ALPHA,
    PairedComparison,
    compare_paired,
    holm,
)
from dsrelu_lightning.study.report.markdown import (
    format_interval,
    format_mean_std,
    format_p,
    format_value,
    markdown_table,
)
from dsrelu_lightning.study.report.results import Cells, group_tables, key_order
from dsrelu_lightning.study.report.table_tests import paired_values, resolve_reference

__all__ = ["CLAIMS", "COMPARED", "Claim", "Measurement", "claims_lines", "compare_measurement"]

COMPARED = ("relu", "mish")
"""The labels each claim compares the reference (DSReLU) against, where the grid has them."""


@dataclass(frozen=True)
class Measurement:
    """One number per cell, at its selected epoch: ``<stage>/<metric>``, scored on ``split``
    (what its n_test / n_train correction uses), and which direction the claim calls better."""

    stage: str
    metric: str
    split: str
    lower_is_better: bool
    meaning: str

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.metric}"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper in its own words, and the measurements that test it."""

    title: str
    wording: str
    measurements: tuple[Measurement, ...]


CLAIMS = (
    Claim(
        "Higher accuracy",
        "DSReLU gives higher validation/test metrics than the other activations",
        (Measurement("test", "acc", "test", False, "held-out test accuracy"),),
    ),
    Claim(
        "Less over-fitting",
        "DSReLU reduces over-fitting during training on its own",
        (
            Measurement("gap", "acc", "val", True, "train_eval/acc - val/acc"),
            Measurement("gap", "loss", "val", True, "val/loss - train_eval/loss"),
        ),
    ),
    Claim(
        "No dead or saturated units",
        "DSReLU does not get saturated, avoiding the issues of dead neurons",
        (
            Measurement("units", "dead", "val", True, "share of units with zero derivative"),
            Measurement("units", "saturated", "val", True, "share of saturated units"),
            Measurement(
                "units",
                "linear",
                "val",
                True,
                "share of units on one side of the kink: no nonlinearity there; context, "
                "not itself claimed",
            ),
        ),
    ),
    Claim(
        "Gradient reaches the first layers",
        "DSReLU mitigates the vanishing gradient problem",
        (
            Measurement(
                "grad", "first_to_last", "val", False, "stem's gradient norm over the head's"
            ),
        ),
    ),
)
"""The paper's four claims (arXiv 2408.09156) as the report measures them."""


def compare_measurement(
    cells: Cells, label: str, reference: str, measurement: Measurement
) -> PairedComparison:
    """``reference`` minus ``label`` on the (seed, fold) cells both measured, with the
    corrected resampled t-test (n_test / n_train of the measurement's split)."""
    stage, metric = measurement.stage, measurement.metric
    theirs, ours, ratio = paired_values(cells, label, reference, stage, metric, measurement.split)
    return compare_paired(ours, theirs, ratio)


def _verdict(
    reference: str, label: str, m: Measurement, result: PairedComparison, p: float | None
) -> str:
    """One sentence from the numbers: smaller/larger/not distinguishable, and for the claim."""
    if p is None:
        return f"against {label}: cannot be tested ({result.note or 'no p-value'})"
    diff = result.mean_diff or 0.0
    if p >= ALPHA:
        return (
            f"on this data, {reference}'s {m.name} is not distinguishable from {label}'s "
            f"(difference {format_value(diff, signed=True)}, Holm p {format_p(p)})"
        )
    smaller = diff < 0
    supports = smaller == m.lower_is_better
    return (
        f"on this data, {reference}'s {m.name} is {'smaller' if smaller else 'larger'} than "
        f"{label}'s (difference {format_value(diff, signed=True)}, 95% CI "
        f"{format_interval(result.ci_low, result.ci_high)}, Holm p {format_p(p)}): "
        f"{'supports' if supports else 'contradicts'} the claim"
    )


def _measurement_lines(cells: Cells, reference: str, m: Measurement) -> list[str]:
    values = {
        label: [
            v
            for key in sorted(runs, key=key_order)
            if (v := runs[key].value(m.stage, m.metric)) is not None
        ]
        for label, runs in cells.items()
    }
    if not any(values.values()):
        return [f"- `{m.name}` ({m.meaning}): not logged by these cells."]
    others = [label for label in COMPARED if label in cells and label != reference]
    others = others or [label for label in cells if label != reference]
    tests = [compare_measurement(cells, label, reference, m) for label in others]
    adjusted = holm([t.p_corrected for t in tests])
    rows = [[label, format_mean_std(v), str(len(v))] for label, v in values.items()]
    lines = [f"`{m.name}` ({m.meaning}; {'lower' if m.lower_is_better else 'higher'} is "
             "what the claim expects), mean ± std over cells:", ""]  # fmt: skip
    lines += markdown_table(["Label", m.name, "Cells"], rows)
    header = ["vs", "n", f"{reference} - vs", "95% CI", "p corrected", "p Holm", "Verdict"]
    body = [
        [label, str(t.n), format_value(t.mean_diff, signed=True),
         format_interval(t.ci_low, t.ci_high), format_p(t.p_corrected), format_p(p),
         _verdict(reference, label, m, t, p)]
        for label, t, p in zip(others, tests, adjusted, strict=True)
    ]  # fmt: skip
    return [*lines, "", *markdown_table(header, body), ""]


def claims_lines(
    results: Sequence, reference: str | None, figures: Sequence[Path] = ()
) -> list[str]:
    """The Claims section of summary.md: per claim and table, the measurement and the tests
    of the reference against ReLU and Mish (Holm over those comparisons)."""
    tables = group_tables(results)
    lines = [
        "## Claims of the paper",
        "",
        "Each claim in the paper's words; the verdict is this data's. Each cell is measured "
        "at its selected epoch (lowest val/loss); differences are the reference minus the "
        "other label over the (seed, fold) cells both ran, with the corrected resampled t-test "
        "and Holm's adjustment over the comparisons of one measurement and table.",
        "",
    ]
    lines += [f"![{path.stem}](figures/{path.name})" for path in figures]
    for claim in CLAIMS:
        lines += [f"### {claim.title}: \u201c{claim.wording}\u201d", ""]
        for table, cells in tables.items():
            members = [r for runs in cells.values() for r in runs.values()]
            ref = resolve_reference(members, reference)
            if ref is None or ref not in cells or len(cells) < 2:
                lines += [f"#### {table}", "", "No reference label to compare: no verdict.", ""]
                continue
            lines += [f"#### {table}", ""]
            for measurement in claim.measurements:
                lines += _measurement_lines(cells, ref, measurement)
    return lines
