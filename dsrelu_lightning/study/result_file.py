"""A cell's record, ``result.json``: what the runner writes and the report reads.

The file is flat JSON: the fields of :class:`CellRecord` and, beside them, one mapping
per logged stage (``train``, ``val``, ``val_ema``, ... as the epoch rows have them, and
``test``) of the best epoch's metrics, so a stage added to the logging needs no change here.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning
import torch
import torchmetrics

import dsrelu_lightning
from dsrelu_lightning.atomic import atomic_write_json
from dsrelu_lightning.training.selection import best_row

__all__ = ["RESULT_FILE", "STAGE_METRICS", "CellRecord", "epoch_stages", "run_context"]

RESULT_FILE = "result.json"
"""Written atomically into a cell's folder when the cell has finished."""

STAGE_METRICS = ("acc", "f1", "auroc", "loss")
"""The metrics each stage (train, val, val_ema, test) logs as ``<stage>/<metric>``."""

Stage = dict[str, float | None] | None


@dataclass(frozen=True)
class CellRecord:
    """One finished cell: its identity, outcome, best-epoch metrics per stage, provenance."""

    dataset: str
    label: str
    fold: int
    seed: int | bool | None = None
    backbone: str | None = None
    train_fraction: float | None = None
    activation: str | None = None
    activation_args: Mapping[str, Any] | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    grid_overrides: Sequence[str] = ()
    num_folds: int | None = None
    split_sizes: Mapping[str, int | None] = field(default_factory=dict)
    status: str = "finished"
    stop_reason: str | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    stages: Mapping[str, Stage] = field(default_factory=dict)
    mean_epoch_time_s: float | None = None
    wall_time_s: float | None = None
    resumed_from_epoch: int | None = None
    best_checkpoint: str | None = None
    command: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    device: str | None = None
    finished_at: str | None = None

    def value(self, stage: str, metric: str) -> float | None:
        """``stage`` (train/val/val_ema/test ...) ``metric`` at the best epoch, if recorded."""
        value = (self.stages.get(stage) or {}).get(metric)
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` mapping: the fields, with each stage at the top level."""
        data = asdict(self)
        return {**data.pop("stages"), **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellRecord:
        """Read a ``result.json`` mapping; a record of the single-seed layout has its seed
        in its config only. Raises KeyError/TypeError/ValueError when it is not a record."""
        names = {f.name for f in fields(cls)} - {"stages"}
        known = {key: value for key, value in data.items() if key in names}
        stages = {key: value for key, value in data.items() if key not in names}
        if known.get("seed") is None:
            known["seed"] = (known.get("config") or {}).get("seed_everything")
        record = cls(**known, stages=stages)
        int(record.fold), str(record.dataset), str(record.label)
        return record

    @classmethod
    def read(cls, path: str | Path) -> CellRecord:
        """The record in ``path`` (a ``result.json``)."""
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/result.json`` atomically; returns its path."""
        path = Path(folder) / RESULT_FILE
        atomic_write_json(path, self.to_json())
        return path


def epoch_stages(rows: Sequence[Mapping[str, float]]) -> dict[str, Stage]:
    """Each stage the epoch rows log (``train``, ``val``, and e.g. ``val_ema``) with the
    best epoch's metrics; train and val are always there (None without a best epoch)."""
    prefixes = {"train", "val"}
    for row in rows:
        prefixes |= {k.split("/", 1)[0] for k in row if k.partition("/")[2] in STAGE_METRICS}
    best = best_row(rows)
    return {
        stage: None if best is None else {m: best.get(f"{stage}/{m}") for m in STAGE_METRICS}
        for stage in sorted(prefixes, key=lambda s: (s not in ("train", "val"), s))
    }


def run_context(trainer: Any) -> dict[str, Any]:
    """Where and with what the cell ran: library versions, device, finishing time."""
    return {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "torchmetrics": torchmetrics.__version__,
            "dsrelu_lightning": dsrelu_lightning.__version__,
        },
        "device": _device(trainer),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _device(trainer: Any) -> str:
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({_cpu_model()}, {os.cpu_count()} logical CPUs)"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()
