"""The benchmark report: summary.csv, summary.md (paper-style tables, statistics), figures/.

Everything is read from the cells' ``result.json`` files (and, for the curves, their
``epoch_metrics.csv``) under one output folder, so shards that shared the folder merge
by construction. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsrelu_lightning.atomic import atomic_write_text
from dsrelu_lightning.study.report.bn_report import bn_statistics_lines
from dsrelu_lightning.study.report.claims import claims_lines
from dsrelu_lightning.study.report.figures import write_figures
from dsrelu_lightning.study.report.hypothesis_tests import mean_std
from dsrelu_lightning.study.report.learning_curve import (
    LEARNING_CURVES,
    fraction_columns,
    write_learning_curves,
)
from dsrelu_lightning.study.report.markdown import as_text, format_mean_std, format_value
from dsrelu_lightning.study.report.markdown import markdown_table as _table
from dsrelu_lightning.study.report.protocol import batch_limits, protocol_lines
from dsrelu_lightning.study.report.results import (
    CellKey,
    CellResult,
    Cells,
    cell_seed,
    group_cells,
    group_tables,
    key_order,
    load_results,
    table_names,
)
from dsrelu_lightning.study.report.table_tests import (
    ACROSS,
    TEST_COLUMNS,
    comparisons,
    rank_tests,
    resolve_reference,
)
from dsrelu_lightning.study.report.table_tests_markdown import rank_lines, stats_section

__all__ = ["render_markdown", "summary_rows", "write_report"]

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
SUMMARY_TESTS_CSV = "summary_tests.csv"
FIGURES = "figures"
TABLE_METRICS = (("acc", "Acc"), ("f1", "F1"), ("auroc", "AUC"))
"""The metrics of the per-fold and test tables, with their column titles."""
STAGES = ("train", "val", "test")


def summary_rows(results: Iterable[CellResult]) -> list[dict[str, Any]]:
    """One flat row per cell: identity, best-epoch metrics, times (summary.csv).

    Besides train, val and test, every stage a cell logged (e.g. ``val_ema``) gets columns,
    in every row, so the file keeps one header.
    """
    results = list(results)
    stages = _stages(results)
    rows = []
    for result in results:
        data = result.data
        row: dict[str, Any] = {
            "dataset": result.dataset,
            "backbone": result.backbone,
            "train_fraction": result.train_fraction,
            "label": result.label,
            "activation": data.get("activation"),
            "activation_args": json.dumps(data.get("activation_args"), sort_keys=True),
            "seed": cell_seed(result),
            "fold": result.fold,
            "status": data.get("status"),
            "best_epoch": data.get("best_epoch"),
            "epochs_run": data.get("epochs_run"),
        }
        for stage in stages:
            for metric in ("acc", "f1", "auroc", "loss"):
                row[f"{stage}_{metric}"] = result.value(stage, metric)
        for key in ("mean_epoch_time_s", "wall_time_s", "stop_reason"):
            row[key] = data.get(key)
        rows.append(row)
    return rows


def _stages(results: Sequence[CellResult]) -> tuple[str, ...]:
    """train, val, the other stages any cell has (e.g. val_ema), then test."""
    logged = set().union(*(result.stages for result in results))
    return ("train", "val", *sorted(logged - set(STAGES)), "test")


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV text of ``rows`` (columns: ``columns``, else the first row's keys); None is empty."""
    buffer = io.StringIO()
    fieldnames = list(columns if columns is not None else rows[0])
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _table_section(
    table: str, results: Sequence[CellResult], wanted: str | None, all_pairs: bool
) -> list[str]:
    cells = group_cells(results)
    reference = resolve_reference(results, wanted)
    return [
        f"## {table}",
        "",
        *protocol_lines(results),
        *_activation_lines(cells),
        *_test_lines(cells),
        *_fold_table_lines(cells),
        *bn_statistics_lines(cells),
        *_time_lines(cells, reference),
        *stats_section(table, cells, reference, wanted, all_pairs),
        *_status_lines(results),
    ]


