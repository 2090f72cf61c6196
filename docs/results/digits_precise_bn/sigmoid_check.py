"""Why Sigmoid scored chance with precise BN, measured on one checkpoint.

    python -m dsrelu_lightning fit --config configs/digits.yaml --model.activation sigmoid \\
        --trainer.max_epochs 8 --precise_bn.eval_consistent false --trainer.default_root_dir RUN
    OMP_NUM_THREADS=1 python docs/results/digits_precise_bn/sigmoid_check.py RUN

Scores the checkpoint's weights on fold 0's validation set in eval mode with BatchNorm
statistics from: the checkpoint (classic train-mode precise BN), BN in train mode (each batch
its own statistics), exact eval-consistent recalibration (layer by layer in forward order,
each on the inputs it receives in eval mode with the layers before it already done), the
one-pass eval-consistent recalibration precise BN now uses, and k simultaneous eval-mode
refinement passes over the classic estimate. Also prints the staleness monitor's eval-mode
figure (the layer furthest off) for the checkpoint's and the recalibrated statistics.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

from dsrelu_lightning import Classifier
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.training.bn_staleness import eval_mode_staleness
from dsrelu_lightning.training.bn_stats import (
    batch_norms,
    recalibrate,
    recalibrate_eval_consistent,
)


def accuracy(model: nn.Module, batches: list, train_mode_bn: bool = False) -> float:
    model = copy.deepcopy(model).eval()
    for layer in batch_norms(model).values():
        layer.train(train_mode_bn)
        layer.momentum = 0.0
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


def eval_pass(model: nn.Module, layers: list, batches: list) -> None:
    """One eval-mode pass: each of ``layers`` gets the mean/variance of its inputs."""
    sums = {layer: [0.0, 0.0] for layer in layers}

    def measure(layer: nn.Module, args: tuple) -> None:
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        sums[layer][0] = sums[layer][0] + x.mean(dims)
        sums[layer][1] = sums[layer][1] + x.var(dims, unbiased=True)

    hooks = [layer.register_forward_pre_hook(measure) for layer in layers]
    with torch.no_grad():
        for x, _ in batches:
            model.eval()(x)
    for hook in hooks:
        hook.remove()
    for layer in layers:
        layer.running_mean.copy_(sums[layer][0] / len(batches))
        layer.running_var.copy_(sums[layer][1] / len(batches))


def worst(model: nn.Module, batch: tuple) -> str:
    name, ratio, shift = eval_mode_staleness(model, batch[0], model, batch_norms(model)).worst()
    return f"{name}: variance ratio {ratio:.3g}, mean shift {shift:.3g} batch stds"


def main(run: str) -> None:
    torch.set_num_threads(1)
    checkpoint = sorted(Path(run).glob("**/last.ckpt"))[0]
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    train, val = list(data.train_dataloader()), list(data.val_dataloader())
    print(f"checkpoint {checkpoint}")
    print(f"checkpoint's statistics (classic precise BN): {accuracy(model, val):.4f}")
    print(f"  monitor, eval mode: {worst(model, train[0])}")
    print(f"BatchNorm in train mode (batch statistics): {accuracy(model, val, True):.4f}")
    classic = copy.deepcopy(model)
    recalibrate(classic, [x for x, _ in train])
    print(f"classic precise BN, recomputed: {accuracy(classic, val):.4f}")
    order: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda m, _: order.append(m))
             for m in batch_norms(classic).values()]  # fmt: skip
    with torch.no_grad():
        classic.eval()(train[0][0])
    for hook in hooks:
        hook.remove()
    exact = copy.deepcopy(classic)
    by_name = {name: m for name, m in classic.named_modules()}
    names = [next(n for n, m in by_name.items() if m is layer) for layer in order]
    start = time.perf_counter()
    for name in names:
        eval_pass(exact, [dict(exact.named_modules())[name]], train)
    seconds = time.perf_counter() - start
    print(f"exact eval-consistent, layer by layer ({len(names)} passes, {seconds:.0f} s): "
          f"{accuracy(exact, val):.4f}")  # fmt: skip
    one = copy.deepcopy(model)
    start = time.perf_counter()
    recalibrate_eval_consistent(one, train, lambda batch: one(batch[0]))
    seconds = time.perf_counter() - start
    gap = max(
        float(((a.running_mean - b.running_mean).abs() / b.running_var.sqrt()).max())
        for a, b in zip(batch_norms(one).values(), batch_norms(exact).values(), strict=True)
    )
    print(f"one-pass eval-consistent ({seconds:.1f} s): {accuracy(one, val):.4f}; "
          f"max |mean - exact| {gap:.2g} standard deviations")  # fmt: skip
    print(f"  monitor, eval mode: {worst(one, train[0])}")
    for passes in (1, 2, 3):
        refined = copy.deepcopy(classic)
        for _ in range(passes):
            eval_pass(refined, list(batch_norms(refined).values()), train)
        print(f"classic + {passes} simultaneous eval pass(es): {accuracy(refined, val):.4f}")


if __name__ == "__main__":
    main(sys.argv[1])
