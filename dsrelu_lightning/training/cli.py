"""The command line: LightningCLI for fit/validate/test/predict with the project's defaults."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.errors import ConfigurationError, UserFacingError
from dsrelu_lightning.nn.activations import dsrelu_modules
from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
from dsrelu_lightning.training.module import ResNetClassifier
from dsrelu_lightning.training.preflight import (
    check_checkpoint,
    check_output_dir,
    config_difference,
    last_checkpoints,
    run_config,
)
from dsrelu_lightning.training.slope_scheduler import SlopeScheduler

__all__ = ["DSReLUCLI", "build_cli", "main", "parse_config", "report_user_errors"]

DEBUG_ENV = "DSRELU_LIGHTNING_DEBUG"


class DSReLUCLI(LightningCLI):
    """LightningCLI with the data module linked into the model and the study's callbacks.

    Always-on callbacks, each configurable under its own key: ``slope_scheduler``
    (SlopeScheduler), ``early_stopping`` (val/loss, patience 15 as in the paper),
    ``checkpoint`` (best val/loss and last), ``epoch_timer``, ``metrics_history`` and
    ``finite_loss_guard``. Before running, ``--ckpt_path last`` resolves to the newest
    ``last.ckpt`` under ``trainer.default_root_dir`` of a run with the same model and data
    config; a checkpoint is checked for corruption and for fitting the data, the output
    folders for write access (and free space when fitting), and an unset max_epochs is
    refused while DSReLU's per-epoch schedule needs it.
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
        parser.add_lightning_class_args(FiniteLossGuard, "finite_loss_guard")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the model's hyperparameters from --ckpt_path while parsing;
        # resolve "last" and reject a corrupt checkpoint before it tries.
        self._checkpoint_hparams: dict[str, Any] | None = None
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path == "last":
            found = self._resumable_checkpoint(subcommand, config)
            config["ckpt_path"] = None if found is None else str(found)
            ckpt_path = config["ckpt_path"]
        if ckpt_path not in (None, "best", "hpc", "registry") and "://" not in str(ckpt_path):
            self._checkpoint_hparams = check_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def _resumable_checkpoint(self, subcommand: str, config: Any) -> Path | None:
        """The newest ``last.ckpt`` under the root folder of a run with this model and data.

        Runs are told apart by the ``config.yaml`` LightningCLI saves beside their
        ``checkpoints/``: resuming another activation's or fold's run would mislabel it.
        """
        root = config.get("trainer.default_root_dir") or os.getcwd()
        candidates = last_checkpoints(root)
        if not candidates:
            rank_zero_warn(f"--ckpt_path last: no last.ckpt under {root!r}; starting afresh")
            return None
        current = yaml.safe_load(self._parser(subcommand).dump(config, skip_validation=True))
        differences = []
        for candidate in candidates:
            saved = run_config(candidate)
            if saved is None:
                differences.append(f"{candidate}: no config.yaml beside it")
                continue
            difference = config_difference(saved, current, sections=("model", "data"))
            if difference is None:
                rank_zero_info(f"Resuming from {candidate}")
                return candidate
            differences.append(f"{candidate}: {difference}")
        raise ConfigurationError(
            f"--ckpt_path last: no run under {root!r} has this model and data config "
            f"(newest: {differences[0]}); pass its checkpoint with --ckpt_path FILE, or use "
            "another --trainer.default_root_dir to start afresh"
        )

    def _check_checkpoint_fits_data(self) -> None:
        hparams = getattr(self, "_checkpoint_hparams", None) or {}
        for name in ("num_classes", "in_channels"):
            saved, needed = hparams.get(name), getattr(self.datamodule, name, None)
            if saved is not None and needed is not None and saved != needed:
                raise ConfigurationError(
                    f"the checkpoint was trained with {name}={saved} but "
                    f"{type(self.datamodule).__name__} has {name}={needed}; "
                    "use the config of the dataset the checkpoint was trained on"
                )

    def _check_output_folders(self, needed_bytes: int = 0) -> None:
        if not self.trainer.is_global_zero:
            return
        folders = {self.trainer.default_root_dir}
        folders |= {lg.save_dir for lg in self.trainer.loggers if lg.save_dir}
        for folder in sorted(str(f) for f in folders):
            check_output_dir(folder, needed_bytes=needed_bytes)

    def _check_schedule_length(self) -> None:
        # Lightning turns an unset max_epochs into 1000 before any callback sees it: the
        # per-epoch schedule would then barely move (the original code's frozen slope).
        config = self.config.get(str(self.subcommand), self.config)
        trainer_config, scheduler = config["trainer"], config["slope_scheduler"]
        scheduled = any(m.is_scheduled for m in dsrelu_modules(self.model))
        if (
            scheduled
            and scheduler.get("granularity") == "epoch"
            and trainer_config.get("max_epochs") is None
            and trainer_config.get("max_steps", -1) == -1
        ):
            raise ConfigurationError(
                "trainer.max_epochs is not set: Lightning would train up to 1000 epochs and "
                "DSReLU's schedule (t = epoch / max_epochs) would barely move; "
                "set --trainer.max_epochs N"
            )

    def before_fit(self) -> None:
        """Refuse an unset schedule length, a checkpoint of another dataset, and output
        folders that cannot be written or lack room for checkpoints, before training."""
        self._check_schedule_length()
        self._check_checkpoint_fits_data()
        self._warn_if_last_only_at_the_end()
        self._check_output_folders(needed_bytes=self._checkpoint_bytes())

    def _warn_if_last_only_at_the_end(self) -> None:
        # Lightning writes save_last only after a top-k save in the same step, so with
        # save_top_k=0 there is no last.ckpt to resume from until training ends.
        for callback in self.trainer.checkpoint_callbacks:
            if getattr(callback, "save_top_k", 1) == 0 and getattr(callback, "save_last", None):
                rank_zero_warn(
                    "--checkpoint.save_top_k 0: Lightning then writes last.ckpt only when "
                    "training ends, so a killed run cannot resume; to keep one checkpoint "
                    "file per run use --checkpoint.monitor null --checkpoint.save_last link"
                )

    def _checkpoint_bytes(self) -> int:
        """About the disk the checkpoint callbacks keep: each copy holds the weights and,
        unless weights-only, Adam's two moments."""
        param_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        total = 0
        for callback in self.trainer.checkpoint_callbacks:
            # save_top_k=-1 keeps every epoch: count at least one copy; "link" adds none.
            top_k, last = getattr(callback, "save_top_k", 1), getattr(callback, "save_last", None)
            copies = abs(top_k) + bool(last and not (last == "link" and top_k))
            total += copies * param_bytes * (1 if getattr(callback, "save_weights_only", 0) else 3)
        return total

    def _before_evaluation(self) -> None:
        self._check_checkpoint_fits_data()
        self._check_output_folders()

    before_validate = before_test = before_predict = _before_evaluation


