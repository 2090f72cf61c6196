"""Export: DSReLU frozen into standard operators, ``python -m dsrelu_lightning export`` of
real (tiny) digits fits checked in onnxruntime and ``torch.export.load``, and Lightning's own
``to_onnx``/``to_torchscript``.

Fits use DSReLU from 80 to 20 degrees over 2 epochs, so their checkpoints hold a slope of
about 3.02 (progress 0.5): far from ReLU's 1. The outputs are compared with the checkpoint's
own eval-mode model on real digits: relative max abs diff = max|a - b| / max|b| <= 1e-4 and
the same arg-max class, at the batch size of the export's check and at others.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import lightning
import onnx
import onnxruntime
import pytest
import torch
from conftest import DIGITS_CONFIG, SMALL_BACKBONE, TinyTrainer, run_main
from torch import Tensor

from dsrelu_lightning.cli.export_check import compare, verify
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.training.deployment import deployment_network
from dsrelu_lightning.training.module import Classifier

ANGLES = '{"initial_angle": 80, "final_angle": 20}'
TOLERANCE = 1e-4
BATCHES = (64, 1, 7)
"""The check batch's size (the config's 64), one sample, and a size the export never saw."""


@dataclass(frozen=True)
class Fit:
    """One finished tiny digits fit: its run folder, saved config and checkpoints."""

    run: Path
    config: Path
    best: Path
    last: Path


def _fit(root: Path, backbone: str, *extra: str) -> Fit:
    args = TinyTrainer(root).args(max_epochs=2, backbone=backbone)
    run_main(
        "fit", "--config", DIGITS_CONFIG, *args, "--model.activation_args", ANGLES, *extra
    ).ok()
    (run,) = (root / "lightning_logs").iterdir()
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    return Fit(run, run / "config.yaml", best, run / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory: pytest.TempPathFactory) -> Fit:
    return _fit(tmp_path_factory.mktemp("small"), SMALL_BACKBONE)


@pytest.fixture(scope="module")
def digits() -> Tensor:
    """64 real digits of the held-out test split, as the data module serves them."""
    data = DigitsDataModule(batch_size=64)
    data.setup("test")
    return next(iter(data.test_dataloader()))[0]


def _reference(checkpoint: Path, x: Tensor) -> Tensor:
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    with torch.no_grad():
        return model(x)


def _assert_reproduces(output: Tensor, reference: Tensor) -> None:
    relative = float((output - reference).abs().max() / reference.abs().max())
    assert relative <= TOLERANCE, relative
    assert torch.equal(output.argmax(1), reference.argmax(1))


def _sidecar(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".json").read_text())


def _check_onnx(path: Path, checkpoint: Path, digits: Tensor) -> None:
    model = onnx.load(str(path))
    assert {node.domain for node in model.graph.node} == {""}
    assert {opset.domain for opset in model.opset_import} <= {"", "ai.onnx"}
    assert not model.functions
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in BATCHES:
        x = digits[:size]
        output = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        _assert_reproduces(output, _reference(checkpoint, x))


def _check_program(path: Path, checkpoint: Path, digits: Tensor) -> None:
    program = torch.export.load(str(path)).module()
    for size in BATCHES:
        with torch.no_grad():
            output = program(digits[:size])
        _assert_reproduces(output, _reference(checkpoint, digits[:size]))


def test_onnx_export_of_the_best_checkpoint_reproduces_it_in_onnxruntime(
    small_fit: Fit, digits: Tensor
) -> None:
    out = run_main("export", "--config", str(small_fit.config), "--ckpt_path", "best").ok()
    path = small_fit.run / "export" / f"{small_fit.best.stem}.onnx"
    assert f"Model written to {path}" in out and "argmax agreement" in out
    _check_onnx(path, small_fit.best, digits)
    sidecar = _sidecar(path)
    slope = sidecar["activation"]["slope_at_export"]
    assert slope == pytest.approx(3.0176, abs=1e-3)  # far from ReLU's 1
    assert sidecar["checkpoint"]["path"] == str(small_fit.best)
    assert sidecar["checkpoint"]["epoch_metrics"]["val/loss"] > 0
    assert sidecar["classes"] == [str(c) for c in range(10)]
    assert sidecar["input"]["shape"] == [None, 1, 8, 8]
    assert sidecar["input"]["preprocessing"]["pixel_scale"] == 1 / 16
    assert sidecar["backbone"]["name"] == SMALL_BACKBONE
    assert sidecar["batchnorm_statistics"] == "recalibrated (precise BN on)"
    assert sidecar["versions"]["onnxruntime"] == onnxruntime.__version__
    checks = sidecar["check"]["batches"]
    assert [c["batch_size"] for c in checks] == [16, 5, 1]  # the fit's batch size, 16
    assert all(c["relative_diff"] <= TOLERANCE and c["argmax_agreement"] for c in checks)


def test_pt2_export_of_the_last_checkpoint_reproduces_it_after_torch_export_load(
    small_fit: Fit, digits: Tensor, tmp_path: Path
) -> None:
    args = ["--ckpt_path", "last", "--output", str(tmp_path), "--format", "pt2"]
    run_main("export", "--config", str(small_fit.config), *args).ok()
    path = tmp_path / "last.pt2"
    _check_program(path, small_fit.last, digits)
    sidecar = _sidecar(path)
    assert sidecar["format"] == "pt2" and sidecar["onnx"] is None
    assert sidecar["checkpoint"]["path"] == str(small_fit.last)


@pytest.mark.slow
def test_resnet18_exports_to_both_formats(
    tmp_path_factory: pytest.TempPathFactory, digits: Tensor
) -> None:
    fit = _fit(tmp_path_factory.mktemp("resnet18"), "resnet18", "--model.stem=cifar")
    for format_name in ("onnx", "pt2"):
        args = ["--ckpt_path", str(fit.best), "--format", format_name]
        run_main("export", "--config", str(fit.config), *args).ok()
    _check_onnx(fit.run / "export" / f"{fit.best.stem}.onnx", fit.best, digits)
    _check_program(fit.run / "export" / f"{fit.best.stem}.pt2", fit.best, digits)


@pytest.mark.slow
def test_mobilenet_v3_small_exports_as_closely_as_float32_allows(
    tmp_path_factory: pytest.TempPathFactory, digits: Tensor
) -> None:
    # 33 DSReLU sites at slope 3 amplify rounding: on 64 digits PyTorch's own float32
    # outputs lie ~5e-5 to ~1e-3 (relative) from float64's, depending on the weights the
    # fit reached (torch's thread count changes them), and onnxruntime's kernels (BatchNorm
    # folded into the convolutions) land about as far on the other side. The export's own
    # tolerance is therefore loose here; the test asks onnxruntime to be about as close to
    # float64 as PyTorch is; the pt2 program runs PyTorch's own kernels.
    fit = _fit(tmp_path_factory.mktemp("mobile"), "mobilenet_v3_small", "--model.stem=cifar")
    for format_name in ("onnx", "pt2"):
        args = ["--ckpt_path", str(fit.best), "--format", format_name, "--tolerance", "1e-2"]
        run_main("export", "--config", str(fit.config), *args).ok()
    _check_program(fit.run / "export" / f"{fit.best.stem}.pt2", fit.best, digits)
    path = fit.run / "export" / f"{fit.best.stem}.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = Classifier.load_from_checkpoint(fit.best, map_location="cpu").eval()
    exact = deployment_network(model.model).double()
    for size in BATCHES:
        x = digits[:size]
        with torch.no_grad():
            pytorch, float64 = model(x).double(), exact(x.double())
        ort = torch.from_numpy(session.run(None, {"input": x.numpy()})[0]).double()
        scale = float64.abs().max()
        ort_error = float((ort - float64).abs().max() / scale)
        pytorch_error = float((pytorch - float64).abs().max() / scale)
        assert ort_error <= 3 * pytorch_error + 1e-6, (size, ort_error, pytorch_error)
        assert torch.equal(ort.argmax(1), pytorch.argmax(1))


def test_outputs_above_the_tolerance_fail_and_write_nothing(small_fit: Fit, tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    args = ["--ckpt_path", str(small_fit.last), "--output", str(target), "--tolerance", "0"]
    code, _, err, _ = run_main("export", "--config", str(small_fit.config), *args)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "differ from PyTorch's by" in line and "above --tolerance 0" in line, line
    assert list(tmp_path.iterdir()) == []  # neither the file, its sidecar nor a temporary


def test_a_network_onnx_cannot_express_gets_one_line_naming_the_operator(tmp_path: Path) -> None:
    model = Classifier(10, "tiny_nets.CumMaxCNN", in_channels=1, stem="cifar")
    checkpoint = tmp_path / "cummax.ckpt"
    state = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    torch.save({**state, "pytorch-lightning_version": lightning.__version__}, checkpoint)
    code, _, err, _ = run_main("export", "--config", DIGITS_CONFIG, "--ckpt_path", str(checkpoint))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "dsrelu-lightning: error: cannot export this network to ONNX: operator aten::cummax "
        "cannot be expressed in ONNX; try --format pt2"
    )
    assert not [p for p in (tmp_path / "export").rglob("*") if p.is_file()]


def test_to_torchscript_traces_a_saveable_program_or_points_to_export(
    small_fit: Fit, digits: Tensor
) -> None:
    model = Classifier.load_from_checkpoint(small_fit.best, map_location="cpu")
    buffer = io.BytesIO()
    torch.jit.save(model.to_torchscript(method="trace", example_inputs=digits[:4]), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for size in BATCHES:
        _assert_reproduces(loaded(digits[:size]), _reference(small_fit.best, digits[:size]))
    # SmallCNN's forward was rewritten (shared and functional activation sites): a
    # GraphModule, which torch.jit.script cannot compile.
    with pytest.raises(RuntimeError, match="python -m dsrelu_lightning export"):
        model.to_torchscript()


def test_nan_outputs_never_pass_the_check() -> None:
    reference = torch.randn(4, 10)
    exported = reference.clone()
    exported[0, 0] = float("nan")
    assert compare(exported, reference).relative_diff == math.inf  # fails any tolerance
    with pytest.raises(ConfigurationError, match="NaN or infinite outputs"):
        verify(lambda x: x, torch.nn.Identity(), torch.full((4, 10), float("nan")))
