"""Shared fixtures: tiny, fast, CPU-only training settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _deterministic_cpu() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _drop_checkpoints(request: pytest.FixtureRequest) -> Iterator[None]:
    """Delete a test's checkpoints when it ends, whatever its outcome.

    A ResNet-34 checkpoint with Adam's moments is about 250 MB; kept for the whole
    session they filled a CI disk. (pyproject's ``tmp_path_retention_policy`` removes
    passed tests' folders; this also covers failed ones, whose logs stay.)
    """
    folder = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    for checkpoint in folder.rglob("*.ckpt") if folder is not None else ():
        checkpoint.unlink(missing_ok=True)


@pytest.fixture
def tiny_trainer_kwargs(tmp_path: Path) -> dict:
    """Trainer settings for a real but short fit on digits."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "default_root_dir": str(tmp_path),
    }
