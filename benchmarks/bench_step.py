"""Target 2: one ResNet-34 training step with DSReLU vs the same step with ReLU.

    python benchmarks/bench_step.py [--workload digits cifar] [--repeats 20] [--threads N]

Workloads (random data of the stated shape; the step's cost does not depend on values):
``digits`` = batch 64 of 1x8x8, 10 classes, 3x3 stem (configs/digits.yaml);
``cifar`` = batch 32 of 3x32x32, 100 classes, the paper's ImageNet stem;
``cifar-stem`` = the same with the 3x3 CIFAR stem (16x the activations; slow on CPU).
Each step is forward, cross-entropy, backward and a fused Adam step, timed round-robin
DSReLU/ReLU; the ratio is printed per workload as median, min and max over rounds.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsrelu_lightning.nn.activations import build_activation, dsrelu_modules
from dsrelu_lightning.nn.resnet import build_resnet34
from dsrelu_lightning.profiling import interleaved_timings, machine_description, ratio_summary

TARGET_RATIO = 1.05


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


def training_step(
    activation: str,
    workload: Workload,
    device: torch.device,
    seed: int = 0,
    compile_backend: str | Callable[..., Any] | None = None,
) -> tuple[Callable[[], None], nn.Module]:
    """A closure running one training step of a fresh ResNet-34 with ``activation``.

    With ``compile_backend`` the network is ``torch.compile``'d (``nn.Module.compile``,
    as ``ResNetClassifier(compile=True)`` does). Returns the closure and the network.
    """
    torch.manual_seed(seed)
    model: nn.Module = build_resnet34(
        workload.classes,
        lambda: build_activation(activation),
        workload.channels,
        workload.stem,  # type: ignore[arg-type]
    ).to(device)
    for layer in dsrelu_modules(model):
        layer.set_progress(0.3)
    if compile_backend is not None:
        model.compile(backend=compile_backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    inputs = torch.randn(
        workload.batch, workload.channels, workload.size, workload.size, device=device
    )
    targets = torch.randint(0, workload.classes, (workload.batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss: Tensor = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()

    return step, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload", nargs="+", choices=sorted(WORKLOADS), default=["digits", "cifar"]
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"machine: {machine_description()}")
    for name in args.workload:
        workload = WORKLOADS[name]
        candidates = {act: training_step(act, workload, device)[0] for act in ("relu", "dsrelu")}
        times = interleaved_timings(candidates, args.repeats, warmup=2)
        print(
            f"{name} {workload}: DSReLU step / ReLU step: "
            f"{ratio_summary(times, 'dsrelu', 'relu')}  target <= {TARGET_RATIO}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