def _activation_lines(cells: Cells) -> list[str]:
    rows = []
    for label, runs in cells.items():
        first = next(iter(runs.values())).data
        folds = ", ".join(str(f) for f in sorted({fold for _, fold in runs}))
        overrides = first.get("overrides") or {}
        settings = ", ".join(f"{key}={as_text(value)}" for key, value in sorted(overrides.items()))
        rows.append(
            [
                label,
                str(first.get("activation")),
                json.dumps(first.get("activation_args")),
                settings or "—",
                folds,
            ]
        )
    header = ["Label", "Activation", "Arguments", "Overrides", "Folds"]
    return ["### Activations", "", *_table(header, rows)]


def _key_text(key: CellKey, several_seeds: bool) -> str:
    seed, fold = key
    return f"seed {seed} fold {fold}" if several_seeds else str(fold)


def _fold_table_lines(cells: Cells) -> list[str]:
    """The paper's Tables I-III layout: Train/Val Acc, F1, AUC per fold, then mean ± std.

    With several seeds the first column names the cell as ``seed S fold K``.
    """
    labels = list(cells)
    keys = sorted({key for runs in cells.values() for key in runs}, key=key_order)
    several_seeds = len({seed for seed, _ in keys}) > 1
    body = []
    for key in keys:
        for metric, title in TABLE_METRICS:
            for stage in STAGES:
                runs = [cells[label].get(key) for label in labels]
                values = [format_value(r.value(stage, metric) if r else None) for r in runs]
                body.append([_key_text(key, several_seeds), f"{stage.title()} {title}", *values])
    for metric, title in TABLE_METRICS:
        for stage in STAGES:
            summaries = [format_mean_std(_values(cells[label], stage, metric)) for label in labels]
            body.append(["mean ± std", f"{stage.title()} {title}", *summaries])
    heading = (
        "### Per fold, the model of the lowest val/loss (layout of the paper's Tables I-III; "
        "Val is the data that selected it)"
    )
    if several_seeds:
        heading += "; mean ± std over every (seed, fold) cell"
    return ["", heading, "", *_table(["Fold", "Metric", *labels], body)]


def _test_lines(cells: Cells) -> list[str]:
    if not any(
        r.value("test", "acc") is not None for runs in cells.values() for r in runs.values()
    ):
        return []
    rows = [
        [f"Test {title}"]
        + [format_mean_std(_values(runs, "test", metric)) for runs in cells.values()]
        for metric, title in TABLE_METRICS
    ]
    heading = (
        "### Held-out test split: each cell's model, selected on its validation fold, "
        "mean ± std over cells"
    )
    return ["", heading, "", *_table(["Metric", *cells], rows)]


def _values(cells: Mapping[CellKey, CellResult], stage: str, metric: str) -> list[float]:
    values = (cells[key].value(stage, metric) for key in sorted(cells, key=key_order))
    return [v for v in values if v is not None]


def _time_lines(cells: Cells, reference: str | None) -> list[str]:
    def times(label: str) -> list[float]:
        values = (r.data.get("mean_epoch_time_s") for r in cells[label].values())
        return [float(v) for v in values if v is not None]

    ref_mean = mean_std(times(reference))[0] if reference else None
    rows = []
    for label in cells:
        mean = mean_std(times(label))[0]
        epochs = [float(r.data.get("epochs_run") or 0) for r in cells[label].values()]
        ratio = f"{mean / ref_mean:.3f}" if mean is not None and ref_mean else "—"
        rows.append(
            [label, format_mean_std(times(label), 3), format_value(mean_std(epochs)[0], 1), ratio]
        )
    return [
        "",
        "### Mean epoch time (Table IV analogue), seconds, mean ± std over cells",
        "",
        *_table(
            ["Label", "Mean epoch time (s)", "Epochs run (mean)", f"Time / {reference or '—'}"],
            rows,
        ),
    ]


