"""SlopeScheduler's look at the network's gates in the first training batch."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
from conftest import TinyTrainer
from lightning.pytorch.callbacks import Callback
from torch import nn

from dsrelu_lightning import Classifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule

FLAT = "fell where the gate is flat"


@pytest.mark.parametrize(
    ("targets", "warns"),
    [(None, True), (["ReLU"], False)],
    ids=["every-site", "relu-sites-only"],
)
def test_a_steep_start_that_flattens_the_gates_warns_once(
    tiny: TinyTrainer, targets: list[str] | None, warns: bool
) -> None:
    # MobileNetV3-small at DSReLU's first slope: 97% of its squeeze-excitation gates' inputs
    # where Hardsigmoid is flat (docs/results/digits_networks); DSReLU at its ReLU sites only
    # leaves most of them alone.
    model = Classifier(
        10, "mobilenet_v3_small", in_channels=1, stem="cifar", activation_targets=targets
    )
    kwargs = {**tiny.kwargs(), "limit_train_batches": 2, "limit_val_batches": 0}
    trainer = pl.Trainer(callbacks=[SlopeScheduler()], **{**kwargs, "max_epochs": 1})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(model, DigitsDataModule(batch_size=64))
    messages = [str(w.message) for w in seen if FLAT in str(w.message)]
    assert len(messages) == (1 if warns else 0)
    if warns:
        assert "at DSReLU's starting slope 10.6" in messages[0]
        assert "of the inputs of this network's 9 gates" in messages[0]
    hardsigmoids = [m for m in model.modules() if isinstance(m, nn.Hardsigmoid)]
    assert len(hardsigmoids) == 9 and not any(m._forward_pre_hooks for m in hardsigmoids)


class _FailFirstBatch(Callback):
    def on_train_batch_start(self, *args: object) -> None:
        raise RuntimeError("the first batch fails")


def test_a_failed_first_batch_leaves_no_hook_on_the_gates(tiny: TinyTrainer) -> None:
    model = Classifier(10, "mobilenet_v3_small", in_channels=1, stem="cifar")
    kwargs = {**tiny.kwargs(), "limit_train_batches": 1, "limit_val_batches": 0}
    trainer = pl.Trainer(callbacks=[SlopeScheduler(), _FailFirstBatch()], **kwargs)
    with pytest.raises(RuntimeError, match="the first batch fails"):
        trainer.fit(model, DigitsDataModule(batch_size=64))
    assert not any(m._forward_pre_hooks for m in model.modules() if isinstance(m, nn.Hardsigmoid))
