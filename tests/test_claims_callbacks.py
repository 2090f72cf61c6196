"""The claims' measurements: a fit logs train_eval/*, gap/*, units/* and grad/* every epoch,
and units/dead matches a count by hand on a network built with known dead channels."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch
from conftest import TinyTrainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.training import default_callbacks
from dsrelu_lightning.training.grad_flow import GradientFlow, network_stages
from dsrelu_lightning.training.module import Classifier
from dsrelu_lightning.training.unit_shapes import SIGMOID_SATURATION, TANH_SATURATION, unit_shape
from dsrelu_lightning.training.unit_stats import histogram_values

LIVE, DEAD = 4, 4


class KnownDeadNet(nn.Module):
    """One activation site over 8 channels: 4 from a convolution, 4 always -1 (dead under
    ReLU, on the identity side of DSReLU with negative slope 1)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, LIVE, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear((LIVE + DEAD) * 64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        live = self.conv(x)
        dead = torch.full_like(live, -1.0)  # DEAD == LIVE channels
        return self.head(self.act(torch.cat([live, dead], 1)).flatten(1))


def _fit(
    tiny: TinyTrainer, activation: str, train_eval: bool = True
) -> tuple[Classifier, DigitsDataModule, list[dict]]:
    model = Classifier(10, KnownDeadNet, activation=activation, in_channels=1)
    data = DigitsDataModule(train_fraction=0.5)
    logger = TensorBoardLogger(str(tiny.root), name="", version="")
    kwargs = tiny.kwargs(
        max_epochs=2, limit_val_batches=None, logger=logger, enable_checkpointing=True
    )
    callbacks = default_callbacks(
        unit_stats={"histogram_every_n_epochs": 1}, train_eval={"enabled": train_eval}
    )
    pl.Trainer(**kwargs, callbacks=callbacks).fit(model, data)
    with (tiny.root / "epoch_metrics.csv").open() as handle:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]
    return model, data, rows


def _site_input_extremes(model: Classifier, data: DigitsDataModule) -> tuple[Tensor, Tensor]:
    """By hand: each channel's smallest and largest input to the activation on the probe set."""
    inputs = []
    site = next(m for m in model.model.modules() if not isinstance(m, nn.Conv2d | nn.Linear)
                and not list(m.children()))  # fmt: skip
    handle = site.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()))
    model.eval()
    with torch.no_grad():
        for x, _ in data.train_eval_dataloader(256):
            model(x)
    handle.remove()
    values = torch.cat(inputs).movedim(1, 0).flatten(1)
    return values.amin(1), values.amax(1)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "dsrelu"])
def test_a_fit_logs_the_claims_measurements_every_epoch(tiny: TinyTrainer, activation: str) -> None:
    model, data, rows = _fit(tiny, activation)
    assert [row["epoch"] for row in rows] == [0, 1]
    stages = {"stem", "head"}
    names = [f"train_eval/{m}" for m in ("loss", "acc", "f1", "auroc")]
    names += ["gap/acc", "gap/loss", "units/dead", "units/linear", "units/saturated"]
    names += [f"grad/norm/{s}" for s in stages] + ["grad/first_to_last"]
    for row in rows:
        assert all(name in row for name in names), sorted(set(names) - set(row))
        assert row["gap/acc"] == pytest.approx(row["train_eval/acc"] - row["val/acc"])
        assert row["gap/loss"] == pytest.approx(row["val/loss"] - row["train_eval/loss"])
        ratio = row["grad/norm/stem"] / row["grad/norm/head"]
        assert row["grad/first_to_last"] == pytest.approx(ratio, rel=1e-5)
    # The last epoch's units/* are the final model's: count them by hand.
    low, high = _site_input_extremes(model, data)
    dead = (high <= 0).float().mean().item() if activation == "relu" else 0.0
    linear = ((high <= 0) | (low > 0)).float().mean().item()
    assert rows[-1]["units/dead"] == pytest.approx(dead)
    assert rows[-1]["units/linear"] == pytest.approx(linear)
    assert linear >= DEAD / (LIVE + DEAD)  # the constant channels are on one side
    assert rows[-1]["units/dead"] == pytest.approx(0.5 if activation == "relu" else 0.0)
    assert rows[-1]["units/saturated"] == 0.0
    events = list(tiny.root.glob("events.out.tfevents.*"))
    assert events and max(e.stat().st_size for e in events) > 1000  # histograms written


def test_train_eval_defaults_to_the_validation_size_without_augmentation() -> None:
    data = DigitsDataModule(train_fraction=0.1)
    data.setup()
    small = data.train_eval_dataloader()
    assert len(small.dataset) == len(data.train_dataset)  # fewer than validation: all of them
    full = DigitsDataModule()
    full.setup()
    loader = full.train_eval_dataloader()
    assert len(loader.dataset) == len(full.val_dataset)
    assert set(loader.dataset.indices) <= set(full.train_dataset.indices)
    assert loader.dataset.indices == full.train_eval_dataloader().dataset.indices  # fixed


