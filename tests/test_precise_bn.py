"""PreciseBN (recalibrated statistics, val_ema/*, untouched training) and the staleness monitor."""

from __future__ import annotations

import copy
import csv
import json
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import DDPRun, TinyTrainer, small_classifier
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from tiny_nets import SmallCNN
from torch import nn

from dsrelu_lightning import (
    BNStalenessMonitor,
    Classifier,
    MetricsHistory,
    PreciseBN,
    ResNetClassifier,
    SlopeScheduler,
)
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.data.sampling import EpochSeededRandomSampler
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.replace import replace_activations
from dsrelu_lightning.training.bn_staleness import eval_mode_staleness
from dsrelu_lightning.training.bn_stats import (
    batch_norms,
    recalibrate,
    recalibrate_eval_consistent,
)

_model = small_classifier


def test_recalibrated_buffers_equal_a_cumulative_average_of_the_batch_statistics() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3)
    ).eval()
    batches = [torch.randn(n, 1, 8, 8) * 3 + 1 for n in (16, 16, 7)]
    seen: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    reference = copy.deepcopy(model).train()
    for layer in reference.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.register_forward_pre_hook(
                lambda m, args: seen.setdefault(m, []).append(
                    (args[0].mean((0, 2, 3)), args[0].var((0, 2, 3), unbiased=True))
                )
            )
    with torch.no_grad():
        for batch in batches:
            reference(batch)
    assert recalibrate(model, iter(batches)) == 3
    assert not model.training and not any(m.training for m in model.modules())
    for layer, stats in zip(
        [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)], seen.values(), strict=True
    ):
        means, variances = zip(*stats, strict=True)
        torch.testing.assert_close(layer.running_mean, torch.stack(means).mean(0))
        torch.testing.assert_close(layer.running_var, torch.stack(variances).mean(0))
        assert int(layer.num_batches_tracked) == 3 and layer.momentum == 0.1


@pytest.mark.parametrize("eval_consistent", [True, False])
def test_the_callback_recalibrates_from_the_epochs_first_training_batches(
    tiny: TinyTrainer, eval_consistent: bool
) -> None:
    model, data = _model(), DigitsDataModule(batch_size=16)
    precise = PreciseBN(enabled=True, num_batches=5, log_ema=False, eval_consistent=eval_consistent)
    callbacks = [SlopeScheduler(), precise]
    trainer = pl.Trainer(callbacks=callbacks, **tiny.kwargs(max_epochs=1))
    trainer.fit(model, data)
    assert "val/acc" in trainer.callback_metrics
    assert not any(k.startswith("val_ema/") for k in trainer.callback_metrics)
    # limit_train_batches=2: the recalibration used those 2 batches of epoch 0's order,
    # with the weights the validation saw (the final ones).
    sampler = EpochSeededRandomSampler(data.train_dataset, seed=torch.initial_seed())
    order = list(sampler)
    batches = [
        torch.stack([data.train_dataset[i][0] for i in order[k * 16 : (k + 1) * 16]])
        for k in range(2)
    ]
    reference = copy.deepcopy(model)
    (recalibrate_eval_consistent if eval_consistent else recalibrate)(reference, batches)
    for name, layer in batch_norms(model).items():
        expected = batch_norms(reference)[name]
        torch.testing.assert_close(layer.running_mean, expected.running_mean, msg=name)
        torch.testing.assert_close(layer.running_var, expected.running_var, msg=name)


def _eval_mode_input_means(
    model: nn.Module, batches: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each BN's input mean in an eval-mode forward, averaged over the batches."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [
        layer.register_forward_pre_hook(
            lambda m, args, name=name: seen.setdefault(name, []).append(args[0].mean((0, 2, 3)))
        )
        for name, layer in batch_norms(model).items()
    ]
    with torch.no_grad():
        for batch in batches:
            model.eval()(batch)
    for hook in hooks:
        hook.remove()
    return {name: torch.stack(means).mean(0) for name, means in seen.items()}


