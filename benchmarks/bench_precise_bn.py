"""Targets: precise BN at 200 batches adds <= 10% to a CIFAR-sized epoch; the staleness
monitor <= 1%; eval-consistent recalibration costs no more than the classic one.

    python benchmarks/bench_precise_bn.py [--repeats 5] [--threads 1] [--chunk 8]

A real 1,250-step epoch is far too slow on a small CPU, so the per-batch costs are timed
interleaved on ResNet-34 with the 3x3 CIFAR stem, DSReLU, 100 classes, batch 32 of 3x32x32
(random data: the cost does not depend on values):

- ``train``: a training step (forward, cross-entropy, backward, fused Adam step);
- ``recalibrate``: one batch of the classic recalibration (update_bn: no grad, train mode);
- ``eval_consistent``: ``--chunk`` batches of the eval-consistent one (one eval-mode forward
  of all of them at once, each layer filled in just before it normalises), per batch;
- ``eval``: a no-grad eval-mode forward (a validation batch; ``val_ema/*`` adds one per batch);
- ``monitor``: the staleness monitor's once-per-epoch eval-mode batch with its hooks.

The epoch-level ratios for a CIFAR-100 fold (S = 40,000 / 32 = 1,250 training steps,
V = 10,000 / 32 = 313 validation batches, N = 200 recalibration batches)::

    epoch            = S * train + V * eval          (training plus its validation)
    precise BN       = N * eval_consistent / epoch   (classic: N * recalibrate / epoch)
    val_ema/*        = V * eval / epoch               (optional: --precise_bn.log_ema false)
    monitor          = monitor / epoch                (one batch per epoch)

using each candidate's median time; the per-round ratios to ``train`` are printed too. The
eval-consistent recalibration holds the activations of all N batches at once (6,400 images
here): its memory, not its time, is what ``--precise_bn.num_batches`` should be sized by.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from profiling import interleaved_timings, machine_description, ratio_summary

from dsrelu_lightning.nn.activations import build_activation
from dsrelu_lightning.nn.resnet import build_resnet34
from dsrelu_lightning.training.bn_staleness import eval_mode_staleness
from dsrelu_lightning.training.bn_stats import (
    batch_norms,
    recalibrate,
    recalibrate_eval_consistent,
)

TRAIN_STEPS, VAL_BATCHES, RECALIBRATION_BATCHES = 1250, 313, 200
PRECISE_BN_TARGET, MONITOR_TARGET = 0.10, 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=8, help="batches per eval-consistent pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_resnet34(100, lambda: build_activation("dsrelu"), 3, "cifar")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    batches = [torch.randn(32, 3, 32, 32) for _ in range(args.chunk)]
    inputs, targets = batches[0], torch.randint(0, 100, (32,))
    layers = batch_norms(model)

    def train() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    def recalibration_batch() -> None:
        recalibrate(model, [inputs])

    def eval_consistent() -> None:
        recalibrate_eval_consistent(model, batches)

    def evaluate() -> None:
        model.eval()
        with torch.no_grad():
            model(inputs)

    def monitor() -> None:
        assert eval_mode_staleness(model, inputs, model, layers) is not None

    candidates = {
        "train": train,
        "recalibrate": recalibration_batch,
        "eval_consistent": eval_consistent,
        "eval": evaluate,
        "monitor": monitor,
    }
    times = interleaved_timings(candidates, repeats=args.repeats, warmup=1)
    times["eval_consistent"] = [t / args.chunk for t in times["eval_consistent"]]
    print(f"machine: {machine_description()}")
    for name in ("recalibrate", "eval_consistent", "eval", "monitor"):
        per = " (per batch)" if name == "eval_consistent" else ""
        print(f"{name:>15} / train{per}: {ratio_summary(times, name, 'train')}")
    print(
        f"eval_consistent / recalibrate: {ratio_summary(times, 'eval_consistent', 'recalibrate')}"
    )
    median = {name: statistics.median(values) for name, values in times.items()}
    epoch = TRAIN_STEPS * median["train"] + VAL_BATCHES * median["eval"]
    classic = RECALIBRATION_BATCHES * median["recalibrate"] / epoch
    precise = RECALIBRATION_BATCHES * median["eval_consistent"] / epoch
    ema = VAL_BATCHES * median["eval"] / epoch
    watched = median["monitor"] / epoch
    print(f"epoch (S={TRAIN_STEPS} steps + V={VAL_BATCHES} val batches): {epoch:.0f} s here")
    verdict = "met" if precise <= PRECISE_BN_TARGET else "NOT met"
    print(
        f"precise BN, {RECALIBRATION_BATCHES} batches, eval-consistent: +{precise:.2%} of the "
        f"epoch ({verdict}); classic: +{classic:.2%}"
    )
    print(f"val_ema/* (one more validation pass): +{ema:.2%} of the epoch")
    print(f"precise BN with val_ema/*: +{precise + ema:.2%} of the epoch")
    verdict = "met" if watched <= MONITOR_TARGET else "NOT met"
    print(f"staleness monitor, one eval-mode batch: +{watched:.4%} of the epoch ({verdict})")


if __name__ == "__main__":
    main()
