"""The project's user-facing error types: the CLI prints them as one line, exit status 2."""

from __future__ import annotations

__all__ = ["ConfigurationError", "TrainingDivergedError", "UserFacingError"]


class UserFacingError(Exception):
    """An error whose message alone tells the user what is wrong and how to fix it."""


class ConfigurationError(UserFacingError, ValueError):
    """Bad user input: an impossible value, an unknown name, missing or corrupt data.

    It subclasses ValueError so callers of the Python API can catch either.
    """


class TrainingDivergedError(UserFacingError, RuntimeError):
    """The training loss became NaN or infinite; training stopped."""
