"""The activation kinds a network's call sites are matched against: each kind's module classes,
functions and tensor methods (``nn.ReLU``, ``F.relu`` / ``torch.relu``, ``x.relu()``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.activations import DSReLU

__all__ = ["DEFAULT_KINDS", "KINDS", "ActivationKind", "resolve_kinds"]


@dataclass(frozen=True)
class ActivationKind:
    """One nonlinearity as a network may call it. ``in_place`` lists the functions and
    methods that always write into their input (``F.relu_``, ``x.relu_()``)."""

    name: str
    modules: tuple[type[nn.Module], ...]
    functions: tuple[Callable[..., object], ...] = ()
    methods: tuple[str, ...] = ()
    in_place: tuple[Callable[..., object] | str, ...] = ()


KINDS: dict[str, ActivationKind] = {
    kind.name.lower(): kind
    for kind in (
        ActivationKind(
            "ReLU",
            (nn.ReLU,),
            (F.relu, F.relu_, torch.relu, torch.relu_),
            ("relu", "relu_"),
            (F.relu_, torch.relu_, "relu_"),
        ),
        ActivationKind("ReLU6", (nn.ReLU6,), (F.relu6,)),
        ActivationKind(
            "LeakyReLU", (nn.LeakyReLU,), (F.leaky_relu, F.leaky_relu_), (), (F.leaky_relu_,)
        ),
        ActivationKind("PReLU", (nn.PReLU,)),
        ActivationKind("RReLU", (nn.RReLU,)),
        ActivationKind("ELU", (nn.ELU,), (F.elu, F.elu_), (), (F.elu_,)),
        ActivationKind("SELU", (nn.SELU,), (F.selu, torch.selu)),
        ActivationKind("CELU", (nn.CELU,), (F.celu,)),
        ActivationKind("GELU", (nn.GELU,), (F.gelu,)),
        ActivationKind("SiLU", (nn.SiLU,), (F.silu,)),
        ActivationKind("Mish", (nn.Mish,), (F.mish,)),
        ActivationKind("Hardswish", (nn.Hardswish,), (F.hardswish,)),
        ActivationKind("DSReLU", (DSReLU,)),
        # Not replaced unless asked for: gates (squeeze-excitation, LSTM) and smooth heads.
        ActivationKind("Tanh", (nn.Tanh,), (torch.tanh, F.tanh), ("tanh",)),
        ActivationKind("Sigmoid", (nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid",)),
        ActivationKind("Hardsigmoid", (nn.Hardsigmoid,), (F.hardsigmoid,)),
        ActivationKind("Softplus", (nn.Softplus,), (F.softplus,)),
    )
}
"""Every kind a call site can be matched against, by lower-case name."""

DEFAULT_KINDS = (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
    "Mish", "Hardswish", "DSReLU",
)  # fmt: skip
"""A network's hidden nonlinearities; never the gates (Sigmoid, Hardsigmoid, Tanh)."""


def resolve_kinds(names: Iterable[str] | None) -> tuple[ActivationKind, ...]:
    """The kinds named in ``names`` (case-insensitive), :data:`DEFAULT_KINDS` for None."""
    chosen = list(DEFAULT_KINDS if names is None else names)
    unknown = [name for name in chosen if str(name).lower() not in KINDS]
    if unknown or not chosen:
        valid = ", ".join(kind.name for kind in KINDS.values())
        problem = f"unknown activation kinds {unknown}" if unknown else "no activation kinds"
        raise ConfigurationError(f"{problem} to replace; valid: {valid}")
    return tuple(KINDS[str(name).lower()] for name in chosen)
