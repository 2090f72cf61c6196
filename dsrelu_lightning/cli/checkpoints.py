"""Which checkpoint ``--ckpt_path`` names: a file, ``last`` (the newest run of this model and
data config) or, for evaluations, ``untrained``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dsrelu_lightning.cli.config_compare import config_difference, run_config
from dsrelu_lightning.cli.evaluation import UNTRAINED
from dsrelu_lightning.cli.preflight import last_checkpoints
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["evaluation_checkpoint", "resumable_checkpoint"]

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
            verb = "Resuming from" if subcommand == "fit" else "Evaluating"
            rank_zero_info(f"{verb} {candidate}")
            return candidate
        differences.append(f"{candidate}: {difference}")
    raise ConfigurationError(
        f"--ckpt_path last: no run under {root!r} has this model and data config "
        f"(newest: {differences[0]}); pass its checkpoint with --ckpt_path FILE, or use "
        "another --trainer.default_root_dir to start afresh"
    )
