"""``python -m dsrelu_lightning ...``: LightningCLI's subcommands plus the study's grid commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from dsrelu_lightning.study.commands import benchmark_main, cv_main
from dsrelu_lightning.study.report import report_main
from dsrelu_lightning.training.cli import build_cli, report_user_errors

GRID_COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "benchmark": benchmark_main,
    "cv": cv_main,
    "report": report_main,
}
"""Commands beside LightningCLI's: name -> function taking the remaining arguments."""


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point: ``python -m dsrelu_lightning`` / ``dsrelu-lightning``.

    Bad input ends with one line on stderr and exit status 2, without a traceback;
    set ``DSRELU_LIGHTNING_DEBUG=1`` to see the traceback instead.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in GRID_COMMANDS:
        report_user_errors(lambda: GRID_COMMANDS[argv[0]](argv[1:]))
    else:
        report_user_errors(lambda: build_cli(argv))


if __name__ == "__main__":
    main()
