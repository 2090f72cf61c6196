"""The report's figures/: curves, val vs val_ema, BN staleness, the DSReLU slope, epoch times,
CD diagrams, one function each, and :func:`write_figures`, every table's set of them.

Figures are built with matplotlib's object API (``Figure``, no pyplot state), so they
render headless (Agg) without touching the global backend of a notebook or script.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dsrelu_lightning.atomic import atomic_write_bytes
from dsrelu_lightning.study.report.hypothesis_tests import RankTest, mean_std
from dsrelu_lightning.study.report.results import CellResult, group_tables
from dsrelu_lightning.study.report.schedule_figure import schedule_shapes
from dsrelu_lightning.study.report.table_tests import ACROSS, rank_tests, repeated_rank_test

__all__ = [
    "critical_difference_diagram",
    "ema_curves",
    "epoch_time_bars",
    "figure_path",
    "fold_band",
    "save_png",
    "slope_curves",
    "stale_ratio_curves",
    "validation_curves",
    "write_figures",
]

History = Sequence[Mapping[str, float]]
"""One cell's epoch_metrics.csv rows (epoch, step and every epoch metric)."""

_CURVES = (
    ("val/acc", "Validation accuracy", "linear"),
    ("val/f1", "Validation macro F1", "linear"),
    ("val/loss", "Validation loss", "log"),
)


