"""Why a network fails on the data's inputs: the layer that failed, and the smallest input
size that runs (when a larger one does)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.nn.probing import probing

__all__ = ["input_error"]

_LARGEST = 1024
"""Sizes are tried up to this many pixels (samples for signals) per spatial dimension."""
_USUAL_SIZES = (224, 299, 384)
"""Input sizes networks are often built for exactly (torchvision's ViT: 224)."""


@contextmanager
def _innermost_failure(network: nn.Module) -> Iterator[list[str]]:
    """Yield a list that, after a failed forward, names the innermost module that was running."""
    names = {m: name for name, m in network.named_modules()}
    running: list[str] = []
    failed: list[str] = []

    def enter(module: nn.Module, args: object) -> None:
        running.append(names.get(module, "?"))

    def leave(module: nn.Module, args: object, output: object) -> None:
        running.pop()

    handles = [m.register_forward_pre_hook(enter) for m in names]
    handles += [m.register_forward_hook(leave) for m in names]
    try:
        yield failed
    finally:
        for handle in handles:
            handle.remove()
        failed.extend(running[-1:])


def _runs(network: nn.Module, shape: tuple[int, ...], like: Tensor) -> bool:
    try:
        network(torch.zeros((1, *shape), dtype=like.dtype, device=like.device))
    except (RuntimeError, AssertionError, ValueError):
        return False
    return True


def _scaled(shape: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """Channels kept, every spatial size above 1 scaled by ``factor``."""
    return (shape[0], *(max(1, round(s * factor)) if s > 1 else s for s in shape[1:]))


def _smallest(network: nn.Module, shape: tuple[int, ...], like: Tensor) -> tuple[int, ...] | None:
    """The smallest scaled copy of ``shape`` that runs (tried: doublings and the usual
    ImageNet sizes up to _LARGEST, then bisection below the first that runs), or None."""
    largest = max(shape[1:], default=1)
    sizes = {largest * 2**k for k in range(1, 12)} | set(_USUAL_SIZES)
    low = largest
    for size in sorted(s for s in sizes if largest < s <= _LARGEST):
        if _runs(network, _scaled(shape, size / largest), like):
            high = size
            break
        low = size
    else:
        return None
    while high - low > 1:  # bisect on whole sizes
        middle = (low + high) // 2
        if _runs(network, _scaled(shape, middle / largest), like):
            high = middle
        else:
            low = middle
    return _scaled(shape, high / largest)


def input_error(network: nn.Module, inputs: Tensor, error: Exception) -> Exception:
    """A one-line ConfigurationError when ``network`` cannot run on inputs shaped like
    ``inputs`` (naming the failing layer and, where a larger input runs, the smallest
    size), else ``error`` itself. Runs a few single-sample forwards in eval mode, no grad."""
    if isinstance(error, torch.cuda.OutOfMemoryError) or inputs.dim() < 3:
        return error
    shape = tuple(inputs.shape[1:])
    with probing(network), torch.no_grad():
        network.eval()
        with _innermost_failure(network) as failed:
            if _runs(network, shape, inputs):
                return error  # not the input's shape: a batch-size or data problem
        smallest = _smallest(network, shape, inputs)
    layer = failed[0] if failed else "?"
    size = "x".join(map(str, shape))
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    fix = (
        f"the smallest input that runs is {'x'.join(map(str, smallest))}"
        if smallest is not None
        else f"no larger input up to {_LARGEST} a side runs either"
    )
    return ConfigurationError(
        f"the network cannot run on {size} inputs: layer {layer or '<root>'!r} fails "
        f"({reason}); {fix}; choose a backbone or stem for this input size "
        "(e.g. --model.stem cifar), set the size it expects in --model.backbone_args, or "
        "resize the data"
    )
