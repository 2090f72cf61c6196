"""Export every torchvision classification model with DSReLU (frozen at slope ~3.0, 80 -> 20
deg at progress 0.5) to torch.export and ONNX, as ``python -m dsrelu_lightning export`` does,
and check the ONNX file in onnxruntime against PyTorch at batch sizes 2 and 1 (relative max
abs diff), beside PyTorch's own float32 error against the same network in float64.

    OMP_NUM_THREADS=1 python scripts/survey_export.py [--models resnet18 ...] > export.md

Each model runs on the smallest input of 1x8x8 (digits, --model.stem cifar), 3x32x32 (stem
cifar) and 3x224x224 (3x299x299 for inception_v3; stem imagenet) it accepts. Random init,
no weights downloaded; an all-zero Linear layer (the ViTs' head) gets random weights, else
every output would be equal. Prints a markdown table (docs/deploy.md holds one run).
"""

from __future__ import annotations

import argparse
import gc
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from dsrelu_lightning.cli.export_check import compare, export_failure, onnx_summary
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import dsrelu_modules
from dsrelu_lightning.nn.backbones import torchvision_classifiers
from dsrelu_lightning.training.deployment import (
    INPUT_NAME,
    deployment_network,
    export_program,
    onnx_program,
    save_onnx,
)
from dsrelu_lightning.training.module import Classifier

INPUTS = ((1, 8, "cifar"), (3, 32, "cifar"), (3, 224, "imagenet"))
"""(channels, side, stem) tried in order: the first the network runs on is used."""
ANGLES = {"initial_angle": 80, "final_angle": 20}


def _build(name: str) -> tuple[Classifier, torch.Tensor]:
    last: Exception | None = None
    for channels, side, stem in INPUTS:
        side = 299 if name == "inception_v3" and stem == "imagenet" else side
        model = Classifier(10, name, in_channels=channels, stem=stem, activation_args=ANGLES)
        for module in dsrelu_modules(model):
            module.set_progress(0.5)
        for layer in model.modules():  # ViTs zero their head: every output would be equal
            if isinstance(layer, nn.Linear) and not layer.weight.any():
                nn.init.normal_(layer.weight, std=0.02)
        x = torch.randn(2, channels, side, side)
        try:
            with torch.no_grad():
                model.eval()(x)
            return model, x
        except ConfigurationError as error:
            last = error
    raise RuntimeError(f"runs on none of the inputs: {last}")


def survey(name: str, folder: Path, max_params: float) -> list[str]:
    torch.manual_seed(0)
    try:
        model, x = _build(name)
    except Exception as error:  # the survey records whatever fails
        return [name, "—", "—", f"not built: {str(error)[:80]}", "—", "—", "—", "—"]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    shape = "x".join(map(str, x.shape[1:]))
    row = [name, f"{params:.1f}", shape]
    if params > max_params:
        return [*row, f"not tried (> {max_params:g}M parameters)", "—", "—", "—", "—"]
    network = deployment_network(model.model)
    start = time.perf_counter()
    try:
        program = export_program(network, x)
    except Exception as error:
        return [*row, str(export_failure(error, "pt2")), "—", "—", "—", "—"]
    row.append(f"yes, {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    path = folder / f"{name}.onnx"
    try:
        save_onnx(onnx_program(program, x), path)
        operators = len(onnx_summary(path)["operators"])
    except Exception as error:
        return [*row, str(export_failure(error, "onnx")).split(": ", 1)[-1][:160], "—", "—", "—"]
    row.append(f"yes, {time.perf_counter() - start:.1f} s, {operators} operator types")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exact = deployment_network(model.model).double()
    worst, noise, agree = 0.0, 0.0, []
    for batch in (x, x[:1]):
        with torch.no_grad():
            reference = model(batch)
            if not torch.isfinite(reference).all():
                path.unlink()
                return [*row, "— (PyTorch's own outputs are NaN)", "—", "—"]
            noise = max(noise, compare(reference, exact(batch.double())).relative_diff)
        out = torch.from_numpy(session.run(None, {INPUT_NAME: batch.numpy()})[0])
        result = compare(out, reference)
        worst = max(worst, result.relative_diff)
        agree.append(f"{result.argmax_agreement}/{result.batch_size}")
    path.unlink()
    return [*row, f"{worst:.1e}", f"{noise:.1e}", ", ".join(agree)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every torchvision classifier")
    parser.add_argument("--max_params", type=float, default=200.0, help="millions; skip above")
    args = parser.parse_args()
    names = args.models or torchvision_classifiers()
    print(f"torch {torch.__version__}, {platform.python_version()}, {platform.machine()}\n")
    print(
        "| model | params (M) | input | torch.export | ONNX | ORT vs PyTorch | "
        "PyTorch f32 vs f64 | argmax |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            print("| " + " | ".join(survey(name, Path(folder), args.max_params)) + " |", flush=True)
            gc.collect()


if __name__ == "__main__":
    main()
