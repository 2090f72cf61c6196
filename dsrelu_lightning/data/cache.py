"""Preprocessed-array caches: keyed by everything that changes them, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dsrelu_lightning.atomic import atomic_open

__all__ = ["cache_key", "file_fingerprint", "load_arrays", "save_arrays"]


def cache_key(**params: Any) -> str:
    """A short stable digest of ``params`` (JSON-serialisable values) for a cache name."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_fingerprint(path: str | os.PathLike[str]) -> list[Any]:
    """Name, size and modification time (ns) of a file: changes when its data may have.

    The modification time catches an edit that keeps the size (e.g. one relabelled CSV
    row); a copy that does not keep it (``cp`` without ``-p``, a new download) merely
    rebuilds the cache.
    """
    path = Path(path)
    status = path.stat()
    return [path.name, status.st_size, status.st_mtime_ns]


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray] | None:
    """The arrays of the ``.npz`` cache at ``path``, or None if it is absent or unreadable.

    An unreadable cache (e.g. from another program version) is reported with a warning
    and treated as absent, so that the caller rebuilds it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        warnings.warn(f"ignoring unreadable cache {path} ({exc}); rebuilding it", stacklevel=2)
        return None


def save_arrays(path: str | os.PathLike[str], **arrays: np.ndarray) -> bool:
    """Atomically write ``arrays`` to the ``.npz`` file ``path``; True if it was written.

    The archive is written straight into a temporary file next to ``path`` (no copy of
    the arrays in memory, which would cost gigabytes for Mini-ImageNet), synced, then
    renamed over ``path``: readers see the old cache or the complete new one, and the
    temporary file is removed on any error. A folder that cannot be written (e.g. a
    read-only dataset, a full disk) only costs the cache: it is reported with a warning
    and False is returned.
    """
    try:
        with atomic_open(path) as handle:
            np.savez(handle, **arrays)
    except OSError as exc:
        warnings.warn(
            f"could not write the cache {path} ({exc}); continuing without it", stacklevel=2
        )
        return False
    return True
