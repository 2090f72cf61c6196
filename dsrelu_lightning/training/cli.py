"""The command line: LightningCLI for fit/validate/test/predict with the project's defaults."""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import dsrelu_modules
from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
from dsrelu_lightning.training.callbacks import EpochTimer, FiniteLossGuard, MetricsHistory
from dsrelu_lightning.training.cli_help import ShortHelpFormatter, activation_help, suggest_key
from dsrelu_lightning.training.defaults import CHECKPOINT_DEFAULTS, EARLY_STOPPING_DEFAULTS
from dsrelu_lightning.training.evaluation import UNTRAINED, prepare_evaluation, write_metrics
from dsrelu_lightning.training.fit_summary import fit_summary
from dsrelu_lightning.training.module import ResNetClassifier
from dsrelu_lightning.training.precise_bn import PreciseBN
from dsrelu_lightning.training.prediction_writer import PredictionWriter
from dsrelu_lightning.training.preflight import (
    check_checkpoint,
    check_output_dir,
    config_difference,
    last_checkpoints,
    run_config,
)
from dsrelu_lightning.training.slope_scheduler import SlopeScheduler
from dsrelu_lightning.training.user_errors import report_user_errors

__all__ = ["DSReLUCLI", "build_cli", "main", "parse_config", "report_user_errors"]

PROG = "python -m dsrelu_lightning"
EVALUATIONS = ("validate", "test", "predict")
"""Subcommands that evaluate a checkpoint: refused without --ckpt_path."""


