"""Callbacks the SLURM tests add to fits that run as SLURM jobs (tests/test_slurm.py).

``Hold`` stops a fit at a chosen batch until the job is signalled, so that a test can
cancel or signal it at a known point instead of racing it; ``ProgressLog`` writes each
rank's DSReLU progress per batch, per attempt of a requeued job. Both read their settings
from the environment, which sbatch passes to the job: the config (and so a grid cell's
saved config.yaml) stays the same whether a test holds a run or not.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn.activations import dsrelu_modules

HOLD_LIMIT_S = 300.0
"""A held fit that nobody signals fails after this long instead of hanging its job."""


class Hold(Callback):
    """Holds the fit before training batch ``$DSRELU_TEST_HOLD_AT`` (``"epoch:batch"``) of
    the run whose ``default_root_dir`` ends with ``$DSRELU_TEST_HOLD_CELL`` (any run when
    unset), until the process receives SIGTERM.

    On reaching that batch it writes ``$DSRELU_TEST_HOLD`` (JSON: epoch, global step, job);
    an existing file means the hold already happened (a requeued job, a resubmitted task)
    and the fit runs on. Without ``$DSRELU_TEST_HOLD`` it does nothing.
    """

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        marker = os.environ.get("DSRELU_TEST_HOLD")
        if not marker or Path(marker).exists():
            return
        epoch, index = (int(part) for part in os.environ["DSRELU_TEST_HOLD_AT"].split(":"))
        cell = os.environ.get("DSRELU_TEST_HOLD_CELL", "")
        here = str(Path(trainer.default_root_dir).resolve())
        if (trainer.current_epoch, batch_idx) != (epoch, index) or not here.endswith(cell):
            return
        record = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "job": os.environ.get("SLURM_JOB_ID"),
        }
        Path(marker).write_text(json.dumps(record))
        # Lightning's SIGTERM handler sets received_sigterm (SLURM's scancel, and the
        # requeue after SIGUSR1, both end with SIGTERM); SIGUSR1's handler runs meanwhile.
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not trainer.received_sigterm:
            if time.monotonic() > deadline:
                raise RuntimeError(f"held for {HOLD_LIMIT_S:.0f} s and never signalled")
            time.sleep(0.05)


class ProgressLog(Callback):
    """Appends one JSON line per training batch to
    ``$DSRELU_TEST_PROBE_DIR/progress_task<SLURM_PROCID>.jsonl``: the attempt
    (``SLURM_RESTART_COUNT``), epoch, global step and every DSReLU layer's progress; at
    ``on_train_start`` one line with ``"batch": null`` (the progress a resume restored)."""

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: int | None):
        folder = Path(os.environ["DSRELU_TEST_PROBE_DIR"])
        record = {
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "batch": batch,
            "progress": [float(m.progress) for m in dsrelu_modules(pl_module)],
        }
        path = folder / f"progress_task{os.environ.get('SLURM_PROCID', '0')}.jsonl"
        with path.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, None)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._write(trainer, pl_module, batch_idx)


class PrepareCountingDigits(DigitsDataModule):
    """Digits whose ``prepare_data`` leaves ``prepared_by_task<SLURM_PROCID>`` in
    ``$DSRELU_TEST_PROBE_DIR`` (srun sets no LOCAL_RANK: SLURM names the task)."""

    def prepare_data(self) -> None:
        task = os.environ.get("SLURM_PROCID", "none")
        (Path(os.environ["DSRELU_TEST_PROBE_DIR"]) / f"prepared_by_task{task}").touch()
        super().prepare_data()
