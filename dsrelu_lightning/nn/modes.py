"""Run code on a network without leaving its train/eval modes changed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["preserved_modes"]


@contextmanager
def preserved_modes(module: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's train/eval mode on exit, whatever the block set."""
    modes = {m: m.training for m in module.modules()}
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training
