"""The command line: LightningCLI for fit/validate/test/predict with the project's defaults."""

from __future__ import annotations

import argparse
import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from dsrelu_lightning.cli import PROG
from dsrelu_lightning.cli.checkpoints import (
    UNTRAINED,
    CheckpointInfo,
    check_checkpoint_fits_data,
    check_output_dir,
    checkpoint_bytes,
    read_checkpoint,
    resolve_checkpoint,
    resumable_checkpoint,
    warn_if_last_only_at_the_end,
)
from dsrelu_lightning.cli.errors import (
    ShortHelpFormatter,
    activation_help,
    backbone_help,
    suggest_key,
)
from dsrelu_lightning.cli.evaluation import prepare_evaluation, write_metrics
from dsrelu_lightning.cli.summaries import SameRunSaveConfig, fit_summary
from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import dsrelu_modules
from dsrelu_lightning.training.defaults import DEFAULT_CALLBACKS
from dsrelu_lightning.training.module import Classifier
from dsrelu_lightning.training.prediction_writer import PredictionWriter

__all__ = ["DSReLUCLI", "build_cli", "check_schedule_length", "parse_config"]

EVALUATIONS = ("validate", "test", "predict")
"""Subcommands that evaluate a checkpoint: refused without --ckpt_path."""


class DSReLUCLI(LightningCLI):
    """LightningCLI with the data module linked into the model and the study's callbacks.

    Always adds :data:`~dsrelu_lightning.training.defaults.DEFAULT_CALLBACKS`, each
    configurable under its key (``--early_stopping.patience 5``). ``--ckpt_path last``
    resolves to the newest ``last.ckpt`` of a run with the same model and data config; a
    checkpoint is checked for corruption and for fitting the data, the output folders for
    write access (and room for checkpoints when fitting). ``validate``/``test``/``predict``
    need ``--ckpt_path`` (``untrained`` asks for fresh weights) and write their metrics and
    predictions to ``<run>/eval/<checkpoint>/``; ``fit`` ends with a summary. A fit resumed
    into its own log folder (a requeued SLURM job) may rewrite its identical config.yaml.
    """

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Lightning's core arguments, with ``--model.activation`` and ``--model.backbone``
        names (or import paths) as strings.

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
            skip={"activation", "backbone"},
        )
        defaults = inspect.signature(self._model_class).parameters
        parser.groups["model"].add_argument(
            "--model.backbone", type=str, default=defaults["backbone"].default, help=backbone_help()
        )
        parser.groups["model"].add_argument(
            "--model.activation", type=str, default=defaults["activation"].default,
            help=activation_help(),
        )  # fmt: skip
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
        for spec in DEFAULT_CALLBACKS:
            parser.add_lightning_class_args(spec.cls, spec.key)
            parser.set_defaults({f"{spec.key}.{k}": v for k, v in spec.defaults.items()})

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the model's hyperparameters from --ckpt_path while parsing:
        # resolve "last", reject a corrupt checkpoint, and read it once for every later use.
        self._checkpoint: CheckpointInfo | None = None
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        self._evaluated: str | None = None
        if subcommand in EVALUATIONS:
            ckpt_path = resolve_checkpoint(subcommand, ckpt_path, config, self._dump(subcommand))
            config["ckpt_path"] = self._evaluated = ckpt_path
        elif ckpt_path == "last":
            found = resumable_checkpoint(subcommand, config, self._dump(subcommand))
            config["ckpt_path"] = ckpt_path = None if found is None else str(found)
        if ckpt_path in (None, "best", "hpc", "registry") or "://" in str(ckpt_path):
            super()._parse_ckpt_path()
            return
        self._checkpoint = read_checkpoint(ckpt_path)
        # As LightningCLI does, from the metadata already read: the weights stay on disk.
        hparams = dict(self._checkpoint.hparams)
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _dump(self, subcommand: str) -> Any:
        """The resolved config of ``subcommand`` as a mapping, as config.yaml holds it."""
        parser = self._parser(subcommand)
        return lambda config: yaml.safe_load(parser.dump(config, skip_validation=True))

    def _check_checkpoint_fits_data(self) -> None:
        checkpoint = getattr(self, "_checkpoint", None)
        check_checkpoint_fits_data(checkpoint and checkpoint.hparams, self.datamodule)

    def _check_output_folders(self, needed_bytes: int = 0) -> None:
        if not self.trainer.is_global_zero:
            return
        folders = {self.trainer.default_root_dir}
        folders |= {lg.save_dir for lg in self.trainer.loggers if lg.save_dir}
        for folder in sorted(str(f) for f in folders):
            check_output_dir(folder, needed_bytes=needed_bytes)

    def before_fit(self) -> None:
        """Refuse an unset schedule length, a checkpoint of another dataset, and output
        folders that cannot be written or lack room for checkpoints, before training."""
        check_schedule_length(self.config.get(str(self.subcommand), self.config), self.model)
        self._check_checkpoint_fits_data()
        warn_if_last_only_at_the_end(self.trainer)
        self._check_output_folders(needed_bytes=checkpoint_bytes(self.trainer, self.model))

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
        checkpoint = getattr(self, "_checkpoint", None) or self._evaluated
        self._output_dir = prepare_evaluation(self.trainer, checkpoint)

    before_validate = before_test = _before_evaluation

    def before_predict(self) -> None:
        """Check as other evaluations do, and write the probabilities to predictions.csv."""
        self._before_evaluation()
        self.trainer.callbacks.append(PredictionWriter(self._output_dir / "predictions.csv"))

    def _after_evaluation(self, stage: str) -> None:
        if not self.trainer.is_global_zero:
            return
        subcommand = str(self.subcommand)
        dumped = self._dump(subcommand)(self.config.get(subcommand))
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


