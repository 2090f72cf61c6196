"""What DSReLU's fast paths must preserve: the math, the saved bytes, torch.compile and bf16.

Speed itself is measured by benchmarks/ (ratios in one run), never here.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import TinyTrainer
from torch import nn
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from dsrelu_lightning import DSReLU, ResNetClassifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn import dsrelu_fused as fused
from dsrelu_lightning.nn import dsrelu_kernel as kernel
from dsrelu_lightning.profiling import saved_tensor_bytes


@pytest.fixture
def kernel_mode() -> Iterator[None]:
    """Restore the process-wide kernel mode after a test changes it."""
    yield
    kernel.set_kernel_mode("auto")


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Torch on 2 threads (the parallel kernels need more than one), as before afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_kernels(kernel_mode: None) -> Iterator[None]:
    """No fused kernel built and no dynamo cache entry yet; torch's counters at zero."""
    torch._dynamo.reset()
    fused._STATE.forget_kernels()
    counters.clear()
    yield
    torch._dynamo.reset()
    fused._STATE.forget_kernels()


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("negative_slope", [1.0, 0.3, -0.3])
@pytest.mark.parametrize("channels", [8, 32])  # 8,192 and 32,768 elements: serial, parallel
def test_compiled_kernel_equals_eager_kernel_bit_for_bit(
    kernel_mode: None,
    two_threads: None,
    dtype: torch.dtype,
    layout: torch.memory_format,
    negative_slope: float,
    channels: int,
) -> None:
    # bf16 with negative_slope 0.3 (not a bf16 number): the compiled kernel used to round
    # it to bf16 (its 0-dim input was in x's dtype) while the eager one used float32.
    x = torch.randn(4, channels, 16, 16).to(dtype).contiguous(memory_format=layout)
    grad = torch.randn_like(x)
    slope = torch.tensor(0.37)
    results = {}
    for mode in ("eager", "auto"):
        kernel.set_kernel_mode(mode)
        leaf = x.clone().requires_grad_(True)
        y = kernel.dsrelu(leaf, slope, negative_slope)
        y.backward(grad)
        assert y.stride() == x.stride() and leaf.grad.stride() == x.stride()
        results[mode] = (y.detach(), leaf.grad)
    assert torch.equal(results["eager"][0], results["auto"][0])
    assert torch.equal(results["eager"][1], results["auto"][1])
    threads = 2 if channels == 32 else 1  # the parallel kernel from 32,768 elements
    assert {(i, dtype, torch.device("cpu"), threads) for i in (0, 1)} <= set(fused._STATE.kernels)
    assert not fused._STATE.failed


def test_one_kernel_pair_per_dtype_serves_every_rank_layout_size_and_mode(
    fresh_kernels: None,
) -> None:
    kernel.set_kernel_mode("auto")
    inputs = [
        torch.randn(7),
        torch.randn(5, 6).t(),  # dense, transposed
        torch.randn(2, 5, 7),  # a transformer's (batch, tokens, features)
        torch.randn(2, 3, 4, 5),
        torch.randn(1, 3, 1, 5),  # sizes of 1
        torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
        torch.randn(2, 3, 2, 4, 5).contiguous(memory_format=torch.channels_last_3d),
        torch.randn(2, 6, 4, 5)[:, ::2],  # not dense: the eager kernel
    ]
    slope = torch.tensor(1.7)
    for dtype in (torch.float32, torch.bfloat16):
        for x in inputs:
            for negative_slope in (1.0, 0.0, -0.3):
                leaf = x.to(dtype).detach().requires_grad_(True)
                y = kernel.dsrelu(leaf, slope, negative_slope)
                grad = torch.randn_like(y)
                y.backward(grad)
                expected = kernel.dsrelu_formula(leaf.detach(), slope, negative_slope)
                assert torch.equal(y, expected)
                factor = kernel.dsrelu_gradient_formula(grad, leaf.detach(), slope, negative_slope)
                assert torch.equal(leaf.grad, factor)
                with torch.no_grad():
                    assert torch.equal(kernel.dsrelu(leaf, slope, negative_slope), expected)
                with torch.inference_mode():
                    kernel.dsrelu(x.to(dtype), slope, negative_slope)
        # A gradient laid out unlike the saved output: the eager backward, same values;
        # unless only size-1 dimensions' strides differ (the same memory): fused.
        for shape in ((2, 3, 4, 5), (6, 7, 1, 1)):
            x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
            leaf = x.requires_grad_(True)
            grad = torch.randn(shape, dtype=dtype)
            assert fused._same_order(grad, leaf) == (shape[2:] == (1, 1))
            kernel.dsrelu(leaf, slope, 0.5).backward(grad)
            expected = kernel.dsrelu_gradient_formula(grad, leaf.detach(), slope, 0.5)
            assert torch.equal(leaf.grad, expected)
    # Two compilations per dtype (forward, backward), counted by AOTAutograd, which every
    # inductor compilation goes through; no TorchDynamo frame at all.
    assert counters["aot_autograd"]["total"] == 4
    assert not counters["stats"]["unique_graphs"] and not counters["recompiles"]
    assert len(fused._STATE.kernels) == 4 and not fused._STATE.failed


