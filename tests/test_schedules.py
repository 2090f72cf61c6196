"""DSReLU's slope schedules: the built-ins, the user's own by import path, the slope cache,
the LeakyReLU DSReLU equals up to a scale, and schedules through fit, checkpoint and grid."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import CONFIGS, DIGITS_CONFIG, TinyTrainer, run_main, small_classifier, tiny_args
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters
from torch.utils.data import TensorDataset

from dsrelu_lightning import Classifier, DSReLU, SlopeScheduler, dsrelu_slope
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import dsrelu_modules
from dsrelu_lightning.nn.frozen import freeze_dsrelu
from dsrelu_lightning.nn.schedules import SCHEDULES
from dsrelu_lightning.study.report.schedule_figure import schedule_shapes

A, B = math.tan(math.radians(85)), math.tan(math.radians(10))
TIMES = (0.0, 0.1, 0.25, 0.5, 0.7, 1.0)

EXPECTED = {
    "sigmoid": lambda t: A + (B - A) / (1 + math.exp(-5 * (t - 0.5))),
    "linear": lambda t: A + (B - A) * t,
    "cosine": lambda t: A + (B - A) * (1 - math.cos(math.pi * t)) / 2,
    "exponential": lambda t: A * (B / A) ** t,
    "step": lambda t: A if t < 0.5 else B,
    "constant": lambda t: A,
    "reverse_sigmoid": lambda t: B + (A - B) / (1 + math.exp(-5 * (t - 0.5))),
}


# --- the schedules ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_each_builtin_gives_its_formula_on_floats_and_on_device_tensors(name: str) -> None:
    assert set(EXPECTED) == set(SCHEDULES)
    for t in TIMES:
        expected = EXPECTED[name](t)
        assert SCHEDULES[name](t, A, B, 5.0) == pytest.approx(expected, rel=1e-12)
        on_tensor = SCHEDULES[name](torch.tensor(t), A, B, 5.0)
        assert isinstance(on_tensor, Tensor) and on_tensor.shape == ()
        float32 = pytest.approx(expected, rel=1e-5)  # (a - b cancels to 4e-6 at t = 1)
        assert on_tensor.dtype == torch.float32 and float(on_tensor) == float32
        layer = DSReLU(schedule=name)
        layer.set_progress(t)
        assert layer.slope == float32 and float(layer(torch.ones(3))[0]) == float32
        assert layer.slope_at(t) == pytest.approx(expected, rel=1e-12)


def test_dsrelu_slope_is_the_default_schedule_with_its_public_signature() -> None:
    assert SCHEDULES["sigmoid"] is dsrelu_slope and DSReLU().schedule == "sigmoid"
    assert dsrelu_slope(t=0.3, initial_slope=A, final_slope=B, steepness=5.0) == pytest.approx(
        EXPECTED["sigmoid"](0.3)
    )


def test_constant_schedules_hold_their_slope_and_are_not_scheduled() -> None:
    start, end = DSReLU(schedule="constant"), DSReLU(schedule="constant", constant_slope=B)
    for t in TIMES:
        assert start.slope_at(t) == pytest.approx(A) and end.slope_at(t) == pytest.approx(B)
    assert not start.is_scheduled and not end.is_scheduled
    assert DSReLU(schedule="linear").is_scheduled
    assert "schedule='constant', constant_slope=0.176" in repr(end)
    with pytest.raises(ConfigurationError, match="constant_slope=2 applies to schedule 'const"):
        DSReLU(constant_slope=2)
    with pytest.raises(ConfigurationError, match="constant_slope=-1 must be > 0"):
        DSReLU(schedule="constant", constant_slope=-1)


def test_a_users_function_is_used_as_given(tmp_path: Path) -> None:
    layer = DSReLU(schedule="user_schedules.halfway")
    layer.set_progress(0.25)
    assert layer.schedule == "user_schedules.halfway" and layer.is_scheduled
    assert layer.slope == pytest.approx(A + (B - A) / 2 * 0.5, rel=1e-6)
    assert DSReLU(schedule=lambda t, a, b, k: a + 0 * t).slope_at(1.0) == pytest.approx(A)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            "user_schedules.negative",
            "'user_schedules.negative' gives slope -5.71503 at t=0 (initial",
        ),
        ("user_schedules.nan_at_the_end", "'user_schedules.nan_at_the_end' gives slope nan at t=1"),
        ("user_schedules.one_argument", "failed at t=0: TypeError: one_argument() takes 1"),
        ("user_schedules.not_a_function", "'user_schedules.not_a_function' is a float, not a fu"),
        ("no_such_module.fn", "cannot import DSReLU schedule 'no_such_module.fn' (ModuleNotFo"),
        ("user_schedules.missing", "has no attribute 'missing'"),
        ("sigmoidal", "unknown DSReLU schedule 'sigmoidal'; valid: sigmoid, linear, cosine"),
    ],
)
def test_a_broken_schedule_is_one_line_from_python_and_exit_2_at_the_cli(
    schedule: str, message: str, tiny: TinyTrainer, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError) as info:
        DSReLU(schedule=schedule)
    assert message in str(info.value) and "\n" not in str(info.value)
    args = f'--model.activation_args={{"schedule": "{schedule}"}}'
    code, _, err, _ = run_main("fit", "--config", DIGITS_CONFIG, *tiny.args(), args)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(str(info.value)), err[-2000:]
    assert not (tmp_path / "lightning_logs").exists()


# --- the slope cache: writes through public APIs ---------------------------------------------


def test_loading_a_state_dict_changes_the_slope_used() -> None:
    x = torch.ones(4)
    trained = nn.Sequential(nn.Identity(), DSReLU(schedule="cosine"))
    trained[1].set_progress(0.8)
    fresh = nn.Sequential(nn.Identity(), DSReLU(schedule="cosine"))
    assert float(fresh(x)[0]) == pytest.approx(A, rel=1e-6)  # caches the slope at t = 0
    fresh.load_state_dict(trained.state_dict())  # through the parent: the child's hook runs
    assert float(fresh(x)[0]) == pytest.approx(EXPECTED["cosine"](0.8), rel=1e-6)
    assigned = DSReLU(schedule="cosine")
    assigned(x)
    assigned.load_state_dict({"progress": torch.tensor(0.5)}, assign=True)
    assert float(assigned(x)[0]) == pytest.approx(EXPECTED["cosine"](0.5), rel=1e-6)
    assert float(assigned.double()(x.double())[0]) == pytest.approx(EXPECTED["cosine"](0.5))


# --- DSReLU is a LeakyReLU times s ----------------------------------------------------------


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_dsrelu_is_s_times_leaky_relu_of_slope_1_over_s_in_value_and_gradient(t: float) -> None:
    x = torch.randn(64, dtype=torch.float64)
    x[:3] = torch.tensor([0.0, -0.0, 1e-300])
    dsrelu, equivalent = DSReLU(), DSReLU(equivalent_leaky=True)
    for layer in (dsrelu, equivalent):
        layer.set_progress(t)
    s = dsrelu.slope_at(t)
    x1, x2, x3 = (x.clone().requires_grad_() for _ in range(3))
    y1, y2, y3 = dsrelu(x1), s * F.leaky_relu(x2, 1 / s), equivalent(x3)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(y3, F.leaky_relu(x.double(), 1 / s))
    g = torch.randn_like(x)
    for y in (y1, y2, y3):
        y.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(x3.grad * s, x1.grad)
    assert equivalent.applied_slopes == pytest.approx((1.0, 1 / s))


class BNChain(nn.Module):
    """conv without bias -> BatchNorm -> activation, three times; global average pooling;
    a linear head without bias: a network where only BatchNorm's eps sees the slope's scale."""

    def __init__(self, make_activation: type[nn.Module] | None = None, **kwargs: object) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 8), (8, 16), (16, 16)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            layers.append(DSReLU(**kwargs))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(16, 10, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean((2, 3)))


@pytest.mark.parametrize("schedule", ["sigmoid", "step"])
@torch.no_grad()
def test_a_bn_network_predicts_the_same_class_with_dsrelu_and_leaky_relu_equiv(
    schedule: str,
) -> None:
    torch.manual_seed(1)
    dsrelu = BNChain(schedule=schedule).double()
    equivalent = copy.deepcopy(dsrelu)
    for layer in dsrelu_modules(equivalent):
        layer.equivalent_leaky = True
    x = torch.randn(256, 1, 8, 8, dtype=torch.float64)
    for t in (0.0, 0.4, 0.9):
        for layer in dsrelu_modules(dsrelu) + dsrelu_modules(equivalent):
            layer.set_progress(t)
        s = dsrelu_modules(dsrelu)[0].slope
        for network in (dsrelu, equivalent):  # BatchNorm statistics of this batch, exactly
            for m in network.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
        logits = [network.train()(x) for network in (dsrelu, equivalent)]
        # Each conv-BN pair removes the scale (but for BN's eps); the last layer's s remains.
        scale = float(logits[0].abs().max())
        torch.testing.assert_close(logits[0], s * logits[1], rtol=0, atol=1e-3 * scale)
        assert torch.equal(logits[0].argmax(1), logits[1].argmax(1))
        evaluated = [network.eval()(x) for network in (dsrelu, equivalent)]  # same statistics
        assert torch.equal(evaluated[0].argmax(1), evaluated[1].argmax(1))


def test_freezing_keeps_the_slopes_the_schedule_gave() -> None:
    x = torch.randn(100)
    for kwargs in ({"schedule": "cosine"}, {"schedule": "linear", "equivalent_leaky": True}):
        layer = DSReLU(**kwargs)
        layer.set_progress(0.5)
        frozen = freeze_dsrelu(layer)
        assert (frozen.slope, frozen.negative_slope) == layer.applied_slopes
        assert torch.equal(frozen(x), layer(x))
    assert layer.applied_slopes == pytest.approx((1.0, 1 / EXPECTED["linear"](0.5)))


# --- no recompilation per schedule -----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"schedule": "cosine"}, {"schedule": "user_schedules.halfway"}, {"equivalent_leaky": True}],
)
def test_compiled_network_does_not_recompile_as_a_schedule_moves(kwargs: dict) -> None:
    torch._dynamo.reset()
    counters.clear()
    model = BNChain(**kwargs)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x = torch.randn(4, 1, 6, 6)
    for t in (0.0, 0.25, 0.5, 1.0):
        for layer in dsrelu_modules(model):
            layer.set_progress(t)
        out = compiled(x)
        out.sum().backward()
        torch.testing.assert_close(out, model(x))
    assert counter.frame_count == 1
    assert not counters["graph_break"] and not counters["recompiles"]


class _CompilationProbe(Callback):
    """torch's compilation counts when training starts (after the warm-up) and ends."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    @staticmethod
    def _count() -> int:
        recompiles = sum(counters["recompiles"].values())
        return counters["aot_autograd"]["total"] + counters["stats"]["unique_graphs"] + recompiles

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.counts.append(self._count())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.counts.append(self._count())


