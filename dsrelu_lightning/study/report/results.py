"""The cells of a benchmark output folder as the report reads them: each ``result.json``
(a :class:`~dsrelu_lightning.study.result_file.CellRecord`) with its place, seed and history."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import PAPER_ACTIVATIONS
from dsrelu_lightning.nn.backbones import DEFAULT_BACKBONE
from dsrelu_lightning.study.result_file import RESULT_FILE, STAGE_METRICS, CellRecord

__all__ = [
    "HISTORY_FILE",
    "CellKey",
    "CellResult",
    "Cells",
    "as_int",
    "cell_order",
    "cell_seed",
    "config_value",
    "group_cells",
    "group_tables",
    "key_order",
    "label_order",
    "load_results",
    "table_names",
]

HISTORY_FILE = "epoch_metrics.csv"
"""MetricsHistory's per-epoch file in each cell's folder (the figures' curves)."""


@dataclass(frozen=True, eq=False)
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
    def backbone(self) -> str:
        """The cell's network: its record's, else its saved config's, else ResNet-34 (the
        only network of the records written before backbones existed)."""
        saved = config_value(self, "model", "backbone")
        return self.record.backbone or (saved if isinstance(saved, str) else DEFAULT_BACKBONE)

    @property
    def train_fraction(self) -> float:
        """The share of its fold's training part the cell trained on (1.0: all of it)."""
        saved = config_value(self, "data", "init_args", "train_fraction")
        value = self.record.train_fraction if self.record.train_fraction is not None else saved
        return float(value) if isinstance(value, int | float) else 1.0

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
        """``stage`` (train/val/test ...) ``metric`` (acc/f1/auroc/loss) at the best epoch.

        A stage the record lacks (records written before ``val_ema`` was recorded) is read
        from the best epoch's row of the epoch history, the row the record is made from.
        """
        if stage in self.record.stages:
            return self.record.value(stage, metric)
        row = self._best_history_row
        return None if row is None else row.get(f"{stage}/{metric}")

    @property
    def stages(self) -> set[str]:
        """The stages with best-epoch metrics: recorded, or logged in the epoch history."""
        recorded = {
            stage
            for stage, metrics in self.record.stages.items()
            if metrics is None
            or (isinstance(metrics, Mapping) and set(metrics) & set(STAGE_METRICS))
        }
        logged = {
            key.split("/", 1)[0]
            for row in self.history
            for key in row
            if key.partition("/")[2] in STAGE_METRICS
        }
        return recorded | logged

    @cached_property
    def _best_history_row(self) -> dict[str, float] | None:
        best = self.record.best_epoch
        return next(
            (row for row in self.history if best is not None and row.get("epoch") == best), None
        )

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
    results: dict[tuple[str, str, float, str, int | None, int], CellResult] = {}
    for path in sorted(output.glob(f"**/{RESULT_FILE}")):
        try:
            result = CellResult(path, CellRecord.read(path))
            key = (
                result.dataset,
                result.backbone,
                result.train_fraction,
                result.label,
                cell_seed(result),
                result.fold,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"{path} is not a readable benchmark result ({exc}); delete it and rerun "
                "the benchmark to redo that cell"
            ) from exc
        if key in results:
            raise ConfigurationError(
                f"{path} and {results[key].path} are both {key[0]}/{key[1]}/"
                f"{'' if key[2] == 1.0 else f'fraction {key[2]:g}/'}{key[3]}/"
                f"{'' if key[4] is None else f'seed {key[4]}/'}fold {key[5]}: "
                "keep one of them"
            )
        results[key] = result
    if not results:
        raise ConfigurationError(
            f"no {RESULT_FILE} under {str(output)!r}: run the benchmark (or cv) there first"
        )
    return sorted(
        results.values(),
        key=lambda r: (
            r.dataset,
            r.backbone,
            r.train_fraction,
            label_order(r.label),
            *cell_order(r),
        ),
    )


def label_order(label: str) -> tuple[int, str]:
    """Table column order: the paper's six activations in its order, then the rest by name."""
    order = PAPER_ACTIVATIONS.index(label) if label in PAPER_ACTIVATIONS else len(PAPER_ACTIVATIONS)
    return order, label


def config_value(result: CellResult, *path: str) -> Any:
    """The value at ``path`` in the cell's saved (resolved) config; None where absent."""
    value: Any = result.data.get("config") or {}
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cell_seed(result: CellResult) -> int | None:
    """The cell's seed: its record's, else its saved config's seed_everything, else data seed."""
    for value in (
        getattr(result, "seed", None),
        result.data.get("seed"),
        config_value(result, "seed_everything"),
        config_value(result, "data", "init_args", "seed"),
    ):
        if as_int(value) is not None:
            return value
    return None


def cell_order(result: CellResult) -> tuple[int, int]:
    """Sort key of a cell within its label: (seed, fold), cells without a seed first."""
    seed = cell_seed(result)
    return (-1 if seed is None else seed, result.fold)


CellKey = tuple[int | None, int]
"""(seed, fold): the unit two labels are paired on."""
Cells = Mapping[str, Mapping[CellKey, CellResult]]
"""label -> (seed, fold) -> that cell's result."""


def group_cells(results: Sequence[CellResult]) -> dict[str, dict[CellKey, CellResult]]:
    """label -> (seed, fold) -> cell, in the table's label order."""
    table: dict[str, dict[CellKey, CellResult]] = {}
    for result in results:
        table.setdefault(result.label, {})[(cell_seed(result), result.fold)] = result
    return table


def table_names(results: Sequence[CellResult]) -> dict[CellResult, str]:
    """Each cell's table: its dataset, then ``/backbone`` where the dataset's cells ran on
    several networks and ``/fraction F`` where on several training fractions (activations
    are compared within a table)."""
    backbones: dict[str, set[str]] = {}
    fractions: dict[str, set[float]] = {}
    for result in results:
        backbones.setdefault(result.dataset, set()).add(result.backbone)
        fractions.setdefault(result.dataset, set()).add(result.train_fraction)
    names = {}
    for r in results:
        name = r.dataset if len(backbones[r.dataset]) == 1 else f"{r.dataset}/{r.backbone}"
        several = len(fractions[r.dataset]) > 1
        names[r] = f"{name}/fraction {r.train_fraction:g}" if several else name
    return names


def group_tables(results: Sequence[CellResult]) -> dict[str, Cells]:
    """table -> :func:`group_cells` of its results, tables in the results' order."""
    names = table_names(results)
    tables: dict[str, list[CellResult]] = {}
    for result in results:
        tables.setdefault(names[result], []).append(result)
    return {name: group_cells(cells) for name, cells in tables.items()}


def key_order(key: CellKey) -> tuple[int, int]:
    """Sort key of a (seed, fold) cell key: by seed, then fold; no seed first."""
    seed, fold = key
    return (-1 if seed is None else seed, fold)
