"""DSReLU frozen into standard operators, and the deployment network a Classifier exports:
its values, what it leaves alone, and Lightning's to_onnx/to_torchscript on it."""

from __future__ import annotations

import io
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from conftest import small_classifier

from dsrelu_lightning.nn.activations import DSReLU, dsrelu_modules
from dsrelu_lightning.nn.dsrelu_kernel import dsrelu_formula
from dsrelu_lightning.nn.frozen import FrozenDSReLU, freeze_dsrelu
from dsrelu_lightning.training.deployment import deployment_network
from dsrelu_lightning.training.module import Classifier

ANGLES = {"initial_angle": 80, "final_angle": 20}


def _at_half_progress(model: Classifier) -> Classifier:
    for layer in dsrelu_modules(model):
        layer.set_progress(0.5)  # slope ~3.02, far from ReLU's 1
    return model


@pytest.mark.parametrize("negative_slope", [1.0, 0.25])
def test_frozen_dsrelu_gives_dsrelus_values_bit_for_bit(negative_slope: float) -> None:
    dsrelu = DSReLU(80.0, 20.0, negative_slope=negative_slope)
    dsrelu.set_progress(0.5)
    frozen = FrozenDSReLU(dsrelu.slope, negative_slope)
    x = torch.randn(4, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(frozen(x), dsrelu(x))
        slope = torch.tensor(frozen.slope)
        assert torch.equal(frozen(x), dsrelu_formula(x, slope, negative_slope))
    assert abs(frozen.slope - dsrelu.slope) < 1e-6 * dsrelu.slope  # float32 vs float64


def test_the_deployment_network_is_a_frozen_eval_copy() -> None:
    model = _at_half_progress(small_classifier(activation_args=ANGLES))
    network = deployment_network(model.model)
    frozen = [m for m in network.modules() if isinstance(m, FrozenDSReLU)]
    assert len(frozen) == 4 and not dsrelu_modules(network)
    assert {m.slope for m in frozen} == {dsrelu_modules(model)[0].slope}
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    assert model.training and len(dsrelu_modules(model)) == 4  # the original is untouched


def test_freeze_dsrelu_of_a_lone_module_returns_its_frozen_module() -> None:
    dsrelu = DSReLU()
    frozen = freeze_dsrelu(dsrelu)
    assert isinstance(frozen, FrozenDSReLU) and frozen.slope == dsrelu.slope


def test_to_onnx_writes_the_frozen_eval_network_with_a_dynamic_batch(tmp_path: Path) -> None:
    model = _at_half_progress(small_classifier(activation_args=ANGLES))
    x = torch.randn(16, 1, 8, 8)
    model.to_onnx(tmp_path / "model.onnx", x[:4])
    assert model.training and len(dsrelu_modules(model)) == 4  # left as it was
    graph = onnx.load(str(tmp_path / "model.onnx"))
    assert {node.domain for node in graph.graph.node} == {""}
    assert "Where" in {node.op_type for node in graph.graph.node}  # FrozenDSReLU
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    with torch.no_grad():
        reference = model.eval()(x)
    for size in (16, 1):  # the export saw 4
        output = torch.from_numpy(session.run(None, {"input": x[:size].numpy()})[0])
        relative = (output - reference[:size]).abs().max() / reference[:size].abs().max()
        assert float(relative) <= 1e-4


def test_to_torchscript_scripts_a_torchvision_network() -> None:
    model = Classifier(10, "resnet18", in_channels=1, stem="cifar", activation_args=ANGLES)
    _at_half_progress(model)
    buffer = io.BytesIO()
    torch.jit.save(model.to_torchscript(), buffer)
    buffer.seek(0)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():  # scripting keeps PyTorch's kernels: the same values
        assert torch.equal(torch.jit.load(buffer)(x), model.eval()(x))
