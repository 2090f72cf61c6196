"""ResNet-34 with every activation site replaced, and the LightningModule's interface."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import TinyTrainer
from torch import nn

from dsrelu_lightning import DSReLU, ResNetClassifier, SlopeScheduler
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.nn.resnet import ActivatedBasicBlock, build_resnet34


def _count_activation_calls(model: nn.Module, kind: type[nn.Module], x: torch.Tensor) -> list:
    called = []
    hooks = [
        m.register_forward_hook(lambda mod, *_: called.append(mod))
        for m in model.modules()
        if isinstance(m, kind)
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return called


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_every_activation_site_runs_its_own_module(stem: str) -> None:
    model = build_resnet34(10, DSReLU, in_channels=1, stem=stem)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, ActivatedBasicBlock) for m in model.modules()) == 16
    called = _count_activation_calls(model, DSReLU, torch.randn(2, 1, 32, 32))
    assert len(called) == 33  # stem + 2 sites x 16 blocks
    assert len({id(m) for m in called}) == 33  # each site a distinct module


def test_stems_and_input_channels() -> None:
    imagenet = build_resnet34(5, nn.ReLU, in_channels=3, stem="imagenet")
    cifar = build_resnet34(5, nn.ReLU, in_channels=1, stem="cifar")
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert cifar.conv1.in_channels == 1 and isinstance(cifar.maxpool, nn.Identity)
    assert imagenet(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert cifar(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown stem"):
        build_resnet34(5, nn.ReLU, stem="tiny")  # type: ignore[arg-type]


def test_one_dimensional_signals_fit_the_2d_network() -> None:
    model = build_resnet34(5, nn.ReLU, in_channels=1, stem="imagenet")
    assert model(torch.randn(3, 1, 1, 187)).shape == (3, 5)


def test_classifier_uses_the_factory_and_activation_args() -> None:
    module = ResNetClassifier(
        10, activation="dsrelu", activation_args={"initial_angle": 75, "final_angle": 30}
    )
    layers = [m for m in module.modules() if isinstance(m, DSReLU)]
    assert len(layers) == 33
    assert all((m.initial_angle, m.final_angle) == (75, 30) for m in layers)
    assert len({id(m) for m in layers}) == 33
    mish = ResNetClassifier(10, activation="Mish")
    assert sum(isinstance(m, nn.Mish) for m in mish.modules()) == 33


def test_classifier_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        ResNetClassifier(10, activation="nope")
    with pytest.raises(ValueError, match="initial_angle"):
        ResNetClassifier(10, activation_args={"initial_angle": 95})
    with pytest.raises(ValueError, match="lr"):
        ResNetClassifier(10, lr=0)
    with pytest.raises(ValueError, match="num_classes"):
        ResNetClassifier(1)
    shared = nn.ReLU()
    with pytest.raises(ValueError, match="returned the same ReLU module twice"):
        ResNetClassifier(10, activation=lambda: shared)


def test_positional_arguments_reach_the_network_and_the_optimizer() -> None:
    # ResNetClassifier(num_classes, activation, in_channels, stem, lr, weight_decay, ...)
    module = ResNetClassifier(7, "tanh", 1, "cifar", 1e-4, 0.01)
    assert sum(isinstance(m, nn.Tanh) for m in module.modules()) == 33
    assert module(torch.randn(2, 1, 8, 8)).shape == (2, 7)
    assert module.model.conv1.kernel_size == (3, 3)
    (group,) = module.configure_optimizers().param_groups
    assert (group["lr"], group["weight_decay"]) == (1e-4, 0.01)


def test_a_saved_checkpoint_reloads_the_same_model(tiny: TinyTrainer, tmp_path: Path) -> None:
    module = ResNetClassifier(
        10,
        activation="dsrelu",
        in_channels=1,
        stem="cifar",
        lr=1e-4,
        activation_args={"final_angle": 20},
    )
    trainer = pl.Trainer(callbacks=[SlopeScheduler()], **tiny.kwargs(max_epochs=2))
    trainer.fit(module, DigitsDataModule(batch_size=16))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = ResNetClassifier.load_from_checkpoint(path, map_location="cpu")
    assert dict(reloaded.hparams) == dict(module.hparams)
    layers = [m for m in reloaded.modules() if isinstance(m, DSReLU)]
    assert {(m.final_angle, float(m.progress)) for m in layers} == {(20.0, 0.5)}
    x = torch.randn(4, 1, 8, 8)
    module.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), module(x))


def test_a_checkpoint_as_earlier_versions_wrote_it_still_loads(tmp_path: Path) -> None:
    # What the CLI of the flat layout (dsrelu_lightning/models.py, before `compile` existed)
    # stored: plain hyperparameters plus Lightning's instantiator, no module path of ours.
    model = ResNetClassifier(5, activation="mish", in_channels=1, stem="cifar")
    old = {
        "pytorch-lightning_version": "2.6.0",
        "epoch": 3,
        "global_step": 40,
        "state_dict": model.state_dict(),
        "hyper_parameters": {
            "num_classes": 5,
            "activation": "mish",
            "in_channels": 1,
            "stem": "cifar",
            "lr": 1e-3,
            "weight_decay": 0.0,
            "activation_args": None,
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
        },
    }
    torch.save(old, tmp_path / "old.ckpt")
    loaded = ResNetClassifier.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
    assert (loaded.hparams.num_classes, loaded.hparams.compile) == (5, False)
    x = torch.randn(2, 1, 8, 8)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
