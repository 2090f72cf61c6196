"""What DSReLU's fast paths must preserve: the math, the saved bytes, torch.compile and bf16.

Speed itself is measured by benchmarks/ (ratios in one run), never here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyTrainer
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from dsrelu_lightning import DSReLU, ResNetClassifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn import dsrelu_kernel as kernel
from dsrelu_lightning.profiling import saved_tensor_bytes


@pytest.fixture
def kernel_mode() -> Iterator[None]:
    """Restore the process-wide kernel mode after a test changes it."""
    yield
    kernel.set_kernel_mode("auto")


@pytest.fixture
def fresh_kernels(kernel_mode: None) -> Iterator[None]:
    """No compiled kernel and no dynamo cache entry yet; counters start at zero."""
    torch._dynamo.reset()
    kernel._STATE.kernels.clear()
    counters.clear()
    yield
    torch._dynamo.reset()
    kernel._STATE.kernels.clear()


def _formula(x: torch.Tensor, slope: float, negative_slope: float) -> torch.Tensor:
    return torch.where(x > 0, slope * x, negative_slope * x)


@pytest.mark.parametrize("negative_slope", [1.0, 0.0, -0.3])
def test_eager_kernel_matches_the_formula_and_its_gradient(negative_slope: float) -> None:
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    slope = torch.tensor(math.tan(math.radians(70)), dtype=torch.float64)
    y = kernel.dsrelu(x, slope, negative_slope)
    torch.testing.assert_close(
        y, _formula(x.detach(), float(slope), negative_slope), rtol=0, atol=0
    )
    grad = torch.randn_like(x)
    y.backward(grad)
    factor = torch.where(x > 0, slope, torch.tensor(negative_slope, dtype=x.dtype))
    torch.testing.assert_close(x.grad, grad * factor, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda t: kernel.dsrelu(t, slope, negative_slope), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("negative_slope", [1.0, 0.0, -0.3])
def test_eager_kernels_equal_the_formula_bit_for_bit(
    dtype: torch.dtype, negative_slope: float
) -> None:
    x = torch.randn(1000, dtype=torch.float64).to(dtype)
    x[:4] = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0])
    grad = torch.randn(1000, dtype=dtype)
    slope = torch.tensor(1.7, dtype=dtype)
    # PyTorch computes bf16 arithmetic in float32 and rounds once (its "opmath"), so the
    # reference is the formula in that precision, rounded to ``dtype``: exact equality.
    # (The formula run in bf16 itself would round negative_slope to bf16 first.)
    opmath = torch.float32 if dtype == torch.bfloat16 else dtype
    wide = {"slope": slope.to(opmath), "negative_slope": negative_slope}
    expected = kernel.dsrelu_formula(x.to(opmath), **wide).to(dtype)
    forward = kernel.dsrelu_forward_eager(x, slope, negative_slope)
    torch.testing.assert_close(forward, expected, rtol=0, atol=0, equal_nan=True)
    finite = x.isfinite()  # the gradient at a NaN input is undefined (NaN loss anyway)
    expected_grad = kernel.dsrelu_gradient_formula(grad.to(opmath), x.to(opmath), **wide)
    torch.testing.assert_close(
        kernel.dsrelu_backward_eager(grad, x, slope, negative_slope)[finite],
        expected_grad.to(dtype)[finite],
        rtol=0,
        atol=0,
    )


def test_compiled_kernel_equals_eager_kernel_bit_for_bit(kernel_mode: None) -> None:
    x = torch.randn(4, 8, 16, 16)
    grad = torch.randn_like(x)
    slope = torch.tensor(0.37)
    results = {}
    for mode in ("eager", "compiled"):
        kernel.set_kernel_mode(mode)
        leaf = x.clone().requires_grad_(True)
        y = kernel.dsrelu(leaf, slope, 1.0)
        y.backward(grad)
        results[mode] = (y.detach(), leaf.grad)
    assert torch.equal(results["eager"][0], results["compiled"][0])
    assert torch.equal(results["eager"][1], results["compiled"][1])


def test_saves_no_more_bytes_than_leaky_relu(kernel_mode: None) -> None:
    x = torch.randn(8, 16, 16, 16, requires_grad=True)
    leaky = saved_tensor_bytes(F.leaky_relu, x, 0.01)
    assert leaky == x.numel() * x.element_size()
    for mode in ("eager", "compiled"):
        kernel.set_kernel_mode(mode)
        assert saved_tensor_bytes(DSReLU(), x) <= leaky
        assert saved_tensor_bytes(DSReLU(negative_slope=-0.5), x) <= leaky


def test_output_saving_gives_the_right_gradient_for_every_sign(kernel_mode: None) -> None:
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], requires_grad=True)
    for negative_slope in (1.0, 0.0, -0.5):
        x.grad = None
        kernel.dsrelu(x, torch.tensor(0.25), negative_slope).sum().backward()
        expected = torch.tensor([negative_slope] * 3 + [0.25, 0.25])
        torch.testing.assert_close(x.grad, expected)


def test_compile_failure_falls_back_to_eager_once(
    kernel_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(key: kernel.KernelKey) -> None:
        raise RuntimeError("no C++ compiler")

    kernel.set_kernel_mode("compiled")
    monkeypatch.setattr(kernel._STATE, "kernel", broken)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="on cpu failed .RuntimeError: no C.. compiler"):
        y = kernel.dsrelu(x, torch.tensor(2.0), 1.0)
    torch.testing.assert_close(y, _formula(x.detach(), 2.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the fallback is for good
        y.sum().backward()
        kernel.dsrelu(x.double(), torch.tensor(2.0, dtype=torch.float64), 0.5)
    assert kernel._STATE.failed_devices == {"cpu"}


# torch's own config patcher: pytest's monkeypatch.setattr deletes the key from torch's
# config on undo (pytest >= 9.2), which broke every later compiled call in the session.
@torch._dynamo.config.patch(recompile_limit=1)
def test_recompile_limit_falls_back_to_eager_for_that_key_only(fresh_kernels: None) -> None:
    kernel.set_kernel_mode("compiled")
    slope = torch.tensor(1.5)
    with torch.no_grad():
        kernel.dsrelu(torch.randn(2, 3, 4, 5), slope, 1.0)  # compiled; sizes dynamic
        # A size of 1 is specialised: a second graph for this key, past the limit of 1.
        with pytest.warns(RuntimeWarning, match="forward kernel for 4-D float32 .*recompile"):
            y = kernel.dsrelu(torch.randn(1, 3, 4, 5), slope, 1.0)
        assert y.shape == (1, 3, 4, 5)
        key = (0, torch.float32, "cpu", "no_grad", 4)
        assert kernel._STATE.eager_keys == {key}
        graphs = counters["stats"]["unique_graphs"]
        kernel.dsrelu(torch.randn(2, 3, 4, 5, dtype=torch.float64), slope.double(), 1.0)
    assert counters["stats"]["unique_graphs"] == graphs + 1  # float64 still compiles
    assert not kernel._STATE.failed_devices


def test_negative_slopes_dtypes_and_modes_keep_the_compiled_kernel(fresh_kernels: None) -> None:
    # negative_slope used to be a Python float baked into the graph: every (dtype,
    # negative_slope) pair compiled anew, the 9th hit dynamo's recompile_limit and the
    # fullgraph error switched the compiled kernel off for the whole process.
    kernel.set_kernel_mode("compiled")
    dtypes = (torch.float32, torch.float64, torch.bfloat16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dtype in dtypes:
            for negative_slope in (1.0, 0.0, -0.3, 0.5, 2.0):
                x = torch.randn(2, 3, 4, 5, dtype=dtype, requires_grad=True)
                slope = torch.tensor(1.7, dtype=dtype)
                y = kernel.dsrelu(x, slope, negative_slope)
                y.backward(torch.ones_like(y))
                torch.testing.assert_close(
                    y, kernel.dsrelu_formula(x.detach(), slope, negative_slope)
                )
                with torch.no_grad():
                    kernel.dsrelu(x.detach(), slope, negative_slope)
                with torch.inference_mode():
                    kernel.dsrelu(x.detach(), slope, negative_slope)
    assert not [str(w.message) for w in caught if "DSReLU" in str(w.message)]
    # One graph per kernel, dtype and grad mode: forward (autograd, no_grad, inference)
    # and backward.
    assert counters["stats"]["unique_graphs"] == 4 * len(dtypes)
    assert not counters["unimplemented"]


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
    other.progress.fill_(0.1)  # any in-place write, not only set_progress
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
    assert module.model._compiled_call_impl is not None
    assert list(module.state_dict()) == list(plain.state_dict())
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] is True


class _GraphsAtFirstEpoch(Callback):
    """Dynamo's graph count when the first epoch starts (after ``on_train_start``'s warm-up)."""

    graphs: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.graphs is None:
            self.graphs = counters["stats"]["unique_graphs"]


def test_fit_compiles_nothing_after_the_warm_up(fresh_kernels: None, tiny: TinyTrainer) -> None:
    # warm_up used a 1-D tensor: the first 4-D activation recompiled (dynamo guards the
    # flat view's base) and so did the first validation batch (an input without grad),
    # both inside the timed first epoch.
    module = ResNetClassifier(10, in_channels=1, stem="cifar")
    probe = _GraphsAtFirstEpoch()
    trainer = pl.Trainer(callbacks=[SlopeScheduler(), probe], **tiny.kwargs(max_epochs=2))
    # Batch 32 of 1x8x8 digits: the first stage's 32x64x8x8 activations use the compiled
    # kernel (COMPILED_KERNEL_MIN_NUMEL), in training and in validation.
    assert kernel.COMPILED_KERNEL_MIN_NUMEL <= 32 * 64 * 8 * 8
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert probe.graphs  # warm-up compiled the kernels before the first epoch ...
    assert counters["stats"]["unique_graphs"] == probe.graphs  # ... and the fit nothing more
    assert not counters["recompiles"] and not counters["unimplemented"]


def test_bf16_mixed_fit_runs_dsrelu_in_bf16_and_logs_float32(tiny: TinyTrainer) -> None:
    module = ResNetClassifier(10, in_channels=1, stem="cifar")
    seen: set[torch.dtype] = set()
    for layer in module.modules():
        if isinstance(layer, DSReLU):
            layer.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    # bf16 convolutions are slow on CPU: one training batch (of 32, so that the first
    # stage runs the compiled kernel) and one validation batch show every dtype.
    settings = tiny.kwargs(precision="bf16-mixed", limit_train_batches=1)
    trainer = pl.Trainer(callbacks=[SlopeScheduler()], **settings)
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert seen == {torch.bfloat16}
    logged = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))}
    assert {"train/loss", "train/acc", "val/loss", "val/auroc"} <= set(logged)
    for name, value in logged.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
