"""Probing forwards: run a network to look at it (hooks, another mode, other shapes) without
compiling anything or leaving its train/eval modes changed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["modules_called", "probing"]


@contextmanager
def probing(module: nn.Module) -> Iterator[nn.Module]:
    """Run the block eagerly and restore every submodule's train/eval mode on exit.

    Eagerly: ``torch.compile`` is ignored inside (``torch.compiler.set_stance("force_eager")``),
    so hooks registered for the probe run, and another mode or input shape compiles nothing.
    """
    modes = {m: m.training for m in module.modules()}
    try:
        with torch.compiler.set_stance("force_eager"):
            yield module
    finally:
        for m, training in modes.items():
            m.training = training


def modules_called(
    network: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...], *inputs: Any
) -> list[nn.Module]:
    """The ``kind`` modules a forward of ``inputs`` calls, in call order, once per call (a
    module called twice appears twice). Eval mode, no grad, eager; modes are restored after."""
    called: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda module, _: called.append(module))
        for m in network.modules()
        if isinstance(m, kind)
    ]
    try:
        with probing(network), torch.no_grad():
            network.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return called
