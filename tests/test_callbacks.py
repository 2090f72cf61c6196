"""SlopeScheduler in real fits (every layer, resume), the epoch timer and metrics history."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import ProgressProbe, TinyTrainer, small_classifier
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from dsrelu_lightning import DSReLU, EpochTimer, MetricsHistory, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule


class CrashAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


_model = small_classifier  # 4 DSReLU call sites


def test_schedule_reaches_every_layer_each_epoch(tiny: TinyTrainer) -> None:
    probe = ProgressProbe()
    trainer = pl.Trainer(callbacks=[SlopeScheduler(), probe], **tiny.kwargs(max_epochs=4))
    trainer.fit(_model(), DigitsDataModule(batch_size=16))
    assert len(probe.seen) == 8
    for epoch, _, values in probe.seen:
        assert values == [pytest.approx(epoch / 4)] * 4


def test_step_granularity_follows_global_step(tiny: TinyTrainer) -> None:
    probe = ProgressProbe()
    callbacks = [SlopeScheduler("step"), probe]
    trainer = pl.Trainer(callbacks=callbacks, **tiny.kwargs(max_epochs=2))
    trainer.fit(_model(), DigitsDataModule(batch_size=16))
    assert [v[0] for _, _, v in probe.seen] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert all(len(set(v)) == 1 for _, _, v in probe.seen)


def test_resume_after_crash_continues_the_schedule_exactly(
    tiny: TinyTrainer, tmp_path: Path
) -> None:
    ckpt_dir = tmp_path / "ckpt"

    def trainer(*extra: Callback) -> pl.Trainer:
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True)
        callbacks = [SlopeScheduler(), checkpoint, *extra]
        return pl.Trainer(
            callbacks=callbacks, **tiny.kwargs(max_epochs=4, enable_checkpointing=True)
        )

    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(CrashAt(epoch=2)).fit(_model(), DigitsDataModule(batch_size=16))
    probe = ProgressProbe()
    trainer(probe).fit(_model(), DigitsDataModule(batch_size=16), ckpt_path=ckpt_dir / "last.ckpt")
    # The fresh model's buffers were restored from the checkpoint (epoch 1: t = 1/4) ...
    assert probe.at_train_start == [pytest.approx(0.25)] * 4
    # ... and the schedule continues at epochs 2 and 3, exactly as without the crash.
    assert [(e, v) for e, _, v in probe.seen] == [
        (2, [pytest.approx(0.5)] * 4),
        (2, [pytest.approx(0.5)] * 4),
        (3, [pytest.approx(0.75)] * 4),
        (3, [pytest.approx(0.75)] * 4),
    ]


class _SaveMidEpochThenCrash(Callback):
    """Saves a checkpoint before epoch 1's second batch, as Lightning's SIGUSR1 handler saves
    ``hpc_ckpt_<n>.ckpt`` wherever training is, then ends the fit."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == (1, 1):
            trainer.save_checkpoint(self.path)
            raise RuntimeError("simulated preemption")


class _SlopeLogged(Callback):
    def __init__(self) -> None:
        self.slopes: dict[int, float] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.slopes[trainer.current_epoch] = float(trainer.callback_metrics["dsrelu/slope"])