class DSReLUCLI(LightningCLI):
    """LightningCLI with the data module linked into the model and the study's callbacks.

    Always-on callbacks, each configurable under its own key: ``slope_scheduler``
    (SlopeScheduler), ``early_stopping`` (val/loss, patience 15 as in the paper),
    ``checkpoint`` (best val/loss and last), ``epoch_timer``, ``metrics_history`` and
    ``finite_loss_guard``. Before running, ``--ckpt_path last`` resolves to the newest
    ``last.ckpt`` under ``trainer.default_root_dir`` of a run with the same model and data
    config; a checkpoint is checked for corruption and for fitting the data, the output
    folders for write access (and free space when fitting), and an unset max_epochs is
    refused while DSReLU's per-epoch schedule needs it. ``validate``/``test``/``predict``
    need ``--ckpt_path`` (``untrained`` asks for fresh weights) and write their metrics
    and predictions to ``<run>/eval/<checkpoint>/``; ``fit`` ends with a summary.
    """

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Lightning's core arguments, with ``--model.activation`` a registered name.

        Python callers may pass a class or a callable; on the command line the type hint
        would make jsonargparse list every ``nn.Module`` subclass in the help.
        """
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        defaults = {k: v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        parser.set_defaults({f"trainer.{k}": v for k, v in defaults.items()})
        parser.add_class_arguments(
            self._model_class,
            "model",
            fail_untyped=False,
            sub_configs=True,
            skip={"activation"},
        )
        default = inspect.signature(self._model_class).parameters["activation"].default
        parser.groups["model"].add_argument(
            "--model.activation", type=str, default=default, help=activation_help()
        )
        if self.datamodule_class is not None:
            parser.add_lightning_class_args(
                self._datamodule_class, "data", subclass_mode=self.subclass_mode_data
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse as LightningCLI does; an unknown key names the closest valid one."""
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as exc:
            raise suggest_key(exc, parser, args) from exc

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.add_lightning_class_args(SlopeScheduler, "slope_scheduler")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.set_defaults({f"early_stopping.{k}": v for k, v in EARLY_STOPPING_DEFAULTS.items()})
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{k}": v for k, v in CHECKPOINT_DEFAULTS.items()})
        # EpochTimer logs time/epoch_s before MetricsHistory records the epoch.
        parser.add_lightning_class_args(EpochTimer, "epoch_timer")
        parser.add_lightning_class_args(MetricsHistory, "metrics_history")
        parser.add_lightning_class_args(FiniteLossGuard, "finite_loss_guard")
        # After the NaN guard: a diverged model is not recalibrated before it stops.
        parser.add_lightning_class_args(PreciseBN, "precise_bn")
        parser.add_lightning_class_args(BNStalenessMonitor, "bn_staleness")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the model's hyperparameters from --ckpt_path while parsing;
        # resolve "last" and reject a corrupt checkpoint before it tries.
        self._checkpoint_hparams: dict[str, Any] | None = None
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        self._evaluated: str | None = None
        if subcommand in EVALUATIONS:
            ckpt_path = config["ckpt_path"] = self._evaluation_checkpoint(subcommand, config)
            self._evaluated = ckpt_path
        elif ckpt_path == "last":
            found = self._resumable_checkpoint(subcommand, config)
            config["ckpt_path"] = None if found is None else str(found)
            ckpt_path = config["ckpt_path"]
        if ckpt_path not in (None, "best", "hpc", "registry") and "://" not in str(ckpt_path):
            self._checkpoint_hparams = check_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def _evaluation_checkpoint(self, subcommand: str, config: Any) -> str | None:
        """The checkpoint an evaluation uses: required, unless ``untrained`` is asked for."""
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
            root = config.get("trainer.default_root_dir") or os.getcwd()
            if not last_checkpoints(root):
                raise ConfigurationError(
                    f"--ckpt_path last: no last.ckpt under {root!r}; pass --ckpt_path FILE "
                    "or the --trainer.default_root_dir of the fit"
                )
            return str(self._resumable_checkpoint(subcommand, config))
        return str(ckpt_path)

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
                verb = "Resuming from" if subcommand == "fit" else "Evaluating"
                rank_zero_info(f"{verb} {candidate}")
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

    def after_fit(self) -> None:
        """Print where the run is, its best and last epochs, and what to run next."""
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if not self.trainer.is_global_zero:
            return
        config = Path(log_dir) / "config.yaml" if log_dir else None
        config_path = str(config) if config is not None and config.is_file() else None
        print(fit_summary(self.trainer, log_dir, config_path), flush=True)

    def _before_evaluation(self) -> None:
        # Results go beside the checkpoint's run (<run>/eval/<checkpoint>/), not into a new
        # version_N folder: no loggers, no second config.yaml.
        self._check_checkpoint_fits_data()
        self._check_output_folders()
        self._output_dir = prepare_evaluation(self.trainer, self._evaluated)

    before_validate = before_test = _before_evaluation

    def before_predict(self) -> None:
        """Check as other evaluations do, and write the probabilities to predictions.csv."""
        self._before_evaluation()
        self.trainer.callbacks.append(PredictionWriter(self._output_dir / "predictions.csv"))

    def _after_evaluation(self, stage: str) -> None:
        if not self.trainer.is_global_zero:
            return
        subcommand = str(self.subcommand)
        config = self.config.get(subcommand)
        dumped = yaml.safe_load(self._parser(subcommand).dump(config, skip_validation=True))
        path = self._output_dir / f"{subcommand}_metrics.json"
        write_metrics(path, stage, self.trainer, self._evaluated, dumped.get("data"))
        print(f"Metrics written to {path}", flush=True)

    def after_validate(self) -> None:
        """Write ``val/*`` to ``<run>/eval/<checkpoint>/validate_metrics.json``."""
        self._after_evaluation("val")

    def after_test(self) -> None:
        """Write ``test/*`` to ``<run>/eval/<checkpoint>/test_metrics.json``."""
        self._after_evaluation("test")

    def after_predict(self) -> None:
        """Say where the predictions went."""
        if self.trainer.is_global_zero:
            writer = next(cb for cb in self.trainer.callbacks if isinstance(cb, PredictionWriter))
            print(f"Predictions written to {writer.written}", flush=True)


def _subcommand_help(name: str) -> dict[str, str]:
    """Usage line and epilog of a subcommand's ``--help``."""
    usage = f"{PROG} {name} [-h] [-c CONFIG] [--print_config] [--KEY VALUE ...]"
    if name == "fit":
        epilog = (
            "--ckpt_path FILE resumes from a checkpoint, --ckpt_path last from this "
            "config's newest last.ckpt."
        )
    else:
        epilog = (
            f"{name} needs --ckpt_path FILE or last (this config's newest last.ckpt), or "
            f"--ckpt_path {UNTRAINED} for freshly initialised weights; results go to "
            "<run>/eval/<checkpoint>/."
        )
    return {"usage": usage, "epilog": epilog}


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
    quiet = {"exit_on_error": False, "formatter_class": ShortHelpFormatter}
    subcommands = {name: {**quiet, **_subcommand_help(name)} for name in DSReLUCLI.subcommands()}
    return cli_class(
        ResNetClassifier,
        KFoldDataModule,
        subclass_mode_data=True,
        seed_everything_default=42,
        parser_kwargs={**quiet, "prog": PROG, **subcommands},
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
    )


def main(args: Sequence[str] | None = None) -> None:
    """LightningCLI's subcommands (fit/validate/test/predict) with one-line user errors."""
    report_user_errors(lambda: build_cli(args))
