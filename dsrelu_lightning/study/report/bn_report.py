"""The report's BatchNorm section: validation with recalibrated vs running statistics.

With precise BN on, a cell logs ``val/*`` (BatchNorm statistics recomputed from training
batches before each validation) and ``val_ema/*`` (the same weights with BN's running
averages, the paper's protocol); every cell logs ``bn/stale_ratio``. The section sets them
side by side at the selected epoch and at the last one, so a gap that stale running
statistics open is seen in the table, not only in a figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence

from dsrelu_lightning.study.report.markdown import format_mean_std, markdown_table
from dsrelu_lightning.study.report.results import CellResult, Cells
from dsrelu_lightning.training.precise_bn import EMA_GAP_WARNING

__all__ = ["bn_statistics_lines"]


def bn_statistics_lines(cells: Cells) -> list[str]:
    """The section's lines; empty when no cell logged ``val_ema/acc`` or ``bn/stale_ratio``."""
    rows = [_row(label, list(runs.values())) for label, runs in cells.items()]
    if all(row is None for row in rows):
        return []
    header = [
        "Label",
        "Val acc (precise BN)",
        "Val acc (running BN)",
        "Last epoch val acc",
        "Last epoch val acc (running BN)",
        f"Epochs with a gap > {EMA_GAP_WARNING:g}, mean per cell",
        "Max bn/stale_ratio, median (range)",
    ]
    return [
        "",
        "### Validation with recalibrated vs running BatchNorm statistics",
        "",
        "Precise BN: each validation used BatchNorm statistics recomputed from training "
        "batches (val acc); the same weights scored with BN's running averages, the paper's "
        "protocol, give the running-BN figure. The first two columns are at the selected "
        "epoch (lowest val/loss), the next two at the last epoch; an epoch has a gap where "
        f"the two accuracies differ by more than {EMA_GAP_WARNING:g}. bn/stale_ratio is the "
        "largest ratio of a layer's running variance to a training batch's (about 1 when "
        "the running statistics fit the network), its maximum over a cell's epochs.",
        "",
        *markdown_table(header, [row for row in rows if row is not None]),
    ]


def _row(label: str, runs: Sequence[CellResult]) -> list[str] | None:
    lasts = [run.history[-1] for run in runs if run.history]
    ema_logged = any("val_ema/acc" in row for run in runs for row in run.history)
    ratios = [_max_ratio(run) for run in runs]
    ratios = [r for r in ratios if r is not None]
    if not ema_logged and not ratios:
        return None
    gaps = [_gap_epochs(run) for run in runs if run.history]
    epochs = [len(run.history) for run in runs if run.history]
    return [
        label,
        format_mean_std(_present(run.value("val", "acc") for run in runs)),
        format_mean_std(_present(run.value("val_ema", "acc") for run in runs)),
        format_mean_std(_present(row.get("val/acc") for row in lasts)),
        format_mean_std(_present(row.get("val_ema/acc") for row in lasts)),
        f"{statistics.mean(gaps):.1f} of {statistics.mean(epochs):.0f}" if ema_logged else "—",
        _median_range(ratios),
    ]


def _present(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def _gap_epochs(run: CellResult) -> int:
    return sum(
        abs(row["val/acc"] - row["val_ema/acc"]) > EMA_GAP_WARNING
        for row in run.history
        if "val/acc" in row and "val_ema/acc" in row
    )


def _max_ratio(run: CellResult) -> float | None:
    ratios = [row["bn/stale_ratio"] for row in run.history if "bn/stale_ratio" in row]
    return max(ratios) if ratios else None


def _median_range(values: Sequence[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"
