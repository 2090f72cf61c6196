"""Backbones by name: any torchvision classification builder, or the user's own nn.Module
class or factory by import path, built for the data's classes and input channels."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torchvision.models
from torch import nn

from dsrelu_lightning.errors import ConfigurationError

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneSpec",
    "Stem",
    "build_backbone",
    "resolve_backbone",
    "torchvision_classifiers",
]

Stem = Literal["imagenet", "cifar"]
DEFAULT_BACKBONE = "resnet34"
"""The paper's network: the default, and the network of records without a backbone."""
BackboneSpec = str | Callable[..., nn.Module]
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TORCHVISION_ARGS = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}
"""Builder defaults changed here: auxiliary classifiers are training aids with losses of their
own, not part of the network whose activations are compared (backbone_args can turn them on)."""


@dataclass(frozen=True)
class Backbone:
    """A built network and what was adapted to the data, one clause per change."""

    network: nn.Module
    name: str
    notes: tuple[str, ...] = ()


def torchvision_classifiers() -> list[str]:
    """torchvision's classification builders (``resnet18``, ``vit_b_16``...), by name."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _import(path: str) -> Callable[..., Any]:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # "mypkg.nets.SmallCNN" from the working directory
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import backbone {path!r}: {exc}; give a torchvision model name or an "
            "import path (module.Class) importable from the working directory or PYTHONPATH"
        ) from exc
    builder = getattr(module, attribute, None)
    if builder is None:
        raise ConfigurationError(f"backbone {path!r}: module {module_name!r} has no {attribute!r}")
    if not callable(builder):
        raise ConfigurationError(
            f"backbone {path!r} is a {type(builder).__name__}, not an nn.Module class or a "
            "function that returns one"
        )
    return builder


def resolve_backbone(spec: BackboneSpec) -> tuple[Callable[..., Any], str, bool]:
    """The builder, its name, and whether it is torchvision's."""
    if not isinstance(spec, str):
        if not callable(spec):
            raise ConfigurationError(f"backbone must be a name or a callable, got {spec!r}")
        return spec, getattr(spec, "__name__", repr(spec)), False
    name = spec.strip()
    if "." in name:
        return _import(name), name, False
    known = torchvision_classifiers()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigurationError(
            f"unknown backbone {spec!r}{hint}; give a torchvision classification model "
            f"({', '.join(known[:4])}, ... {len(known)} in all) or an import path to your own "
            "nn.Module class or factory, e.g. mypkg.nets.SmallCNN"
        )
    return torchvision.models.get_model_builder(name), name, True


def _named_parameters(builder: Callable[..., Any]) -> set[str]:
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in kinds}


def _first(network: nn.Module, kinds: tuple[type[nn.Module], ...], last: bool = False):
    found = [(name, m) for name, m in network.named_modules() if isinstance(m, kinds)]
    if not found:
        return None, None
    return found[-1] if last else found[0]


def _with_in_channels(conv: nn.Module, in_channels: int) -> nn.Module:
    if conv.groups != 1:
        raise ConfigurationError(
            f"the first convolution is grouped (groups={conv.groups}): cannot change its input "
            f"channels to {in_channels}; give a backbone that takes in_channels"
        )
    return type(conv)(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, 1, conv.bias is not None, conv.padding_mode,
    )  # fmt: skip


