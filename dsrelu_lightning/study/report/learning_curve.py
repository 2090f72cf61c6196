"""The learning curve of a grid with training fractions: per network, test accuracy and the
generalization gap against the training-set size, one line per label with its 95% band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from dsrelu_lightning.study.report.figures import figure_path, save_png
from dsrelu_lightning.study.report.results import CellResult, as_int, label_order

__all__ = [
    "LEARNING_CURVES",
    "fraction_columns",
    "learning_curve",
    "mean_interval",
    "write_learning_curves",
]

LEARNING_CURVES = "learning curves"
"""The figures' key of the learning curves (one per dataset and network)."""

PANELS = (
    ("test", "acc", "test accuracy"),
    ("gap", "acc", "gap/acc = train_eval/acc - val/acc"),
)


def fraction_columns(
    results: Sequence[CellResult], rows: Sequence[dict], columns: Sequence[str]
) -> tuple[list[dict], list[str]]:
    """``rows`` and ``columns`` of a CSV with ``train_fraction`` after ``backbone`` where a
    cell trained on a share of its fold, else without it (the files of grids without
    --train_fractions keep their layout)."""
    kept = [c for c in columns if c != "train_fraction"]
    if any(r.train_fraction != 1.0 for r in results):
        kept.insert(kept.index("backbone") + 1, "train_fraction")
        return list(rows), kept
    return [{k: v for k, v in row.items() if k != "train_fraction"} for row in rows], kept


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the t-interval of the mean at ``level`` (both ends the mean for one value)."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if array.size < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, array.size - 1) * array.std(ddof=1))
    half /= np.sqrt(array.size)
    return mean, mean - half, mean + half


def _train_size(result: CellResult) -> int | None:
    return as_int((result.data.get("split_sizes") or {}).get("train"))


def learning_curve(results: Sequence[CellResult], title: str) -> Figure | None:
    """Test accuracy and gap/acc against the mean training-set size of each fraction, one
    line per label with its 95% interval over (seed, fold) cells; None with one fraction."""
    fractions = sorted({r.train_fraction for r in results})
    if len(fractions) < 2:
        return None
    labels = sorted({r.label for r in results}, key=label_order)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, len(PANELS))
    for ax, (stage, metric, name) in zip(axes, PANELS, strict=True):
        for label in labels:
            xs, means, lows, highs = [], [], [], []
            for fraction in fractions:
                cells = [r for r in results if r.label == label and r.train_fraction == fraction]
                values = [v for r in cells if (v := r.value(stage, metric)) is not None]
                sizes = [s for r in cells if (s := _train_size(r)) is not None]
                if not values:
                    continue
                mean, low, high = mean_interval(values)
                xs.append(float(np.mean(sizes)) if sizes else fraction)
                means.append(mean)
                lows.append(low)
                highs.append(high)
            if xs:
                (line,) = ax.plot(xs, means, marker="o", label=label)
                ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2)
        ax.set_xscale("log")
        ax.set(xlabel="training samples per fold (log)", ylabel=name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{title}: learning curve (mean, 95% interval over cells)")
    return fig


def write_learning_curves(results: Sequence[CellResult], folder: Path) -> list[Path]:
    """One learning-curve PNG per dataset and network whose cells ran on several fractions."""
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for result in results:
        groups.setdefault((result.dataset, result.backbone), []).append(result)
    written = []
    for (dataset, backbone), cells in groups.items():
        figure = learning_curve(cells, f"{dataset}/{backbone}")
        if figure is not None:
            path = figure_path(folder, dataset, backbone, "learning_curve")
            written.append(save_png(figure, path))
    return written
