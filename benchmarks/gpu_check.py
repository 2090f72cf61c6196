"""GPU check (one CUDA device, about 5 minutes): DSReLU's op and training-step ratios on
CUDA, float32 and bf16, in one run.

    python benchmarks/gpu_check.py              # on a machine with CUDA (e.g. an H200)
    python benchmarks/gpu_check.py --dry-run    # the same code path on CPU, tiny sizes

1. Op: DSReLU forward+backward vs ``F.leaky_relu`` (float32 and bf16, contiguous and
   channels_last, 64x64x32x32 and 256x64x56x56), interleaved, CUDA-synchronised, with
   the bytes each saves for backward (``bench_op.op_ratio``).
2. Steps: DSReLU vs ReLU training steps of torchvision's resnet34, resnet18 and
   mobilenet_v3_small (3x32x32, 100 classes; batches of 32 and 256), float32 and bf16
   autocast, with each candidate's slowest step / median from the 3rd step on
   (``bench_step.compare_network``).
3. ``--epochs``: the earlier epoch-time check (``Trainer.fit`` of ``ResNetClassifier``,
   eager and ``torch.compile``'d, on CIFAR-100-sized synthetic data); off by default.

The first call of a kind (kernel builds, cuDNN autotuning) is never timed.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_op import CASES, op_ratio
from bench_step import TORCHVISION, compare_network
from profiling import interleaved_timings, machine_description, ratio_summary


def op_check(device: torch.device, shapes: list[list[int]], repeats: int) -> None:
    for shape in shapes:
        for dtype, layout in CASES:
            op_ratio(shape, dtype, layout, device, repeats)


def step_check(device: torch.device, batches: list[int], networks: list[str], repeats: int) -> None:
    for bf16 in (False, True):
        for batch in batches:
            for name in networks:
                compare_network(name, device, repeats, bf16=bf16, batch=batch)


def epoch_check(accelerator: str, train: int, val: int, rounds: int) -> None:
    from bench_fit import cifar_workload, lightning_epoch

    workload = cifar_workload(train, val)
    candidates = {
        f"{act}_{mode}": lightning_epoch(workload, act, accelerator, compile=mode == "compiled")
        for mode in ("eager", "compiled")
        for act in ("relu", "dsrelu")
    }
    start = time.perf_counter()
    times = interleaved_timings(candidates, rounds, warmup=1)
    print(f"epochs: {rounds} timed rounds (+1 warm-up) in {time.perf_counter() - start:.0f} s")
    for mode in ("eager", "compiled"):
        ratio = ratio_summary(times, f"dsrelu_{mode}", f"relu_{mode}")
        print(f"  {mode}: DSReLU epoch / ReLU epoch {ratio}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--op-repeats", type=int, default=50)
    parser.add_argument("--step-repeats", type=int, default=30)
    parser.add_argument("--epochs", action="store_true", help="also the epoch-time check")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.dry_run:
        device, accelerator = torch.device("cpu"), "cpu"
        shapes, batches, networks = [[8, 16, 32, 32]], [4], ["resnet18"]
        args.op_repeats = args.step_repeats = 3
        train, val, rounds = 64, 32, 1
    elif torch.cuda.is_available():
        device, accelerator = torch.device("cuda"), "gpu"
        shapes, batches, networks = [[64, 64, 32, 32], [256, 64, 56, 56]], [32, 256], TORCHVISION
        train, val, rounds = 6_400, 1_600, 3
        torch.backends.cudnn.benchmark = True
    else:
        parser.error("no CUDA device: run on a GPU machine, or use --dry-run")
    print(f"machine: {machine_description()}")
    op_check(device, shapes, args.op_repeats)
    step_check(device, batches, list(networks), args.step_repeats)
    if args.epochs:
        epoch_check(accelerator, train, val, rounds)
    print(f"gpu_check done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