def _status_lines(results: Sequence[CellResult]) -> list[str]:
    bad = [r for r in results if r.data.get("status") != "finished"]
    line = f"Cells: {len(results)}, {len(results) - len(bad)} finished normally"
    if bad:
        line += "; " + "; ".join(
            f"{r.label}/fold {r.fold}: {r.data.get('status')} ({r.data.get('stop_reason')})"
            for r in bad
        )
    return ["", line + ".", ""]


def render_markdown(
    results: Sequence[CellResult],
    figures: Mapping[str, Sequence[Path]],
    reference: str | None,
    all_pairs: bool = False,
    title: str = "Benchmark summary",
    preface: str = "",
) -> str:
    """summary.md: per table (a dataset, or a dataset and backbone) the tables, the tests and
    links to its figures; with several tables, the ranks across them. ``preface`` is a
    paragraph under the title."""
    limits = batch_limits(results)
    cut = ", ".join(f"{name}={value}" for name, value in limits.items())
    lines = [
        f"# {title}: SMOKE RUN, batches cut ({cut})" if limits else f"# {title}",
        "",
        *([preface, ""] if preface else []),
        f"{len(results)} cells. Each cell's model is its epoch of lowest val/loss (its "
        "result.json), scored on the held-out test split: the test figures answer, the val "
        "figures are the data that chose the model. Mean ± std is over (seed, fold) cells "
        "(sample std, ddof 1).",
        "",
    ]
    names = table_names(results)
    tables = list(dict.fromkeys(names.values()))
    for table in tables:
        subset = [r for r in results if names[r] == table]
        lines += _table_section(table, subset, reference, all_pairs)
        if figures.get(table):
            lines += ["### Figures", ""]
            lines += [f"![{path.stem}]({FIGURES}/{path.name})" for path in figures[table]]
            lines.append("")
    if len(tables) > 1:
        across = rank_tests(group_tables(results))[ACROSS]
        nested = len({r.train_fraction for r in results}) > 1  # fractions share their folds
        lines += [f"## {ACROSS}", "", *rank_lines(ACROSS, across, "tables", nested), ""]
        lines += [f"![{path.stem}]({FIGURES}/{path.name})" for path in figures.get(ACROSS, [])]
    lines += ["", *claims_lines(results, reference, figures.get(LEARNING_CURVES, ()))]
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    output: str | Path,
    reference: str | None = None,
    all_pairs: bool = False,
    title: str = "Benchmark summary",
    preface: str = "",
) -> Path:
    """Merge every result under ``output`` into summary{,_tests}.csv, summary.md and figures/.

    Args:
        output: a benchmark's output folder (all shards' cells lie under it).
        reference: the label the paired tests compare against (default: ``dsrelu``, else
            the first label whose activation is DSReLU).
        all_pairs: test every pair of labels, not only each label against the reference.
        title: summary.md's heading.
        preface: a paragraph under the heading (what the benchmark is for).

    Returns:
        The path of summary.md.
    """
    output = Path(output)
    results = load_results(output)
    rows = summary_rows(results)
    rows, columns = fraction_columns(results, rows, list(rows[0]))
    atomic_write_text(output / SUMMARY_CSV, _csv_text(rows, columns))
    tests = comparisons(results, reference, all_pairs)
    tests, columns = fraction_columns(results, tests, TEST_COLUMNS)
    atomic_write_text(output / SUMMARY_TESTS_CSV, _csv_text(tests, columns))
    figures = write_figures(results, output / FIGURES)
    figures[LEARNING_CURVES] = write_learning_curves(results, output / FIGURES)
    markdown = render_markdown(results, figures, reference, all_pairs, title, preface)
    return atomic_write_text(output / SUMMARY_MD, markdown)
