"""Which checkpoint ``--ckpt_path`` names: a file, ``last`` (the newest run of this model and
data config), for evaluations ``untrained``, for ``export`` also ``best``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dsrelu_lightning.cli.config_compare import config_difference, run_config
from dsrelu_lightning.cli.evaluation import UNTRAINED
from dsrelu_lightning.cli.preflight import last_checkpoints
from dsrelu_lightning.errors import ConfigurationError

__all__ = [
    "best_checkpoint",
    "evaluation_checkpoint",
    "export_checkpoint",
    "resumable_checkpoint",
]

Dump = Callable[[Any], dict[str, Any]]
"""The resolved config of a subcommand as a plain mapping (what config.yaml holds)."""


def _root(config: Any) -> str:
    return config.get("trainer.default_root_dir") or os.getcwd()


def evaluation_checkpoint(subcommand: str, config: Any, dump: Dump) -> str | None:
    """The checkpoint an evaluation uses: required, unless ``untrained`` is asked for
    (then None: freshly initialised weights)."""
    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None:
        raise ConfigurationError(
            f"{subcommand} needs trained weights: pass --ckpt_path FILE (a run's "
            "checkpoints/best-NNN.ckpt or last.ckpt), --ckpt_path last (the newest run of "
            f"this config under trainer.default_root_dir), or --ckpt_path {UNTRAINED} to "
            "evaluate freshly initialised weights on purpose"
        )
    if ckpt_path == UNTRAINED:
        return None
    if ckpt_path == "best":
        raise ConfigurationError(
            "--ckpt_path best only exists inside fit; pass the file, e.g. "
            "<run>/checkpoints/best-NNN.ckpt"
        )
    if ckpt_path == "last":
        if not last_checkpoints(_root(config)):
            raise ConfigurationError(
                f"--ckpt_path last: no last.ckpt under {_root(config)!r}; pass --ckpt_path "
                "FILE or the --trainer.default_root_dir of the fit"
            )
        return str(resumable_checkpoint(subcommand, config, dump))
    return str(ckpt_path)


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


def export_checkpoint(
    ckpt_path: str | None, config: Any, dump: Dump, defaults: Mapping[str, Any] | None = None
) -> str:
    """The checkpoint ``export`` reads: a file, ``last`` (as for evaluations: the newest
    ``last.ckpt`` of a run with this model and data ``config``) or ``best`` (the checkpoint
    that run's ModelCheckpoint recorded as best, see :func:`best_checkpoint`)."""
    if ckpt_path is None:
        raise ConfigurationError(
            "export needs trained weights: pass --ckpt_path FILE (a run's "
            "checkpoints/best-NNN.ckpt or last.ckpt), --ckpt_path last (the newest run of this "
            "config under trainer.default_root_dir) or --ckpt_path best (that run's best)"
        )
    if ckpt_path not in ("last", "best"):
        return str(ckpt_path)
    if not last_checkpoints(_root(config)):
        raise ConfigurationError(
            f"--ckpt_path {ckpt_path}: no last.ckpt under {_root(config)!r}; pass --ckpt_path "
            "FILE or the --trainer.default_root_dir of the fit"
        )
    last = resumable_checkpoint("export", config, dump, defaults)
    assert last is not None  # there is a last.ckpt: a match, or an error naming the first
    return str(last if ckpt_path == "last" else best_checkpoint(last))


def best_checkpoint(last: Path) -> Path:
    """The checkpoint the run of ``last`` kept as best: the ``best_model_path`` its
    ModelCheckpoint recorded in ``last`` (by the monitored metric, ``val/loss`` here), looked
    up beside ``last`` by name if the run folder has moved since."""
    # mmap: only the small pickled structure is read, tensors stay on disk.
    content = torch.load(last, map_location="cpu", mmap=True, weights_only=False)
    states = content.get("callbacks", {}) if isinstance(content, dict) else {}
    recorded = [
        Path(state["best_model_path"])
        for key, state in states.items()
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
