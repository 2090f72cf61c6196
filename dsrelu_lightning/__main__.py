"""``python -m dsrelu_lightning ...``: LightningCLI's subcommands plus the study's grid commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from dsrelu_lightning.study.commands import benchmark_main, cv_main
from dsrelu_lightning.study.report import report_main
from dsrelu_lightning.training.cli import PROG, build_cli, report_user_errors
from dsrelu_lightning.training.noise import silence_third_party_noise

GRID_COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "benchmark": benchmark_main,
    "cv": cv_main,
    "report": report_main,
}
"""Commands beside LightningCLI's: name -> function taking the remaining arguments."""

COMMANDS: dict[str, str] = {
    "fit": "train one model from a config (e.g. configs/digits.yaml) and --KEY VALUE overrides",
    "validate": "evaluate a checkpoint on its fold's validation set",
    "test": "evaluate a checkpoint on the held-out test set",
    "predict": "write a checkpoint's class probabilities to <run>/eval/<ckpt>/predictions.csv",
    "benchmark": "run a grid of activations x folds (x datasets), resumable and shardable",
    "cv": "cross-validate the config's activation over its folds",
    "report": "tables, statistics and figures from a benchmark's output folder",
}
"""Every subcommand with its one-line summary (the top-level ``--help``)."""


def top_level_help() -> str:
    """``python -m dsrelu_lightning --help``: every subcommand, one line each."""
    width = max(map(len, COMMANDS)) + 2
    lines = [
        f"usage: {PROG} COMMAND [-h] [-c CONFIG] [--KEY VALUE ...]",
        "",
        "Train and honestly compare activation functions on ResNet-34.",
        "",
        "commands:",
        *(f"  {name:<{width}}{summary}" for name, summary in COMMANDS.items()),
        "",
        f"Run `{PROG} COMMAND --help` for a command's options.",
    ]
    return "\n".join(lines) + "\n"


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point: ``python -m dsrelu_lightning`` / ``dsrelu-lightning``.

    Bad input ends with one line on stderr and exit status 2, without a traceback;
    set ``DSRELU_LIGHTNING_DEBUG=1`` to see the traceback instead. Known third-party
    noise is silenced here, not when the package is used as a library.
    """
    silence_third_party_noise()
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] in (["-h"], ["--help"]):
        print(top_level_help(), end="")
    elif argv and argv[0] in GRID_COMMANDS:
        report_user_errors(lambda: GRID_COMMANDS[argv[0]](argv[1:]))
    else:
        # None lets LightningCLI read sys.argv itself (no "args and argv" warning).
        report_user_errors(lambda: build_cli(None if args is None else argv))


if __name__ == "__main__":
    main()
