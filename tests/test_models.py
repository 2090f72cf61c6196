"""Classifier on any network: backbones by name or import path, every activation call site
its own module (replace_activations), ResNetClassifier and checkpoints of the first release."""

from __future__ import annotations

import copy
import gzip
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torchvision.models as tvm
from conftest import DIGITS_CONFIG, SMALL_BACKBONE, TinyTrainer, run_main, small_classifier
from tiny_nets import SmallCNN
from torch import nn
from torchvision.ops import Conv2dNormActivation

from dsrelu_lightning import (
    Classifier,
    DSReLU,
    ResNetClassifier,
    SlopeScheduler,
    replace_activations,
)
from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import activation_factory
from dsrelu_lightning.nn.probing import modules_called
from dsrelu_lightning.nn.replace import convert_activations

RELEASE_CHECKPOINT = Path(__file__).parent / "data" / "release_0_1_resnet34.ckpt.gz"


def calls(model: nn.Module, kind: type[nn.Module], x: torch.Tensor) -> list[nn.Module]:
    """The ``kind`` modules a forward of ``x`` calls, in call order (a module once per call)."""
    return modules_called(model, kind, x)


# Counted from torchvision's forward code: the stem's ReLU, then 2 per BasicBlock (8 in
# resnet18, 16 in resnet34) or 3 per Bottleneck (16 in resnet50); densenet121: norm0's
# ReLU, 2 per dense layer (6 + 12 + 24 + 16 = 58), 1 per transition (3), and F.relu in forward.
SITES = {"resnet18": 17, "resnet34": 33, "resnet50": 49, "densenet121": 1 + 2 * 58 + 3 + 1}


@pytest.mark.parametrize("name", sorted(SITES))
def test_every_call_site_of_a_torchvision_network_gets_its_own_module(name: str) -> None:
    network = replace_activations(tvm.get_model(name, num_classes=10), "dsrelu")
    called = calls(network, DSReLU, torch.randn(2, 3, 32, 32))
    assert len(called) == SITES[name]
    assert len({id(m) for m in called}) == SITES[name]  # no module serves two sites
    assert not any(type(m) is nn.ReLU for m in network.modules())


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_relu_for_relu_leaves_the_outputs_identical(name: str) -> None:
    torch.manual_seed(0)
    original = tvm.get_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = original(x)
        swapped = replace_activations(copy.deepcopy(original), "relu")
        assert torch.equal(swapped(x), expected)
    assert len(calls(swapped, nn.ReLU, x)) == SITES[name]


