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
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from dsrelu_lightning.atomic import atomic_write_text
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.command_parser import CommandParser
from dsrelu_lightning.study.figures import (
    epoch_time_bars,
    save_png,
    slope_curves,
    validation_curves,
)
from dsrelu_lightning.study.grid import PAPER_ACTIVATIONS
from dsrelu_lightning.study.record import RESULT_FILE, CellRecord
from dsrelu_lightning.study.stats import mean_std, paired_tests

__all__ = [
    "CellResult",
    "load_results",
    "render_markdown",
    "report_main",
    "summary_rows",
    "write_report",
]

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
FIGURES = "figures"
HISTORY_FILE = "epoch_metrics.csv"
METRICS = (("acc", "Acc"), ("f1", "F1"), ("auroc", "AUC"))
TESTED_METRICS = (("acc", "val acc"), ("f1", "val F1"))
STAGES = ("train", "val", "test")
# (label in summary.md's protocol line, key path in the resolved config)
PROTOCOL = (
    ("max_epochs", ("trainer", "max_epochs")),
    ("batch_size", ("data", "init_args", "batch_size")),
    ("lr", ("model", "lr")),
    ("weight_decay", ("model", "weight_decay")),
    ("stem", ("model", "stem")),
    ("num_folds", ("data", "init_args", "num_folds")),
    ("seed", ("seed_everything",)),
    ("early stopping patience", ("early_stopping", "patience")),
    ("data", ("data", "class_path")),
)


@dataclass(frozen=True)
class CellResult:
    """One cell's record (its ``result.json``) and where it lies."""

    path: Path
    record: CellRecord

    @cached_property
    def data(self) -> Mapping[str, Any]:
        """The record as its ``result.json`` mapping."""
        return self.record.to_json()

    @property
    def dataset(self) -> str:
        return self.record.dataset

    @property
    def label(self) -> str:
        return self.record.label

    @property
    def fold(self) -> int:
        return int(self.record.fold)

    @property
    def seed(self) -> Any:
        return self.record.seed

    def value(self, stage: str, metric: str) -> float | None:
        """``stage`` (train/val/test ...) ``metric`` (acc/f1/auroc/loss) at the best epoch."""
        return self.record.value(stage, metric)

    @cached_property
    def history(self) -> list[dict[str, float]]:
        """The cell's epoch_metrics.csv rows (empty when the file is missing)."""
        path = self.path.parent / HISTORY_FILE
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return [
                {key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(handle)
            ]


def load_results(output: str | Path) -> list[CellResult]:
    """Every ``result.json`` under ``output`` (shards included), by dataset, label and fold."""
    output = Path(output)
    if not output.is_dir():
        raise ConfigurationError(f"--output {str(output)!r} is not a folder of benchmark results")
    results: dict[tuple[str, str, Any, int], CellResult] = {}
    for path in sorted(output.glob(f"**/{RESULT_FILE}")):
        try:
            result = CellResult(path, CellRecord.read(path))
            key = (result.dataset, result.label, result.seed, result.fold)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"{path} is not a readable benchmark result ({exc}); delete it and rerun "
                "the benchmark to redo that cell"
            ) from exc
        if key in results:
            raise ConfigurationError(
                f"{path} and {results[key].path} are both {key[0]}/{key[1]}/seed {key[2]}/"
                f"fold {key[3]}: "
                "keep one of them"
            )
        results[key] = result
    if not results:
        raise ConfigurationError(
            f"no {RESULT_FILE} under {str(output)!r}: run the benchmark (or cv) there first"
        )
    return sorted(
        results.values(), key=lambda r: (r.dataset, _label_key(r.label), str(r.seed), r.fold)
    )


def _label_key(label: str) -> tuple[int, str]:
    """Table column order: the paper's six activations in its order, then the rest by name."""
    order = PAPER_ACTIVATIONS.index(label) if label in PAPER_ACTIVATIONS else len(PAPER_ACTIVATIONS)
    return order, label


def summary_rows(results: Iterable[CellResult]) -> list[dict[str, Any]]:
    """One flat row per cell: identity, best-epoch metrics, times (summary.csv)."""
    rows = []
    for result in results:
        data = result.data
        row: dict[str, Any] = {
            "dataset": result.dataset,
            "label": result.label,
            "activation": data.get("activation"),
            "activation_args": json.dumps(data.get("activation_args"), sort_keys=True),
            "fold": result.fold,
            "status": data.get("status"),
            "best_epoch": data.get("best_epoch"),
            "epochs_run": data.get("epochs_run"),
        }
        for stage in STAGES:
            for metric in ("acc", "f1", "auroc", "loss"):
                row[f"{stage}_{metric}"] = result.value(stage, metric)
        for key in ("mean_epoch_time_s", "wall_time_s", "stop_reason"):
            row[key] = data.get(key)
        rows.append(row)
    return rows


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt_mean_std(values: Sequence[float], digits: int = 4) -> str:
    mean, std = mean_std(values)
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {_fmt(std, digits)}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _config_value(result: CellResult, path: Sequence[str]) -> Any:
    value: Any = result.data.get("config") or {}
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _reference(results: Sequence[CellResult], wanted: str | None) -> str | None:
    labels = {r.label: r for r in results}
    if wanted is not None:
        return wanted if wanted in labels else None
    if "dsrelu" in labels:
        return "dsrelu"
    return next(
        (label for label, r in labels.items() if r.data.get("activation") == "dsrelu"), None
    )


