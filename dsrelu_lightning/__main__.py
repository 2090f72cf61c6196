"""``python -m dsrelu_lightning COMMAND ...``: LightningCLI's subcommands (``cli``) and the
grid commands (``study.commands``). Help and a mistyped command answer without importing
torch; each command imports what it needs when it runs."""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence

from dsrelu_lightning.cli import PROG
from dsrelu_lightning.cli.errors import report_user_errors, silence_third_party_noise
from dsrelu_lightning.errors import ConfigurationError

COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("cli", "train one model from a config (e.g. configs/digits.yaml) and overrides"),
    "validate": ("cli", "evaluate a checkpoint on its fold's validation set"),
    "test": ("cli", "evaluate a checkpoint on the held-out test set"),
    "predict": ("cli", "write a checkpoint's class probabilities to <run>/eval/<ckpt>/"),
    "export": (
        "dsrelu_lightning.cli.export:export_main",
        "write a checkpoint's model as ONNX or torch.export, checked against PyTorch",
    ),
    "benchmark": ("benchmark_main", "run a grid of activations x folds, resumable and shardable"),
    "cv": ("cv_main", "cross-validate the config's activation over its folds"),
    "report": ("report_main", "tables, statistics and figures from a benchmark's output folder"),
    "tune": (
        "dsrelu_lightning.study.tune.command:tune_main",
        "search an activation's parameters with Optuna, baselines with the same budget",
    ),
}
"""Every command: where it runs (``cli`` for LightningCLI, ``module:function`` or the name of
a ``study.commands`` function, either taking the remaining arguments) and its one-line
summary."""


def top_level_help() -> str:
    """``python -m dsrelu_lightning --help``: every command, one line each."""
    width = max(map(len, COMMANDS)) + 2
    lines = [
        f"usage: {PROG} COMMAND [-h] [-c CONFIG] [--KEY VALUE ...]",
        "",
        "Train and honestly compare activation functions in any network.",
        "",
        "commands:",
        *(f"  {name:<{width}}{summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        f"Run `{PROG} COMMAND --help` for a command's options.",
    ]
    return "\n".join(lines) + "\n"


def _unknown_command(argv: Sequence[str]) -> ConfigurationError:
    if not argv or argv[0].startswith("-"):
        before = f" before {argv[0]}" if argv else ""
        return ConfigurationError(
            f"no command given{before}: start with one of {', '.join(COMMANDS)}, e.g. "
            f"`{PROG} fit --config configs/digits.yaml`"
        )
    close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigurationError(
        f"unknown command {argv[0]!r}{hint}; valid: {', '.join(COMMANDS)}; "
        f"run `{PROG} --help` for what each does"
    )


def _run(argv: list[str], whole: Sequence[str] | None) -> None:
    if not argv or argv[0] not in COMMANDS:
        raise _unknown_command(argv)
    target = COMMANDS[argv[0]][0]
    if target == "cli":
        from dsrelu_lightning.cli.app import build_cli

        # None lets LightningCLI read sys.argv itself (no "args and argv" warning).
        build_cli(None if whole is None else argv)
        return
    module, _, function = target.rpartition(":")
    commands = importlib.import_module(module or "dsrelu_lightning.study.commands")
    getattr(commands, function)(argv[1:])


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
        return
    report_user_errors(lambda: _run(argv, args))


if __name__ == "__main__":
    main()
