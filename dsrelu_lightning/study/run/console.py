"""A grid cell's console: everything its fit prints goes to the cell's log file, so the grid
shows one progress line per cell."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CELL_LOG", "output_to"]

CELL_LOG = "cell.log"
"""The file in a cell's folder that holds what its fit printed (appended on resume)."""


def _console_handlers() -> list[logging.StreamHandler]:
    """Logging handlers that write to this process's stdout or stderr (Lightning's own)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers}
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return [
        h
        for h in handlers
        if type(h) is logging.StreamHandler and any(h.stream is s for s in streams)
    ]


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[Path]:
    """Send what this process prints to ``path`` (appended) while the block runs: Python's
    ``print`` and warnings, logging handlers that write to the console (Lightning's), and,
    at the file-descriptor level, what C code and child processes print. Everything goes
    back to the console afterwards, also when the block raises."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    handlers = {h: h.stream for h in _console_handlers()}
    try:
        with path.open("a", encoding="utf-8", buffering=1) as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            for handler in handlers:
                handler.setStream(log)
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    yield path
            finally:
                log.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for handler, stream in handlers.items():
                    handler.setStream(stream)
    finally:
        for descriptor in saved:
            os.close(descriptor)
