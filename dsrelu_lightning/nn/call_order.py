"""Which modules a forward calls, in the order it calls them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dsrelu_lightning.nn.modes import preserved_modes

__all__ = ["modules_called"]


def modules_called(
    network: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...], *inputs: Any
) -> list[nn.Module]:
    """The ``kind`` modules a forward of ``inputs`` calls, in call order, once per call (a
    module called twice appears twice). Eval mode, no grad; modes are restored after."""
    called: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda module, _: called.append(module))
        for m in network.modules()
        if isinstance(m, kind)
    ]
    try:
        with preserved_modes(network), torch.no_grad():
            network.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return called