def _set(network: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(network.get_submodule(parent) if parent else network, name, module)


def _resnet_stem(network: torchvision.models.ResNet, in_channels: int, stem: Stem) -> list[str]:
    """The ResNet family's stems: torchvision's 7x7/2 conv + max-pool (the paper's), or a
    3x3/1 conv without max-pool for small images; the stem conv re-initialised as torchvision
    initialises its convolutions."""
    out = network.conv1.out_channels
    if stem == "cifar":
        network.conv1 = nn.Conv2d(in_channels, out, kernel_size=3, stride=1, padding=1, bias=False)
        network.maxpool = nn.Identity()
    elif in_channels != 3:
        network.conv1 = nn.Conv2d(in_channels, out, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(network.conv1.weight, mode="fan_out", nonlinearity="relu")
    notes = ["stem cifar: conv1 3x3/1, no max-pool"] if stem == "cifar" else []
    return notes + ([f"conv1 takes {in_channels} channel(s)"] if in_channels != 3 else [])


def _small_input_stem(network: nn.Module) -> str:
    """``stem="cifar"`` for a non-ResNet: its first convolution's stride set to 1 where it is
    a strided conv; a patchifying stem (kernel == stride) is kept."""
    path, conv = _first(network, _CONVS)
    if conv is None:
        return "stem cifar: no convolution, its own stem kept"
    stride, kernel = tuple(conv.stride), tuple(conv.kernel_size)
    if all(s == 1 for s in stride):
        return f"stem cifar: first conv {path} already has stride 1"
    if stride == kernel:
        return f"stem cifar: its own {kernel[0]}x{kernel[0]}/{stride[0]} patch stem ({path}) kept"
    conv.stride = (1,) * len(stride)
    return f"stem cifar: first conv {path} stride {stride[0]} -> 1"


def _adapt(network: nn.Module, num_classes: int | None, in_channels: int | None) -> list[str]:
    """Fit the first convolution to ``in_channels`` and the last Linear to ``num_classes``
    (None: the builder took them)."""
    notes = []
    if in_channels is not None:
        path, conv = _first(network, _CONVS)
        if conv is not None and conv.in_channels != in_channels:
            _set(network, path, _with_in_channels(conv, in_channels))
            notes.append(f"first conv {path} takes {in_channels} channel(s)")
    if num_classes is not None:
        path, head = _first(network, (nn.Linear,), last=True)
        if head is None:
            raise ConfigurationError(
                f"cannot give the backbone {num_classes} classes: its builder takes no "
                "num_classes argument and it has no nn.Linear head to replace; add a "
                "num_classes argument to it"
            )
        if head.out_features != num_classes:
            _set(network, path, nn.Linear(head.in_features, num_classes, head.bias is not None))
            notes.append(f"head {path} outputs {num_classes} classes")
    return notes


def build_backbone(
    spec: BackboneSpec,
    num_classes: int,
    in_channels: int = 3,
    stem: Stem = "imagenet",
    backbone_args: Mapping[str, Any] | None = None,
) -> Backbone:
    """Build ``spec`` (random init, never downloaded weights) for ``num_classes`` classes and
    ``in_channels`` input channels.

    The builder gets ``num_classes`` and ``in_channels`` where its signature names them
    (torchvision's always take ``num_classes``); otherwise the first convolution and the
    last Linear are replaced to fit. ``stem="cifar"`` gives the ResNet family a 3x3/1 stem
    without max-pool and other networks a stride-1 first convolution (a patch stem is kept).
    """
    if num_classes < 2:
        raise ConfigurationError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ConfigurationError(f"in_channels must be >= 1, got {in_channels}")
    if stem not in ("imagenet", "cifar"):
        raise ConfigurationError(f"unknown stem {stem!r}; valid: 'imagenet', 'cifar'")
    builder, name, from_torchvision = resolve_backbone(spec)
    args = dict(backbone_args or {})
    taken = {"num_classes", "in_channels"} & set(args)
    if taken:
        raise ConfigurationError(
            f"backbone_args sets {', '.join(sorted(taken))}, which the data module decides; "
            "remove it from --model.backbone_args"
        )
    if from_torchvision:
        args = {**_TORCHVISION_ARGS.get(name, {}), **args}
    named = {"num_classes"} if from_torchvision else _named_parameters(builder)
    given = {"num_classes": num_classes, "in_channels": in_channels}
    args.update({key: value for key, value in given.items() if key in named})
    try:
        network = builder(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"backbone {name} rejected backbone_args {args}: {exc}") from exc
    if not isinstance(network, nn.Module):
        raise ConfigurationError(
            f"backbone {name} returned a {type(network).__name__}, not an nn.Module"
        )
    if isinstance(network, torchvision.models.ResNet):
        notes = _resnet_stem(network, in_channels, stem)
    else:
        notes = [] if stem == "imagenet" else [_small_input_stem(network)]
        notes[:0] = _adapt(
            network,
            None if "num_classes" in args else num_classes,
            None if "in_channels" in args else in_channels,
        )
    return Backbone(network, name, tuple(notes))
