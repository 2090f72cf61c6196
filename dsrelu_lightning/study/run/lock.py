"""A cell folder's lock (flock on its ``.lock`` file) and the clean-up of a stale folder."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # not POSIX: cells run unlocked
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "cell_lock", "clear_folder"]

LOCK_FILE = ".lock"
"""Held (flock) by the process running a cell; it stays in the cell's folder."""


def _try_lock(handle: IO[str]) -> bool:
    """Lock ``handle``'s file exclusively without waiting; False if another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without locks
        warnings.warn(
            f"cannot lock {handle.name} ({exc.strerror or exc}): the cell runs unlocked, so "
            "do not run it from two processes at once",
            stacklevel=3,
        )
    return True


@contextmanager
def cell_lock(directory: Path) -> Iterator[bool]:
    """Hold ``directory``'s lock file (created if needed) while the block runs.

    Yields False, holding nothing, when another process holds it. Closing the file
    releases the lock, also when this process is killed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_FILE).open("a", encoding="utf-8") as handle:
        yield _try_lock(handle)


def clear_folder(directory: Path) -> None:
    """Empty the folder of a cell killed before its first checkpoint, keeping its lock file.

    The lock file stays: deleting it while held would let another process lock a new one.
    """
    for path in directory.iterdir():
        if path.name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