def test_a_fit_with_a_non_default_schedule_compiles_nothing_after_the_warm_up(
    tiny: TinyTrainer,
) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 1, 8, 8, generator=generator), torch.randint(0, 10, (12,))
    data = pl.LightningDataModule.from_datasets(
        TensorDataset(x[:8], y[:8]), TensorDataset(x[8:], y[8:]), batch_size=3
    )  # batches of 3 and a last one of 2
    probe = _CompilationProbe()
    settings = {"limit_train_batches": None, "limit_val_batches": None}
    trainer = pl.Trainer(
        callbacks=[SlopeScheduler(), probe], **tiny.kwargs(max_epochs=3, **settings)
    )
    model = small_classifier(activation_args={"schedule": "exponential"})
    trainer.fit(model, data)
    start, end = probe.counts
    assert end == start
    assert dsrelu_modules(model)[0].slope == pytest.approx(EXPECTED["exponential"](2 / 3))


# --- through the command line: fit, log, checkpoint, grid ------------------------------------


def _epoch_slopes(run: Path) -> list[float]:
    rows = list(csv.DictReader((run / "epoch_metrics.csv").open()))
    return [float(r["dsrelu/slope"]) for r in rows if r.get("dsrelu/slope")]


def test_a_linear_fit_logs_its_schedule_and_reloads_from_its_checkpoint(
    tiny: TinyTrainer, tmp_path: Path
) -> None:
    schedule = '--model.activation_args={"schedule": "linear"}'
    fit = ["--config", DIGITS_CONFIG, *tiny.args(max_epochs=3), schedule]
    run_main("fit", *fit).ok()
    (run,) = (tmp_path / "lightning_logs").iterdir()
    slopes = _epoch_slopes(run)
    assert slopes == pytest.approx([EXPECTED["linear"](e / 3) for e in range(3)], rel=1e-6)
    model = Classifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    layers = dsrelu_modules(model)
    assert {m.schedule for m in layers} == {"linear"}
    assert layers[0].slope == pytest.approx(slopes[-1], rel=1e-6)
    run_main("test", *fit, "--ckpt_path=last").ok()
    assert (run / "eval" / "last" / "test_metrics.json").is_file()


