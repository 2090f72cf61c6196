"""Downloads that never leave a half-written dataset behind."""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dsrelu_lightning.errors import ConfigurationError

__all__ = ["NETWORK_ERRORS", "download_into"]

NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)
"""What a failed download raises: OSError covers ConnectionError, TimeoutError, urllib's
URLError and HTTPError, requests' RequestException and wfdb's NetFileError."""


def download_into(
    target: str | os.PathLike[str],
    fetch: Callable[[Path], None],
    keep: Callable[[Path], bool] | None = None,
    *,
    what: str = "the dataset",
    manual: str = "the files",
) -> list[Path]:
    """Run ``fetch(tmp)`` in a fresh folder inside ``target``, then move its results in.

    Each top-level entry of the temporary folder that ``keep`` accepts (all by default)
    replaces the entry of the same name in ``target``; the rest (e.g. an archive already
    extracted) is discarded. If ``fetch`` fails, nothing in ``target`` changes and the
    temporary folder is removed. Returns the paths moved into ``target``.

    Args:
        what: what is downloaded from where, for the error message (e.g. ``"mitdb from
            PhysioNet"``).
        manual: what the user can put into ``target`` by hand instead.

    Raises:
        ConfigurationError: where ``fetch`` fails with a network error (one of
            :data:`NETWORK_ERRORS`), saying what could not be downloaded and why.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target) as tmp:
        try:
            fetch(Path(tmp))
        except NETWORK_ERRORS as exc:
            raise ConfigurationError(
                f"could not download {what} ({type(exc).__name__}: {exc}); check the network "
                f"or put {manual} into {target}"
            ) from exc
        for entry in sorted(Path(tmp).iterdir()):
            if keep is not None and not keep(entry):
                continue
            destination = target / entry.name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(entry, destination)
            moved.append(destination)
    return moved
