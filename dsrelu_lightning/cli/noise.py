"""Silence known third-party noise on the command line (never on library import)."""

from __future__ import annotations

import logging
import os
import re
import warnings

__all__ = ["silence_third_party_noise"]

_LOG_NOISE: dict[str, tuple[str, ...]] = {
    # Lightning's advertisement, logged at every Trainer start without a LitLogger.
    "lightning.pytorch.utilities.rank_zero": ("Tip: For seamless cloud logging",),
    # torch's C++-extension helper, asked by the compiler on a machine without CUDA.
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}


_SRUN_HINT = "The `srun` command is available on your system but is not used"
"""Lightning's SLURMEnvironment hint, given whenever ``srun`` exists but ``SLURM_NTASKS`` is
unset; in a SLURM batch script run without srun (a grid's array task) that is the
intended setup, one process, and the hint ("prepend srun") is wrong advice."""


def _in_srun_less_slurm_job() -> bool:
    """A SLURM job's batch script process, not started by srun: SLURM gave it no task count
    (srun always sets ``SLURM_NTASKS``), so it is one process that Lightning runs plainly."""
    return "SLURM_JOB_ID" in os.environ and "SLURM_NTASKS" not in os.environ


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence_third_party_noise() -> None:
    """Drop messages that say nothing about the user's run; the project's own stay.

    Lightning's litlogger tip, torch's "No CUDA runtime is found", the
    ``isinstance(treespec, LeafSpec)`` deprecation that Lightning's own pytree helper
    triggers in torch, and inside an srun-less SLURM job (an array task of a grid)
    Lightning's hint to prepend ``srun``. Called by the CLI's entry point only; idempotent.
    """
    if _in_srun_less_slurm_job():
        warnings.filterwarnings("ignore", message=re.escape(_SRUN_HINT))
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    for name, fragments in _LOG_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