def test_resume_from_a_mid_epoch_checkpoint_continues_the_schedule_without_warning(
    tiny: TinyTrainer, tmp_path: Path
) -> None:
    # Lightning skips on_train_epoch_start of the epoch it resumes mid-way: the scheduler
    # used to leave that epoch to the restored buffer, unlogged, and DSReLU warned that
    # nothing advanced its progress (seen in a SLURM job requeued after SIGUSR1).
    path = tmp_path / "mid_epoch.ckpt"
    kwargs = tiny.kwargs(max_epochs=4, limit_val_batches=0)
    crashing = pl.Trainer(callbacks=[SlopeScheduler(), _SaveMidEpochThenCrash(path)], **kwargs)
    with pytest.raises(RuntimeError, match="simulated preemption"):
        crashing.fit(_model(), DigitsDataModule(batch_size=16))
    probe, logged = ProgressProbe(), _SlopeLogged()
    resumed = pl.Trainer(callbacks=[SlopeScheduler(), probe, logged], **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed.fit(_model(), DigitsDataModule(batch_size=16), ckpt_path=path)
    assert not [w for w in caught if "nothing advances" in str(w.message)]
    assert [(e, v) for e, _, v in probe.seen] == [
        (1, [pytest.approx(0.25)] * 4),  # the rest of epoch 1
        (2, [pytest.approx(0.5)] * 4),
        (2, [pytest.approx(0.5)] * 4),
        (3, [pytest.approx(0.75)] * 4),
        (3, [pytest.approx(0.75)] * 4),
    ]
    layer = DSReLU()
    assert logged.slopes == pytest.approx({e: layer.slope_at(e / 4) for e in (1, 2, 3)})


class _PlainModule(pl.LightningModule):
    """A user's own LightningModule with a DSReLU: nothing of this project's but the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 16), DSReLU(), torch.nn.Linear(16, 10)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        return torch.nn.functional.cross_entropy(self.net(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("module", [_model, _PlainModule], ids=["ours", "a user's own"])
def test_training_dsrelu_without_a_scheduler_warns_that_its_slope_is_frozen(
    tiny: TinyTrainer, module: type[pl.LightningModule]
) -> None:
    trainer = pl.Trainer(**tiny.kwargs(limit_val_batches=0))
    with pytest.warns(UserWarning, match="nothing advances its progress") as caught:
        trainer.fit(module(), DigitsDataModule(batch_size=16))
    frozen = [w for w in caught if "nothing advances" in str(w.message)]
    assert "SlopeScheduler()" in str(frozen[0].message)
    # One message from one place, whatever the number of layers: Python's default filter
    # shows it once.
    assert len({(str(w.message), w.filename, w.lineno) for w in frozen}) == 1


def test_training_with_a_scheduler_does_not_warn(tiny: TinyTrainer) -> None:
    trainer = pl.Trainer(callbacks=[SlopeScheduler()], **tiny.kwargs(limit_val_batches=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_PlainModule(), DigitsDataModule(batch_size=16))
    assert not [w for w in caught if "nothing advances" in str(w.message)]


def test_unbounded_epochs_are_refused_for_epoch_granularity(tiny: TinyTrainer) -> None:
    trainer = pl.Trainer(callbacks=[SlopeScheduler()], **tiny.kwargs(max_epochs=-1, max_steps=2))
    with pytest.raises(ValueError, match="finite trainer.max_epochs"):
        trainer.fit(_model(), DigitsDataModule(batch_size=16))


def test_bad_granularity_raises() -> None:
    with pytest.raises(ValueError, match="granularity"):
        SlopeScheduler("batch")  # type: ignore[arg-type]


def test_timer_slope_and_history_are_logged_per_epoch(tiny: TinyTrainer, tmp_path: Path) -> None:
    history = MetricsHistory()
    callbacks = [SlopeScheduler(), EpochTimer(), history]
    logger = CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(callbacks=callbacks, **tiny.kwargs(max_epochs=2, logger=logger))
    trainer.fit(_model(), DigitsDataModule(batch_size=16))
    rows = list(csv.DictReader((Path(trainer.log_dir) / MetricsHistory.filename).open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for row in rows:
        assert float(row["time/epoch_s"]) > 0
        for stage in ("train", "val"):
            for name in ("loss", "acc", "f1", "auroc"):
                assert row[f"{stage}/{name}"] != ""
    slope = DSReLU().slope_at
    assert [float(r["dsrelu/slope"]) for r in rows] == pytest.approx([slope(0), slope(0.5)])
    assert history.state_dict()["rows"][1]["epoch"] == 1
