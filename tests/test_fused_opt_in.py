"""The opt-in TorchInductor CPU kernels (``DSRELU_KERNEL=fused``): the formula's bits, one
kernel pair per dtype, and the eager kernel wherever a raw-pointer kernel cannot run."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from bit_patterns import SPECIAL_VALUES, assert_same_bits
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from dsrelu_lightning.nn import dsrelu_fused_opt_in as fused
from dsrelu_lightning.nn import dsrelu_kernel as kernel


@pytest.fixture
def fused_mode() -> Iterator[None]:
    """The opt-in kernels, none built yet; the previous mode and torch's counters after."""
    before = kernel.kernel_mode()
    kernel.set_kernel_mode("fused")
    fused._STATE.forget_kernels()
    counters.clear()
    yield
    kernel.set_kernel_mode(before)
    fused._STATE.forget_kernels()


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Torch on 2 threads (the parallel kernels need more than one), as before afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _formula_pair(x: torch.Tensor, grad: torch.Tensor, slope: torch.Tensor, neg: float):
    return (
        kernel.dsrelu_formula(x, slope, neg),
        kernel.dsrelu_gradient_formula(grad, x, slope, neg),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("negative_slope", [1.0, 0.3, -0.3])
@pytest.mark.parametrize("channels", [8, 32])  # 8,192 and 32,768 elements: serial, parallel
def test_fused_kernels_give_the_formulas_bits(
    fused_mode: None,
    two_threads: None,
    dtype: torch.dtype,
    layout: torch.memory_format,
    negative_slope: float,
    channels: int,
) -> None:
    generator = torch.Generator().manual_seed(channels)
    x = torch.randn(4, channels, 16, 16, generator=generator)
    x.view(-1)[: len(SPECIAL_VALUES)] = torch.tensor(SPECIAL_VALUES)
    x = x.to(dtype).contiguous(memory_format=layout)
    grad = torch.randn(x.shape, generator=generator).to(dtype).contiguous(memory_format=layout)
    slope = torch.tensor(0.37)  # negative_slope 0.3 and 0.37 are no bf16 numbers
    leaf = x.clone().requires_grad_(True)
    y = kernel.dsrelu(leaf, slope, negative_slope)  # x saved: the formula's gradient exactly
    y.backward(grad)
    assert y.stride() == x.stride() and leaf.grad.stride() == x.stride()
    expected_y, expected_grad = _formula_pair(x, grad, slope, negative_slope)
    assert_same_bits(y, expected_y)
    assert_same_bits(leaf.grad, expected_grad)
    threads = 2 if channels == 32 else 1  # the parallel kernel from 32,768 elements
    assert {(i, dtype, threads) for i in (0, 1)} <= set(fused._STATE.kernels)
    assert not fused._STATE.failed


def test_one_kernel_pair_per_dtype_serves_every_rank_layout_and_mode(fused_mode: None) -> None:
    inputs = [
        torch.randn(7),
        torch.randn(5, 6).t(),  # dense, transposed
        torch.randn(2, 5, 7),
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
                y = kernel.dsrelu(leaf, slope, negative_slope, positive_slope=True)
                grad = torch.randn_like(y)
                y.backward(grad)
                expected, expected_grad = _formula_pair(leaf.detach(), grad, slope, negative_slope)
                assert_same_bits(y, expected)
                assert_same_bits(leaf.grad, expected_grad)
                with torch.inference_mode():
                    assert_same_bits(kernel.dsrelu(x.to(dtype), slope, negative_slope), expected)
        # A gradient laid out unlike the saved tensor: the eager backward, same bits.
        x = torch.randn(2, 3, 4, 5, dtype=dtype).contiguous(memory_format=torch.channels_last)
        leaf = x.requires_grad_(True)
        grad = torch.randn(2, 3, 4, 5, dtype=dtype)
        kernel.dsrelu(leaf, slope, 0.5).backward(grad)
        assert_same_bits(leaf.grad, _formula_pair(x.detach(), grad, slope, 0.5)[1])
    # Two compilations per dtype (forward, backward), counted by AOTAutograd; no dynamo frame.
    assert counters["aot_autograd"]["total"] == 4
    assert not counters["stats"]["unique_graphs"] and not counters["recompiles"]
    assert len(fused._STATE.kernels) == 4 and not fused._STATE.failed


def test_kernels_run_serial_below_atens_grain_size_and_parallel_from_it(
    fused_mode: None, two_threads: None
) -> None:
    kernel.warm_up("cpu", torch.float32)
    for index in (0, 1):
        code = {
            v: Path(fused._STATE.kernels[(index, torch.float32, v)].generated_code) for v in (1, 2)
        }
        assert "#pragma omp parallel" not in code[1].read_text()
        assert "#pragma omp parallel num_threads(2)" in code[2].read_text()


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_backward_under_a_dispatch_mode_runs_ops_the_mode_sees(fused_mode: None) -> None:
    # Before: the forward skipped the raw-pointer kernel under a dispatch mode but the
    # backward did not: a mode saw only an empty_like, and a FakeTensor reached raw pointers.
    x = torch.randn(4, 100, requires_grad=True)
    y = kernel.dsrelu(x, torch.tensor(1.5), 0.5, positive_slope=True)
    assert (0, torch.float32, 1) in fused._STATE.kernels  # the forward ran fused
    recorder = _Recorder()
    with recorder:
        y.backward(torch.ones_like(y))
    assert any("mul" in op for op in recorder.ops), recorder.ops
    assert torch.equal(x.grad, torch.where(x > 0, 1.5, 0.5))


def test_raw_pointer_kernels_take_only_what_they_can_read(fused_mode: None) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    kernel.warm_up("cpu", torch.float32)
    x = torch.randn(100)
    with pytest.raises(RuntimeError, match="must match the size"):
        kernel.dsrelu(x, torch.empty(0), 0.5)  # the formula's broadcasting error
    per_element = torch.full((100,), 2.0)
    per_element[0] = 3.0
    assert torch.equal(
        kernel.dsrelu(x, per_element, 0.5), torch.where(x > 0, x * per_element, 0.5 * x)
    )
    with FakeTensorMode():
        fake = kernel.dsrelu(torch.randn(4, 100), torch.tensor(1.5), 1.0, positive_slope=True)
    assert fake.shape == (4, 100)
    slope = torch.tensor(0.7)
    grads = torch.func.vmap(torch.func.grad(lambda t: kernel.dsrelu(t, slope, 0.2).sum()))(
        torch.randn(3, 50)
    )
    assert grads.shape == (3, 50) and not fused._STATE.failed
    assert fused.forward(torch.randn(1), slope, 0.2) is None  # make_fx specialises size 1
    # Other devices (CUDA: the fused path has not run on a GPU) keep the eager kernel.
    assert fused.forward(torch.empty(100, device="meta"), slope, 0.2) is None


def test_a_failed_build_warns_once_and_leaves_that_dtype_eager(
    fused_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = fused._build

    def no_bf16(key: fused.KernelKey) -> object:
        if key[1] == torch.bfloat16:
            raise RuntimeError("no C++ compiler")
        return build(key)

    monkeypatch.setattr(fused, "_build", no_bf16)
    x = torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    slope = torch.tensor(2.0)
    with pytest.warns(RuntimeWarning) as caught:  # both directions are built together
        y = kernel.dsrelu(x, slope, 1.0, positive_slope=True)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "fused forward kernel for bfloat16 failed (RuntimeError: no C" in messages[0]
    assert_same_bits(y, kernel.dsrelu_formula(x.detach(), slope, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the fallback is for good
        for t in (x, x.float()):  # float32 still compiles
            kernel.dsrelu(t, slope, 1.0).backward(torch.ones_like(t))
    assert set(fused._STATE.failed) == {(i, torch.bfloat16, 1) for i in (0, 1)}
    assert set(fused._STATE.kernels) == {(i, torch.float32, 1) for i in (0, 1)}


def test_generated_code_of_another_shape_is_refused_not_called(
    fused_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should inductor's calling convention change, the build fails (one warning) and the
    # eager kernel runs: never a kernel called with the wrong arguments.
    monkeypatch.setattr(fused, "_direct_call", lambda compiled: None)
    x = torch.randn(4, 8)
    with pytest.warns(RuntimeWarning, match="not the single C\\+\\+ kernel expected"):
        y = kernel.dsrelu(x, torch.tensor(1.5), 0.5)
    assert_same_bits(y, kernel.dsrelu_formula(x, torch.tensor(1.5), 0.5))
    assert not fused._STATE.kernels


def test_the_mode_comes_from_the_environment_and_unknown_values_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kernel._Settings, "mode", None)  # not read yet, as in a new process
    monkeypatch.delenv(kernel.KERNEL_ENV, raising=False)
    assert kernel.kernel_mode() == "eager"
    monkeypatch.setattr(kernel._Settings, "mode", None)
    monkeypatch.setenv(kernel.KERNEL_ENV, " Fused ")
    assert kernel.kernel_mode() == "fused"
    monkeypatch.setattr(kernel._Settings, "mode", None)
    monkeypatch.setenv(kernel.KERNEL_ENV, "auto")  # the old default's name
    with pytest.raises(
        ValueError, match=r"^DSRELU_KERNEL='auto' is not a DSReLU kernel: use "
    ) as error:
        kernel.dsrelu(torch.ones(3), torch.tensor(1.0))
    assert "\n" not in str(error.value)
