"""A finished cell's record: what its fit, test and data module leave in ``result.json``."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import EarlyStopping

from dsrelu_lightning.study.result_file import CellRecord, epoch_stages, run_context
from dsrelu_lightning.study.run.grid import Cell
from dsrelu_lightning.study.run.keys import KeepCheckpoints
from dsrelu_lightning.training.callbacks import MetricsHistory
from dsrelu_lightning.training.selection import best_row

__all__ = ["cell_record", "history_rows", "split_sizes", "stop_reason"]


def stop_reason(early_stopping: EarlyStopping) -> str | None:
    """Why EarlyStopping stopped the fit, or None while it has not."""
    reason = getattr(early_stopping, "stopping_reason", None)
    if reason is None or reason.value == 0:  # NOT_STOPPED
        return None
    return early_stopping.stopping_reason_message or reason.name.lower()


def split_sizes(datamodule: Any) -> dict[str, int | None]:
    """How many samples the fold's training, validation and held-out test sets hold."""
    return {
        split: len(dataset) if dataset is not None else None
        for split in ("train", "val", "test")
        for dataset in [getattr(datamodule, f"{split}_dataset", None)]
    }


def history_rows(cli: Any) -> list[dict[str, float]]:
    """The fit's per-epoch rows, as MetricsHistory recorded them."""
    history = next(cb for cb in cli.trainer.callbacks if isinstance(cb, MetricsHistory))
    return list(history.rows)


def cell_record(
    cell: Cell,
    cli: Any,
    args: Sequence[str],
    grid_overrides: Sequence[str],
    rows: Sequence[Mapping[str, float]],
    diverged: str | None,
    test: dict[str, float] | None,
    resumed_from: int | None,
    wall_time_s: float,
    keep_checkpoints: KeepCheckpoints,
) -> CellRecord:
    """The cell's ``result.json`` record of its finished (or diverged) fit."""
    best = best_row(rows)
    model = cli.config["model"]
    early_stop = [stop_reason(cb) for cb in cli.trainer.callbacks if isinstance(cb, EarlyStopping)]
    times = [r["time/epoch_s"] for r in rows if r.get("time/epoch_s") is not None]
    checkpoint = cli.trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else None
    return CellRecord(
        dataset=cell.dataset,
        label=cell.variant.label,
        backbone=str(model["backbone"]) if isinstance(model["backbone"], str) else None,
        train_fraction=float(getattr(cli.datamodule, "train_fraction", 1.0)),
        fold=cell.fold,
        seed=cli.config["seed_everything"],
        activation=str(model["activation"]),
        activation_args=model.get("activation_args"),
        overrides=dict(cell.variant.overrides),
        grid_overrides=list(grid_overrides),
        num_folds=int(cli.datamodule.num_folds),
        split_sizes=split_sizes(cli.datamodule),
        status="diverged" if diverged else "finished",
        stop_reason=diverged or next((r for r in early_stop if r), None) or "max_epochs",
        best_epoch=int(best["epoch"]) if best else None,
        epochs_run=len(rows),
        stages={**epoch_stages(rows), "test": test},
        mean_epoch_time_s=sum(times) / len(times) if times else None,
        wall_time_s=wall_time_s,
        resumed_from_epoch=resumed_from,
        best_checkpoint=Path(best_path).name if best_path and keep_checkpoints != "none" else None,
        command="python -m dsrelu_lightning fit " + shlex.join(args),
        config=json.loads(cli.parser.dump(cli.config, format="json", skip_none=False)),
        **run_context(cli.trainer),
    )