def test_unit_shapes_follow_the_definitions() -> None:
    low, high = torch.tensor([-2.0, -1.0, 0.5, -1.0]), torch.tensor([-1.0, 1.0, 2.0, 0.0])
    relu = unit_shape(nn.ReLU())
    assert relu.dead(low, high).tolist() == [True, False, False, True]
    assert relu.linear(low, high).tolist() == [True, False, True, True]
    leaky = unit_shape(nn.LeakyReLU(0.01))
    assert not leaky.dead(low, high).any()
    relu6 = unit_shape(nn.ReLU6())
    assert relu6.dead(torch.tensor([7.0]), torch.tensor([9.0])).tolist() == [True]
    # sigmoid'(x) = 1% of 0.25 and tanh'(x) = 1% of 1 at the thresholds
    s = torch.sigmoid(torch.tensor(SIGMOID_SATURATION, dtype=torch.float64))
    assert float(s * (1 - s)) == pytest.approx(0.0025, rel=1e-6)
    assert 1 - torch.tanh(torch.tensor(TANH_SATURATION, dtype=torch.float64)) ** 2 == pytest.approx(
        0.01
    )
    tanh = unit_shape(nn.Tanh())
    assert tanh.saturated(torch.tensor([99.0, 98.0]), torch.tensor([100.0, 100.0])).tolist() == [
        True,
        False,
    ]


def test_stages_of_a_resnet_are_stem_its_layers_and_head() -> None:
    from torchvision.models import resnet18

    stages = network_stages(resnet18())
    assert list(stages) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert len(stages["stem"]) == 3 and len(stages["head"]) == 2  # conv1 + bn1; fc


def test_the_switches_turn_each_measurement_off(tiny: TinyTrainer) -> None:
    model = Classifier(10, KnownDeadNet, activation="relu", in_channels=1)
    off = {"enabled": False}
    callbacks = default_callbacks(train_eval=off, unit_stats=off, grad_flow=off)
    trainer = pl.Trainer(**tiny.kwargs(enable_checkpointing=True), callbacks=callbacks)
    trainer.fit(model, DigitsDataModule())
    logged = set(trainer.callback_metrics)
    assert not {k for k in logged if k.startswith(("train_eval/", "gap/", "units/", "grad/"))}
    assert "val/acc" in logged


@pytest.mark.slow
def test_units_without_train_eval_come_from_a_probe_pass_of_their_own(tiny: TinyTrainer) -> None:
    # With train_eval on, its pass also feeds the unit hooks; off, UnitStats runs its own.
    model, data, rows = _fit(tiny, "relu", train_eval=False)
    assert not any(key.startswith(("train_eval/", "gap/")) for key in rows[-1])
    low, high = _site_input_extremes(model, data)
    assert rows[-1]["units/dead"] == pytest.approx((high <= 0).float().mean().item())
    assert rows[-1]["units/linear"] == pytest.approx(
        ((high <= 0) | (low > 0)).float().mean().item()
    )


class _LogRecorder(nn.Module):
    """Stands in for the LightningModule: a network under ``model`` and what it logs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.logged: dict[str, Tensor] = {}

    def log_dict(self, values: dict[str, Tensor], **_: object) -> None:
        self.logged.update(values)


def _steps(flow: GradientFlow, module: _LogRecorder, steps: list[tuple[float, float]]) -> None:
    """Optimizer steps whose first layer's gradient norm is ``stem`` and last one's ``head``."""
    first, last = module.model
    for stem, head in steps:
        first.weight.grad = torch.full((2, 2), stem / 2)  # norm = stem
        last.weight.grad = torch.full((1, 2), head / 2**0.5)  # norm = head
        flow.on_before_optimizer_step(None, module, None)  # type: ignore[arg-type]
    flow.on_train_epoch_end(None, module)  # type: ignore[arg-type]


def _two_layers() -> _LogRecorder:
    return _LogRecorder(nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)))


def test_grad_flow_averages_finite_nonzero_steps_only_and_starts_mid_epoch() -> None:
    # fp16's scaler skips a step whose gradients overflowed: its inf norm is not averaged in;
    # a saturated loss gives a step no gradient at all: counted in zero_steps, not averaged.
    module, flow = _two_layers(), GradientFlow()
    root2 = 2**0.5
    with pytest.warns(UserWarning, match="25% of an epoch's optimizer steps had no gradient"):
        _steps(flow, module, [(3.0, root2), (float("inf"), root2), (0.0, 0.0), (1.0, root2)])
    assert float(module.logged["grad/norm/stem"]) == pytest.approx(2.0)  # (3 + 1) / 2
    assert float(module.logged["grad/norm/head"]) == pytest.approx(root2)  # 3 finite steps
    assert float(module.logged["grad/first_to_last"]) == pytest.approx(2.0 / root2)
    assert float(module.logged["grad/zero_steps"]) == pytest.approx(0.25)


def test_an_epoch_without_any_gradient_logs_nan_norms() -> None:
    module, flow = _two_layers(), GradientFlow()
    flow.on_train_epoch_start(None, module)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="the loss saturated"):
        _steps(flow, module, [(0.0, 0.0), (0.0, 0.0)])
    # 0 / 0: NaN, logged so that the epoch's history row does not repeat the last epoch's
    assert all(module.logged[k].isnan() for k in module.logged if k != "grad/zero_steps")
    assert {"grad/norm/stem", "grad/first_to_last"} <= set(module.logged)
    assert float(module.logged["grad/zero_steps"]) == 1.0


def test_a_histogram_keeps_a_bounded_seeded_draw_of_a_large_input() -> None:
    x = torch.randn(64, 8, 40, 40)  # 819,200 values
    drawn = histogram_values(x, limit=1000)
    assert drawn.shape == (1000,) and drawn.device.type == "cpu"
    assert torch.equal(drawn, histogram_values(x, limit=1000))  # the same draw each epoch
    assert set(drawn.tolist()) <= set(x.reshape(-1).tolist())
    assert abs(drawn.mean().item()) < 0.15 and 0.85 < drawn.std().item() < 1.15
    small = torch.arange(10.0).reshape(2, 5)
    assert torch.equal(histogram_values(small, limit=1000), torch.arange(10.0))  # all of it
