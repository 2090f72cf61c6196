"""Whether a network runs through ``torch.compile``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["is_compiled"]


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` or one of its submodules was ``torch.compile``-d."""
    return any(
        getattr(m, "_compiled_call_impl", None) is not None
        or isinstance(m, torch._dynamo.eval_frame.OptimizedModule)
        for m in module.modules()
    )
