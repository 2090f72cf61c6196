"""The grid commands' argument parser: its errors are one-line ConfigurationErrors."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from dsrelu_lightning.errors import ConfigurationError

__all__ = ["CommandParser"]


class CommandParser(argparse.ArgumentParser):
    """argparse parser whose errors are ConfigurationErrors: one line at the CLI, exit 2."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigurationError(f"{self.prog}: {message}; run with --help for the options")
