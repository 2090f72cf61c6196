"""Times each step of a DSReLU ResNet-18 trained on one fixed batch, as bench_step.py does.

    OMP_NUM_THREADS=2 python docs/results/performance_issue32/subnormal_stall.py [--steps 40]
        [--flush-denormal] ; DSRELU_KERNEL=fused for the opt-in kernels

Prints each step's milliseconds. On the Intel Xeon of docs/performance.md (issue #32),
steps 5-9 took 0.35-2.3 s with either kernel and 0.09-0.11 s with --flush-denormal.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
import torchvision

from dsrelu_lightning import replace_activations
from dsrelu_lightning.nn.activations import dsrelu_modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--flush-denormal", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(args.flush_denormal)
    net = replace_activations(torchvision.models.resnet18(num_classes=100), "dsrelu")
    for layer in dsrelu_modules(net):
        layer.set_progress(0.3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    inputs, targets = torch.randn(32, 3, 32, 32), torch.randint(0, 100, (32,))
    milliseconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(inputs), targets).backward()
        optimizer.step()
        milliseconds.append(round((time.perf_counter() - start) * 1e3))
    print(milliseconds)


if __name__ == "__main__":
    main()
