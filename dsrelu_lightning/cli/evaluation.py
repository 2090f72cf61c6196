"""Where ``validate``/``test``/``predict`` of a checkpoint write, and what they write there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from dsrelu_lightning.atomic import atomic_write_json
from dsrelu_lightning.cli.preflight import check_output_dir

__all__ = [
    "UNTRAINED",
    "adopt_checkpoint_dirpaths",
    "evaluation_dir",
    "prepare_evaluation",
    "run_dir",
    "write_metrics",
]

UNTRAINED = "untrained"
"""``--ckpt_path untrained``: evaluate freshly initialised weights, on purpose."""


def run_dir(checkpoint: str | Path) -> Path:
    """The run folder of ``checkpoint``: ``<run>`` for ``<run>/checkpoints/x.ckpt``."""
    checkpoint = Path(checkpoint).absolute()
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def evaluation_dir(checkpoint: str | Path) -> Path:
    """``<run>/eval/<checkpoint stem>``: one checkpoint's metrics and predictions."""
    return run_dir(checkpoint) / "eval" / Path(checkpoint).stem


def adopt_checkpoint_dirpaths(trainer: pl.Trainer, checkpoint: str | Path) -> None:
    """Give the trainer's ModelCheckpoints the folder the checkpoint recorded.

    An evaluation saves no checkpoint; with the recorded folder Lightning restores the
    callbacks' state instead of warning that "the dirpath has changed".
    """
    # mmap: only the small pickled structure is read, tensors stay on disk.
    content = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False)
    states = content.get("callbacks", {}) if isinstance(content, dict) else {}
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        state = states.get(callback.state_key)
        if isinstance(state, dict) and state.get("dirpath"):
            callback.dirpath = state["dirpath"]


def prepare_evaluation(trainer: pl.Trainer, checkpoint: str | None) -> Path:
    """Point an evaluation's outputs beside the checkpoint's run; return that folder.

    ``<run>/eval/<checkpoint stem>`` for a local checkpoint, else
    ``<default_root_dir>/eval/<untrained or the name>``. The trainer's loggers and
    LightningCLI's config saver go, so no new ``version_N`` folder or second
    ``config.yaml`` appears; the metrics and predictions files are the record.
    """
    if checkpoint is not None and Path(checkpoint).is_file():
        output = evaluation_dir(checkpoint)
        adopt_checkpoint_dirpaths(trainer, checkpoint)
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
