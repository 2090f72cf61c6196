"""Faults: resume after a crash, checkpoints' slope, NaN loss, full disks, and DDP."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from conftest import DIGITS_CONFIG, SMALL_BACKBONE, DDPRun, TinyTrainer, small_classifier
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from dsrelu_lightning import Classifier, DSReLU, SlopeScheduler
from dsrelu_lightning.__main__ import main
from dsrelu_lightning.atomic import atomic_path, atomic_write_text
from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.cli.checkpoints import check_output_dir, warn_if_last_only_at_the_end
from dsrelu_lightning.cli.checkpoints import checkpoint_bytes as room
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.errors import TrainingDivergedError
from dsrelu_lightning.training.callbacks import FiniteLossGuard, MetricsHistory


def _short_fit(tiny: TinyTrainer, epochs: int = 3) -> list[str]:
    """A short digits fit on the small test network keeping one checkpoint file, the latest
    epoch's, with last.ckpt a link to it."""
    return [
        "--config",
        DIGITS_CONFIG,
        *tiny.args(max_epochs=epochs),
        "--checkpoint.monitor=null",
        "--checkpoint.save_last=link",
    ]


class CrashMidEpoch(Callback):
    """Dies after the first training batch of ``epoch`` (its checkpoint not yet saved)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            raise RuntimeError("simulated crash")


def test_fit_resumes_with_ckpt_path_last_and_continues_the_schedule(
    tiny: TinyTrainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[tuple[int, int, list[int]]] = []  # (epoch, batch, labels) as trained
    original = Classifier.training_step

    def recording(self: Classifier, batch: Any, batch_idx: int) -> torch.Tensor:
        batches.append((self.current_epoch, batch_idx, batch[1].tolist()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", recording)
    cli = build_cli(_short_fit(tiny), run=False)
    cli.trainer.callbacks.append(CrashMidEpoch(2))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.trainer.fit(cli.model, cli.datamodule)
    before_crash, batches[:] = list(batches), []

    main(["fit", *_short_fit(tiny), "--ckpt_path=last"])
    # The redone epoch 2 trains on the batches the crashed run drew for it.
    assert [b[:2] for b in batches] == [(2, 0), (2, 1)]
    assert batches[0] == before_crash[-1] and before_crash[-1][:2] == (2, 0)
    assert before_crash[0][2] != batches[0][2]  # not epoch 0's order again
    resumed = tmp_path / "lightning_logs" / "version_1"
    rows = list(csv.DictReader((resumed / MetricsHistory.filename).open()))
    slope = DSReLU().slope_at
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["dsrelu/slope"]) for r in rows] == pytest.approx(
        [slope(e / 3) for e in range(3)]
    )
    final = torch.load(
        resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert final["epoch"] == 2
    progress = [v.item() for k, v in final["state_dict"].items() if k.endswith(".progress")]
    assert progress == [pytest.approx(2 / 3)] * 4  # the small network's 4 sites

    # validate and test from that checkpoint run with its slope, not t = 0.
    for stage in ("validate", "test"):
        cli = build_cli(_short_fit(tiny), run=False)
        getattr(cli.trainer, stage)(
            cli.model, cli.datamodule, ckpt_path=resumed / "checkpoints" / "last.ckpt"
        )
        layers = [m for m in cli.model.modules() if isinstance(m, DSReLU)]
        assert [float(m.progress) for m in layers] == [pytest.approx(2 / 3)] * 4


def test_ckpt_path_last_resumes_only_a_run_with_the_same_model_and_data(
    tiny: TinyTrainer, tmp_path: Path
) -> None:
    main(["fit", *_short_fit(tiny, epochs=1), "--model.activation=relu"])
    main(["fit", *_short_fit(tiny, epochs=1), "--model.activation=mish", "--data.fold_index=2"])
    logs = tmp_path / "lightning_logs"
    # Only the config.yaml of a run that does not match is read: truncating its
    # checkpoint saves disk, and would make a wrong pick fail as corrupt.
    mish = logs / "version_1" / "checkpoints" / "last.ckpt"
    mish.write_bytes(mish.read_bytes()[:4096])

    # The newest run is mish on fold 2: "last" must pick the relu run instead ...
    main(["fit", *_short_fit(tiny, epochs=2), "--model.activation=relu", "--ckpt_path=last"])
    resumed = torch.load(
        logs / "version_2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert resumed["hyper_parameters"]["activation"] == "relu" and resumed["epoch"] == 1

    # ... and refuse when no run there has this model and data (here: dsrelu on fold 2).
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_short_fit(tiny), "--data.fold_index=2", "--ckpt_path=last"])
    assert exit_info.value.code == 2
    assert not (logs / "version_3").exists()


def test_ckpt_path_last_refuses_a_corrupt_last_checkpoint(
    tiny: TinyTrainer, tmp_path: Path, capsys
) -> None:
    main(["fit", *_short_fit(tiny, epochs=1)])
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4096])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_short_fit(tiny), "--ckpt_path=last"])
    assert exit_info.value.code == 2
    assert "last.ckpt' is corrupt or truncated" in capsys.readouterr().err


class PoisonWeights(Callback):
    """Makes the loss NaN from (epoch, batch) on, as a diverging run would."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            with torch.no_grad():
                pl_module.model.head.weight.fill_(float("nan"))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny: TinyTrainer
) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last="link")  # one file
    callbacks = [SlopeScheduler(), FiniteLossGuard(), checkpoint, PoisonWeights(1, 1)]
    trainer = pl.Trainer(
        callbacks=callbacks, **tiny.kwargs(max_epochs=3, enable_checkpointing=True)
    )
    model = small_classifier()
    with pytest.raises(TrainingDivergedError, match=r"NaN or infinite at epoch 1, step 1 of"):
        trainer.fit(model, DigitsDataModule(batch_size=16))
    kept = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert kept["epoch"] == 0
    assert all(
        torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point()
    )


