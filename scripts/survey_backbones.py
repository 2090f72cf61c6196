"""Survey every torchvision classification model as a Classifier backbone: the activation call
sites replace_activations swaps (by kind), what it keeps, whether the network then runs,
whether it runs on the digits config (1x8x8 inputs, --model.stem cifar) and whether it trains
there (or at the smallest input it runs on): a training-mode forward and backward.

    OMP_NUM_THREADS=1 python scripts/survey_backbones.py [--models resnet18 ...] > survey.md

Random init, no weights downloaded. Prints a markdown table (docs/networks.md holds one run).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
import warnings

import torch
import torchvision
from torch import nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import DSReLU
from dsrelu_lightning.nn.backbones import build_backbone, torchvision_classifiers
from dsrelu_lightning.nn.probing import modules_called
from dsrelu_lightning.nn.replace import convert_activations
from dsrelu_lightning.training.module import Classifier

SIZES = {"inception_v3": 299}
"""Input size a model needs other than 224 for the full-size check."""


def training_step(model: Classifier, size: int) -> str:
    """A training step's forward and backward on two 1 x size x size inputs."""
    try:
        model.train()(torch.randn(2, 1, size, size)).sum().backward()
    except Exception as error:  # the survey records whatever fails
        return f"no: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    return f"yes ({size}x{size})" + (f", {len(missing)} parameters without grad" if missing else "")


def survey(name: str) -> list[str]:
    torch.manual_seed(0)
    size = SIZES.get(name, 224)
    start = time.perf_counter()
    backbone = build_backbone(name, 10, 3, "imagenet")
    params = sum(p.numel() for p in backbone.network.parameters()) / 1e6
    relu_only = all(
        type(m) is nn.ReLU
        for m in backbone.network.modules()
        if isinstance(m, nn.ReLU | nn.GELU | nn.SiLU | nn.Hardswish | nn.ReLU6)
    )
    original = copy.deepcopy(backbone.network).eval() if relu_only else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        network, report = convert_activations(backbone.network, DSReLU)
    seconds = time.perf_counter() - start
    x = torch.randn(1, 3, size, size)
    try:
        called = modules_called(network, DSReLU, x)
        runs = f"yes, {len(called)} calls, {len({id(m) for m in called})} modules"
    except Exception as error:  # the survey records whatever fails
        runs = f"no: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
    same = "—"
    if original is not None:
        relu, _ = convert_activations(copy.deepcopy(original), nn.ReLU)
        with torch.no_grad():
            same = "yes" if torch.equal(relu.eval()(x), original(x)) else "NO"
    model = Classifier(10, name, in_channels=1, stem="cifar")
    try:
        model.eval()(torch.randn(2, 1, 8, 8))
        digits, trains = "yes", training_step(model, 8)
    except ConfigurationError as error:
        message = str(error)
        layer = message.split("layer ", 1)[-1].split(" fails", 1)[0]
        smallest = message.split("the smallest input that runs is ", 1)
        size = smallest[1].split(";", 1)[0].split("x", 1)[-1] if len(smallest) > 1 else "none"
        digits = f"no: smallest input {size} (first fails at {layer})"
        trains = training_step(model, int(size.split("x")[0])) if size != "none" else "—"
    kinds = ", ".join(f"{k} {n}" for k, n in report.replaced.most_common())
    notes = [f"kept: {', '.join(report.kept_output)}"] if report.kept_output else []
    notes += [f"not traced: {', '.join(report.untraced)}"] if report.untraced else []
    notes += [f"made out-of-place: {', '.join(report.out_of_place)}"] if report.out_of_place else []
    notes += [str(w.message)[:60] for w in caught if "could not see" in str(w.message)]
    return [
        name, f"{params:.1f}", str(report.total), kinds, f"{seconds:.2f}", runs, same, digits,
        trains, "; ".join(notes) or "—",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="*", help="default: every classification model")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="DSReLU is training but nothing advances")
    names = args.models or torchvision_classifiers()
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}, {torch.get_num_threads()} thread(s)\n"
    )
    header = ["Model", "Params (M)", "Sites", "Original kinds", "Build + swap (s)",
              "Runs with DSReLU (1x3x224x224)", "ReLU->ReLU identical", "digits config",
              "Trains (forward + backward)", "Notes"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        try:
            row = survey(name)
        except Exception as error:
            row = [name, "—", "—", "—", "—", f"build failed: {error}", "—", "—", "—", "—"]
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |", flush=True)


if __name__ == "__main__":
    main()
