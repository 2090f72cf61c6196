"""Everything a ``tune`` command checks before its first trial: the config, the overrides, the
space against the config's keys and every bound's value, the baselines, the inner folds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsrelu_lightning.cli.app import parse_config
from dsrelu_lightning.cli.errors import user_error_message
from dsrelu_lightning.cli.summaries import resolved
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import (
    activation_defaults,
    build_activation,
    canonical_activation_name,
)
from dsrelu_lightning.study.run.keys import ACTIVATION_KEYS, CELL_KEYS, SELECTION
from dsrelu_lightning.study.run.runner import inspect_config
from dsrelu_lightning.study.run.variants import check_unique
from dsrelu_lightning.study.tune.objective import Label, Setup
from dsrelu_lightning.study.tune.space import Param, check_keys, load_space, shared_params

__all__ = ["OBJECTIVES", "TuneSetup", "prepare"]

OBJECTIVES = {"val/loss": "minimize", "val/acc": "maximize"}
"""What a trial may be scored on, and the direction of each."""


@dataclass(frozen=True)
class TuneSetup:
    """A checked ``tune`` command: what every trial shares, its labels, its epochs."""

    setup: Setup
    labels: list[Label]
    max_epochs: int


def _check_values(
    parser: Any, config: Path, overrides: Sequence[str], label: Label, space: str
) -> None:
    """Parse the config with each bound of each parameter, so a value the CLI (or the
    activation) refuses fails now, with the key named, rather than in trial N."""
    for param in label.params:
        for value in param.extremes():
            one = Label(label.name, label.activation, label.activation_args, (param,))
            variant = one.variant({param.name: value})
            try:
                parser.parse_args(["--config", str(config), *overrides, *variant.cli_args()])
                build_activation(label.activation, **dict(variant.activation_args or {}))
            except Exception as exc:
                message = user_error_message(exc) or str(exc).splitlines()[0]
                raise ConfigurationError(
                    f"space {space}: {param.key} = {value!r} is not accepted ({message})"
                ) from None


def _baselines(text: str | None, main: str) -> list[str]:
    if not text:
        return []
    names = [canonical_activation_name(n.strip()) for n in text.split(",") if n.strip()]
    if main in names:
        raise ConfigurationError(
            f"--baselines {text}: {main} is the config's own activation, tuned already; "
            "list only the activations to compare with it"
        )
    check_unique(names, "--baselines")
    return names


def prepare(
    config: str,
    space: str,
    overrides: Sequence[str],
    output: str,
    objective: str,
    tune_folds: int,
    baselines: str | None,
) -> TuneSetup:
    """Check the whole command; raises ConfigurationError (one line) before anything is written."""
    if not Path(config).is_file():
        raise ConfigurationError(f"--config {config!r} does not exist")
    info = inspect_config(config, overrides)  # bad overrides, fast_dev_run, no validation
    params: list[Param] = load_space(space)
    parser, parsed = parse_config(["--config", config, *overrides])
    tree = resolved(parser, parsed)
    main = canonical_activation_name(info.activation)
    arg_names = [n for n in activation_defaults(main) if n != "inplace"]
    reserved = (*CELL_KEYS, *SELECTION, ACTIVATION_KEYS[0])
    check_keys(params, tree, arg_names, reserved, space)
    if not 1 <= tune_folds <= info.num_folds:
        raise ConfigurationError(
            f"--tune_folds {tune_folds}: the config has {info.num_folds} folds; give 1 to "
            f"{info.num_folds} (trials are scored on the validation folds 0..k-1)"
        )
    labels = [Label(main, main, info.activation_args, tuple(params))]
    for name in _baselines(baselines, main):
        labels.append(Label(name, name, None, tuple(shared_params(params))))
    _check_values(parser, Path(config), overrides, labels[0], space)  # baselines: a subset
    if Path(output).exists() and not Path(output).is_dir():
        raise ConfigurationError(f"--output {output!r} is a file; give a folder")
    folds = tuple(range(tune_folds))
    setup = Setup(Path(config), tuple(overrides), Path(output), objective, folds, info.seed)
    return TuneSetup(setup, labels, int(tree["trainer"]["max_epochs"] or 0))
