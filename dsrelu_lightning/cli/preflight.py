"""Checks run before anything is written: output folders, free space, checkpoints."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from dsrelu_lightning.errors import ConfigurationError

__all__ = [
    "check_checkpoint",
    "check_checkpoint_fits_data",
    "check_output_dir",
    "last_checkpoints",
]


def check_output_dir(path: str | Path, needed_bytes: int = 0) -> Path:
    """Make sure ``path`` can be created, written to and has ``needed_bytes`` free.

    Raises:
        ConfigurationError: naming the folder and the reason, before anything is written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write to output folder {str(path)!r} ({exc.strerror or exc}); "
            "choose another one, e.g. --trainer.default_root_dir runs/mine"
        ) from exc
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise ConfigurationError(
            f"output folder {str(path)!r} has {free / 2**20:.0f} MiB free but the run needs about "
            f"{needed_bytes / 2**20:.0f} MiB for its checkpoints; "
            "free some space or choose another folder"
        )
    return path


def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Make sure ``path`` is a complete Lightning checkpoint; return its hyperparameters.

    Every member's CRC is checked, so a truncated or corrupt file is caught before
    Lightning tries to unpickle it; a readable file that Lightning did not write (a
    plain ``torch.save``) is refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(
            f"checkpoint {str(path)!r} does not exist; pass an existing .ckpt file or 'last'"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ConfigurationError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({exc}); "
            "resume from another checkpoint, e.g. an earlier run's last.ckpt"
        ) from exc
    if bad_member is not None:
        raise ConfigurationError(
            f"checkpoint {str(path)!r} is corrupt (bad data in {bad_member!r}); "
            "resume from another checkpoint"
        )
    # mmap: tensors stay on disk, only the small pickled structure is read.
    content = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    if not isinstance(content, dict) or not {"state_dict", "pytorch-lightning_version"} <= set(
        content
    ):
        raise ConfigurationError(
            f"{str(path)!r} is not a Lightning checkpoint (no state_dict and version); "
            "pass a .ckpt file that a fit of this project wrote"
        )
    return dict(content.get("hyper_parameters") or {})


def check_checkpoint_fits_data(hparams: dict[str, Any] | None, datamodule: Any) -> None:
    """Refuse a checkpoint (its ``hparams``) trained on data of another shape than
    ``datamodule``'s: another ``num_classes`` or ``in_channels``."""
    for name in ("num_classes", "in_channels"):
        saved, needed = (hparams or {}).get(name), getattr(datamodule, name, None)
        if saved is not None and needed is not None and saved != needed:
            raise ConfigurationError(
                f"the checkpoint was trained with {name}={saved} but "
                f"{type(datamodule).__name__} has {name}={needed}; "
                "use the config of the dataset the checkpoint was trained on"
            )


def last_checkpoints(root: str | Path) -> list[Path]:
    """Every ``last.ckpt`` under ``root`` (any run version), the most recent first."""
    found = [p for p in Path(root).glob("**/last.ckpt") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