def check_schedule_length(config: Any, model: LightningModule) -> None:
    """Refuse an unset ``max_epochs`` while DSReLU's per-epoch schedule needs it.

    Lightning turns an unset max_epochs into 1000 before any callback sees it: the
    per-epoch schedule would then barely move (the original code's frozen slope).
    """
    trainer, scheduler = config["trainer"], config["slope_scheduler"]
    if (
        any(m.is_scheduled for m in dsrelu_modules(model))
        and scheduler.get("granularity") == "epoch"
        and trainer.get("max_epochs") is None
        and trainer.get("max_steps", -1) == -1
    ):
        raise ConfigurationError(
            "trainer.max_epochs is not set: Lightning would train up to 1000 epochs and "
            "DSReLU's schedule (t = epoch / max_epochs) would barely move; "
            "set --trainer.max_epochs N"
        )


def _subcommand_help(name: str) -> dict[str, str]:
    """Usage line and epilog of a subcommand's ``--help``."""
    usage = f"{PROG} {name} [-h] [-c CONFIG] [--print_config] [--KEY VALUE ...]"
    if name == "fit":
        epilog = (
            "--ckpt_path FILE resumes from a checkpoint, --ckpt_path last from this "
            "config's newest last.ckpt"
        )
    else:
        epilog = (
            f"{name} needs --ckpt_path FILE or last (this config's newest last.ckpt), or "
            f"--ckpt_path {UNTRAINED} for freshly initialised weights; results go to "
            "<run>/eval/<checkpoint>/"
        )
    epilog += (
        "; a group reads a file too (--trainer FILE, --checkpoint FILE, ...), "
        "--trainer.callbacks.help CLASS lists a class's options (also .logger, .strategy, "
        ".profiler, .plugins, .accelerator), --early_stopping and --checkpoint list their "
        "common options (all of EarlyStopping's and ModelCheckpoint's are accepted), "
        "--print_config every setting."
    )
    return {"usage": usage, "epilog": epilog}


class _ParseOnly(DSReLUCLI):
    """DSReLUCLI up to its parsed config: no seeding, nothing instantiated."""

    def _set_seed(self) -> None:  # seeding is a side effect of running, not of parsing
        pass

    def instantiate_classes(self) -> None:
        pass

    def _parse_ckpt_path(self) -> None:  # parsing reads no checkpoint a config names
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def parse_config(
    args: Sequence[str], subcommand: str | None = None
) -> tuple[LightningArgumentParser, Any]:
    """The CLI's parser and its resolved, validated config of ``args``; nothing built.

    Without ``subcommand``, the parser has no subcommands: what a grid needs to read a
    config (its folds, seed, activation) and to parse each cell's arguments with the same
    parser. With ``subcommand="fit"``, that subcommand's parser, so that a run's saved
    ``config.yaml`` (with its ``ckpt_path``) parses too and dumps as it was written. Parse
    errors raise ``argparse.ArgumentError`` as in :func:`build_cli`.
    """
    if subcommand is None:
        cli = build_cli(args, run=False, cli_class=_ParseOnly)
        return cli.parser, cli.config
    cli = build_cli([subcommand, *args], cli_class=_ParseOnly)
    return cli._parser(subcommand), cli.config[subcommand]


def build_cli(
    args: Sequence[str] | None = None, run: bool = True, cli_class: type[DSReLUCLI] = DSReLUCLI
) -> DSReLUCLI:
    """Build (and by default run) the CLI on ``args`` (``sys.argv[1:]`` when None).

    Parse errors raise ``argparse.ArgumentError`` instead of printing the whole usage,
    so that :func:`main` can report them as one line. Given ``args`` are meant: Lightning's
    warning that ``sys.argv`` holds other arguments (a grid command's) is not shown.
    """
    quiet = {"exit_on_error": False, "formatter_class": ShortHelpFormatter}
    subcommands = {name: {**quiet, **_subcommand_help(name)} for name in DSReLUCLI.subcommands()}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            return cli_class(
                Classifier,
                KFoldDataModule,
                subclass_mode_data=True,
                save_config_callback=SameRunSaveConfig,
                seed_everything_default=42,
                parser_kwargs={**quiet, "prog": PROG, **subcommands},
                args=list(args) if args is not None else None,
                run=run,
                auto_configure_optimizers=False,
            )
    finally:
        if run:
            _end_process_group()


def _end_process_group() -> None:
    """Destroy the process group a DDP run started (Lightning leaves it alive).

    Left to interpreter exit, gloo's worker threads may still hold tensors and abort the
    process after a finished run (SIGABRT, "terminate called without an active exception";
    pytorch/pytorch#179291 explains it).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
