"""The project's user-facing error type."""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(ValueError):
    """Bad user input: an impossible value, an unknown name, missing or corrupt data.

    The CLI prints its message as one line and exits non-zero without a traceback.
    It subclasses ValueError so callers of the Python API can catch either.
    """
