"""The report's figures/: every table's plots from its cells, and the CD diagrams."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dsrelu_lightning.study.report.figures import (
    critical_difference_diagram,
    ema_curves,
    epoch_time_bars,
    save_png,
    slope_curves,
    stale_ratio_curves,
    validation_curves,
)
from dsrelu_lightning.study.report.results import CellResult, group_tables
from dsrelu_lightning.study.report.schedule_figure import schedule_shapes
from dsrelu_lightning.study.report.significance import ACROSS, rank_tests, repeated_rank_test

__all__ = ["write_figures"]


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
            save_png(figure, folder / f"{dataset.replace('/', '_')}_{name}.png")
            for name, figure in figures.items()
            if figure is not None
        ]
    if ACROSS in ranks and (figure := critical_difference_diagram(ranks[ACROSS], ACROSS, "tables")):
        written[ACROSS] = [save_png(figure, folder / "across_tables_cd_diagram.png")]
    return written