def test_kernels_run_on_torchs_threads_as_aten_does_whatever_inductor_cached(
    fresh_kernels: None, two_threads: None
) -> None:
    # Inductor parallelises a loop only if its size hint promises each thread enough
    # work, and its FX graph cache ignores hints: the forward kernel once came back serial
    # from an earlier compilation of the same formula at 1,000 elements, and ran on one of
    # two threads (DSReLU's op at 1.4x leaky_relu's time). Now each kernel's threading is
    # part of its inductor settings: serial below ATen's grain size, parallel from it.
    from torch.fx.experimental.proxy_tensor import make_fx

    scalars = [torch.ones(()), torch.ones(())]
    graph = make_fx(kernel.dsrelu_formula, tracing_mode="symbolic")(torch.zeros(1000), *scalars)
    inputs = [node.meta["val"] for node in graph.graph.nodes if node.op == "placeholder"]
    torch._inductor.compile(graph, inputs)  # the same formula, a small hint
    fused.warm_up("cpu", torch.float32)
    large, small = torch.randn(fused.PARALLEL_MIN_NUMEL), torch.randn(100)
    assert fused._key(0, large)[3] == 2 and fused._key(0, small)[3] == 1
    cpu = torch.device("cpu")
    for index in (0, 1):
        code = {}
        for variant in (1, 2):
            built = fused._STATE.kernels[(index, torch.float32, cpu, variant)]
            code[variant] = Path(built.generated_code).read_text()
        assert "#pragma omp parallel" not in code[1]
        assert "#pragma omp parallel num_threads(2)" in code[2]


def test_inputs_the_raw_pointer_kernels_cannot_take_run_the_eager_kernel(
    fresh_kernels: None,
) -> None:
    # The CPU kernels get raw pointers and read slope[0]: a slope that is not 0-dim read
    # a null pointer (empty: the process died) or used its first element everywhere; a
    # FakeTensor has no memory at all. The eager kernel's broadcasting rules apply instead.
    fused.warm_up("cpu", torch.float32)
    x = torch.randn(100)
    with pytest.raises(RuntimeError, match="must match the size"):
        kernel.dsrelu(x, torch.empty(0), 0.5)
    per_element = torch.full((100,), 2.0)
    per_element[0] = 3.0
    y = kernel.dsrelu(x, per_element, 0.5)
    assert torch.equal(y, torch.where(x > 0, x * per_element, 0.5 * x))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = kernel.dsrelu(torch.randn(4, 100), torch.tensor(1.5), 1.0)
    assert fake.shape == (4, 100) and not fused._STATE.failed


def test_sizes_outside_the_kernels_assumptions_take_the_eager_kernel(kernel_mode: None) -> None:
    # A fused kernel is called without the guards a compiled graph would carry: make_fx
    # traced a size above 1, and Triton kernels index with int32.
    kernel.set_kernel_mode("auto")
    assert not fused._fusable(torch.empty(1))
    assert fused._fusable(torch.empty(2))
    assert fused._fusable(torch.empty(1).expand(2**31 - 1))
    assert not fused._fusable(torch.empty(1).expand(2**31))
    x = torch.tensor([-2.0], requires_grad=True)
    kernel.dsrelu(x, torch.tensor(3.0), 0.5).backward(torch.ones(1))
    assert x.grad.tolist() == [0.5]