class _ParseOnly(DSReLUCLI):
    """DSReLUCLI up to its parsed config: no seeding, nothing instantiated."""

    def _set_seed(self) -> None:  # seeding is a side effect of running, not of parsing
        pass

    def instantiate_classes(self) -> None:
        pass


def parse_config(args: Sequence[str]) -> tuple[LightningArgumentParser, Any]:
    """The CLI's parser (no subcommands) and its resolved, validated config of ``args``.

    Builds no model, data module or trainer: what a grid needs to read a config (its
    folds, seed, activation) and to parse each cell's arguments with the same parser.
    Parse errors raise ``argparse.ArgumentError`` as in :func:`build_cli`.
    """
    cli = build_cli(args, run=False, cli_class=_ParseOnly)
    return cli.parser, cli.config


def build_cli(
    args: Sequence[str] | None = None, run: bool = True, cli_class: type[DSReLUCLI] = DSReLUCLI
) -> DSReLUCLI:
    """Build (and by default run) the CLI on ``args`` (``sys.argv[1:]`` when None).

    Parse errors raise ``argparse.ArgumentError`` instead of printing the whole usage,
    so that :func:`main` can report them as one line.
    """
    quiet = {"exit_on_error": False}
    return cli_class(
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
    UserFacingError may sit in ``__cause__``/``__context__``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserFacingError):
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
        errors: list[str] = []
        for line in rest[rest.index("Errors:") + 1 :] if "Errors:" in rest else []:
            if line.startswith("Given value"):
                break
            if line.startswith("- "):
                errors.append(line[2:])
            elif errors:
                errors[-1] = f"{errors[-1]} {line}"
        useful = [e for e in errors if e != "Expected a <class 'NoneType'>"] or errors
        given = next((line for line in rest if line.startswith("Given value:")), "")
        if useful and not useful[0].startswith("Expected"):
            return f"{head}: {useful[0]}"
        return f"{head}: {given} ({' or '.join(useful)})"
    return f"{head}: {rest[0]}"


def report_user_errors(command: Callable[[], object]) -> None:
    """Run ``command``; a user error ends with one line on stderr and exit status 2.

    No traceback unless ``DSRELU_LIGHTNING_DEBUG=1`` is set; other errors propagate.
    """
    try:
        command()
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or os.environ.get(DEBUG_ENV):
            raise
        print(f"dsrelu-lightning: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(args: Sequence[str] | None = None) -> None:
    """LightningCLI's subcommands (fit/validate/test/predict) with one-line user errors."""
    report_user_errors(lambda: build_cli(args))