def test_eval_consistent_statistics_are_the_means_evaluation_feeds_each_layer() -> None:
    torch.manual_seed(0)
    network = replace_activations(SmallCNN(in_channels=1), "sigmoid", targets=["ReLU"])
    batches = [torch.randn(16, 1, 8, 8) * 3 + 1 for _ in range(4)]
    for recalibration, agrees in ((recalibrate_eval_consistent, True), (recalibrate, False)):
        model = copy.deepcopy(network)
        assert recalibration(model, batches) == 4
        fed = _eval_mode_input_means(model, batches)
        for name, layer in batch_norms(model).items():
            off = ((fed[name] - layer.running_mean).abs() / layer.running_var.sqrt()).max()
            # The first layer's input does not depend on any statistics: equal either way.
            assert (off < 1e-6) == (agrees or name == "bn1"), (recalibration.__name__, name)


class Recorder(Callback):
    """Every training batch's inputs, loss and a draw from each RNG; each epoch's val metrics."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, float, float]] = []
        self.val: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import random

        import numpy as np

        draws = float(torch.rand(())) + float(np.random.rand()) + random.random()
        self.batches.append((float(batch[0].sum()), float(outputs["loss"]), draws))

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_training_is_unchanged_and_val_ema_is_what_the_running_statistics_give(
    tiny: TinyTrainer,
) -> None:
    def fit(*extra: Callback) -> tuple[Recorder, ResNetClassifier]:
        pl.seed_everything(7)
        recorder, model = Recorder(), _model()
        callbacks = [SlopeScheduler(), *extra, recorder]
        trainer = pl.Trainer(callbacks=callbacks, **tiny.kwargs(max_epochs=3))
        trainer.fit(model, DigitsDataModule(batch_size=16))
        return recorder, model

    plain, plain_model = fit()
    precise, precise_model = fit(PreciseBN(enabled=True, num_batches=3))
    # Same batches, losses and random draws, bit for bit; same final weights.
    assert precise.batches == plain.batches and len(plain.batches) == 6
    precise_weights = precise_model.state_dict()
    for name, weight in plain_model.state_dict().items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(weight, precise_weights[name]), name
    # val_ema/* of the precise run is exactly the plain run's val/*, every epoch.
    assert len(precise.val) == 3
    for ema, val in zip(precise.val, plain.val, strict=True):
        for metric in ("loss", "acc", "f1", "auroc"):
            assert ema[f"val_ema/{metric}"] == pytest.approx(val[f"val/{metric}"], abs=1e-5)
    assert "val_ema/acc" not in plain.val[0]


def test_a_checkpoint_holds_the_recalibrated_statistics(tiny: TinyTrainer, tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    recorder = Recorder()
    callbacks = [SlopeScheduler(), PreciseBN(enabled=True), checkpoint, recorder]
    trainer = pl.Trainer(
        callbacks=callbacks, **tiny.kwargs(max_epochs=2, enable_checkpointing=True)
    )
    data = DigitsDataModule(batch_size=16)
    trainer.fit(_model(), data)
    logged = recorder.val[-1]
    # Recalibrated over the epoch's 2 batches; the running averages had tracked all 4.
    saved = torch.load(checkpoint.last_model_path, map_location="cpu", weights_only=False)
    tracked = {k: int(v) for k, v in saved["state_dict"].items() if "num_batches_tracked" in k}
    assert set(tracked.values()) == {2}
    evaluator = pl.Trainer(**tiny.kwargs())
    (result,) = evaluator.validate(_model(), data, ckpt_path=checkpoint.last_model_path)
    for metric in ("loss", "acc", "f1", "auroc"):
        assert result[f"val/{metric}"] == pytest.approx(logged[f"val/{metric}"], rel=1e-5)
    assert not any(key.startswith("val_ema/") for key in result)


class _NoBatchNorm(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/loss", F.cross_entropy(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_gap_warning_says_how_far_back_the_slowest_running_average_reaches(
    tiny: TinyTrainer,
) -> None:
    # torchvision's MobileNetV3 uses BatchNorm momentum 0.01: after digits' 18 batches its
    # running averages still carry 83% of their initial values, and val_ema/* is at chance.
    model = Classifier(10, "mobilenet_v3_small", activation="relu", in_channels=1, stem="cifar")
    trainer = pl.Trainer(
        callbacks=[PreciseBN(enabled=True)],
        **tiny.kwargs(limit_train_batches=None, limit_val_batches=None),
    )
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(model, DigitsDataModule(batch_size=64))
    gaps = [str(w.message) for w in seen if "the running statistics lag behind" in str(w.message)]
    assert len(gaps) == 1
    assert (
        "(BatchNorm momentum 0.01 in 'model.features.0.1': its running averages span about 100 "
        f"training batches and, after 18, still weigh their initial values by {0.99**18:.2f})"
    ) in gaps[0]


def test_a_model_without_batchnorm_gets_one_warning(tiny: TinyTrainer) -> None:
    trainer = pl.Trainer(callbacks=[PreciseBN(enabled=True)], **tiny.kwargs(max_epochs=2))
    with pytest.warns(UserWarning, match="no BatchNorm layer") as caught:
        trainer.fit(_NoBatchNorm(), DigitsDataModule(batch_size=16))
    assert sum("no BatchNorm layer" in str(w.message) for w in caught) == 1


@pytest.mark.parametrize("bad", [0, -3])
def test_num_batches_below_one_is_refused(bad: int) -> None:
    with pytest.raises(ConfigurationError, match=f"num_batches must be >= 1, got {bad}"):
        PreciseBN(enabled=True, num_batches=bad)


class _SettledStatistics(Callback):
    """Start from statistics of the training data (as after many epochs), one BN scaled."""

    def __init__(self, scale: float, layer: str = "model.bn2") -> None:
        self.scale, self.layer = scale, layer

    def on_train_start(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        recalibrate(pl_module, (x for x, _ in loader))
        for layer in batch_norms(pl_module).values():
            layer.num_batches_tracked.fill_(1000)
        batch_norms(pl_module)[self.layer].running_var.mul_(self.scale)


def _monitored_fit(kwargs: dict, tmp_path: Path, scale: float) -> list[dict[str, str]]:
    kwargs = {**kwargs, "logger": CSVLogger(tmp_path, name="run")}
    callbacks = [
        _SettledStatistics(scale),
        PreciseBN(enabled=True, num_batches=2),
        BNStalenessMonitor(),
        MetricsHistory(),
    ]
    trainer = pl.Trainer(callbacks=callbacks, **{**kwargs, "max_epochs": 1})
    trainer.fit(_model("relu"), DigitsDataModule(batch_size=32))
    return list(csv.DictReader((Path(trainer.log_dir) / MetricsHistory.filename).open()))


def test_stale_ratio_is_about_one_for_fitting_statistics_and_logged_with_val_ema(
    tiny: TinyTrainer, tmp_path: Path
) -> None:
    (row,) = _monitored_fit(tiny.kwargs(), tmp_path, scale=1.0)
    assert 0.7 < float(row["bn/stale_ratio"]) < 1.5
    for metric in ("loss", "acc", "f1", "auroc"):
        assert row[f"val_ema/{metric}"] != "" and row[f"val/{metric}"] != ""


def test_stale_ratio_is_large_for_a_stale_layer_and_warns_naming_it(
    tiny: TinyTrainer, tmp_path: Path
) -> None:
    kwargs = {**tiny.kwargs(), "logger": CSVLogger(tmp_path, name="run")}
    callbacks = [_SettledStatistics(100.0), BNStalenessMonitor(), MetricsHistory()]
    trainer = pl.Trainer(callbacks=callbacks, **{**kwargs, "max_epochs": 1})
    with pytest.warns(UserWarning, match=r"'model.bn2'.*--precise_bn.enabled true"):
        trainer.fit(_model("relu"), DigitsDataModule(batch_size=32))
    (row,) = csv.DictReader((Path(trainer.log_dir) / MetricsHistory.filename).open())
    assert float(row["bn/stale_ratio"]) > 50


def test_the_monitor_does_not_change_training(tiny: TinyTrainer) -> None:
    def losses(*extra: Callback) -> list[tuple[float, float, float]]:
        pl.seed_everything(3)
        recorder = Recorder()
        trainer = pl.Trainer(callbacks=[*extra, recorder], **tiny.kwargs(max_epochs=1))
        trainer.fit(_model("relu"), DigitsDataModule(batch_size=32))
        return recorder.batches

    assert losses(_SettledStatistics(1.0), BNStalenessMonitor()) == losses(_SettledStatistics(1.0))


@pytest.mark.slow
def test_ddp_ranks_hold_identical_recalibrated_buffers(ddp_run: DDPRun) -> None:
    tmp_path = ddp_run.folder
    assert ddp_run.done.returncode == 0, ddp_run.done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"bn_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["buffers"] == ranks[1]["buffers"]
    # Pooled: each rank recalibrated on its own 2 batches (all its epoch has); they hold
    # the average over the 4.
    assert set(ranks[0]["tracked"]) == {4}
    assert ranks[0]["local"] != ranks[1]["local"]  # the ranks' own averages did differ


def test_iterating_a_loader_inside_preserved_rng_moves_no_random_stream() -> None:
    import random

    import numpy as np
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    from dsrelu_lightning.training.bn_stats import loader_batches, preserved_rng

    dataset = TensorDataset(torch.arange(20.0))
    generator = torch.Generator().manual_seed(5)
    loader = DataLoader(dataset, batch_size=4, sampler=RandomSampler(dataset, generator=generator))

    def draws() -> tuple[float, float, float, float]:
        return (
            float(torch.rand(())),
            float(np.random.rand()),
            random.random(),
            float(torch.rand((), generator=generator)),
        )

    states = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
        generator.get_state(),
    )
    expected = draws()
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])
    generator.set_state(states[3])
    with preserved_rng(torch.device("cpu"), loader):
        assert len(list(loader_batches(loader, 3))) == 3
        draws()
    assert draws() == expected


def test_a_fragile_network_fools_train_mode_statistics_and_the_monitor_names_its_layer() -> None:
    # A sigmoid far from linear after a BatchNorm that, in train mode, normalises batches of
    # two: the next layer's train-mode inputs are not what eval mode feeds it.
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Sigmoid(),
        nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Sigmoid(), nn.Linear(16, 10),
    )  # fmt: skip
    with torch.no_grad():
        network[1].weight.fill_(4.0)
        network[1].bias.fill_(2.0)
    samples = torch.randn(512, 64)
    batches, probe = list(samples[:128].split(2)), samples[256:]
    classic, consistent = copy.deepcopy(network), copy.deepcopy(network)
    recalibrate(classic, batches)
    recalibrate_eval_consistent(consistent, batches)
    name, ratio, _ = eval_mode_staleness(classic, probe, classic, batch_norms(classic)).worst()
    assert name == "4" and ratio > BNStalenessMonitor().threshold
    fitting = eval_mode_staleness(consistent, probe, consistent, batch_norms(consistent))
    assert all(0.8 < r < 1.25 for r in fitting.ratio.values()), fitting
    assert all(s < 0.3 for s in fitting.shift.values()), fitting


def test_bn_figures_are_logged_every_epoch_of_a_cut_fit(tiny: TinyTrainer, tmp_path: Path) -> None:
    kwargs = {**tiny.kwargs(max_epochs=3), "logger": CSVLogger(tmp_path, name="run")}
    callbacks = [SlopeScheduler(), PreciseBN(enabled=True), BNStalenessMonitor(), MetricsHistory()]
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)  # limit_train_batches=2 of 72
    trainer.fit(_model(), DigitsDataModule(batch_size=16))
    rows = list(csv.DictReader((Path(trainer.log_dir) / MetricsHistory.filename).open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for row in rows:
        assert float(row["bn/stale_ratio"]) > 0 and float(row["bn/mean_shift"]) >= 0
        assert row["val_ema/acc"] != ""


def test_a_compiled_network_is_recalibrated_and_probed_eagerly_compiling_nothing() -> None:
    compilations = []

    def counting(graph: torch.fx.GraphModule, example: object) -> object:
        compilations.append(graph)
        return graph.forward

    plain = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3)
    )
    compiled = copy.deepcopy(plain)
    compiled.compile(backend=counting)
    compiled(torch.randn(8, 1, 8, 8))  # the training graph, as a fit has it
    built = len(compilations)
    batches = [torch.randn(n, 1, 8, 8) * 3 + 1 for n in (16, 7)]
    for recalibration in (recalibrate_eval_consistent, recalibrate):
        assert recalibration(compiled, batches) == recalibration(plain, batches) == 2
        for mine, reference in zip(compiled.buffers(), plain.buffers(), strict=True):
            torch.testing.assert_close(mine, reference)
    layers = batch_norms(compiled)
    seen = eval_mode_staleness(compiled, batches[0], compiled, layers)
    assert seen is not None and set(seen.ratio) == set(layers)  # the hooks ran
    assert len(compilations) == built and compiled.training