def test_nan_guard_is_on_by_default_in_the_cli(tiny: TinyTrainer, tmp_path: Path) -> None:
    cli = build_cli(_short_fit(tiny), run=False)
    cli.trainer.callbacks.append(PoisonWeights(0, 0))
    with pytest.raises(TrainingDivergedError) as info:
        cli.trainer.fit(cli.model, cli.datamodule)
    assert "epoch 0, step 0" in str(info.value) and "--model.lr" in str(info.value)


def test_a_full_disk_leaves_no_half_written_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "result.json"
    target.write_text("old complete result")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new result " * 1000)
    assert target.read_text() == "old complete result"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_room_needed_counts_the_checkpoint_files_kept(tiny: TinyTrainer, tmp_path: Path) -> None:
    base = ["--config", DIGITS_CONFIG, f"--trainer.default_root_dir={tmp_path}"]
    base.append(f"--model.backbone={SMALL_BACKBONE}")
    cli = build_cli(base, run=False)
    checkpoint_bytes = 3 * sum(p.numel() * 4 for p in cli.model.parameters())  # + Adam
    assert room(cli.trainer, cli.model) == 2 * checkpoint_bytes  # best and last
    short = build_cli(_short_fit(tiny), run=False)
    assert room(short.trainer, short.model) == checkpoint_bytes
    cli = build_cli([*base, "--checkpoint.save_top_k=0"], run=False)
    with pytest.warns(UserWarning, match="writes last.ckpt only when training ends"):
        warn_if_last_only_at_the_end(cli.trainer)


def test_output_dir_without_room_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MiB free but the run needs about"):
        check_output_dir(tmp_path, needed_bytes=2**62)
    assert check_output_dir(tmp_path / "new", needed_bytes=1).is_dir()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(ddp_run: DDPRun) -> None:
    tmp_path = ddp_run.folder
    assert ddp_run.done.returncode == 0, ddp_run.done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    # Downloads and caches are prepared by one rank only.
    assert sorted(p.name for p in tmp_path.glob("prepared_by_rank*")) == ["prepared_by_rank0"]
    # Every rank ran every batch with all 4 layers at the same, scheduled progress.
    assert ranks[0]["progress"] == ranks[1]["progress"]
    assert [p[0] for p in ranks[0]["progress"]] == pytest.approx([0, 0, 0.5, 0.5])
    assert all(len(set(p)) == 1 and len(p) == 4 for p in ranks[0]["progress"])
    # Validation saw each sample once over both ranks (no DistributedSampler padding)...
    val_size = len(DigitsDataModule()._split()["pool"]) // 5
    assert sum(r["val_samples"] for r in ranks) in (val_size, val_size + 1)
    # ... and torchmetrics synchronised the metric: both ranks report the same value.
    assert ranks[0]["val_acc"] == ranks[1]["val_acc"]
    # units/* classify each unit on both ranks' probe inputs pooled: one value on every rank.
    assert ranks[0]["units"] == ranks[1]["units"]
    assert all(0.0 <= share <= 1.0 for share in ranks[0]["units"])


def test_a_ddp_fit_destroys_its_process_group(
    tiny: TinyTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left alive to interpreter exit, gloo's threads sometimes aborted a finished DDP fit
    # (rc -6, "terminate called without an active exception").
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.setenv(key, "")  # records the variable's state, restored after the test
        monkeypatch.delenv(key)  # as a user's shell has it: unset, for Lightning to set
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    main(["fit", *_short_fit(tiny, epochs=1), "--trainer.strategy=ddp", "--trainer.devices=1"])
    assert (tiny.root / "lightning_logs").is_dir()
    assert not torch.distributed.is_initialized()


def test_atomic_writes_respect_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        written = atomic_write_text(tmp_path / "summary.md", "table")
    finally:
        os.umask(previous)
    assert written.stat().st_mode & 0o777 == 0o640
    assert written.read_text() == "table"


def test_a_fit_resumed_into_its_own_log_folder_may_rewrite_its_same_config(
    tmp_path: Path,
) -> None:
    # Under SLURM Lightning names the default logger's version after the job id, so a job
    # requeued after SIGUSR1 logs into its first attempt's folder; Lightning's
    # SaveConfigCallback refused the existing config.yaml and the requeued job failed.
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(tmp_path), "name": "", "version": "job_7"},
    }

    def save_config(*extra: str) -> None:
        args = ["--config", DIGITS_CONFIG, "--trainer.logger", json.dumps(logger), *extra]
        cli = build_cli(args, run=False)
        saver = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SaveConfigCallback))
        saver.setup(cli.trainer, cli.model, "fit")

    save_config()
    saved = tmp_path / "job_7" / "config.yaml"
    before = saved.read_text()
    save_config()  # the same run again: accepted, nothing changed
    assert saved.read_text() == before
    with pytest.raises(RuntimeError, match="config.yaml to NOT exist"):
        save_config("--model.lr", "0.01")  # another run's folder: refused, as Lightning does
    assert saved.read_text() == before


def test_a_named_atomic_write_keeps_the_old_file_until_it_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_text("the earlier export")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        assert temporary.suffix == ".onnx" and temporary.parent == tmp_path
        temporary.write_text("half a model")
        assert target.read_text() == "the earlier export"
        raise RuntimeError("the check failed")
    assert target.read_text() == "the earlier export"
    with atomic_path(target) as temporary:
        temporary.write_text("the new export")
    assert target.read_text() == "the new export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
