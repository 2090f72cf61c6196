"""Checkpoints: which one ``--ckpt_path`` names, what it holds (read once), whether it fits the
data, and room and write access for the ones a run will save."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dsrelu_lightning.cli.summaries import config_difference, run_config
from dsrelu_lightning.errors import ConfigurationError

__all__ = [
    "UNTRAINED",
    "CheckpointInfo",
    "best_checkpoint",
    "check_checkpoint_fits_data",
    "check_output_dir",
    "checkpoint_bytes",
    "last_checkpoints",
    "read_checkpoint",
    "resolve_checkpoint",
    "resumable_checkpoint",
    "warn_if_last_only_at_the_end",
]

UNTRAINED = "untrained"
"""``--ckpt_path untrained``: evaluate freshly initialised weights, on purpose."""

Dump = Callable[[Any], dict[str, Any]]
"""The resolved config of a subcommand as a plain mapping (what config.yaml holds)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a Lightning checkpoint says about itself, without its weights."""

    path: Path
    hparams: dict[str, Any]
    callbacks: dict[str, Any]
    """Each callback's saved state, by its state key (``ModelCheckpoint{...}``, ...)."""
    epoch: int
    global_step: int | None


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Check that ``path`` is a complete Lightning checkpoint and read what it says about
    itself: every member's CRC first (a truncated or corrupt file is caught before it is
    unpickled), then one memory-mapped load (the weights stay on disk).

    Raises:
        ConfigurationError: no such file, a corrupt one, or one Lightning did not write
            (a plain ``torch.save``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(
            f"checkpoint {str(path)!r} does not exist; pass an existing .ckpt file or 'last'"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ConfigurationError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({exc}); "
            "resume from another checkpoint, e.g. an earlier run's last.ckpt"
        ) from exc
    if bad_member is not None:
        raise ConfigurationError(
            f"checkpoint {str(path)!r} is corrupt (bad data in {bad_member!r}); "
            "resume from another checkpoint"
        )
    content = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    if not isinstance(content, dict) or not {"state_dict", "pytorch-lightning_version"} <= set(
        content
    ):
        raise ConfigurationError(
            f"{str(path)!r} is not a Lightning checkpoint (no state_dict and version); "
            "pass a .ckpt file that a fit of this project wrote"
        )
    return CheckpointInfo(
        path=path,
        hparams=dict(content.get("hyper_parameters") or {}),
        callbacks=dict(content.get("callbacks") or {}),
        epoch=int(content.get("epoch", -1)),
        global_step=content.get("global_step"),
    )


def check_checkpoint_fits_data(hparams: Mapping[str, Any] | None, datamodule: Any) -> None:
    """Refuse a checkpoint (its ``hparams``) trained on data of another shape than
    ``datamodule``'s: another ``num_classes`` or ``in_channels``."""
    for name in ("num_classes", "in_channels"):
        saved, needed = (hparams or {}).get(name), getattr(datamodule, name, None)
        if saved is not None and needed is not None and saved != needed:
            raise ConfigurationError(
                f"the checkpoint was trained with {name}={saved} but "
                f"{type(datamodule).__name__} has {name}={needed}; "
                "use the config of the dataset the checkpoint was trained on"
            )


def last_checkpoints(root: str | Path) -> list[Path]:
    """Every ``last.ckpt`` under ``root`` (any run version), the most recent first."""
    found = [p for p in Path(root).glob("**/last.ckpt") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _root(config: Any) -> str:
    return config.get("trainer.default_root_dir") or os.getcwd()


def resolve_checkpoint(
    command: str,
    ckpt_path: str | None,
    config: Any,
    dump: Dump,
    defaults: Mapping[str, Any] | None = None,
) -> str | None:
    """The checkpoint an evaluation or ``export`` (``command``) of ``config`` reads:
    ``ckpt_path`` a file; ``last``, the newest ``last.ckpt`` of a run with this model and
    data (see :func:`resumable_checkpoint`); for evaluations ``untrained`` (None: freshly
    initialised weights); for ``export`` ``best``, the one that run kept as best."""
    exporting = command == "export"
    if ckpt_path is None:
        other = (
            "or --ckpt_path best (that run's best)"
            if exporting
            else f"or --ckpt_path {UNTRAINED} to evaluate freshly initialised weights on purpose"
        )
        raise ConfigurationError(
            f"{command} needs trained weights: pass --ckpt_path FILE (a run's "
            "checkpoints/best-NNN.ckpt or last.ckpt), --ckpt_path last (the newest run of "
            f"this config under trainer.default_root_dir){'' if exporting else ','} {other}"
        )
    if ckpt_path == UNTRAINED and not exporting:
        return None
    if ckpt_path == "best" and not exporting:
        raise ConfigurationError(
            "--ckpt_path best only exists inside fit; pass the file, e.g. "
            "<run>/checkpoints/best-NNN.ckpt"
        )
    if ckpt_path not in ("last", "best"):
        return str(ckpt_path)
    if not last_checkpoints(_root(config)):
        raise ConfigurationError(
            f"--ckpt_path {ckpt_path}: no last.ckpt under {_root(config)!r}; pass --ckpt_path "
            "FILE or the --trainer.default_root_dir of the fit"
        )
    last = resumable_checkpoint(command, config, dump, defaults)
    assert last is not None  # there is a last.ckpt: a match, or an error naming the first
    return str(last if ckpt_path == "last" else best_checkpoint(last))


def resumable_checkpoint(
    subcommand: str, config: Any, dump: Dump, defaults: Mapping[str, Any] | None = None
) -> Path | None:
    """The newest ``last.ckpt`` under the root folder of a run with this model and data.

    Runs are told apart by the ``config.yaml`` LightningCLI saves beside their
    ``checkpoints/``: resuming another activation's or fold's run would mislabel it. A key
    the saved config lacks counts as its ``defaults`` value (added to the CLI since).
    """
    root = _root(config)
    candidates = last_checkpoints(root)
    if not candidates:
        rank_zero_warn(f"--ckpt_path last: no last.ckpt under {root!r}; starting afresh")
        return None
    current = dump(config)
    differences = []
    for candidate in candidates:
        saved = run_config(candidate)
        if saved is None:
            differences.append(f"{candidate}: no config.yaml beside it")
            continue
        difference = config_difference(saved, current, ("model", "data"), defaults)
        if difference is None:
            verb = {"fit": "Resuming from", "export": "Exporting"}.get(subcommand, "Evaluating")
            rank_zero_info(f"{verb} {candidate}")
            return candidate
        differences.append(f"{candidate}: {difference}")
    raise ConfigurationError(
        f"--ckpt_path last: no run under {root!r} has this model and data config "
        f"(newest: {differences[0]}); pass its checkpoint with --ckpt_path FILE, or use "
        "another --trainer.default_root_dir to start afresh"
    )


def best_checkpoint(last: Path) -> Path:
    """The checkpoint the run of ``last`` kept as best: the ``best_model_path`` its
    ModelCheckpoint recorded in ``last`` (by the monitored metric, ``val/loss`` here), looked
    up beside ``last`` by name if the run folder has moved since."""
    recorded = [
        Path(state["best_model_path"])
        for key, state in read_checkpoint(last).callbacks.items()
        if str(key).startswith("ModelCheckpoint")
        and isinstance(state, dict)
        and state.get("monitor")
        and state.get("best_model_path")
    ]
    for path in recorded:
        for candidate in (path, last.parent / path.name):
            if candidate.is_file():
                rank_zero_info(f"Best checkpoint of {last.parent.parent}: {candidate.name}")
                return candidate
    what = f"recorded {recorded[0].name} as best" if recorded else "recorded no best checkpoint"
    raise ConfigurationError(
        f"--ckpt_path best: the ModelCheckpoint of {str(last)!r} {what}, and no such file is in "
        f"{str(last.parent)!r}; pass the checkpoint with --ckpt_path FILE"
    )


def check_output_dir(path: str | Path, needed_bytes: int = 0) -> Path:
    """Make sure ``path`` can be created, written to and has ``needed_bytes`` free.

    Raises:
        ConfigurationError: naming the folder and the reason, before anything is written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write to output folder {str(path)!r} ({exc.strerror or exc}); "
            "choose another one, e.g. --trainer.default_root_dir runs/mine"
        ) from exc
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise ConfigurationError(
            f"output folder {str(path)!r} has {free / 2**20:.0f} MiB free but the run needs about "
            f"{needed_bytes / 2**20:.0f} MiB for its checkpoints; "
            "free some space or choose another folder"
        )
    return path


def checkpoint_bytes(trainer: pl.Trainer, model: pl.LightningModule) -> int:
    """About the disk the checkpoint callbacks keep: each copy holds the weights and,
    unless weights-only, Adam's two moments."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    total = 0
    for callback in trainer.checkpoint_callbacks:
        # save_top_k=-1 keeps every epoch: count at least one copy; "link" adds none.
        top_k, last = getattr(callback, "save_top_k", 1), getattr(callback, "save_last", None)
        copies = abs(top_k) + bool(last and not (last == "link" and top_k))
        total += copies * param_bytes * (1 if getattr(callback, "save_weights_only", 0) else 3)
    return total


def warn_if_last_only_at_the_end(trainer: pl.Trainer) -> None:
    """Lightning writes save_last only after a top-k save in the same step, so with
    save_top_k=0 there is no last.ckpt to resume from until training ends."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "save_top_k", 1) == 0 and getattr(callback, "save_last", None):
            rank_zero_warn(
                "--checkpoint.save_top_k 0: Lightning then writes last.ckpt only when "
                "training ends, so a killed run cannot resume; to keep one checkpoint "
                "file per run use --checkpoint.monitor null --checkpoint.save_last link"
            )