def _epoch_axis(ax: Any) -> None:
    """Whole epochs on the x axis: the epochs plotted where they are few (one epoch would
    otherwise get ticks at -0.04 ... 0.04), else integer ticks."""
    epochs = sorted({int(x) for line in ax.get_lines() for x in line.get_xdata()})
    if 0 < len(epochs) <= 12:
        ax.set_xticks(epochs)
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def fold_band(histories: Sequence[History], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean over folds and sample std over folds of ``key`` at each epoch.

    An epoch counts the folds that reached it (early stopping ends folds at different
    epochs); the std is NaN where only one fold did.
    """
    values: dict[int, list[float]] = {}
    for rows in histories:
        for row in rows:
            value = row.get(key)
            if value is not None and np.isfinite(value):
                values.setdefault(int(row["epoch"]), []).append(float(value))
    epochs = np.array(sorted(values), dtype=int)
    summaries = [mean_std(values[e]) for e in epochs]
    mean = np.array([m for m, _ in summaries], dtype=float)
    std = np.array([np.nan if sd is None else sd for _, sd in summaries], dtype=float)
    return epochs, mean, std


def validation_curves(histories: Mapping[str, Sequence[History]], title: str) -> Figure | None:
    """Validation accuracy, F1 and loss per epoch: one line per label, mean +- 1 std band;
    None without any epoch history."""
    if not _logged(histories, "val/acc"):
        return None
    fig = Figure(figsize=(5 * len(_CURVES), 4), layout="constrained")
    axes = fig.subplots(1, len(_CURVES))
    for ax, (key, name, scale) in zip(axes, _CURVES, strict=True):
        for label, runs in histories.items():
            epochs, mean, std = fold_band(runs, key)
            if not epochs.size:
                continue
            (line,) = ax.plot(epochs, mean, marker=".", label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set(xlabel="epoch", title=name, yscale=scale)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{title}: mean over folds, band = +-1 std")
    return fig


def _logged(histories: Mapping[str, Sequence[History]], key: str) -> dict[str, Sequence[History]]:
    return {label: runs for label, runs in histories.items() if fold_band(runs, key)[0].size}


def ema_curves(histories: Mapping[str, Sequence[History]], title: str) -> Figure | None:
    """Per label, val/acc (precise BN) beside val_ema/acc (running statistics), or None.

    Only labels whose cells logged ``val_ema/acc`` get a panel: mean over cells, +-1 std band.
    """
    logged = _logged(histories, "val_ema/acc")
    if not logged:
        return None
    columns = min(3, len(logged))
    rows = -(-len(logged) // columns)
    fig = Figure(figsize=(4.5 * columns, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False))
    for ax, (label, runs) in zip(axes.flat, logged.items(), strict=False):
        for key, name in (("val/acc", "val/acc"), ("val_ema/acc", "val_ema/acc (EMA BN)")):
            epochs, mean, std = fold_band(runs, key)
            (line,) = ax.plot(epochs, mean, marker=".", label=name)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set(title=label, xlabel="epoch", ylabel="accuracy")
        _epoch_axis(ax)
        ax.tick_params(labelbottom=True)  # a panel above an empty slot keeps its epoch ticks
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(logged) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(f"{title}: validation with recomputed vs running BN statistics (band +-1 std)")
    return fig


def stale_ratio_curves(histories: Mapping[str, Sequence[History]], title: str) -> Figure | None:
    """``bn/stale_ratio`` per epoch and label (mean over cells, log scale); None if not logged."""
    logged = _logged(histories, "bn/stale_ratio")
    if not logged:
        return None
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for label, runs in logged.items():
        epochs, mean, _ = fold_band(runs, "bn/stale_ratio")
        ax.plot(epochs, mean, marker=".", label=label)
    _epoch_axis(ax)  # before the reference line, whose x runs over the axes, not epochs
    ax.axhline(1.0, color="grey", linewidth=1, linestyle=":")
    ax.set(
        xlabel="epoch",
        ylabel="largest running / batch variance",
        yscale="log",
        title=f"{title}: BN staleness (1 = statistics fit what they normalise)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


def critical_difference_diagram(test: RankTest, title: str, unit: str = "blocks") -> Figure | None:
    """scikit-posthocs' critical-difference diagram of a Friedman/Nemenyi test, or None.

    Mean ranks on the axis (1 = best); labels Nemenyi cannot tell apart at 0.05 share a bar.
    """
    if test.statistic is None or test.nemenyi is None:
        return None
    import scikit_posthocs  # imported here: it loads seaborn and statsmodels

    # The diagram writes "label (rank)" beside the axes, where no layout engine sees it: leave
    # side margins for the longest one (about 0.09 inch per character at the default size).
    margin = 0.2 + 0.09 * (max(map(len, test.labels)) + 6)
    width = 5.0 + 2 * margin
    fig = Figure(figsize=(width, 1.6 + 0.3 * len(test.labels)))
    ax = fig.add_axes((margin / width, 0.05, 1 - 2 * margin / width, 0.75))
    scikit_posthocs.critical_difference_diagram(test.mean_ranks, test.nemenyi, ax=ax)
    ax.set_title(
        f"{title}: mean rank on test acc over {test.blocks} {unit} (Friedman p {test.pvalue:.3g}; "
        f"Nemenyi CD {test.critical_difference:.2f})",
        fontsize="medium",
    )
    return fig


def slope_curves(histories: Mapping[str, Sequence[History]], title: str) -> Figure | None:
    """The DSReLU slope each labelled run logged per epoch (``dsrelu/slope``), or None."""
    logged = _logged(histories, "dsrelu/slope")
    if not logged:
        return None
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for label, runs in logged.items():
        epochs, mean, _ = fold_band(runs, "dsrelu/slope")
        ax.plot(epochs, mean, marker="o", label=label)
    ax.set(xlabel="epoch", ylabel="positive-side slope s(t)", title=f"{title}: DSReLU slope logged")
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def epoch_time_bars(times: Mapping[str, Sequence[float]], title: str) -> Figure:
    """Mean epoch time per label over folds, with +-1 std error bars."""
    labels = list(times)
    summaries = [mean_std(times[label]) for label in labels]
    means = [mean for mean, _ in summaries]
    stds = [std or 0.0 for _, std in summaries]
    fig = Figure(figsize=(max(4.0, 1.1 * len(labels) + 1), 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(labels, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set(ylabel="mean epoch time (s)", title=f"{title}: mean epoch time (+-1 std over folds)")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(axis="y", alpha=0.3)
    return fig


def figure_path(folder: Path, *parts: str) -> Path:
    """``folder/<parts joined by _>.png``, safe in a shell and in a markdown link: every
    character but ASCII letters, digits, ``_``, ``.`` and ``-`` becomes ``_``."""
    stem = re.sub(r"[^\w.-]", "_", "_".join(parts), flags=re.ASCII)
    return folder / f"{stem}.png"


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return atomic_write_bytes(path, buffer.getvalue())


def write_figures(results: Sequence[CellResult], folder: Path) -> dict[str, list[Path]]:
    """Each dataset's curves, val vs val_ema, BN staleness, slope, epoch times, CD diagrams
    (one more over the labels with the most cells, see :func:`repeated_rank_test`)."""
    written: dict[str, list[Path]] = {}
    tables = group_tables(results)
    ranks = rank_tests(tables)
    for dataset, cells in tables.items():
        histories = {label: [r.history for r in runs.values()] for label, runs in cells.items()}
        times = {
            label: [
                float(r.data["mean_epoch_time_s"])
                for r in runs.values()
                if r.data.get("mean_epoch_time_s") is not None
            ]
            for label, runs in cells.items()
        }
        figures = {
            "val_curves": validation_curves(histories, dataset),
            "val_vs_val_ema": ema_curves(histories, dataset),
            "bn_stale_ratio": stale_ratio_curves(histories, dataset),
            "dsrelu_slope": slope_curves(histories, dataset),
            "epoch_time": epoch_time_bars({k: v for k, v in times.items() if v}, dataset),
            "cd_diagram": critical_difference_diagram(ranks[dataset], dataset, "cells"),
        }
        if figures["dsrelu_slope"] is not None:  # beside the logged slope: every shape it can take
            figures["dsrelu_schedules"] = schedule_shapes()
        if repeated := repeated_rank_test(cells):
            title = f"{dataset}, {len(repeated.labels)} labels"
            figures["cd_diagram_repeated"] = critical_difference_diagram(repeated, title, "cells")
        written[dataset] = [
            save_png(figure, figure_path(folder, dataset, name))
            for name, figure in figures.items()
            if figure is not None
        ]
    if ACROSS in ranks and (figure := critical_difference_diagram(ranks[ACROSS], ACROSS, "tables")):
        written[ACROSS] = [save_png(figure, figure_path(folder, "across_tables_cd_diagram"))]
    return written
