"""DSReLU under bfloat16: its progress stays float32, and the slope it applies (and that
``dsrelu/slope`` logs) is the scheduled one to float32 precision, not a bf16 rounding."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyTrainer
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from dsrelu_lightning import DSReLU, SlopeScheduler


def test_a_bf16_layer_keeps_a_float32_progress_and_applies_that_slope() -> None:
    layer = DSReLU().to(torch.bfloat16)  # what precision="bf16-true" does to the model
    layer.set_progress(0.34)
    assert layer.progress.dtype == torch.float32
    assert float(layer.progress) == float(torch.tensor(0.34))  # not bf16's 0.33984375
    slope = layer.slope
    assert slope == pytest.approx(layer.slope_at(0.34), rel=1e-6)
    assert layer(torch.ones(2))[0].item() == slope  # float32 input: the slope itself
    bf16 = layer(torch.ones(2, dtype=torch.bfloat16))  # bf16 input: that slope, rounded once
    assert torch.equal(bf16, torch.full((2,), slope).to(torch.bfloat16))
    assert layer.double().progress.dtype == torch.float64  # widening keeps the value
    assert float(layer.progress) == float(torch.tensor(0.34))


def test_a_layer_built_under_a_bf16_default_dtype_has_a_float32_progress() -> None:
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # Lightning's bf16-true init_module() does this
    try:
        layer = DSReLU()
    finally:
        torch.set_default_dtype(default)
    assert layer.progress.dtype == torch.float32


class _TinyNet(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), DSReLU(), nn.Linear(16, 2))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x).float(), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _SlopeRecorder(Callback):
    """Per epoch: the logged ``dsrelu/slope``, the slope the layer applied, its progress."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        layer = pl_module.net[1]
        logged = float(trainer.callback_metrics["dsrelu/slope"])
        self.rows.append((logged, layer.slope, float(layer.progress)))


def test_a_bf16_true_fit_logs_the_slope_its_layer_applies(tiny: TinyTrainer) -> None:
    recorder = _SlopeRecorder()
    settings = tiny.kwargs(max_epochs=3, precision="bf16-true", limit_val_batches=0)
    trainer = pl.Trainer(callbacks=[SlopeScheduler(), recorder], **settings)
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    trainer.fit(_TinyNet(), DataLoader(data, batch_size=8))
    reference = DSReLU()
    assert len(recorder.rows) == 3
    for epoch, (logged, applied, progress) in enumerate(recorder.rows):
        assert progress == float(torch.tensor(epoch / 3))  # t = 1/3 is not a bf16 number
        assert logged == applied
        assert applied == pytest.approx(reference.slope_at(epoch / 3), rel=1e-6)
