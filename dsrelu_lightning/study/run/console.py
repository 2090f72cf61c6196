"""A grid cell's console: everything its fit prints goes to the cell's log file, so the grid
shows one progress line per cell."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["CELL_LOG", "output_to"]

CELL_LOG = "cell.log"
"""The file in a cell's folder that holds what its fit printed (appended on resume)."""


@contextmanager
def output_to(path: Path) -> Iterator[Path]:
    """Send this process's stdout and stderr, at the file-descriptor level (Python's prints,
    warnings and logging handlers, and what C code prints), to ``path`` (appended) while the
    block runs; the console gets them back afterwards, also when the block raises."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with path.open("a", encoding="utf-8") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield path
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for descriptor in saved:
            os.close(descriptor)
