"""Shared fixtures and helpers: tiny CPU-only training settings, the command line run
in-process, the project's paths, and a probe of DSReLU's progress."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from dsrelu_lightning.__main__ import main
from dsrelu_lightning.nn.activations import dsrelu_modules
from dsrelu_lightning.training.module import Classifier

ROOT = Path(__file__).resolve().parents[1]
"""The project's root folder (this clone)."""
CONFIGS = ROOT / "configs"
DIGITS_CONFIG = str(CONFIGS / "digits.yaml")
SHARED = Path(__file__).resolve().parents[2] / "shared"
"""../shared beside the clone: real data for some tests; absent in a user's fresh clone."""
HELPERS = ROOT / "tests" / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))  # tiny_nets, the probes: importable by name as in a subprocess

SMALL_BACKBONE = "tiny_nets.SmallCNN"
"""The tests' network where behaviour does not depend on ResNet-34 (4 activation call sites)."""


def small_classifier(activation: str = "dsrelu", **kwargs: Any) -> Classifier:
    """A digits-shaped Classifier on :data:`SMALL_BACKBONE` (10 classes, 1 channel)."""
    return Classifier(10, SMALL_BACKBONE, activation=activation, in_channels=1, **kwargs)


class MainResult(NamedTuple):
    """What ``python -m dsrelu_lightning ...`` did, run in-process."""

    code: int
    out: str
    err: str
    warnings: list[str]

    def ok(self) -> str:
        """stdout, after checking the command succeeded (else its stderr is the failure)."""
        assert self.code == 0, self.err[-3000:]
        return self.out


def run_main(*args: str) -> MainResult:
    """Run the command line in-process on ``args``: exit code, stdout, stderr and every
    warning raised (recorded whatever the caller's warning filters are)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return MainResult(code, out.getvalue(), err.getvalue(), [str(w.message) for w in caught])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m dsrelu_lightning`` subprocess: this one, with
    Python's default warning filters whatever the caller set (PYTHONWARNINGS), tests/helpers
    importable (``--model.backbone tiny_nets.SmallCNN``), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    paths = [str(HELPERS), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths), **extra}


class ProgressProbe(Callback):
    """Records every DSReLU's progress when training starts (after a resume restored it) and
    before each training batch (what its forward used) as ``(epoch, global_step, [progress
    per layer in module order])``."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, list[float]]] = []
        self.at_train_start: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_train_start = [float(m.progress) for m in dsrelu_modules(pl_module)]

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        progress = [float(m.progress) for m in dsrelu_modules(pl_module)]
        self.seen.append((trainer.current_epoch, trainer.global_step, progress))


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


TINY_TRAINER: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "limit_test_batches": 1,
    "num_sanity_val_steps": 0,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
"""The one set of tiny trainer settings: a real but short CPU fit (two batches an epoch)."""

TINY_BATCH_SIZE = 16
"""The CLI tests' batch: a ResNet-34 step at the configs' 64 costs seconds on one core."""


def _cli_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def tiny_args(
    batch_size: int | None = TINY_BATCH_SIZE,
    backbone: str | None = SMALL_BACKBONE,
    **overrides: Any,
) -> list[str]:
    """:data:`TINY_TRAINER` as CLI overrides (``None`` drops a setting), plus the batch size
    and the backbone (``None`` keeps the config's); no output folder: grid cells choose
    their own."""
    settings = {key: value for key, value in {**TINY_TRAINER, **overrides}.items()}
    args = [f"--trainer.{key}={_cli_value(v)}" for key, v in settings.items() if v is not None]
    if batch_size is not None:
        args.append(f"--data.init_args.batch_size={batch_size}")
    return args if backbone is None else [*args, f"--model.backbone={backbone}"]


@dataclass(frozen=True)
class TinyTrainer:
    """:data:`TINY_TRAINER` as ``pl.Trainer`` keyword arguments or as CLI overrides.

    Both forms write under ``root``; ``overrides`` replace or add settings, and an
    override of ``None`` drops a setting (the config's own value then applies).
    """

    root: Path

    def _settings(self, overrides: dict[str, Any]) -> dict[str, Any]:
        settings = {**TINY_TRAINER, "default_root_dir": str(self.root), **overrides}
        return {key: value for key, value in settings.items() if value is not None}

    def kwargs(self, **overrides: Any) -> dict[str, Any]:
        """``pl.Trainer(**tiny.kwargs(max_epochs=3))``; no logger and no checkpoints unless
        asked for (``enable_checkpointing=True`` where a test adds a ModelCheckpoint)."""
        return self._settings({"logger": False, "enable_checkpointing": False, **overrides})

    def args(
        self,
        batch_size: int | None = TINY_BATCH_SIZE,
        backbone: str | None = SMALL_BACKBONE,
        **overrides: Any,
    ) -> list[str]:
        """``["--trainer.max_epochs=1", ..., "--model.backbone=tiny_nets.SmallCNN"]`` to
        append after ``--config`` (see :func:`tiny_args`), writing under ``root``."""
        settings = {"default_root_dir": str(self.root), **overrides}
        return tiny_args(batch_size, backbone, **settings)


@pytest.fixture
def tiny(tmp_path: Path) -> TinyTrainer:
    """The tiny trainer settings, writing under the test's ``tmp_path``."""
    return TinyTrainer(tmp_path)


@dataclass(frozen=True)
class DDPRun:
    """One finished 2-process DDP fit: its process and the folder its probes wrote to."""

    done: subprocess.CompletedProcess[str]
    folder: Path


DDP_FIT_TIMEOUT_S = 600
"""The longest the session's DDP fit may take (starting DDP costs a minute on busy cores)."""


SLOW_TEST_TIMEOUT_S = 600
"""A slow test's timeout: above its subprocesses' own (300 s), so that theirs fail it cleanly."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on :func:`ddp_run` are slow, and the first one waits for the whole fit: they get
    the fit's time on top of pyproject's per-test timeout (a fixture itself takes no marks).
    Other slow tests get :data:`SLOW_TEST_TIMEOUT_S` unless they set their own."""
    for item in items:
        if "ddp_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(DDP_FIT_TIMEOUT_S + 300))
        elif item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


@pytest.fixture(scope="session")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> DDPRun:
    """A digits fit on 2 CPU processes (2 epochs of 2 batches, precise BN on), run once.

    Starting DDP costs a minute on two busy cores, so one run serves every DDP test:
    ``ddp_probe`` records each rank's progress, samples, metric and ``prepare_data``,
    ``bn_probe`` its recalibrated BatchNorm buffers. Nothing reads a checkpoint: none is saved.
    """
    folder = tmp_path_factory.mktemp("ddp")
    env = subprocess_env(DDP_PROBE_DIR=str(folder))
    cmd = [sys.executable, "-m", "dsrelu_lightning", "fit"]
    cmd += ["--config", DIGITS_CONFIG]
    cmd += TinyTrainer(folder).args(max_epochs=2, limit_val_batches=1.0)
    cmd += [
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.callbacks+=ddp_probe.RankProbe",
        "--trainer.callbacks+=bn_probe.BufferProbe",
        "--data=ddp_probe.PrepareCountingDigits",
        "--checkpoint.monitor=null",
        "--checkpoint.save_last=false",
        "--checkpoint.save_top_k=0",
        "--precise_bn.enabled=true",
        "--precise_bn.num_batches=3",  # more than an epoch has: each rank uses its 2
    ]
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=DDP_FIT_TIMEOUT_S, cwd=folder
    )
    return DDPRun(done, folder)