class _SharedWithOutput(nn.Module):
    """One ReLU module called at a hidden site and at the output (which is kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(self.act(x)))


def test_a_module_shared_with_a_kept_output_site_keeps_serving_that_site() -> None:
    converted, report = convert_activations(_SharedWithOutput(), nn.GELU)
    assert report.kept_output == ("<root>: act (module)",) and report.total == 1
    assert [type(m) for m in calls(converted, nn.Module, torch.randn(2, 4))
            if isinstance(m, nn.ReLU | nn.GELU)] == [nn.GELU, nn.ReLU]  # fmt: skip


def test_shared_functional_in_place_and_method_sites_each_get_a_module() -> None:
    torch.manual_seed(0)
    original = SmallCNN(in_channels=1).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = original(x)
    swapped = replace_activations(copy.deepcopy(original), "relu")
    with torch.no_grad():  # F.relu(inplace=True) and the shared module: values as before
        assert torch.equal(swapped(x), expected)
    assert len({id(m) for m in calls(swapped, nn.ReLU, x)}) == 4
    dsrelu = replace_activations(
        copy.deepcopy(original), "dsrelu", activation_args={"final_angle": 20}
    )
    layers = calls(dsrelu, DSReLU, x)
    assert len({id(m) for m in layers}) == 4 and {m.final_angle for m in layers} == {20}


def test_squeeze_excitation_gates_and_the_output_are_left_alone() -> None:
    network = tvm.mobilenet_v3_small(num_classes=10)
    gates = [m for m in network.modules() if isinstance(m, nn.Hardsigmoid)]
    hidden = sum(isinstance(m, nn.ReLU | nn.Hardswish) for m in network.modules())
    network = replace_activations(network, "dsrelu")
    x = torch.randn(2, 3, 64, 64)
    assert calls(network, nn.Hardsigmoid, x) == gates  # the same 9 modules, each still called
    assert len(calls(network, DSReLU, x)) == hidden == 33
    # SqueezeNet's last ReLU feeds the pooled logits: the output, kept.
    squeeze = replace_activations(tvm.squeezenet1_0(num_classes=10), "dsrelu")
    assert type(squeeze.classifier[2]) is nn.ReLU
    assert len(calls(squeeze, DSReLU, torch.randn(1, 3, 64, 64))) == 25


@pytest.mark.parametrize("activation", ["relu", "dsrelu"])
def test_in_place_modules_after_a_swapped_site_become_out_of_place(activation: str) -> None:
    # MobileNetV3's head: Dropout(inplace=True) writes into Hardswish's output, which
    # Hardswish does not need for backward; ReLU and DSReLU save their output.
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(6, 8), nn.Hardswish(), nn.Dropout(0.5, inplace=True))
    network = nn.Sequential(head, nn.ReLU(inplace=True), nn.Linear(8, 3))
    x = torch.randn(4, 6)
    converted, report = convert_activations(network, activation_factory(activation))
    assert report.out_of_place == ("0.2",) and "made out-of-place: 0.2" in str(report)
    converted.train()(x).sum().backward()  # in place: "modified by an inplace operation"
    assert converted[2].weight.grad is not None


class _Residual(nn.Module):
    """EfficientNetV2's FusedMBConv in small: a block that ends in its activation, then a
    parameter-free module and an in-place add (or ``add_``) into the block's output."""

    def __init__(self, method: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(6, 6), nn.SiLU(inplace=True))
        self.drop = nn.Identity()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.drop(self.block(x))
        if self.method:
            result.add_(x)
            return result * 2  # reads the written tensor after the write
        result += x
        return result


@pytest.mark.parametrize("method", [False, True], ids=["augmented", "method"])
@pytest.mark.parametrize("activation", ["relu", "dsrelu"])
def test_in_place_writes_into_a_swapped_sites_output_become_out_of_place(
    activation: str, method: bool
) -> None:
    torch.manual_seed(0)
    network = nn.Sequential(_Residual(method), nn.Linear(6, 3))
    original = copy.deepcopy(network)
    x = torch.randn(4, 6)
    converted, report = convert_activations(network, activation_factory(activation))
    assert report.out_of_place == ("0 (add_)" if method else "0 (+=)",)
    converted.train()(x).sum().backward()  # in place: "modified by an inplace operation"
    assert converted[0].block[0].weight.grad is not None
    # Same values and gradients as the original where the swap changes nothing (SiLU -> SiLU).
    same, _ = convert_activations(copy.deepcopy(original), nn.SiLU)
    reference, rewritten = original(x), same(x)
    assert torch.equal(rewritten, reference)
    reference.sum().backward()
    rewritten.sum().backward()
    assert torch.equal(same[0].block[0].weight.grad, original[0].block[0].weight.grad)


def test_in_place_adds_that_do_not_write_into_an_activation_stay_as_they_are() -> None:
    # ResNet's blocks add into a BatchNorm's output: nothing to rewrite.
    _, report = convert_activations(tvm.resnet50(), activation_factory("relu"))
    assert report.out_of_place == ()


def test_efficientnet_v2_trains_with_an_activation_that_saves_its_output() -> None:
    network = tvm.efficientnet_v2_s(num_classes=3)
    converted, report = convert_activations(network, activation_factory("relu"))
    assert "features.1.0 (+=)" in report.out_of_place  # its first FusedMBConv blocks
    converted.train()(torch.randn(2, 3, 16, 16)).sum().backward()


