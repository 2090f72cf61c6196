"""The command line: LightningCLI for fit/validate/test/predict with the project's defaults."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dsrelu_lightning.callbacks import EpochTimer, MetricsHistory, SlopeScheduler
from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.models import ResNetClassifier

__all__ = ["DSReLUCLI", "main"]

DEBUG_ENV = "DSRELU_LIGHTNING_DEBUG"


class DSReLUCLI(LightningCLI):
    """LightningCLI with the data module linked into the model and the study's callbacks.

    Always-on callbacks, each configurable under its own key: ``slope_scheduler``
    (SlopeScheduler), ``early_stopping`` (val/loss, patience 15 as in the paper),
    ``checkpoint`` (best val/loss and last), ``epoch_timer`` and ``metrics_history``.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.add_lightning_class_args(SlopeScheduler, "slope_scheduler")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.monitor": "val/loss", "early_stopping.patience": 15})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # EpochTimer logs time/epoch_s before MetricsHistory records the epoch.
        parser.add_lightning_class_args(EpochTimer, "epoch_timer")
        parser.add_lightning_class_args(MetricsHistory, "metrics_history")


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> DSReLUCLI:
    """Build (and by default run) the CLI on ``args`` (``sys.argv[1:]`` when None)."""
    return DSReLUCLI(
        ResNetClassifier,
        KFoldDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
    )


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point: ``python -m dsrelu_lightning`` / ``dsrelu-lightning``.

    Bad input ends with one line on stderr and exit status 2; set
    ``DSRELU_LIGHTNING_DEBUG=1`` to see the traceback instead.
    """
    try:
        build_cli(args)
    except ConfigurationError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"dsrelu-lightning: error: {exc}", file=sys.stderr)
        sys.exit(2)
