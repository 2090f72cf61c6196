"""--slope_scheduler.schedule authors_code: the published code's schedule, for ablations."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from conftest import ProgressProbe, TinyTrainer

from dsrelu_lightning import Classifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import dsrelu_modules


def test_only_the_first_dsrelu_in_forward_order_advances_by_one_over_the_loader_length(
    tiny: TinyTrainer,
) -> None:
    # LateStemCNN registers its block's activation before its stem's: registration order
    # and forward order differ, and the stem is the one the authors' code moved.
    model = Classifier(10, "tiny_nets.LateStemCNN", in_channels=1)
    probe = ProgressProbe()
    kwargs = {**tiny.kwargs(), "limit_train_batches": 3, "limit_val_batches": 0}
    callbacks = [SlopeScheduler(schedule="authors_code"), probe]
    trainer = pl.Trainer(callbacks=callbacks, **{**kwargs, "max_epochs": 3})
    trainer.fit(model, DigitsDataModule(batch_size=16))
    assert trainer.num_training_batches == 3
    block, stem = dsrelu_modules(model)  # registration order
    assert (block, stem) == (model.model.block_act, model.model.stem_act)
    for epoch, _, (block_progress, stem_progress) in probe.seen:
        assert stem_progress == pytest.approx(epoch / 3)
        assert block_progress == 0.0  # every other DSReLU stays at t = 0
    assert sorted({e for e, _, _ in probe.seen}) == [0, 1, 2]
    assert float(trainer.callback_metrics["dsrelu/slope"]) == pytest.approx(stem.slope_at(2 / 3))


def test_authors_code_with_step_granularity_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cannot be combined with"):
        SlopeScheduler(granularity="step", schedule="authors_code")


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'paper' or 'authors_code'"):
        SlopeScheduler(schedule="fancy")  # type: ignore[arg-type]