def test_dsrelu_is_a_layer_factory_that_takes_inplace() -> None:
    block = Conv2dNormActivation(3, 8, activation_layer=DSReLU)  # calls DSReLU(inplace=True)
    assert isinstance(block[-1], DSReLU)
    assert block(torch.randn(1, 3, 8, 8)).shape == (1, 8, 8, 8)


def test_classifier_builds_torchvision_networks_for_the_data(caplog) -> None:
    model = Classifier(10, "mobilenet_v3_small", in_channels=1, stem="cifar")
    first = model.model.features[0][0]
    assert (first.in_channels, first.stride) == (1, (1, 1))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert "33 activation call sites -> DSReLU (Hardswish 19, ReLU 14)" in model.description
    assert "stem cifar: first conv features.0.0 stride 2 -> 1" in model.description
    vit = Classifier(10, "vit_b_16", backbone_args={"image_size": 32}, stem="cifar")
    assert "patch stem (conv_proj) kept" in vit.description
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("backbone", [SMALL_BACKBONE, "tiny_nets.small_cnn", SmallCNN])
def test_classifier_takes_the_users_class_or_factory(backbone: object) -> None:
    model = Classifier(7, backbone, in_channels=1, activation="mish")
    assert isinstance(model.model, nn.Module) and model.model.head.out_features == 7
    assert len(calls(model.model, nn.Mish, torch.randn(2, 1, 8, 8))) == 4


def test_a_network_without_num_classes_gets_its_first_conv_and_head_adapted() -> None:
    # By import path its signature names neither (only **kwargs): both are adapted.
    model = Classifier(5, "torchvision.models.shufflenet_v2_x0_5", in_channels=1)
    assert model.model.conv1[0].in_channels == 1 and model.model.fc.out_features == 5
    assert "first conv conv1.0 takes 1 channel(s); head fc outputs 5 classes" in model.description


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet35"}, "unknown backbone 'resnet35' (did you mean resnet50?)"),
        ({"backbone": "no_such_module.Net"}, "cannot import backbone 'no_such_module.Net'"),
        ({"backbone": "tiny_nets.NoSuchNet"}, "module 'tiny_nets' has no 'NoSuchNet'"),
        ({"backbone": "tiny_nets.WIDTH"}, "not an nn.Module class or a function"),
        ({"backbone_args": {"depth": 3}}, "backbone resnet34 rejected backbone_args"),
        ({"backbone_args": {"num_classes": 3}}, "backbone_args sets num_classes"),
        ({"backbone": "tiny_nets.LinearNet"}, "no activation call site found in backbone"),
        ({"activation_targets": ["Swish"]}, "unknown activation kinds ['Swish']"),
    ],
)
def test_bad_backbones_are_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Classifier(10, **{"in_channels": 1, **kwargs})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_input_too_small_names_the_layer_and_the_smallest_size() -> None:
    model = Classifier(10, "vgg11_bn", in_channels=1, stem="cifar")
    with pytest.raises(
        ConfigurationError, match=r"cannot run on 1x8x8 inputs: layer 'features\.21'"
    ):
        model(torch.randn(2, 1, 8, 8))
    with pytest.raises(ConfigurationError, match="the smallest input that runs is 1x32x32"):
        model(torch.randn(2, 1, 8, 8))


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_resnet34_stems_and_sites(stem: str) -> None:
    model = ResNetClassifier(10, in_channels=1, stem=stem)
    conv = model.model.conv1
    assert conv.kernel_size == ((7, 7) if stem == "imagenet" else (3, 3))
    assert isinstance(model.model.maxpool, nn.MaxPool2d if stem == "imagenet" else nn.Identity)
    assert len({id(m) for m in calls(model.model, DSReLU, torch.randn(2, 1, 32, 32))}) == 33


def test_one_dimensional_signals_fit_the_2d_network() -> None:
    assert ResNetClassifier(5, in_channels=1)(torch.randn(3, 1, 1, 187)).shape == (3, 5)