def _by_label(results: Sequence[CellResult]) -> dict[str, dict[int, CellResult]]:
    table: dict[str, dict[int, CellResult]] = {}
    for result in results:
        table.setdefault(result.label, {})[result.fold] = result
    return table


def _dataset_section(dataset: str, results: Sequence[CellResult], wanted: str | None) -> list[str]:
    cells = _by_label(results)
    reference = _reference(results, wanted)
    return [
        f"## {dataset}",
        "",
        *_protocol_lines(results),
        *_activation_lines(cells),
        *_fold_table_lines(cells),
        *_test_lines(cells),
        *_time_lines(cells, reference),
        *_stats_lines(cells, reference, wanted),
        *_status_lines(results),
    ]


def _activation_lines(cells: Mapping[str, Mapping[int, CellResult]]) -> list[str]:
    rows = []
    for label, runs in cells.items():
        first = next(iter(runs.values())).data
        folds = ", ".join(str(f) for f in sorted(runs))
        overrides = first.get("overrides") or {}
        settings = ", ".join(f"{key}={_plain(value)}" for key, value in sorted(overrides.items()))
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


def _fold_table_lines(cells: Mapping[str, Mapping[int, CellResult]]) -> list[str]:
    """The paper's Tables I-III layout: Train/Val Acc, F1, AUC per fold, then mean ± std."""
    labels = list(cells)
    folds = sorted({fold for runs in cells.values() for fold in runs})
    body = []
    for fold in folds:
        for metric, title in METRICS:
            for stage in ("train", "val"):
                runs = [cells[label].get(fold) for label in labels]
                values = [_fmt(r.value(stage, metric) if r else None) for r in runs]
                body.append([str(fold), f"{stage.title()} {title}", *values])
    for metric, title in METRICS:
        for stage in ("train", "val"):
            summaries = [_fmt_mean_std(_values(cells[label], stage, metric)) for label in labels]
            body.append(["mean ± std", f"{stage.title()} {title}", *summaries])
    heading = "### Per fold, best epoch by val/loss (layout of the paper's Tables I-III)"
    return ["", heading, "", *_table(["Fold", "Metric", *labels], body)]


def _test_lines(cells: Mapping[str, Mapping[int, CellResult]]) -> list[str]:
    if not any(
        r.value("test", "acc") is not None for runs in cells.values() for r in runs.values()
    ):
        return []
    rows = [
        [f"Test {title}"]
        + [_fmt_mean_std(_values(runs, "test", metric)) for runs in cells.values()]
        for metric, title in METRICS
    ]
    heading = "### Test set (each fold's best checkpoint), mean ± std over folds"
    return ["", heading, "", *_table(["Metric", *cells], rows)]


def _values(cells: Mapping[int, CellResult], stage: str, metric: str) -> list[float]:
    values = (cells[fold].value(stage, metric) for fold in sorted(cells))
    return [v for v in values if v is not None]


def _protocol_lines(results: Sequence[CellResult]) -> list[str]:
    parts = []
    for name, path in PROTOCOL:
        seen = sorted({_plain(_config_value(r, path)) for r in results})
        parts.append(f"{name} {seen[0] if len(seen) == 1 else 'mixed: ' + ', '.join(seen)}")
    return [f"Protocol (from the cells' resolved configs): {'; '.join(parts)}.", ""]


def _time_lines(cells: Mapping[str, Mapping[int, CellResult]], reference: str | None) -> list[str]:
    def times(label: str) -> list[float]:
        values = (r.data.get("mean_epoch_time_s") for r in cells[label].values())
        return [float(v) for v in values if v is not None]

    ref_mean = mean_std(times(reference))[0] if reference else None
    rows = []
    for label in cells:
        mean = mean_std(times(label))[0]
        epochs = [float(r.data.get("epochs_run") or 0) for r in cells[label].values()]
        ratio = f"{mean / ref_mean:.3f}" if mean is not None and ref_mean else "—"
        rows.append([label, _fmt_mean_std(times(label), 3), _fmt(mean_std(epochs)[0], 1), ratio])
    return [
        "",
        "### Mean epoch time (Table IV analogue), seconds, mean ± std over folds",
        "",
        *_table(
            ["Label", "Mean epoch time (s)", "Epochs run (mean)", f"Time / {reference or '—'}"],
            rows,
        ),
    ]


