"""How far apart DSReLU and leaky_relu_equiv (DSReLU / s(t)) are in a network, at the same
weights and the same t: argmax agreement and the logits' distance after the best positive scale.

    OMP_NUM_THREADS=1 python scripts/measure_leaky_equiv.py [--batches 4] [--seeds 0 1 2]

ResNet-18 (3x3 stem, digits: 1x8x8 inputs, 10 classes), random init, beside two controls: a
network of conv (no bias) -> BatchNorm -> activation blocks with a bias-free head (exact up to
BatchNorm's eps), and the same ResNet-18 with leaky_relu_equiv, its identity shortcuts
multiplied by s(t) and its head's bias divided by s(t), which DSReLU's ResNet-18 equals times
s(t) (the derivation is in docs/networks.md). BatchNorm in train mode (each batch's own
statistics), and in eval mode after each network's statistics were estimated on the same
training batches (cumulative average, as precise BN does). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import functools
import platform
from collections.abc import Iterator

import torch
import torchvision
from torch import Tensor, nn

from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn.activations import DSReLU, dsrelu_modules
from dsrelu_lightning.training.module import Classifier

TIMES = (0.0, 0.5, 1.0)
SCHEDULES = ("sigmoid", "linear")


def bn_chain() -> nn.Module:
    """conv (no bias) -> BN -> ReLU (replaced by DSReLU) x 4, global pool, bias-free head."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((1, 32), (32, 64), (64, 64), (64, 64)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
        layers.append(nn.ReLU())
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10, False))


def resnet18(schedule: str, seed: int) -> nn.Module:
    """torchvision's ResNet-18 as ``Classifier(backbone="resnet18", stem="cifar")`` builds it
    for digits (3x3/1 stem conv, no max-pool, 1 channel, 10 classes), a DSReLU at each of its
    17 activation call sites (the block's shared ReLU split in two), shortcuts unscaled."""
    torch.manual_seed(seed)
    network = torchvision.models.resnet18(num_classes=10)
    network.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
    network.maxpool = nn.Identity()
    network.relu = DSReLU(schedule=schedule)
    for block in network.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.relu = DSReLU(schedule=schedule)
            block.relu_1 = DSReLU(schedule=schedule)
            block.forward = functools.partial(_block_forward, block, 1.0)
    return network


def _block_forward(block: nn.Module, skip_scale: float, x: Tensor) -> Tensor:
    """BasicBlock.forward with its identity shortcut (not a downsampling one) times skip_scale."""
    shortcut = skip_scale * x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    return block.relu_1(block.bn2(block.conv2(out)) + shortcut)


def scale_shortcuts(network: nn.Module, scale: float) -> None:
    """Multiply ``network``'s identity shortcuts by ``scale``; divide its head's bias by it."""
    for block in network.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.forward = functools.partial(_block_forward, block, scale)
    with torch.no_grad():
        network.fc.bias /= scale


def digits(count: int) -> tuple[list[Tensor], list[Tensor]]:
    """``count`` training batches of 64 digits and the ``count`` after them."""
    data = DigitsDataModule(batch_size=64)
    data.setup("fit")
    loader = iter(data.train_dataloader())
    inputs = [next(loader)[0] for _ in range(2 * count)]
    return inputs[:count], inputs[count:]


def recalibrate(network: nn.Module, inputs: list[Tensor]) -> None:
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
    network.train()
    for x in inputs:
        network(x)


def compare(a: nn.Module, b: nn.Module, inputs: list[Tensor]) -> tuple[float, float]:
    """Argmax agreement, and ||l_a - c l_b|| / ||l_a|| at the least-squares scale c > 0."""
    la = torch.cat([a(x) for x in inputs])
    lb = torch.cat([b(x) for x in inputs])
    agree = float((la.argmax(1) == lb.argmax(1)).double().mean())
    c = float((la * lb).sum() / (lb * lb).sum())
    return agree, float((la - c * lb).norm() / la.norm())


def network(kind: str, schedule: str, seed: int) -> nn.Module:
    if kind == "bn_chain":
        torch.manual_seed(seed)
        return Classifier(10, bn_chain, in_channels=1, activation_args={"schedule": schedule}).model
    return resnet18(schedule, seed)


def rows(seeds: list[int], count: int) -> Iterator[str]:
    train, held_out = digits(count)
    for kind in ("bn_chain", "resnet18", "resnet18_scaled_shortcuts"):
        for schedule in SCHEDULES:
            for t in TIMES:
                results = []
                for seed in seeds:
                    dsrelu = network(kind.removesuffix("_scaled_shortcuts"), schedule, seed)
                    equivalent = copy.deepcopy(dsrelu)
                    for layer in dsrelu_modules(dsrelu) + dsrelu_modules(equivalent):
                        layer.set_progress(t)
                    for layer in dsrelu_modules(equivalent):
                        layer.equivalent_leaky = True
                    s = dsrelu_modules(dsrelu)[0].slope
                    if kind.endswith("_scaled_shortcuts"):
                        scale_shortcuts(equivalent, s)
                    with torch.no_grad():
                        trained = compare(dsrelu.train(), equivalent.train(), train)
                        for net in (dsrelu, equivalent):
                            recalibrate(net, train)
                        evaluated = compare(dsrelu.eval(), equivalent.eval(), held_out)
                    results.append((*trained, *evaluated))
                mean = [sum(r[i] for r in results) / len(results) for i in range(4)]
                worst = [min(r[i] for r in results) for i in (0, 2)]
                yield (
                    f"| {kind} | {schedule} | {t:g} | {s:.3f} | {mean[0]:.3f} ({worst[0]:.3f}) "
                    f"| {mean[1]:.2e} | {mean[2]:.3f} ({worst[1]:.3f}) | {mean[3]:.2e} |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="batches of 64 per mode")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, Python {platform.python_version()}, float32, "
        f"{len(args.seeds)} seeds (random init), {args.batches} batches of 64 digits per mode\n"
    )
    print(
        "| network | schedule | t | s(t) | train-mode BN: argmax agreement, mean (worst seed) "
        "| train: distance | eval-mode BN: agreement, mean (worst) | eval: distance |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows(args.seeds, args.batches):
        print(row, flush=True)


if __name__ == "__main__":
    main()
