"""Target 1: DSReLU forward+backward vs F.leaky_relu, and the bytes each saves for backward.

    python benchmarks/bench_op.py [--shape 64 64 32 32] [--repeats 60] [--threads N]
                                  [--candidates dsrelu dsrelu_fused relu plain_formula]
                                  [--best-of K] [--inputs N] [--default-malloc]

Times ``y = act(x); y.backward(g)`` in eager mode, as users call the module, round-robin
against ``F.leaky_relu(x, 0.01)`` on the same tensors, for float32 and bfloat16 inputs,
contiguous and channels_last; prints per-round ratios (median, min, max; target <= 1.05)
and the bytes saved for backward. Candidates: ``dsrelu`` (the module on its default eager
kernels; always timed), ``dsrelu_fused`` (the same module with the opt-in
``DSRELU_KERNEL=fused`` kernels, built before timing), ``relu`` (``F.relu``) and
``plain_formula`` (the formula under autograd). ``--best-of K`` runs each candidate K
times per round and keeps the fastest (for a machine that other jobs share).

Each call takes the next of ``--inputs`` (4) input tensors, as a network hands every
activation a fresh tensor (one tensor reused by every call would leave LeakyReLU's input
in cache for its backward, which no network sees). As in ``bench_step.py``, freed memory
stays in the process for every candidate (``profiling.steady_malloc``) unless
``--default-malloc``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_step import in_kernel_mode
from profiling import (
    RatioSummary,
    interleaved_timings,
    machine_description,
    ratio_summary,
    saved_tensor_bytes,
    steady_malloc,
)
from torch import Tensor

from dsrelu_lightning import DSReLU
from dsrelu_lightning.nn.dsrelu_kernel import dsrelu_formula, warm_up

TARGET_RATIO = 1.05
EXTRA_CANDIDATES = ("dsrelu_fused", "relu", "plain_formula")
CASES = [
    (torch.float32, torch.contiguous_format),
    (torch.float32, torch.channels_last),
    (torch.bfloat16, torch.contiguous_format),
    (torch.bfloat16, torch.channels_last),
]


def fwd_bwd(fn: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Callable[[], None]:
    """A closure running ``fn(x).backward(grad)`` (clearing ``x.grad`` first)."""
    return fwd_bwd_rotating(fn, [x], [grad])


def fwd_bwd_rotating(
    fn: Callable[[Tensor], Tensor], xs: list[Tensor], grads: list[Tensor]
) -> Callable[[], None]:
    """A closure running ``fn(x).backward(grad)`` on the next of ``zip(xs, grads)``."""
    pairs = list(zip(xs, grads, strict=True))
    position = [0]

    def step() -> None:
        x, grad = pairs[position[0]]
        position[0] = (position[0] + 1) % len(pairs)
        x.grad = None
        fn(x).backward(grad)

    return step


def best_of(step: Callable[[], None], count: int) -> Callable[[], float | None]:
    """``step`` run ``count`` times per call, reporting the fastest (``count`` 1: as is)."""
    if count == 1:
        return step

    def run() -> float:
        seconds = []
        for _ in range(count):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        return min(seconds)

    return run


def _leaky(t: Tensor) -> Tensor:
    return F.leaky_relu(t, 0.01)


def op_ratio(
    shape: list[int],
    dtype: torch.dtype,
    layout: torch.memory_format,
    device: torch.device,
    repeats: int,
    extra: tuple[str, ...] = (),
    count: int = 1,
    inputs: int = 4,
) -> RatioSummary:
    """Print and return DSReLU's fwd+bwd / leaky_relu's for one input kind, each call on
    the next of ``inputs`` input/gradient pairs (the same sequence for every candidate)."""
    torch.manual_seed(0)
    xs = [
        torch.randn(*shape, device=device, dtype=dtype).contiguous(memory_format=layout)
        for _ in range(inputs)
    ]
    xs = [x.requires_grad_(True) for x in xs]
    grads = [torch.randn_like(x) for x in xs]
    dsrelu = DSReLU().to(device)
    dsrelu.set_progress(0.3)
    start = time.perf_counter()
    in_kernel_mode(fwd_bwd(dsrelu, xs[0], grads[0]), "eager")()
    first_call = time.perf_counter() - start

    def candidate(fn: Callable[[Tensor], Tensor]) -> Callable[[], None]:
        return fwd_bwd_rotating(fn, xs, grads)

    candidates = {
        "leaky_relu": candidate(_leaky),
        "dsrelu": in_kernel_mode(candidate(dsrelu), "eager"),
    }
    if "dsrelu_fused" in extra:
        in_kernel_mode(lambda: warm_up(device, dtype), "fused")()
        candidates["dsrelu_fused"] = in_kernel_mode(candidate(dsrelu), "fused")
    if "relu" in extra:
        candidates["relu"] = candidate(F.relu)
    if "plain_formula" in extra:
        slope = torch.tensor(dsrelu.slope, device=device)
        candidates["plain_formula"] = candidate(lambda t: dsrelu_formula(t, slope, 1.0))
    rounds = {name: best_of(step, count) for name, step in candidates.items()}
    times = interleaved_timings(rounds, repeats, warmup=2)
    ratio = ratio_summary(times, "dsrelu", "leaky_relu")
    kind = f"{str(dtype).removeprefix('torch.')} {str(layout).removeprefix('torch.')}"
    saved = saved_tensor_bytes(dsrelu, xs[0]), saved_tensor_bytes(_leaky, xs[0])
    how = f"inputs in turn: {inputs}" + (f"; fastest of {count} per round" if count > 1 else "")
    print(f"{kind} {tuple(shape)} ({how}): DSReLU fwd+bwd / leaky_relu: {ratio}")
    print("    (DSReLU on its default eager kernels)")
    print(f"    target <= {TARGET_RATIO}")
    print(
        f"    saved for backward: DSReLU {saved[0]:,} B, leaky_relu {saved[1]:,} B "
        f"(<= leaky_relu's + its 4 B slope: {saved[0] <= saved[1] + 4}); first DSReLU call "
        f"{first_call:.2f} s, not timed"
    )
    for name in extra:
        print(f"    {name} / leaky_relu: {ratio_summary(times, name, 'leaky_relu')}")
    return ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 32, 32])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--candidates",
        nargs="*",
        choices=["dsrelu", *EXTRA_CANDIDATES],
        default=["dsrelu"],
        help="what to time against leaky_relu (dsrelu is always timed)",
    )
    parser.add_argument("--best-of", type=int, default=1, help="runs per round, fastest kept")
    parser.add_argument("--inputs", type=int, default=4, help="input tensors used in turn")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's trimming heap")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {machine_description()}")
    print(f"allocator: {'glibc default' if args.default_malloc else steady_malloc()}")
    for dtype, layout in CASES:
        if layout == torch.channels_last and len(args.shape) != 4:
            continue  # channels_last is a 4-D layout
        extra = tuple(name for name in EXTRA_CANDIDATES if name in args.candidates)
        op_ratio(args.shape, dtype, layout, device, args.repeats, extra, args.best_of, args.inputs)
    print(f"machine after: {machine_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
