"""The op itself: ``dsrelu()`` gives the formula's bits and gradient for any slopes, and
works under ``torch.func``. Written against the API that has existed since the op did,
so each test also shows what was wrong before (see the issue-32 notes in each)."""

from __future__ import annotations

import pytest
import torch
from bit_patterns import SPECIAL_VALUES, assert_same_bits

from dsrelu_lightning import DSReLU
from dsrelu_lightning.nn.dsrelu_kernel import dsrelu

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _reference(x: torch.Tensor, slope: float, negative_slope: float) -> torch.Tensor:
    """The formula's factor ``where(x > 0, slope, negative_slope)`` in x's opmath dtype."""
    opmath = torch.promote_types(x.dtype, torch.float32)
    s, n = (torch.tensor(v, dtype=opmath) for v in (slope, negative_slope))
    return torch.where(x > 0, s, n)


def _inputs(dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor([*SPECIAL_VALUES, float("nan")])
    return torch.cat([values, torch.randn(500, generator=generator)]).to(dtype)


@pytest.mark.parametrize("slope", [-0.5, 0.0, -2.0])
@pytest.mark.parametrize("negative_slope", [1.0, 0.3])
def test_a_slope_that_is_not_positive_gets_the_formulas_gradient(
    slope: float, negative_slope: float
) -> None:
    # Before: y was saved and ``y > 0`` read as ``x > 0``; slope -0.5 gave [1, 1].
    x = torch.tensor([1.0, -1.0, 2.0, 0.0, -0.0], requires_grad=True)
    dsrelu(x, torch.tensor(slope), negative_slope).sum().backward()
    torch.testing.assert_close(x.grad, _reference(x.detach(), slope, negative_slope))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("negative_slope", [1.0, 0.0, -0.5, 0.3])
@pytest.mark.parametrize("slope", [1.3, 0.37, -0.8])
def test_the_op_gives_the_formulas_bits_at_zeros_infinities_and_subnormals(
    dtype: torch.dtype, negative_slope: float, slope: float
) -> None:
    # Before: with negative_slope < 0 the eager kernel gave +0.0 at x = +0.0 where the
    # formula (and F.leaky_relu) give -0.0; the checks compared with ==, blind to it.
    x = _inputs(dtype).requires_grad_(True)
    s = torch.tensor(slope)  # float32: float64 inputs use its float32 value
    y = dsrelu(x, s, negative_slope)
    factor = _reference(x.detach(), float(s), negative_slope)
    assert_same_bits(y, (x.detach() * factor).to(dtype))
    grad = _inputs(dtype, seed=1).nan_to_num(0.0).flip(0)  # ±0 and ±inf gradients too
    y.backward(grad)
    # Where slope * x underflows to 0 a saved output cannot tell x > 0: the subnormal
    # inputs (1e-40) then get negative_slope's gradient; only slopes > 1 rule that out.
    known = x.detach().abs() > 1e-30 if 0 < slope < 1 else torch.ones_like(x, dtype=torch.bool)
    known &= ~x.detach().isnan()
    expected = (grad * factor).to(dtype)
    assert_same_bits(x.grad[known], expected[known])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("negative_slope", [1.0, -0.5])
def test_the_module_gives_the_formulas_bits_at_signed_zeros(
    dtype: torch.dtype, negative_slope: float
) -> None:
    layer = DSReLU(negative_slope=negative_slope).to(dtype)
    layer.set_progress(0.4)
    x = torch.tensor([0.0, -0.0, 1e-40, -1e-40, float("inf"), float("-inf")], dtype=dtype)
    expected = x * _reference(x, layer.slope, negative_slope)
    assert_same_bits(layer(x), expected)


def test_torch_func_grad_and_vmap_run_through_the_op() -> None:
    # Before: both raised "must override the setup_context staticmethod".
    slope = torch.tensor(0.7)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))

    def total(t: torch.Tensor) -> torch.Tensor:
        return dsrelu(t, slope, 0.2).sum()

    expected_grad = _reference(x, 0.7, 0.2)
    torch.testing.assert_close(torch.func.grad(total)(x), expected_grad, rtol=0, atol=0)
    batched = torch.func.vmap(lambda t: dsrelu(t, slope, 0.2))(x)
    assert_same_bits(batched, x * expected_grad)
    per_sample = torch.func.vmap(torch.func.grad(total))(x)
    torch.testing.assert_close(per_sample, expected_grad, rtol=0, atol=0)
    layer = DSReLU(negative_slope=0.2)
    layer.set_progress(0.5)
    jacobian = torch.func.jacrev(layer)(x[0])
    assert torch.equal(jacobian, torch.diag(_reference(x[0], layer.slope, 0.2)))


def test_create_graph_gives_a_differentiable_gradient() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    slope = torch.tensor(1.7, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: dsrelu(t, slope, -0.3), (x,))
    assert torch.autograd.gradgradcheck(lambda t: dsrelu(t, slope, -0.3), (x,))
