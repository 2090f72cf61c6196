"""No compilation after the warm-up: a fit's epochs, last smaller batch, validation,
precise BN's recalibration and a resume run on the kernels built at ``on_train_start``
(none with the default eager kernels; the opt-in fused ones otherwise).

Compilations are counted with torch's own counters: AOTAutograd's (every inductor
compilation, DSReLU's fused kernels included, goes through it) and TorchDynamo's
graphs and recompilations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import TinyTrainer
from lightning.pytorch.callbacks import Callback
from torch._dynamo.utils import counters
from torch.utils.data import TensorDataset

from dsrelu_lightning import PreciseBN, ResNetClassifier, SlopeScheduler
from dsrelu_lightning.nn import dsrelu_fused_opt_in as fused
from dsrelu_lightning.nn import dsrelu_kernel as kernel


def _compilations() -> int:
    recompiles = sum(counters["recompiles"].values())
    return counters["aot_autograd"]["total"] + counters["stats"]["unique_graphs"] + recompiles


class _CompilationProbe(Callback):
    """The compilation count when training starts (after the scheduler's warm-up: callbacks
    run in list order) and when the fit ends; the batch sizes seen."""

    def __init__(self) -> None:
        self.at_start: int | None = None
        self.at_end: int | None = None
        self.batch_sizes: set[int] = set()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_start = _compilations()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, index: int
    ) -> None:
        self.batch_sizes.add(len(batch[0]))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_end = _compilations()


def _data() -> pl.LightningDataModule:
    # 6 training images: a batch of 4 and a last, smaller one of 2; 4 for validation.
    # (A ResNet-34 step costs about as much at any batch size here: its weights dominate.)
    generator = torch.Generator().manual_seed(0)

    def images(n: int) -> TensorDataset:
        x = torch.randn(n, 1, 8, 8, generator=generator)
        return TensorDataset(x, torch.randint(0, 10, (n,), generator=generator))

    return pl.LightningDataModule.from_datasets(images(6), images(4), batch_size=4)


def _fit(tiny: TinyTrainer, max_epochs: int, ckpt_path: Path | None = None) -> pl.Trainer:
    probe = _CompilationProbe()
    callbacks = [SlopeScheduler(), PreciseBN(enabled=True, num_batches=2, log_ema=False), probe]
    settings = {"limit_train_batches": None, "limit_val_batches": None}
    trainer = pl.Trainer(callbacks=callbacks, **tiny.kwargs(max_epochs=max_epochs, **settings))
    trainer.fit(ResNetClassifier(10, in_channels=1, stem="cifar"), _data(), ckpt_path=ckpt_path)
    assert trainer.current_epoch == max_epochs and probe.batch_sizes == {4, 2}
    return trainer


def _probe(trainer: pl.Trainer) -> _CompilationProbe:
    return next(c for c in trainer.callbacks if isinstance(c, _CompilationProbe))


@pytest.fixture(params=["eager", pytest.param("fused", marks=pytest.mark.slow)])
def kernel_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each kernel mode (fused: for every activation, however small: 8x8 digits, batches
    of 4), no fused kernel built yet; torch's counters at zero; the mode as before after."""
    before = kernel.kernel_mode()
    kernel.set_kernel_mode(request.param)
    fused._STATE.forget_kernels()
    counters.clear()
    yield request.param
    kernel.set_kernel_mode(before)


def test_a_fit_and_its_resume_compile_nothing_after_the_warm_up(
    tiny: TinyTrainer, kernel_mode: str
) -> None:
    # The opt-in warm-up builds float32's forward and backward kernels: serial ones, and
    # on several threads parallel ones too. The eager kernels compile nothing at all.
    built = 0 if kernel_mode == "eager" else 2 if torch.get_num_threads() == 1 else 4
    trainer = _fit(tiny, max_epochs=2)
    first = _probe(trainer)
    assert first.at_start == built
    assert first.at_end == first.at_start  # ... and nothing compiled after them
    checkpoint = tiny.root / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    fused._STATE.forget_kernels()  # the resume, as in a new process: no kernel built yet
    resumed = _probe(_fit(tiny, max_epochs=3, ckpt_path=checkpoint))
    assert resumed.at_start == first.at_end + built
    assert resumed.at_end == resumed.at_start
    assert not counters["recompiles"] and not counters["stats"]["unique_graphs"]
