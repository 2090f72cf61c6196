"""Target 1: DSReLU forward+backward vs F.leaky_relu, and the bytes each saves for backward.

    python benchmarks/bench_op.py [--shape 64 64 32 32] [--repeats 60] [--threads N]

Times ``y = act(x); y.backward(g)`` in eager mode, as users call the module, round-robin
against ``F.leaky_relu(x, 0.01)`` and prints per-round ratios (median, min, max). The
first DSReLU call (kernel compilation) is reported separately and not timed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dsrelu_lightning import DSReLU
from dsrelu_lightning.nn.dsrelu_kernel import dsrelu_formula, set_kernel_mode
from dsrelu_lightning.profiling import (
    interleaved_timings,
    machine_description,
    ratio_summary,
    saved_tensor_bytes,
)

TARGET_RATIO = 1.25


def fwd_bwd(fn: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> Callable[[], None]:
    """A closure running ``fn(x).backward(grad)`` (clearing ``x.grad`` first)."""

    def step() -> None:
        x.grad = None
        fn(x).backward(grad)

    return step


def _eager_mode(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with DSReLU's eager kernel (the fallback where nothing compiles)."""

    def run() -> None:
        set_kernel_mode("eager")
        try:
            step()
        finally:
            set_kernel_mode("auto")

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 32, 32])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(*args.shape, device=args.device, requires_grad=True)
    grad = torch.randn_like(x)
    dsrelu = DSReLU().to(args.device)
    dsrelu.set_progress(0.3)
    slope = torch.tensor(dsrelu.slope, device=args.device)

    def leaky(t: Tensor) -> Tensor:
        return F.leaky_relu(t, 0.01)

    def where_formula(t: Tensor) -> Tensor:  # the plain formula, autograd as usual
        return dsrelu_formula(t, slope, 1.0)

    start = time.perf_counter()
    fwd_bwd(dsrelu, x, grad)()
    first_call = time.perf_counter() - start

    candidates = {
        "leaky_relu": fwd_bwd(leaky, x, grad),
        "dsrelu": fwd_bwd(dsrelu, x, grad),
        "plain_formula": fwd_bwd(where_formula, x, grad),
        "eager_kernel": _eager_mode(fwd_bwd(dsrelu, x, grad)),
    }
    times = interleaved_timings(candidates, args.repeats, warmup=2)
    print(f"machine: {machine_description()}")
    print(
        f"input: {tuple(args.shape)} float32 on {args.device}; first DSReLU call "
        f"(kernel compile or cache load) {first_call:.2f} s, not timed"
    )
    ratio = ratio_summary(times, "dsrelu", "leaky_relu")
    print(f"DSReLU fwd+bwd / leaky_relu: {ratio}  target <= {TARGET_RATIO}")
    print(
        f"plain where-formula fwd+bwd / leaky_relu: "
        f"{ratio_summary(times, 'plain_formula', 'leaky_relu')}"
    )
    print(
        f"DSReLU eager kernel (no compiler) fwd+bwd / leaky_relu: "
        f"{ratio_summary(times, 'eager_kernel', 'leaky_relu')}"
    )
    saved = {
        name: saved_tensor_bytes(fn, x)
        for name, fn in [
            ("dsrelu", dsrelu),
            ("leaky_relu", leaky),
            ("plain_formula", where_formula),
        ]
    }
    print(
        "saved for backward (bytes): "
        + ", ".join(f"{k} {v:,}" for k, v in saved.items())
        + f"  target dsrelu <= leaky_relu: {saved['dsrelu'] <= saved['leaky_relu']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
