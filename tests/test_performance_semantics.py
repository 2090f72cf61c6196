"""What DSReLU's fast paths must preserve: the math, the saved bytes, torch.compile and bf16.

Speed itself is measured by benchmarks/ (ratios in one run), never here. The opt-in fused
kernels have their own tests (test_fused_opt_in.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import lightning.pytorch as pl
import pytest
import torch
from conftest import TinyTrainer
from torch import nn
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from dsrelu_lightning import DSReLU, ResNetClassifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn import dsrelu_kernel as kernel

MODES = kernel.KERNEL_MODES


@pytest.fixture
def kernel_mode() -> Iterator[None]:
    """Restore the process-wide kernel mode after a test changes it."""
    before = kernel.kernel_mode()
    yield
    kernel.set_kernel_mode(before)


def _formula(x: torch.Tensor, slope: float, negative_slope: float) -> torch.Tensor:
    return torch.where(x > 0, slope * x, negative_slope * x)


@pytest.mark.parametrize("negative_slope", [1.0, 0.0, -0.3])
def test_eager_kernel_matches_the_formula_and_its_gradient(negative_slope: float) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    slope = torch.tensor(math.tan(math.radians(70)), dtype=torch.float64)
    y = kernel.dsrelu(x, slope, negative_slope, positive_slope=True)
    torch.testing.assert_close(
        y, _formula(x.detach(), float(slope), negative_slope), rtol=0, atol=0
    )
    grad = torch.randn(x.shape, dtype=x.dtype, generator=generator)
    y.backward(grad)
    factor = torch.where(x > 0, slope, torch.tensor(negative_slope, dtype=x.dtype))
    torch.testing.assert_close(x.grad, grad * factor, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda t: kernel.dsrelu(t, slope, negative_slope), (x,))


def test_saves_one_activation_sized_tensor_as_leaky_relu_does(kernel_mode: None) -> None:
    # y where the slopes keep x's sign (what the next layer keeps anyway), else x; and
    # the 0-dim slope.
    for mode in MODES:
        kernel.set_kernel_mode(mode)
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(8, 16, 16, 16, dtype=dtype, requires_grad=True)
            for layer in (DSReLU(), DSReLU(negative_slope=-0.5)):
                layer.set_progress(0.3)
                y = layer(x)
                activation, slope = y.grad_fn.saved_tensors
                assert activation.shape == x.shape and activation.dtype == dtype
                assert slope.dim() == 0
                kept = y if layer.negative_slope >= 0 else x
                assert activation.untyped_storage().data_ptr() == kept.untyped_storage().data_ptr()


def test_output_saving_gives_the_right_gradient_for_every_sign(kernel_mode: None) -> None:
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], requires_grad=True)
    for mode in MODES:
        kernel.set_kernel_mode(mode)
        for negative_slope in (1.0, 0.0, -0.5):
            x.grad = None
            y = kernel.dsrelu(x, torch.tensor(0.25), negative_slope, positive_slope=True)
            y.sum().backward()
            expected = torch.tensor([negative_slope] * 3 + [0.25, 0.25])
            torch.testing.assert_close(x.grad, expected)


def test_outputs_are_not_views_so_in_place_use_fails_as_for_relu(kernel_mode: None) -> None:
    for mode in MODES:
        kernel.set_kernel_mode(mode)
        x = torch.randn(2, 3, 8, 8, requires_grad=True)
        y = kernel.dsrelu(x * 1, torch.tensor(1.5), 1.0, positive_slope=True)
        assert not y._is_view()
        y.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_slope_follows_progress_state_dict_and_dtype() -> None:
    act = DSReLU()
    x = torch.ones(3)
    assert act(x)[0].item() == pytest.approx(act.slope_at(0.0), rel=1e-6)
    act.set_progress(0.8)
    assert act(x)[0].item() == pytest.approx(act.slope_at(0.8), rel=1e-6)
    other = DSReLU()
    other(x)  # fill its slope cache at t=0
    other.load_state_dict(act.state_dict())
    assert other(x)[0].item() == pytest.approx(act.slope_at(0.8), rel=1e-6)
    other.set_progress(0.1)  # writes go through set_progress (or load_state_dict)
    assert other(x)[0].item() == pytest.approx(act.slope_at(0.1), rel=1e-6)
    assert other.double()(x.double()).dtype == torch.float64


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act1, self.act2 = DSReLU(), DSReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn(self.act1(self.conv(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_torch_compile_no_graph_break_no_recompile_across_progress() -> None:
    torch._dynamo.reset()
    counters.clear()
    model = _Tiny()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x = torch.randn(2, 1, 6, 6)
    for t in (0.0, 0.25, 0.5, 1.0):
        for layer in (model.act1, model.act2):
            layer.set_progress(t)
        out = compiled(x)
        out.sum().backward()
        torch.testing.assert_close(out, model(x))
    assert counter.frame_count == 1
    assert not counters["graph_break"]
    assert not counters["recompiles"]


def test_classifier_compile_option_keeps_weight_names_and_fuses_adam() -> None:
    plain = ResNetClassifier(10, in_channels=1, stem="cifar")
    module = ResNetClassifier(10, in_channels=1, stem="cifar", compile=True)
    module.configure_model()
    module.configure_model()  # Lightning calls it once per run: compile once
    assert module.compiled and not copy.deepcopy(module).compiled  # a copy compiles afresh
    assert list(module.state_dict()) == list(plain.state_dict())
    traced = module.to_torchscript(method="trace", example_inputs=torch.randn(2, 1, 8, 8))
    assert isinstance(traced, torch.jit.ScriptModule)  # the plain network, not the compiled call
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] is True


def test_bf16_mixed_fit_runs_dsrelu_in_bf16_and_logs_float32(tiny: TinyTrainer) -> None:
    module = ResNetClassifier(10, in_channels=1, stem="cifar")
    seen: set[torch.dtype] = set()
    for layer in module.modules():
        if isinstance(layer, DSReLU):
            layer.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    # bf16 convolutions are slow on CPU: one training batch and one validation batch
    # show every dtype.
    settings = tiny.kwargs(precision="bf16-mixed", limit_train_batches=1)
    trainer = pl.Trainer(callbacks=[SlopeScheduler()], **settings)
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert seen == {torch.bfloat16}
    logged = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
    assert {"train/loss", "train/acc", "val/loss", "val/auroc"} <= set(logged)
    for name, value in logged.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
