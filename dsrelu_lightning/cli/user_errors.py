"""User errors end as one line on stderr and exit status 2; other errors propagate."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from dsrelu_lightning.errors import UserFacingError

__all__ = ["DEBUG_ENV", "report_user_errors", "user_error_message"]

DEBUG_ENV = "DSRELU_LIGHTNING_DEBUG"


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
