"""Targets: precise BN at 200 batches adds <= 10% to a CIFAR-sized epoch; the staleness
monitor <= 1%.

    python benchmarks/bench_precise_bn.py [--repeats 5] [--threads 1]

A real 1,250-step epoch is far too slow on a small CPU, so the per-batch costs are timed
interleaved on ResNet-34 with the 3x3 CIFAR stem, DSReLU, 100 classes, batch 32 of 3x32x32
(random data: the cost does not depend on values):

- ``train``: a training step (forward, cross-entropy, backward, fused Adam step);
- ``train_hooked``: the same step with the monitor's hooks armed (its once-per-epoch batch);
- ``recalibrate``: one batch of ``recalibrate`` (update_bn: no grad, train mode, momentum None);
- ``eval``: a no-grad eval-mode forward (a validation batch; ``val_ema/*`` adds one per batch).

The epoch-level ratios for a CIFAR-100 fold (S = 40,000 / 32 = 1,250 training steps,
V = 10,000 / 32 = 313 validation batches, N = 200 recalibration batches)::

    epoch            = S * train + V * eval          (training plus its validation)
    precise BN       = N * recalibrate / epoch
    val_ema/*        = V * eval / epoch               (optional: --precise_bn.log_ema false)
    monitor          = (train_hooked - train) / epoch (one hooked step per epoch; also
                       printed with the worst round's hooked/train ratio, a bound)

using each candidate's median time; the per-round ratios to ``train`` are printed too.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from dsrelu_lightning.nn.activations import build_activation
from dsrelu_lightning.nn.resnet import build_resnet34
from dsrelu_lightning.profiling import interleaved_timings, machine_description, ratio_summary
from dsrelu_lightning.training.bn_staleness import BNStalenessMonitor
from dsrelu_lightning.training.bn_stats import batch_norms, recalibrate

TRAIN_STEPS, VAL_BATCHES, RECALIBRATION_BATCHES = 1250, 313, 200
PRECISE_BN_TARGET, MONITOR_TARGET = 0.10, 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_resnet34(100, lambda: build_activation("dsrelu"), 3, "cifar")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    inputs, targets = torch.randn(32, 3, 32, 32), torch.randint(0, 100, (32,))
    for layer in batch_norms(model).values():
        layer.num_batches_tracked.fill_(1000)  # settled statistics: the monitor hooks all
    monitor = BNStalenessMonitor()

    def train() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    def train_hooked() -> None:
        model.train()
        monitor.arm(model)
        train()
        measured = monitor.disarm()
        assert measured is not None and len(measured[0]) == len(batch_norms(model))
        float(measured[1].max())  # the monitor's one host read

    def recalibration_batch() -> None:
        recalibrate(model, [inputs])
        for layer in batch_norms(model).values():
            layer.num_batches_tracked.fill_(1000)

    def evaluate() -> None:
        model.eval()
        with torch.no_grad():
            model(inputs)

    candidates = {
        "train": train,
        "train_hooked": train_hooked,
        "recalibrate": recalibration_batch,
        "eval": evaluate,
    }
    times = interleaved_timings(candidates, repeats=args.repeats, warmup=1)
    print(f"machine: {machine_description()}")
    for name in ("train_hooked", "recalibrate", "eval"):
        print(f"{name:>12} / train: {ratio_summary(times, name, 'train')}")
    median = {name: statistics.median(values) for name, values in times.items()}
    epoch = TRAIN_STEPS * median["train"] + VAL_BATCHES * median["eval"]
    precise = RECALIBRATION_BATCHES * median["recalibrate"] / epoch
    ema = VAL_BATCHES * median["eval"] / epoch
    hooked = max(median["train_hooked"] - median["train"], 0.0) / epoch
    worst_round = ratio_summary(times, "train_hooked", "train").maximum
    hooked_bound = max(worst_round - 1.0, 0.0) * median["train"] / epoch
    print(f"epoch (S={TRAIN_STEPS} steps + V={VAL_BATCHES} val batches): {epoch:.0f} s here")
    verdict = "met" if precise <= PRECISE_BN_TARGET else "NOT met"
    print(f"precise BN, {RECALIBRATION_BATCHES} batches: +{precise:.2%} of the epoch ({verdict})")
    print(f"val_ema/* (one more validation pass): +{ema:.2%} of the epoch")
    print(f"precise BN with val_ema/*: +{precise + ema:.2%} of the epoch")
    verdict = "met" if hooked <= MONITOR_TARGET else "NOT met"
    print(
        f"staleness monitor, one hooked step: +{hooked:.4%} of the epoch ({verdict}); "
        f"at the worst round's ratio +{hooked_bound:.4%}"
    )


if __name__ == "__main__":
    main()
