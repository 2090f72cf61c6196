"""Target: logging the claims' measurements (train_eval/* and gap/*, units/*, grad/*) costs
under 10% of an epoch on the digits config.

    python benchmarks/bench_claims.py [--epochs 4] [--repeats 2] [--threads 1]
                                      [--backbone resnet34] [--train_fraction 1.0]

Real fits of the digits config (DSReLU, CIFAR stem, batch 64, precise BN on with 200
batches, fold 0), alternately with the three callbacks off and on. Each epoch is timed from
one training-epoch start to the next (validation, precise BN and every callback's epoch-end
hooks included); the first epoch of each fit is dropped from the medians. In the runs with
them on, each callback's own hooks are timed too, so their share of those same epochs is
measured (on a shared, loaded machine the medians of separate fits are noisier).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from profiling import machine_description

from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.training import default_callbacks
from dsrelu_lightning.training.grad_flow import GradientFlow
from dsrelu_lightning.training.module import Classifier
from dsrelu_lightning.training.train_eval import TrainEval
from dsrelu_lightning.training.unit_stats import UnitStats

MEASURED = {TrainEval: "train_eval", UnitStats: "unit_stats", GradientFlow: "grad_flow"}
HOOKS = (
    "on_validation_epoch_end",
    "on_train_epoch_end",
    "on_train_epoch_start",
    "on_before_optimizer_step",
)


class EpochClock(Callback):
    """Wall time from each training-epoch start to the next (the last to the fit's end)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = time.perf_counter()

    def epochs(self) -> list[float]:
        """Every epoch's wall time, the first (warm-up) included."""
        marks = [*self.starts, self.end]
        return [b - a for a, b in itertools.pairwise(marks)]


def _timed(spent: dict[str, float], name: str, hook: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return hook(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - start

    return run


def fit(on: bool, args: argparse.Namespace) -> tuple[list[float], dict[str, float]]:
    """One fit: its epoch times (the first included) and each measured callback's seconds."""
    switch = {"enabled": on}
    callbacks = default_callbacks(
        precise_bn={"enabled": True}, train_eval=switch, unit_stats=switch, grad_flow=switch
    )
    spent: dict[str, float] = defaultdict(float)
    for callback in callbacks:
        name = MEASURED.get(type(callback))
        for hook in HOOKS if name and on else ():
            setattr(callback, hook, _timed(spent, name, getattr(callback, hook)))
    clock = EpochClock()
    model = Classifier(10, args.backbone, activation="dsrelu", in_channels=1, stem="cifar")
    data = DigitsDataModule(batch_size=64, train_fraction=args.train_fraction)
    with tempfile.TemporaryDirectory() as folder:
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            logger=TensorBoardLogger(folder, name="", version=""),
            callbacks=[clock, *callbacks],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(model, data)
    return clock.epochs(), dict(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--train_fraction", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_description(), f"threads {args.threads}", vars(args))
    epochs: dict[bool, list[float]] = {False: [], True: []}
    on_total = 0.0
    spent: dict[str, float] = defaultdict(float)
    for _ in range(args.repeats):
        for on in (False, True):
            times, costs = fit(on, args)
            epochs[on] += times[1:]  # the first epoch is warm-up
            on_total += sum(times) if on else 0.0
            for name, seconds in costs.items():
                spent[name] += seconds
            print(f"{'on ' if on else 'off'}: epochs " + ", ".join(f"{t:.2f}" for t in times))
    off, on = statistics.median(epochs[False]), statistics.median(epochs[True])
    counted = args.repeats * args.epochs  # every epoch's hooks, the first included
    print(f"median epoch: off {off:.2f} s, on {on:.2f} s: +{100 * (on / off - 1):.1f}%")
    for name, seconds in spent.items():
        per_epoch = seconds / counted
        print(f"  {name}: {per_epoch:.3f} s per epoch = {100 * per_epoch / off:.1f}% of an epoch")
    total = sum(spent.values()) / counted
    print(f"  all three (timed hooks): {total:.3f} s per epoch = {100 * total / off:.1f}%")
    # In the same epochs, robust to a machine whose load changes between fits:
    share = sum(spent.values()) / on_total
    print(
        f"  share of the on-fits' own epochs spent in the three: {100 * share:.1f}%, i.e. "
        f"+{100 * share / (1 - share):.1f}% over the rest of those epochs"
    )


if __name__ == "__main__":
    main()