def test_a_users_schedule_by_import_path_trains(tiny: TinyTrainer, tmp_path: Path) -> None:
    schedule = '--model.activation_args={"schedule": "user_schedules.halfway"}'
    run_main("fit", "--config", DIGITS_CONFIG, *tiny.args(max_epochs=2), schedule).ok()
    (run,) = (tmp_path / "lightning_logs").iterdir()
    expected = [A + (B - A) / 2 * math.sqrt(e / 2) for e in range(2)]
    assert _epoch_slopes(run) == pytest.approx(expected, rel=1e-6)


def test_a_grid_runs_the_schedule_ablation_labels(tmp_path: Path) -> None:
    output = tmp_path / "out"
    command = ["benchmark", "--grid", str(CONFIGS / "benchmark_digits.yaml"), "--folds", "0"]
    command += ["--activations", "dsrelu_linear,leaky_relu_equiv", "--output", str(output)]
    command += [*tiny_args(max_epochs=1), "--keep_checkpoints", "none"]
    run_main(*command).ok()
    records = {
        p.parts[-4]: json.loads(p.read_text()) for p in output.glob("digits/*/*/*/result.json")
    }
    assert set(records) == {"dsrelu_linear", "leaky_relu_equiv"}
    assert records["dsrelu_linear"]["activation_args"] == {"schedule": "linear"}
    assert records["leaky_relu_equiv"]["activation_args"] == {"equivalent_leaky": True}
    assert all(
        r["status"] == "finished" and math.isfinite(r["val"]["loss"]) for r in records.values()
    )


def test_the_schedule_figure_draws_every_builtin_and_its_reciprocal() -> None:
    left, right = schedule_shapes().axes
    assert [line.get_label() for line in left.get_lines()] == list(SCHEDULES)
    for slope, negative in zip(left.get_lines(), right.get_lines(), strict=False):
        assert negative.get_ydata() * slope.get_ydata() == pytest.approx(1.0)
    linear = left.get_lines()[list(SCHEDULES).index("linear")].get_ydata()
    assert (linear[0], linear[-1]) == pytest.approx((A, B))