def test_a_direct_call_that_fails_its_check_keeps_inductors_wrappers(
    fresh_kernels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On CPU the kernels skip AOTAutograd's runtime wrappers by calling inductor's
    # generated code; should its calling convention change, the check at build time
    # falls back to the wrapped function instead of giving wrong results or no kernel.
    def wrong(compiled: object, device: torch.device) -> object:
        return lambda *tensors: torch.zeros_like(tensors[0])

    monkeypatch.setattr(fused, "_direct_call", wrong)
    kernel.set_kernel_mode("auto")
    x = torch.randn(4, 8, requires_grad=True)
    y = kernel.dsrelu(x, torch.tensor(1.5), 0.5)
    y.backward(torch.ones_like(y))
    assert torch.equal(y, kernel.dsrelu_formula(x.detach(), torch.tensor(1.5), 0.5))
    assert torch.equal(x.grad, torch.where(x > 0, 1.5, 0.5))
    assert len(fused._STATE.kernels) == 2 and not fused._STATE.failed


def test_saves_no_more_bytes_than_leaky_relu(kernel_mode: None) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(8, 16, 16, 16, dtype=dtype).contiguous(memory_format=layout)
            x.requires_grad_(True)
            leaky = saved_tensor_bytes(F.leaky_relu, x, 0.01)
            assert leaky == x.numel() * x.element_size()
            for mode in ("eager", "auto"):
                kernel.set_kernel_mode(mode)
                for layer in (DSReLU(), DSReLU(negative_slope=-0.5)):
                    layer.set_progress(0.3)
                    assert saved_tensor_bytes(layer, x) <= leaky


def test_output_saving_gives_the_right_gradient_for_every_sign(kernel_mode: None) -> None:
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], requires_grad=True)
    for mode in ("eager", "auto"):
        kernel.set_kernel_mode(mode)
        for negative_slope in (1.0, 0.0, -0.5):
            x.grad = None
            kernel.dsrelu(x, torch.tensor(0.25), negative_slope).sum().backward()
            expected = torch.tensor([negative_slope] * 3 + [0.25, 0.25])
            torch.testing.assert_close(x.grad, expected)


def test_outputs_are_not_views_so_in_place_use_fails_as_for_relu(kernel_mode: None) -> None:
    # The compiled path returned a view of its flat result: in-place use raised a
    # custom-Function view error instead of autograd's usual version-counter error.
    for mode in ("eager", "auto"):
        kernel.set_kernel_mode(mode)
        x = torch.randn(2, 3, 8, 8, requires_grad=True)
        y = kernel.dsrelu(x * 1, torch.tensor(1.5), 1.0)
        assert not y._is_view()
        y.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.sum().backward()


def test_a_failed_build_falls_back_to_eager_for_that_key_only(
    fresh_kernels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = fused._build

    def no_bf16(key: fused.KernelKey) -> object:
        if key[1] == torch.bfloat16:
            raise RuntimeError("no C++ compiler")
        return build(key)

    monkeypatch.setattr(fused, "_build", no_bf16)
    kernel.set_kernel_mode("auto")
    x = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    slope = torch.tensor(2.0)
    with pytest.warns(RuntimeWarning) as caught:  # both directions are built together
        y = kernel.dsrelu(x, slope, 1.0)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "forward kernel for bfloat16 on cpu failed (RuntimeError: no C" in messages[0]
    assert "backward kernel for bfloat16 on cpu failed (RuntimeError: no C" in messages[1]
    assert torch.equal(y, kernel.dsrelu_formula(x.detach(), slope, 1.0))
    y.backward(torch.ones_like(y))  # (a sum's gradient is not dense: eager anyway)
    assert torch.equal(x.grad, torch.full_like(x, 2.0).where(x > 0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the fallback is for good
        for t in (x, x.float()):  # float32 still compiles
            y = kernel.dsrelu(t, slope, 1.0)
            y.backward(torch.ones_like(y))
    cpu, serial = torch.device("cpu"), 1  # 96 elements: the serial kernels
    assert set(fused._STATE.failed) == {(i, torch.bfloat16, cpu, serial) for i in (0, 1)}
    assert set(fused._STATE.kernels) == {(i, torch.float32, cpu, serial) for i in (0, 1)}


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
