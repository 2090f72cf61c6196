"""Downloads that never leave a half-written dataset behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["download_into"]


def download_into(
    target: str | os.PathLike[str],
    fetch: Callable[[Path], None],
    keep: Callable[[Path], bool] | None = None,
) -> list[Path]:
    """Run ``fetch(tmp)`` in a fresh folder inside ``target``, then move its results in.

    Each top-level entry of the temporary folder that ``keep`` accepts (all by default)
    replaces the entry of the same name in ``target``; the rest (e.g. an archive already
    extracted) is discarded. If ``fetch`` fails, nothing in ``target`` changes and the
    temporary folder is removed. Returns the paths moved into ``target``.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target) as tmp:
        fetch(Path(tmp))
        for entry in sorted(Path(tmp).iterdir()):
            if keep is not None and not keep(entry):
                continue
            destination = target / entry.name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(entry, destination)
            moved.append(destination)
    return moved
