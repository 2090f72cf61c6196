"""The command line: LightningCLI for fit/validate/test/predict with the project's defaults."""

from __future__ import annotations

import argparse
import importlib
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

# Commands beside LightningCLI's: name -> "module:function" taking the remaining arguments
# (imported on use: those modules build on this one).
GRID_COMMANDS = {
    "benchmark": "dsrelu_lightning.benchmark:benchmark_main",
    "cv": "dsrelu_lightning.benchmark:cv_main",
    "report": "dsrelu_lightning.report:report_main",
}


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
    """Build (and by default run) the CLI on ``args`` (``sys.argv[1:]`` when None).

    Parse errors raise ``argparse.ArgumentError`` instead of printing the whole usage,
    so that :func:`main` can report them as one line.
    """
    quiet = {"exit_on_error": False}
    return DSReLUCLI(
        ResNetClassifier,
        KFoldDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        parser_kwargs={**quiet, **{name: dict(quiet) for name in DSReLUCLI.subcommands()}},
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
    )


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user error anywhere in ``exc``'s chain, else None.

    jsonargparse wraps errors raised while instantiating classes, so the
    ConfigurationError may sit in ``__cause__``/``__context__``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConfigurationError):
            return str(current)
        current = current.__cause__ or current.__context__
    if isinstance(exc, argparse.ArgumentError):
        return f"{_summarise_parse_error(str(exc))}; run with --help for the accepted options"
    return None


def _summarise_parse_error(text: str) -> str:
    """One line out of jsonargparse's multi-line parse error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "invalid arguments"
    head, rest = lines[0].rstrip(":"), lines[1:]
    if not rest:
        return head
    if rest[0].startswith("Does not validate"):
        expected = " or ".join(line[2:] for line in rest if line.startswith("- "))
        given = next((line for line in rest if line.startswith("Given value:")), "")
        return f"{head}: {given} ({expected})"
    return f"{head}: {rest[0]}"


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point: ``python -m dsrelu_lightning`` / ``dsrelu-lightning``.

    Bad input ends with one line on stderr and exit status 2, without a traceback;
    set ``DSRELU_LIGHTNING_DEBUG=1`` to see the traceback instead.
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in GRID_COMMANDS:
            module, function = GRID_COMMANDS[argv[0]].split(":")
            getattr(importlib.import_module(module), function)(argv[1:])
        else:
            build_cli(args)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"dsrelu-lightning: error: {message}", file=sys.stderr)
        sys.exit(2)
