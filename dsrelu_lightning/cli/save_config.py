"""LightningCLI's config.yaml, which a run resumed into its own log folder may keep."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import yaml
from lightning.pytorch.cli import SaveConfigCallback

__all__ = ["SameRunSaveConfig"]


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
