"""Target 3: torch.compile with DSReLU: graph breaks and recompiles as progress changes.

    python benchmarks/bench_compile.py [--backend inductor] [--steps-per-value 2]
                                       [--time-repeats 10] [--fit-epochs 3]

1. ``step``: a ResNet-34 (digits workload: batch 64, 1x8x8, 3x3 stem) compiled with
   ``torch.compile``; training steps at progress 0, 0.1, ..., 1.0 set through
   ``DSReLU.set_progress``. Prints dynamo's counters: frames compiled, graph breaks,
   recompilations (with their guard-failure reasons). Then the compiled DSReLU step is
   timed round-robin against the compiled ReLU step and the eager DSReLU step.
2. ``fit``: ``ResNetClassifier(compile=True)`` in a Lightning fit of ``--fit-epochs``
   short epochs with ``SlopeScheduler`` (progress changes every epoch), same counters.
   Validation (eval mode, no grad) is a second graph by design, not a recompilation
   caused by DSReLU; guard failures are listed so the reader can check.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter

import lightning.pytorch as pl
import torch
import torch._dynamo
from bench_step import WORKLOADS, training_step
from profiling import interleaved_timings, machine_description, ratio_summary
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters, guard_failures

from dsrelu_lightning import ResNetClassifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn.activations import dsrelu_modules


def _reset() -> None:
    torch._dynamo.reset()
    counters.clear()
    guard_failures.clear()


def _report(label: str, frames: int) -> tuple[int, int]:
    breaks = sum(counters["graph_break"].values())
    reasons = Counter(reason for failures in guard_failures.values() for reason in failures)
    recompiles = sum(reasons.values())
    print(f"{label}: frames compiled {frames}, graph breaks {breaks}, recompilations {recompiles}")
    for reason, count in counters["graph_break"].items():
        print(f"    graph break x{count}: {reason}")
    for reason, count in reasons.items():
        print(f"    recompiled x{count}: {reason}")
    return breaks, recompiles


def step_check(backend: str, steps_per_value: int, repeats: int) -> None:
    workload = WORKLOADS["digits"]
    device = torch.device("cpu")
    _reset()
    counter = CompileCounterWithBackend(backend)
    start = time.perf_counter()
    step, model = training_step("dsrelu", workload, device, compile_backend=counter)
    values = [i / 10 for i in range(11)]
    for t in values:
        for layer in dsrelu_modules(model):
            layer.set_progress(t)
        for _ in range(steps_per_value):
            step()
    print(
        f"step ({backend}): {len(values)} progress values x {steps_per_value} steps, "
        f"{time.perf_counter() - start:.1f} s including compilation"
    )
    breaks, recompiles = _report("  DSReLU ResNet-34", counter.frame_count)
    print(
        f"  target: zero graph breaks ({breaks == 0}), no recompilation across progress "
        f"values ({recompiles == 0 and counter.frame_count == 1})"
    )
    if repeats:
        candidates = {
            "compiled_relu": training_step("relu", workload, device, compile_backend=backend)[0],
            "compiled_dsrelu": step,
            "eager_dsrelu": training_step("dsrelu", workload, device)[0],
        }
        times = interleaved_timings(candidates, repeats, warmup=2)
        print(
            "  compiled DSReLU step / compiled ReLU step: "
            f"{ratio_summary(times, 'compiled_dsrelu', 'compiled_relu')}"
        )
        print(
            "  compiled DSReLU step / eager DSReLU step: "
            f"{ratio_summary(times, 'compiled_dsrelu', 'eager_dsrelu')}"
        )


def fit_check(epochs: int) -> None:
    _reset()
    module = ResNetClassifier(10, "dsrelu", in_channels=1, stem="cifar", compile=True)
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=epochs,
            limit_train_batches=4,
            limit_val_batches=2,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
            callbacks=[SlopeScheduler()],
        )
        start = time.perf_counter()
        trainer.fit(module, DigitsDataModule(batch_size=64))
    slopes = sorted({round(float(m.progress), 3) for m in dsrelu_modules(module)})
    print(
        f"fit (compile=True, inductor): {epochs} epochs in {time.perf_counter() - start:.1f} s "
        f"including compilation; final progress {slopes}"
    )
    frames = counters["stats"]["unique_graphs"]
    breaks, _ = _report("  ResNetClassifier", frames)
    print(f"  target: zero graph breaks ({breaks == 0}); frames = train + eval graphs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--steps-per-value", type=int, default=1)
    parser.add_argument("--time-repeats", type=int, default=10, help="0: skip the timing")
    parser.add_argument("--fit-epochs", type=int, default=3, help="0: skip the fit check")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_description()}")
    step_check(args.backend, args.steps_per_value, args.time_repeats)
    if args.fit_epochs:
        fit_check(args.fit_epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