def _stats_lines(
    cells: Mapping[str, Mapping[int, CellResult]], reference: str | None, wanted: str | None
) -> list[str]:
    lines = ["", f"### Paired tests over folds against {reference or 'DSReLU'}", ""]
    if reference is None:
        missing = f"label {wanted!r}" if wanted else "DSReLU label"
        return [*lines, f"No {missing} in this dataset: nothing to compare against."]
    rows = []
    for label in cells:
        if label == reference:
            continue
        for metric, title in TESTED_METRICS:
            folds = [
                f
                for f in sorted(set(cells[label]) & set(cells[reference]))
                if cells[label][f].value("val", metric) is not None
                and cells[reference][f].value("val", metric) is not None
            ]
            a = [cells[label][f].value("val", metric) for f in folds]
            b = [cells[reference][f].value("val", metric) for f in folds]
            test = paired_tests(a, b)  # type: ignore[arg-type]
            rows.append(
                [
                    label,
                    title,
                    str(test.n),
                    "—" if test.mean_difference is None else f"{test.mean_difference:+.4f}",
                    _fmt(test.t_statistic, 3),
                    _fmt(test.t_pvalue, 4),
                    _fmt(test.wilcoxon_statistic, 1),
                    _fmt(test.wilcoxon_pvalue, 4),
                    _fmt(test.cohens_d, 3),
                    test.note,
                ]
            )
    if not rows:
        return [*lines, f"Only {reference} in this dataset: nothing to compare."]
    header = ["Label", "Metric", "Folds", f"Mean diff (label - {reference})", "t", "p (t)"]
    header += ["Wilcoxon W", "p (W)", "Cohen's d", "Note"]
    return [
        *lines,
        *_table(header, rows),
        "",
        f"Two-sided tests over the folds both labels have. A positive difference or d means "
        f"the label scored higher than {reference}. Cohen's d is the paired d_z = mean(diff) / "
        "sd(diff). With 5 folds the exact Wilcoxon test cannot reach p < 0.0625, and no "
        "correction for multiple comparisons is applied.",
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
    results: Sequence[CellResult], figures: Mapping[str, Sequence[Path]], reference: str | None
) -> str:
    """summary.md: per dataset the tables, the tests and links to its figures."""
    lines = [
        "# Benchmark summary",
        "",
        f"{len(results)} cells. Each value is the cell's best epoch by val/loss (its "
        "result.json); mean ± std is over folds (sample std, ddof 1).",
        "",
    ]
    for dataset in sorted({r.dataset for r in results}):
        lines += _dataset_section(dataset, [r for r in results if r.dataset == dataset], reference)
        if figures.get(dataset):
            lines += ["### Figures", ""]
            lines += [f"![{path.stem}]({FIGURES}/{path.name})" for path in figures[dataset]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_figures(results: Sequence[CellResult], folder: Path) -> dict[str, list[Path]]:
    """Each dataset's validation curves, DSReLU slope and epoch-time bars as PNG files."""
    written: dict[str, list[Path]] = {}
    for dataset in sorted({r.dataset for r in results}):
        cells = _by_label([r for r in results if r.dataset == dataset])
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
            "dsrelu_slope": slope_curves(histories, dataset),
            "epoch_time": epoch_time_bars({k: v for k, v in times.items() if v}, dataset),
        }
        written[dataset] = [
            save_png(figure, folder / f"{dataset}_{name}.png")
            for name, figure in figures.items()
            if figure is not None
        ]
    return written


def write_report(output: str | Path, reference: str | None = None) -> Path:
    """Merge every result under ``output`` into summary.csv, summary.md and figures/.

    Args:
        output: a benchmark's output folder (all shards' cells lie under it).
        reference: the label the paired tests compare against (default: ``dsrelu``, else
            the first label whose activation is DSReLU).

    Returns:
        The path of summary.md.
    """
    output = Path(output)
    results = load_results(output)
    atomic_write_text(output / SUMMARY_CSV, _csv_text(summary_rows(results)))
    figures = write_figures(results, output / FIGURES)
    return atomic_write_text(output / SUMMARY_MD, render_markdown(results, figures, reference))


def report_main(argv: Sequence[str]) -> None:
    """``python -m dsrelu_lightning report``: the report of a benchmark's output folder."""
    parser = CommandParser(
        prog="python -m dsrelu_lightning report",
        description="Merge a benchmark's result.json files into summary.csv, summary.md, figures/.",
    )
    parser.add_argument("--output", required=True, help="the benchmark's output folder")
    parser.add_argument("--reference", help="label the paired tests compare against (dsrelu)")
    args = parser.parse_args(list(argv))
    print(f"report: {write_report(args.output, args.reference)}")
