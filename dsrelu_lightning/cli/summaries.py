"""What a run records and says: its resolved config (compared when resuming or rerunning a
grid cell, and rewritten as the same ``config.yaml`` by a requeued job) and the summary
printed when ``fit`` ends."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from dsrelu_lightning.training.callbacks import MetricsHistory
from dsrelu_lightning.training.selection import best_row

__all__ = [
    "SameRunSaveConfig",
    "changed_keys",
    "config_difference",
    "fit_summary",
    "resolved",
    "resolved_defaults",
    "run_config",
]


def resolved(parser: Any, config: Any) -> dict[str, Any]:
    """``config`` as the cell's saved config.yaml holds it (SaveConfigCallback's dump)."""
    return yaml.safe_load(parser.dump(config, skip_none=False))


def resolved_defaults(parser: Any, config: Any) -> dict[str, Any]:
    """The CLI's defaults for ``config``'s data class, resolved as a saved config is."""
    try:
        return resolved(parser, parser.parse_args(["--data.class_path", config.data.class_path]))
    except Exception:
        return resolved(parser, parser.get_defaults())


def run_config(checkpoint: Path) -> dict[str, Any] | None:
    """The resolved ``config.yaml`` LightningCLI saved for the run of ``checkpoint``, if any."""
    config = checkpoint.parent.parent / "config.yaml"
    try:
        loaded = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= _flatten(item, f"{prefix}.{key}")
        return flat
    return {} if value is None else {prefix: value}


def changed_keys(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any] | None = None,
) -> list[str]:
    """The dotted keys whose values differ between two resolved configs, sorted.

    Unset (None) values count as absent on both sides. With ``defaults`` (a resolved
    config of the CLI's defaults), a key absent from ``saved`` whose current value is its
    default does not count: it was added to the CLI after ``saved`` was written, and
    its default is what that run had.
    """
    old, new = _flatten(saved, ""), _flatten(current, "")
    default = _flatten(defaults, "") if defaults is not None else {}
    return [
        key[1:]
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
        and not (key not in old and key in default and default[key] == new.get(key))
    ]


def config_difference(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    sections: tuple[str, ...],
    defaults: Mapping[str, Any] | None = None,
) -> str | None:
    """The first setting in ``sections`` that differs, as ``"key: saved != current"``, or None.

    Unset (None) values count as absent on both sides; ``defaults`` as in :func:`changed_keys`.
    """
    for section in sections:
        default = None if defaults is None else {section: defaults.get(section)}
        old, new = {section: saved.get(section)}, {section: current.get(section)}
        for key in changed_keys(old, new, default):
            return f"{key}: {_lookup(saved, key)!r} != {_lookup(current, key)!r}"
    return None


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


class SameRunSaveConfig(SaveConfigCallback):
    """SaveConfigCallback that accepts an existing ``config.yaml`` holding this very config.

    Under SLURM, Lightning names the default logger's version after the job id
    (``version_<SLURM_JOB_ID>``), so a job requeued after SIGUSR1 logs into the folder of
    its first attempt, whose config.yaml it would otherwise refuse to overwrite: the
    requeued job would fail before resuming from its ``hpc_ckpt_<n>.ckpt``. Rewriting an
    identical config loses nothing; a different one is still refused, as Lightning does.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.save_to_log_dir and not self.overwrite and not self.already_saved:
            log_dir = trainer.log_dir  # a collective under DDP: every rank asks
            same = trainer.is_global_zero and log_dir is not None and self._holds_this(log_dir)
            self.overwrite = bool(trainer.strategy.broadcast(same))
        super().setup(trainer, pl_module, stage)

    def _holds_this(self, log_dir: str) -> bool:
        path = os.path.join(log_dir, self.config_filename)
        if self.multifile or not os.path.isfile(path):
            return False
        try:
            with open(path, encoding="utf-8") as saved:
                before = yaml.safe_load(saved)
        except (OSError, yaml.YAMLError):
            return False
        return before == yaml.safe_load(self.parser.dump(self.config, skip_none=False))


_SHOWN = ("val/", "val_ema/")


def _metrics(row: dict[str, float]) -> str:
    shown = {k: v for k, v in row.items() if k.startswith(_SHOWN)}
    return "  ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items())) or "no val metrics"


def fit_summary(trainer: pl.Trainer, log_dir: str | None, config_path: str | None = None) -> str:
    """The end-of-fit summary for ``trainer`` (call on rank 0 after ``trainer.fit``).

    Names the run folder, the best and the last epoch with their ``val/*`` and
    ``val_ema/*`` metrics (from :class:`MetricsHistory`), the checkpoints that exist
    on disk, and the commands to resume, to test the best checkpoint and to open
    TensorBoard. ``log_dir`` is ``trainer.log_dir`` (a collective under DDP: ask for it on
    every rank); ``config_path`` is the run's saved config, used in those commands.
    """
    lines = [f"Run folder: {log_dir}"]
    history = next((cb for cb in trainer.callbacks if isinstance(cb, MetricsHistory)), None)
    rows = history.rows if history is not None else []
    checkpoint = trainer.checkpoint_callback
    monitor = checkpoint.monitor if isinstance(checkpoint, ModelCheckpoint) else "val/loss"
    mode = checkpoint.mode if isinstance(checkpoint, ModelCheckpoint) else "min"
    best = best_row(rows, monitor, mode) if monitor else None
    if best is not None:
        extreme = "lowest" if mode == "min" else "highest"
        lines.append(f"Best epoch {int(best['epoch'])} ({extreme} {monitor}): {_metrics(best)}")
    if rows:
        lines.append(f"Last epoch {int(rows[-1]['epoch'])}: {_metrics(rows[-1])}")
    best_path = last_path = ""
    if isinstance(checkpoint, ModelCheckpoint):
        best_path, last_path = checkpoint.best_model_path, checkpoint.last_model_path
    if best_path and Path(best_path).is_file():
        lines.append(f"Best checkpoint: {best_path}")
    if last_path and Path(last_path).is_file():
        lines.append(f"Last checkpoint: {last_path}")
    config = f"--config {config_path}" if config_path else "<same arguments>"
    if last_path and Path(last_path).is_file():
        lines.append(f"Resume: python -m dsrelu_lightning fit {config} --ckpt_path last")
    if best_path and Path(best_path).is_file():
        lines.append(f"Test: python -m dsrelu_lightning test {config} --ckpt_path {best_path}")
    board = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is not None:
        lines.append(f"TensorBoard: tensorboard --logdir {board.root_dir}")
    return "\n".join(lines)