def test_classifier_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        small_classifier("nope")
    with pytest.raises(ValueError, match="initial_angle"):
        small_classifier(activation_args={"initial_angle": 95})
    with pytest.raises(ValueError, match="lr"):
        small_classifier(lr=0)
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(1, SMALL_BACKBONE)
    shared = nn.ReLU()
    with pytest.raises(ValueError, match="returned the same ReLU module twice"):
        small_classifier(lambda: shared)


def test_resnet_positional_arguments_reach_the_network_and_the_optimizer() -> None:
    # ResNetClassifier(num_classes, activation, in_channels, stem, lr, weight_decay, ...)
    module = ResNetClassifier(7, "tanh", 1, "cifar", 1e-4, 0.01)
    assert len(calls(module.model, nn.Tanh, torch.randn(2, 1, 8, 8))) == 33
    assert module.model.conv1.kernel_size == (3, 3) and module.model.fc.out_features == 7
    (group,) = module.configure_optimizers().param_groups
    assert (group["lr"], group["weight_decay"]) == (1e-4, 0.01)


def test_a_saved_checkpoint_reloads_the_same_model(tiny: TinyTrainer, tmp_path: Path) -> None:
    module = small_classifier(lr=1e-4, activation_args={"final_angle": 20})
    trainer = pl.Trainer(callbacks=[SlopeScheduler()], **tiny.kwargs(max_epochs=2))
    trainer.fit(module, DigitsDataModule(batch_size=16))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    reloaded = Classifier.load_from_checkpoint(path, map_location="cpu")
    layers = [m for m in reloaded.modules() if isinstance(m, DSReLU)]
    assert {(m.final_angle, float(m.progress)) for m in layers} == {(20.0, 0.5)} and len(
        layers
    ) == 4
    x = torch.randn(4, 1, 8, 8)
    module.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x), module(x))


@pytest.fixture
def release_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "release.ckpt"
    with gzip.open(RELEASE_CHECKPOINT) as source, path.open("wb") as target:
        shutil.copyfileobj(source, target)
    return path


@pytest.mark.parametrize("cls", [ResNetClassifier, Classifier])
def test_a_checkpoint_of_the_first_release_loads_each_site_in_its_place(
    cls: type[Classifier], release_checkpoint: Path
) -> None:
    # tests/data/make_release_checkpoint.py wrote it with that release (ActivatedBasicBlock's
    # act1/act2); the i-th DSReLU in forward order holds progress i / 100.
    model = cls.load_from_checkpoint(release_checkpoint, map_location="cpu")
    layers = calls(model.model, DSReLU, torch.randn(1, 1, 8, 8))
    assert [round(float(m.progress) * 100) for m in layers] == list(range(33))


def test_the_cli_tests_a_checkpoint_of_the_first_release(
    release_checkpoint: Path, tiny: TinyTrainer
) -> None:
    code, out, err, _ = run_main(
        "test", "--config", DIGITS_CONFIG, f"--ckpt_path={release_checkpoint}",
        *tiny.args(backbone=None),
    )  # fmt: skip
    assert code == 0, err
    assert "test_metrics.json" in out


class _DataDependent(nn.Module):
    """A forward torch.fx cannot trace (it branches on a tensor's value)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = nn.ReLU()
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        if x.sum() > 0:
            x = torch.nn.functional.relu(x - 1)
        return self.act2(x)


def test_an_untraceable_module_is_named_and_its_registered_activations_replaced() -> None:
    network = nn.Sequential(_DataDependent(), nn.Flatten(), nn.Linear(144, 3))
    with pytest.warns(
        UserWarning, match=r"could not see every activation call of 1 module\(s\): 0 \("
    ):
        network = replace_activations(network, "dsrelu")
    assert isinstance(network[0].act, DSReLU) and isinstance(network[0].act2, DSReLU)
    assert network[0].act is not network[0].act2
