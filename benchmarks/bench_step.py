"""Target 3: a training step with DSReLU vs the same step with ReLU, per network; stalls.

    python benchmarks/bench_step.py [--network resnet34 resnet18 mobilenet_v3_small]
                                    [--repeats 30] [--threads N] [--bf16] [--channels-last]
                                    [--batch N] [--best-of K] [--control] [--fused]
                                    [--default-malloc]

Networks: torchvision's ``resnet34``, ``resnet18`` and ``mobilenet_v3_small`` (random
weights, nothing downloaded) on batches of 32 of 3x32x32 in 100 classes; ``digits`` and
``cifar`` are the project's ResNet-34 (``build_resnet34``) on configs/digits.yaml's
batches (64 of 1x8x8, 3x3 stem) and on CIFAR-sized ones (the paper's ImageNet stem).
In a torchvision network every activation call site gets its own module of the activation
under test (``replace_activations``, as ``Classifier(backbone=...)`` does: ReLU and
Hardswish sites, gates kept), for both candidates alike.

A step is forward, cross-entropy, backward and a fused Adam step (under bf16 autocast
with ``--bf16``). DSReLU runs on its default eager kernels; ``--fused`` also times a
second DSReLU network on the opt-in ``DSRELU_KERNEL=fused`` kernels, built first as
``SlopeScheduler`` does at ``on_train_start`` (the time is printed). Each candidate runs two untimed
steps (printed), and from the 3rd step on ``--repeats`` rounds are timed round-robin.
Printed: the DSReLU/ReLU step ratio (median, min, max; target <= 1.03) and each
candidate's slowest timed step / its median (stalls; target <= 1.5). ``--best-of K``
times K steps per candidate and round and keeps the fastest for the ratio (for a machine
other jobs share; every step still counts for the stall figure); ``--control`` also
times a second ReLU network against the first: the noise floor of the ratio. Each
candidate's page faults per timed step are printed: glibc's heap trimming makes them
come and go between steps and candidates, so the benchmark first keeps freed memory in
the process for all candidates (``profiling.steady_malloc``; ``--default-malloc`` skips it).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from profiling import (
    interleaved_timings,
    machine_description,
    minor_page_faults,
    ratio_summary,
    steady_malloc,
)
from torch import Tensor, nn

from dsrelu_lightning.nn.activations import build_activation, dsrelu_modules
from dsrelu_lightning.nn.dsrelu_kernel import kernel_mode, set_kernel_mode, warm_up
from dsrelu_lightning.nn.replace import replace_activations
from dsrelu_lightning.nn.resnet import build_resnet34

TARGET_RATIO = 1.03
TARGET_STALL = 1.5
WARM_UP_STEPS = 2
"""Untimed steps per candidate: timing starts at the 3rd step."""


@dataclass(frozen=True)
class Workload:
    batch: int
    channels: int
    size: int
    classes: int
    stem: str


WORKLOADS = {
    "digits": Workload(64, 1, 8, 10, "cifar"),
    "cifar": Workload(32, 3, 32, 100, "imagenet"),
    "cifar-stem": Workload(32, 3, 32, 100, "cifar"),
}
"""The project's ResNet-34 (``build_resnet34``) on these batches."""

TORCHVISION = ("resnet34", "resnet18", "mobilenet_v3_small")
TORCHVISION_WORKLOAD = Workload(32, 3, 32, 100, "torchvision")


def build_network(
    name: str, activation: str, batch: int | None = None, seed: int = 0
) -> tuple[nn.Module, Workload]:
    """A fresh network (weights from ``seed``, the same for every activation) and its
    batch (``batch`` images instead of the workload's, if given)."""
    torch.manual_seed(seed)
    if name in WORKLOADS:
        workload = WORKLOADS[name]
        factory = lambda: build_activation(activation)  # noqa: E731
        stem: Any = workload.stem
        model = build_resnet34(workload.classes, factory, workload.channels, stem)
    else:
        workload = TORCHVISION_WORKLOAD
        model = getattr(torchvision.models, name)(weights=None, num_classes=workload.classes)
        model = replace_activations(model, activation)
    return model, replace(workload, batch=batch or workload.batch)


