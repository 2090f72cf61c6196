"""Where ``validate``/``test``/``predict`` of a checkpoint write, what they write there, and
what a run recorded about one of its checkpoints."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from dsrelu_lightning.atomic import atomic_write_json
from dsrelu_lightning.cli.checkpoints import UNTRAINED, CheckpointInfo, check_output_dir

__all__ = [
    "checkpoint_metrics",
    "evaluation_dir",
    "prepare_evaluation",
    "run_dir",
    "write_metrics",
]


def run_dir(checkpoint: str | Path) -> Path:
    """The run folder of ``checkpoint``: ``<run>`` for ``<run>/checkpoints/x.ckpt``."""
    checkpoint = Path(checkpoint).absolute()
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def evaluation_dir(checkpoint: str | Path) -> Path:
    """``<run>/eval/<checkpoint stem>``: one checkpoint's metrics and predictions."""
    return run_dir(checkpoint) / "eval" / Path(checkpoint).stem


def prepare_evaluation(trainer: pl.Trainer, checkpoint: CheckpointInfo | str | None) -> Path:
    """Point an evaluation's outputs beside the checkpoint's run; return that folder.

    ``<run>/eval/<checkpoint stem>`` for a local checkpoint, else
    ``<default_root_dir>/eval/<untrained or the name>``. The trainer's loggers and
    LightningCLI's config saver go, so no new ``version_N`` folder or second
    ``config.yaml`` appears; the metrics and predictions files are the record.
    """
    if isinstance(checkpoint, CheckpointInfo):
        output = evaluation_dir(checkpoint.path)
        # An evaluation saves no checkpoint: given the folder the checkpoint recorded, the
        # ModelCheckpoints restore their state instead of warning "the dirpath has changed".
        for callback in trainer.checkpoint_callbacks:
            state = checkpoint.callbacks.get(callback.state_key)
            if isinstance(callback, ModelCheckpoint) and isinstance(state, dict):
                callback.dirpath = state.get("dirpath") or callback.dirpath
    else:
        name = UNTRAINED if checkpoint is None else Path(checkpoint).stem
        output = Path(trainer.default_root_dir).absolute() / "eval" / name
    if trainer.is_global_zero:
        check_output_dir(output)
    trainer.loggers = []
    trainer.callbacks[:] = [
        cb for cb in trainer.callbacks if not isinstance(cb, SaveConfigCallback)
    ]
    return output


def write_metrics(
    path: Path, stage: str, trainer: pl.Trainer, checkpoint: str | None, data: Any
) -> Path:
    """Write the ``stage/*`` metrics of an evaluation as JSON, atomically."""
    metrics = {
        key: float(value)
        for key, value in sorted(trainer.callback_metrics.items())
        if key.startswith(f"{stage}/") and isinstance(value, torch.Tensor) and value.numel() == 1
    }
    record = {"checkpoint": checkpoint, "stage": stage, "data": data, "metrics": metrics}
    return atomic_write_json(path, record)


def _epoch_row(rows: list[Mapping[str, Any]], epoch: int) -> dict[str, float] | None:
    row = next((r for r in rows if int(float(r.get("epoch", -1))) == epoch), None)
    return None if row is None else {k: float(v) for k, v in row.items() if v not in ("", None)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_metrics(checkpoint: CheckpointInfo) -> dict[str, Any]:
    """The metrics of the checkpoint's epoch, saying where they were found: the
    MetricsHistory state inside the checkpoint, else the run's ``epoch_metrics.csv``; plus
    the ModelCheckpoint's monitored score and any ``validate``/``test`` results of it."""
    path, epoch, step, states = (
        checkpoint.path, checkpoint.epoch, checkpoint.global_step, checkpoint.callbacks
    )  # fmt: skip
    found: dict[str, Any] = {"sha256": _sha256(path), "epoch": epoch, "global_step": step}
    rows = (states.get("MetricsHistory") or {}).get("rows")
    row = _epoch_row(rows, epoch) if rows else None
    if row is not None:
        found |= {
            "epoch_metrics": row,
            "source": f"MetricsHistory in the checkpoint, epoch {epoch}",
        }
    else:
        table = run_dir(path) / "epoch_metrics.csv"
        if table.is_file():
            with table.open(newline="") as handle:
                row = _epoch_row(list(csv.DictReader(handle)), epoch)
        source = f"{table}, epoch {epoch}" if row is not None else "none recorded for the epoch"
        found |= {"epoch_metrics": row, "source": source}
    if row is not None:
        if row.pop("step", None) not in (None, float(step if step is not None else -1)):
            found["note"] = "the checkpoint was saved during the epoch; the row is the epoch's end"
        row.pop("epoch", None)
    for key, state in states.items():
        if (
            str(key).startswith("ModelCheckpoint")
            and isinstance(state, dict)
            and state.get("monitor")
        ):
            best = state.get("best_model_score")
            found["monitor"] = {
                "metric": state["monitor"],
                "best_score": None if best is None else float(best),
                "best_model_path": state.get("best_model_path"),
            }
            break
    for stage in ("validate", "test"):
        result = evaluation_dir(path) / f"{stage}_metrics.json"
        if result.is_file():
            found[f"{stage}_metrics"] = {"source": str(result), **json.loads(result.read_text())}
    return found
