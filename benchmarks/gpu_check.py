"""GPU check (one CUDA device, fits in about 5 minutes): DSReLU vs ReLU epoch time, eager
and ``torch.compile``'d, on CIFAR-100-sized synthetic data, and the op ratio on the GPU.

    python benchmarks/gpu_check.py                 # on a machine with CUDA (e.g. an H200)
    python benchmarks/gpu_check.py --dry-run       # the same code path on CPU, tiny sizes

1. Op: DSReLU forward+backward vs ``F.leaky_relu`` (float32 and bf16, 64x64x32x32 and
   256x64x56x56), interleaved, CUDA-synchronised; bytes saved for backward.
2. Epochs: ``Trainer.fit`` of ``ResNetClassifier`` (paper setting: ImageNet stem, batch
   32, Adam) on ``--train`` + ``--val`` synthetic 3x32x32 images in 100 classes, one epoch
   per round, rounds interleaved over {relu, dsrelu} x {eager, compiled}; the first
   round (cuDNN autotuning, compilation) is not counted. Prints the DSReLU/ReLU epoch-time
   ratio (median, min, max) for eager and compiled, and compiled/eager per activation.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from bench_fit import cifar_workload, lightning_epoch
from bench_op import fwd_bwd

from dsrelu_lightning import DSReLU
from dsrelu_lightning.profiling import (
    interleaved_timings,
    machine_description,
    ratio_summary,
    saved_tensor_bytes,
)


def op_check(device: torch.device, shapes: list[tuple[int, ...]], repeats: int) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        for shape in shapes:
            x = torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
            grad = torch.randn_like(x)
            dsrelu = DSReLU().to(device)
            dsrelu.set_progress(0.3)

            def leaky(t: torch.Tensor) -> torch.Tensor:
                return F.leaky_relu(t, 0.01)

            start = time.perf_counter()
            fwd_bwd(dsrelu, x, grad)()
            first = time.perf_counter() - start
            times = interleaved_timings(
                {"leaky_relu": fwd_bwd(leaky, x, grad), "dsrelu": fwd_bwd(dsrelu, x, grad)},
                repeats,
                warmup=3,
            )
            saved = (saved_tensor_bytes(dsrelu, x), saved_tensor_bytes(leaky, x))
            print(
                f"op {str(dtype)[6:]} {shape}: DSReLU/leaky_relu fwd+bwd "
                f"{ratio_summary(times, 'dsrelu', 'leaky_relu')}; saved bytes "
                f"{saved[0]:,} vs {saved[1]:,}; first call {first:.2f} s"
            )


def epoch_check(
    accelerator: str, train: int, val: int, rounds: int, precision: str, compiled: bool
) -> None:
    workload = cifar_workload(train, val)
    modes = ("eager", "compiled") if compiled else ("eager",)
    candidates = {
        f"{act}_{mode}": lightning_epoch(
            workload, act, accelerator, compile=mode == "compiled", precision=precision
        )
        for mode in modes
        for act in ("relu", "dsrelu")
    }
    start = time.perf_counter()
    times = interleaved_timings(candidates, rounds, warmup=1)
    print(
        f"epochs: {len(workload.train)} train + {len(workload.val)} val batches of 32, "
        f"precision {precision}, {rounds} timed rounds (+1 warm-up) in "
        f"{time.perf_counter() - start:.0f} s"
    )
    for name, values in times.items():
        print(f"    {name}: median epoch {sorted(values)[len(values) // 2]:.2f} s")
    for mode in modes:
        print(
            f"  {mode}: DSReLU epoch / ReLU epoch "
            f"{ratio_summary(times, f'dsrelu_{mode}', f'relu_{mode}')}"
        )
    if compiled:
        for act in ("relu", "dsrelu"):
            print(
                f"  {act}: compiled epoch / eager epoch "
                f"{ratio_summary(times, f'{act}_compiled', f'{act}_eager')}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    parser.add_argument("--train", type=int, default=6_400, help="training images")
    parser.add_argument("--val", type=int, default=1_600, help="validation images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--op-repeats", type=int, default=50)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, accelerator = torch.device("cpu"), "cpu"
        shapes: list[tuple[int, ...]] = [(8, 16, 32, 32)]
        args.train, args.val, args.rounds, args.op_repeats = 64, 32, 1, 3
    elif torch.cuda.is_available():
        device, accelerator = torch.device("cuda"), "gpu"
        shapes = [(64, 64, 32, 32), (256, 64, 56, 56)]
        torch.backends.cudnn.benchmark = True
    else:
        parser.error("no CUDA device: run on a GPU machine, or use --dry-run")
    print(f"machine: {machine_description()}")
    op_check(device, shapes, args.op_repeats)
    epoch_check(accelerator, args.train, args.val, args.rounds, args.precision, not args.no_compile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
