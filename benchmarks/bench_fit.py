"""Target 4: a Lightning ``fit`` epoch vs a bare PyTorch loop doing the same steps.

    python benchmarks/bench_fit.py [--workload digits cifar] [--repeats 4] [--threads N]

Both sides train the same ResNet-34 (same weights, activation, DataLoaders, fused Adam
from ``ResNetClassifier.configure_optimizers``) for one epoch: every training batch,
then the validation batches. Epochs are timed round-robin, one epoch per round each:

- ``lightning``: ``Trainer.fit`` of ``ResNetClassifier`` with ``SlopeScheduler`` (no
  logger, checkpoint or progress bar: disk I/O is not the framework's overhead); the
  epoch is timed from ``on_train_epoch_start`` to ``on_train_epoch_end`` (validation
  included), as ``EpochTimer`` does.
- ``bare``: the same steps and the same torchmetrics updates (train/val acc, F1, AUROC
  and mean loss, computed once per epoch) in a plain loop: the framework's overhead.
- ``bare_loss_only``: forward, loss, backward, step; validation loss only: what the
  epoch would cost without metrics at all.

``digits``: scikit-learn digits, fold 0 of 5 (batch 64, 1x8x8, 3x3 stem, as
configs/digits.yaml). ``cifar``: synthetic CIFAR-100-sized uint8 images (3x32x32, 100
classes, batch 32, the paper's ImageNet stem), normalised on access like the CIFAR-100
data module, ``--cifar-train`` / ``--cifar-val`` images.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from profiling import interleaved_timings, machine_description, ratio_summary
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from dsrelu_lightning import ResNetClassifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.data.tensor_images import TensorImageDataset
from dsrelu_lightning.nn.activations import dsrelu_modules

TARGET_RATIO = 1.10


@dataclass
class Workload:
    train: DataLoader
    val: DataLoader
    classes: int
    channels: int
    stem: str


def digits_workload() -> Workload:
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    return Workload(data.train_dataloader(), data.val_dataloader(), 10, 1, "cifar")


def cifar_workload(train_size: int, val_size: int, batch_size: int = 32) -> Workload:
    generator = torch.Generator().manual_seed(0)

    def dataset(size: int) -> TensorImageDataset:
        images = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 100, (size,), generator=generator)
        return TensorImageDataset(images, labels, (0.507, 0.487, 0.441), (0.267, 0.256, 0.276))

    train = DataLoader(dataset(train_size), batch_size=batch_size, shuffle=True)
    val = DataLoader(dataset(val_size), batch_size=batch_size)
    return Workload(train, val, 100, 3, "imagenet")


class _EpochClock(Callback):
    """Seconds of the last training epoch, its validation included (CUDA synchronised)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    @staticmethod
    def _now(pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self._now(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = self._now(pl_module) - self.start


def _classifier(workload: Workload, activation: str, compile: bool = False) -> ResNetClassifier:
    torch.manual_seed(0)
    return ResNetClassifier(
        workload.classes,
        activation,
        in_channels=workload.channels,
        stem=workload.stem,
        compile=compile,
    )


def lightning_epoch(
    workload: Workload,
    activation: str,
    accelerator: str = "cpu",
    compile: bool = False,
    precision: str = "32-true",
) -> Callable[[], float]:
    """A closure fitting one more epoch of the same module with a fresh Trainer.

    Returns the epoch's seconds (Trainer construction and fit setup excluded).
    """
    module = _classifier(workload, activation, compile)
    clock = _EpochClock()

    def run() -> float:
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=1,
            max_epochs=1,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[SlopeScheduler(), clock],
        )
        trainer.fit(module, workload.train, workload.val)
        return clock.seconds

    return run


def bare_epoch(workload: Workload, activation: str, metrics: bool) -> Callable[[], float]:
    module = _classifier(workload, activation)  # same weights, metrics and optimizer recipe
    net, layers = module.model, dsrelu_modules(module.model)
    train_loss, val_loss = MeanMetric(), MeanMetric()

    def step_metrics(stage: str, logits: Tensor, targets: Tensor, loss: Tensor) -> None:
        (train_loss if stage == "train" else val_loss).update(loss.detach(), targets.shape[0])
        if metrics:
            collection = module.train_metrics if stage == "train" else module.val_metrics
            collection.update(logits.detach().float().softmax(dim=-1), targets)

    def run() -> float:
        start = time.perf_counter()
        optimizer = module.configure_optimizers()
        for layer in layers:
            layer.set_progress(0.0)
        net.train()
        for inputs, targets in workload.train:
            logits = net(inputs)
            loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step_metrics("train", logits, targets, loss)
        net.eval()
        with torch.inference_mode():
            for inputs, targets in workload.val:
                logits = net(inputs)
                step_metrics("val", logits, targets, F.cross_entropy(logits, targets))
        results = [train_loss.compute(), val_loss.compute()]
        if metrics:
            results += [*module.train_metrics.compute().values()]
            results += [*module.val_metrics.compute().values()]
            module.train_metrics.reset()
            module.val_metrics.reset()
        train_loss.reset()
        val_loss.reset()
        torch.stack([r.float() for r in results]).tolist()  # the epoch's one host read
        return time.perf_counter() - start

    return run


def compare(name: str, workload: Workload, activation: str, repeats: int) -> None:
    """Print the Lightning/bare epoch-time ratios for one workload."""
    candidates = {
        "lightning": lightning_epoch(workload, activation),
        "bare": bare_epoch(workload, activation, metrics=True),
        "bare_loss_only": bare_epoch(workload, activation, metrics=False),
    }
    times = interleaved_timings(candidates, repeats, warmup=1)
    batches = f"{len(workload.train)} train + {len(workload.val)} val batches"
    print(f"{name} ({activation}, {batches}):")
    for baseline in ("bare", "bare_loss_only"):
        target = f"  target <= {TARGET_RATIO}" if baseline == "bare" else ""
        summary = ratio_summary(times, "lightning", baseline)
        print(f"  lightning epoch / {baseline} epoch: {summary}{target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload", nargs="+", choices=["digits", "cifar"], default=["digits", "cifar"]
    )
    parser.add_argument("--activation", default="dsrelu")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--cifar-train", type=int, default=640)
    parser.add_argument("--cifar-val", type=int, default=160)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_description()}")
    for name in args.workload:
        workload = (
            digits_workload()
            if name == "digits"
            else cifar_workload(args.cifar_train, args.cifar_val)
        )
        compare(name, workload, args.activation, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