def make_step(
    model: nn.Module,
    workload: Workload,
    device: torch.device,
    bf16: bool = False,
    channels_last: bool = False,
) -> Callable[[], None]:
    """A closure running one training step of ``model`` on one fixed random batch."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    for layer in dsrelu_modules(model):
        layer.set_progress(0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    shape = (workload.batch, workload.channels, workload.size, workload.size)
    inputs = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
    targets = torch.randint(0, workload.classes, (workload.batch,), device=device)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss: Tensor = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()

    return step


def training_step(
    activation: str,
    workload: Workload,
    device: torch.device,
    seed: int = 0,
    compile_backend: str | Callable[..., Any] | None = None,
) -> tuple[Callable[[], None], nn.Module]:
    """A step of a fresh project ResNet-34 on ``workload`` (``compile_backend``: through
    ``nn.Module.compile``, as ``ResNetClassifier(compile=True)`` does) and the network."""
    torch.manual_seed(seed)
    stem: Any = workload.stem
    model = build_resnet34(
        workload.classes, lambda: build_activation(activation), workload.channels, stem
    )
    if compile_backend is not None:
        model.compile(backend=compile_backend)
    return make_step(model, workload, device), model


def _timed(step: Callable[[], None], device: torch.device) -> float:
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def in_kernel_mode(step: Callable[[], None], mode: str) -> Callable[[], None]:
    """``step`` run with DSReLU's kernel mode set to ``mode`` (the process's mode after)."""

    def run() -> None:
        before = kernel_mode()
        set_kernel_mode(mode)
        try:
            step()
        finally:
            set_kernel_mode(before)

    return run


def _best_of(
    step: Callable[[], None],
    device: torch.device,
    count: int,
    every: list[float],
    faults: list[int],
) -> Callable[[], float]:
    """A round of ``count`` steps back to back reporting the fastest (each step's
    seconds are appended to ``every``, for the stall figures; the round's page faults to
    ``faults``)."""

    def run() -> float:
        before = minor_page_faults()
        seconds = [_timed(step, device) for _ in range(count)]
        faults.append(minor_page_faults() - before)
        every.extend(seconds)
        return min(seconds)

    return run


def compare_network(
    name: str,
    device: torch.device,
    repeats: int,
    bf16: bool = False,
    channels_last: bool = False,
    batch: int | None = None,
    best_of: int = 1,
    control: bool = False,
    fused: bool = False,
) -> dict[str, float]:
    """Print and return the DSReLU/ReLU step ratio and the stall ratios for ``name``.

    ``best_of`` > 1: each round times that many steps per candidate and keeps the fastest
    (filters other jobs' interference on a shared machine); stalls count every step.
    ``control``: a second, identical ReLU network is timed too; its ratio to the first is
    the measurement's own noise (an A/A test). ``fused``: a second DSReLU network runs
    on the opt-in fused kernels (``dsrelu_fused``).
    """
    start = time.perf_counter()
    if fused:
        for dtype in (torch.float32, torch.bfloat16) if bf16 else (torch.float32,):
            in_kernel_mode(lambda dtype=dtype: warm_up(device, dtype), "fused")()
    kernels_s = time.perf_counter() - start
    rounds, first, every, faults = {}, {}, {}, {}
    candidates = ["relu", "dsrelu", *(["relu_control"] if control else [])]
    for activation in [*candidates, *(["dsrelu_fused"] if fused else [])]:
        kind = activation.removesuffix("_control").removesuffix("_fused")
        model, workload = build_network(name, kind, batch)
        mode = "fused" if activation.endswith("_fused") else "eager"
        step = in_kernel_mode(make_step(model, workload, device, bf16, channels_last), mode)
        first[activation] = [_timed(step, device) for _ in range(WARM_UP_STEPS)]
        every[activation], faults[activation] = [], []
        rounds[activation] = _best_of(step, device, best_of, every[activation], faults[activation])
    times = interleaved_timings(rounds, repeats, warmup=0)
    ratio = ratio_summary(times, "dsrelu", "relu")
    stall = {act: max(t) / statistics.median(t) for act, t in every.items()}
    mode = f"{'bf16 autocast' if bf16 else 'float32'}{', channels_last' if channels_last else ''}"
    print(f"{name} ({mode}; batch {workload.batch}x{workload.channels}x{workload.size}^2):")
    best = f" (fastest of {best_of} per round)" if best_of > 1 else ""
    print(f"  DSReLU step / ReLU step{best}: {ratio}  target <= {TARGET_RATIO}")
    if fused:
        fused_ratio = ratio_summary(times, "dsrelu_fused", "relu")
        print(f"  DSReLU (opt-in fused) step / ReLU step{best}: {fused_ratio}")
    if control:
        print(f"  control, ReLU step / ReLU step: {ratio_summary(times, 'relu_control', 'relu')}")
    print(
        "  slowest timed step / median: "
        + ", ".join(f"{act} {value:.2f}x" for act, value in stall.items())
        + f"  target <= {TARGET_STALL}"
    )
    steps = repeats * best_of
    print(
        "  page faults per timed step: "
        + ", ".join(f"{act} {sum(counts) / steps:.0f}" for act, counts in faults.items())
    )
    print(
        "  first steps (untimed): "
        + "; ".join(f"{a} " + ", ".join(f"{s * 1e3:.0f}" for s in v) for a, v in first.items())
        + (f" ms; opt-in fused kernels built in {kernels_s:.2f} s before them" if fused else " ms")
    )
    return {"ratio": ratio.median, **{f"stall_{act}": value for act, value in stall.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = [*TORCHVISION, *WORKLOADS]
    parser.add_argument("--network", nargs="+", choices=choices, default=list(TORCHVISION))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="steps under bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=None, help="images per batch")
    parser.add_argument(
        "--best-of", type=int, default=1, help="steps per round and candidate, fastest kept"
    )
    parser.add_argument("--control", action="store_true", help="also time ReLU against itself")
    parser.add_argument(
        "--fused", action="store_true", help="also time DSReLU on the opt-in fused kernels"
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's trimming heap (page faults come and go; see steady_malloc)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {machine_description()}")
    print(f"allocator: {'glibc default' if args.default_malloc else steady_malloc()}")
    for name in args.network:
        compare_network(
            name,
            device,
            args.repeats,
            args.bf16,
            args.channels_last,
            args.batch,
            args.best_of,
            args.control,
            args.fused,
        )
    print(f"machine after: {machine_description()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
