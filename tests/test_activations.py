"""DSReLU against its formula, its validation, and the activation registry."""

from __future__ import annotations

import functools
import inspect
import math
import pickle
from collections.abc import Iterator

import pytest
import torch
from bit_patterns import SPECIAL_VALUES, assert_same_bits
from torch import nn

from dsrelu_lightning import ACTIVATIONS, DSReLU, build_activation, dsrelu_slope
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn import dsrelu_kernel
from dsrelu_lightning.nn.activations import (
    activation_defaults,
    activation_factory,
    canonical_activation_name,
)


def formula(x: torch.Tensor, t: float, a_deg: float, b_deg: float, k: float, neg: float):
    a, b = math.tan(math.radians(a_deg)), math.tan(math.radians(b_deg))
    s = a + (b - a) / (1 + math.exp(-k * (t - 0.5)))
    return torch.where(x > 0, s * x, neg * x), s


@pytest.mark.parametrize("seed", range(5))
def test_dsrelu_matches_formula_in_float64(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = float(torch.rand((), generator=gen))
    a = 20 + 70 * float(torch.rand((), generator=gen)) * 0.95
    b = 5 + 60 * float(torch.rand((), generator=gen))
    k = 1 + 9 * float(torch.rand((), generator=gen))
    neg = float(torch.randn((), generator=gen))
    act = DSReLU(a, b, k, neg).double()
    act.set_progress(t)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    y = act(x)
    expected, s = formula(x.detach(), t, a, b, k, neg)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    assert act.slope == pytest.approx(s, rel=1e-12)
    (grad,) = torch.autograd.grad(y.sum(), x)
    expected_grad = torch.where(x > 0, torch.full_like(x, s), torch.full_like(x, neg)).detach()
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(act, (x[:1, :1],))


@pytest.fixture(params=dsrelu_kernel.KERNEL_MODES)
def kernel_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each kernel path: the default (eager) and the opt-in fused one; the mode as before after."""
    before = dsrelu_kernel.kernel_mode()
    dsrelu_kernel.set_kernel_mode(request.param)
    yield request.param
    dsrelu_kernel.set_kernel_mode(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("negative_slope", [1.0, 0.0, -0.4])
def test_dsrelu_gives_the_formulas_bits_in_float32_and_bfloat16(
    kernel_mode: str, dtype: torch.dtype, negative_slope: float
) -> None:
    # Reduced precision computes in float32 and rounds once, as PyTorch's own kernels do.
    gen = torch.Generator().manual_seed(7)
    act = DSReLU(negative_slope=negative_slope)
    act.set_progress(0.3)
    x = torch.randn(4, 8, 8, 8, generator=gen)
    x.view(-1)[: len(SPECIAL_VALUES)] = torch.tensor(SPECIAL_VALUES)
    x = x.to(dtype).requires_grad_(True)
    y = act(x)
    slope, negative = torch.tensor(act.slope), torch.tensor(negative_slope)
    factor = torch.where(x.detach() > 0, slope, negative)  # float32 (opmath)
    assert_same_bits(y, (x.detach() * factor).to(dtype))
    grad = torch.randn(x.shape, generator=gen).to(dtype)
    y.backward(grad)
    assert_same_bits(x.grad, (grad * factor).to(dtype))
    if kernel_mode == "fused":
        from dsrelu_lightning.nn import dsrelu_fused_opt_in as fused

        if fused._STATE.failed:
            pytest.skip(f"this machine cannot build the fused kernels: {fused._STATE.failed}")
        assert {(0, dtype, 1), (1, dtype, 1)} <= set(fused._STATE.kernels)  # they ran


def test_paper_defaults_and_slope_endpoints() -> None:
    act = DSReLU()
    assert (act.initial_angle, act.final_angle, act.steepness, act.negative_slope) == (
        85.0,
        10.0,
        5.0,
        1.0,
    )
    a, b = math.tan(math.radians(85)), math.tan(math.radians(10))
    assert act.slope == pytest.approx(a + (b - a) / (1 + math.exp(2.5)))
    act.set_progress(1.0)
    assert act.slope == pytest.approx(a + (b - a) / (1 + math.exp(-2.5)))
    assert dsrelu_slope(0.5, a, b, 5.0) == pytest.approx((a + b) / 2)


def test_dsrelu_slope_accepts_tensors() -> None:
    t = torch.tensor([0.0, 0.5, 1.0])
    out = dsrelu_slope(t, 2.0, 1.0, 5.0)
    expected = torch.tensor([float(dsrelu_slope(float(v), 2.0, 1.0, 5.0)) for v in t])
    torch.testing.assert_close(out, expected)


def test_progress_is_a_saved_scalar_buffer() -> None:
    act = DSReLU()
    assert "progress" in dict(act.named_buffers())
    act.set_progress(0.3)
    state = act.state_dict()
    assert state["progress"].shape == () and float(state["progress"]) == pytest.approx(0.3)
    other = DSReLU()
    other.load_state_dict(state)
    assert other.slope == pytest.approx(act.slope)
    assert act.to(torch.float64).progress.dtype == torch.float64


@pytest.mark.parametrize("angle", [0.0, 90.0, -5.0, 120.0])
def test_angles_outside_open_interval_raise(angle: float) -> None:
    with pytest.raises(ValueError, match="initial_angle"):
        DSReLU(initial_angle=angle)
    with pytest.raises(ValueError, match="final_angle"):
        DSReLU(final_angle=angle)


@pytest.mark.parametrize("name", ["initial_angle", "final_angle", "steepness", "negative_slope"])
@pytest.mark.parametrize("value", ["abc", float("nan"), float("inf"), None, True])
def test_non_numbers_raise_naming_the_argument(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"DSReLU {name}=.* must be a finite number"):
        DSReLU(**{name: value})


@pytest.mark.parametrize("t", [-0.01, 1.01, float("nan")])
def test_progress_outside_unit_interval_raises(t: float) -> None:
    with pytest.raises(ValueError, match="progress"):
        DSReLU().set_progress(t)


def test_fixed_slope_variant_is_not_scheduled() -> None:
    assert DSReLU(45, 45).is_scheduled is False
    assert DSReLU().is_scheduled is True


def test_the_papers_leaky_relu_has_slope_0_01() -> None:
    x = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(build_activation("leaky_relu")(x), torch.where(x > 0, x, 0.01 * x))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_build_activation_returns_new_module_each_call(name: str) -> None:
    first, second = build_activation(name), build_activation(name.upper())
    assert isinstance(first, nn.Module) and first is not second
    assert type(first) is type(second)


def test_build_activation_accepts_class_callable_and_kwargs() -> None:
    assert isinstance(build_activation(nn.Tanh), nn.Tanh)
    made = build_activation(lambda: DSReLU(75, 30))
    assert (made.initial_angle, made.final_angle) == (75, 30)
    variant = build_activation("dsrelu", initial_angle=80, final_angle=15, steepness=10)
    assert (variant.initial_angle, variant.final_angle, variant.steepness) == (80, 15, 10)


def test_bad_kwargs_and_non_module_factories_raise() -> None:
    with pytest.raises(ValueError, match="bad arguments"):
        build_activation("relu", slope=3)
    with pytest.raises(ValueError, match="not an nn.Module"):
        build_activation(lambda: 3)
    with pytest.raises(ValueError, match="must be a name"):
        build_activation(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "name"), [("ReLU", "relu"), (" Leaky-ReLU ", "leaky_relu"), ("DSRELU", "dsrelu")]
)
def test_canonical_name_is_the_registry_key(spec: str, name: str) -> None:
    assert canonical_activation_name(spec) == name


def test_canonical_name_refuses_unknown_names_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="unknown activation 'swishy'; valid names: ds"):
        canonical_activation_name("swishy")


def test_defaults_are_the_registered_factories_keyword_defaults() -> None:
    assert activation_defaults("leaky-relu") == {"negative_slope": 0.01, "inplace": False}
    assert activation_defaults("dsrelu") == {
        "initial_angle": 85.0,
        "final_angle": 10.0,
        "steepness": 5.0,
        "negative_slope": 1.0,
        "inplace": False,
        "schedule": "sigmoid",
        "constant_slope": None,
        "equivalent_leaky": False,
    }
    assert activation_defaults("tanh") == {}


def test_defaults_of_an_unreadable_factory_are_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    opaque = functools.partial(max)  # a builtin: inspect cannot read its signature
    with pytest.raises(ValueError, match="no signature found"):
        inspect.signature(opaque)
    monkeypatch.setitem(ACTIVATIONS, "opaque", opaque)
    assert activation_defaults("opaque") == {}


def test_factory_makes_a_new_configured_module_per_call() -> None:
    make = activation_factory("DSReLU", initial_angle=75, final_angle=30)
    first, second = make(), make()
    assert isinstance(first, DSReLU) and first is not second
    assert (second.initial_angle, second.final_angle) == (75, 30)
    # A registered name's factory pickles (a lambda over build_activation would not).
    clone = pickle.loads(pickle.dumps(make))()
    assert isinstance(clone, DSReLU) and clone.final_angle == 30


def test_factory_fails_when_made_not_when_first_called() -> None:
    calls: list[int] = []

    def counting() -> nn.Module:
        calls.append(1)
        return nn.ReLU()

    make = activation_factory(counting)
    assert len(calls) == 1  # validated by building once
    assert isinstance(make(), nn.ReLU) and len(calls) == 2
    with pytest.raises(ConfigurationError, match=r"bad arguments \{'slope': 2\}"):
        activation_factory("dsrelu", slope=2)
    with pytest.raises(ConfigurationError, match="initial_angle=95"):
        activation_factory("dsrelu", initial_angle=95)
    with pytest.raises(ConfigurationError, match="not an nn.Module"):
        activation_factory(lambda: "relu")
