"""BatchNorm statistics helpers: find the layers, recompute their running statistics from
batches (``torch.optim.swa_utils.update_bn``), pool them across ranks, and iterate a
loader without moving any random stream the training uses."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

__all__ = [
    "batch_norms",
    "loader_batches",
    "pool_across_ranks",
    "preserved_rng",
    "recalibrate",
]


def batch_norms(module: nn.Module) -> dict[str, _BatchNorm]:
    """Every BatchNorm layer of ``module`` that keeps running statistics, by name."""
    return {
        name: m
        for name, m in module.named_modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
    }


def _generators(loader: Any) -> list[torch.Generator]:
    """The generators a loader and its samplers draw from (e.g. ``RandomSampler(generator=)``)."""
    owners = [loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    owners.append(getattr(owners[2], "sampler", None))
    found: list[torch.Generator] = []
    for owner in owners:
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


@contextmanager
def preserved_rng(device: torch.device, loader: Any = None) -> Iterator[None]:
    """Restore torch's (CPU and ``device``'s), NumPy's and Python's global random states, and
    those of ``loader``'s own generators, on exit: the code inside draws nothing training sees.

    (A DataLoader iterator draws its base seed from torch's global RNG; augmentations and
    ``RandomSampler`` draw from it too.)
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    generator_states = [(g, g.get_state()) for g in _generators(loader)]
    cuda = (
        []
        if device.type != "cuda"
        else [torch.cuda.current_device() if device.index is None else device.index]
    )
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            for generator, state in generator_states:
                generator.set_state(state)


def _fresh_view(loader: DataLoader) -> Iterable[Any]:
    """Another iterator over ``loader``'s batches, in its current order, that leaves the
    loader itself alone (a persistent-worker loader's own iterator is shared with training,
    possibly mid-epoch). Iterating a sampler does not move it (``EpochSeededRandomSampler``,
    ``DistributedSampler`` seed a local generator; others draw from restored streams)."""
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
        return loader
    return DataLoader(
        loader.dataset,
        batch_sampler=loader.batch_sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
    )


def loader_batches(loader: Any, limit: float | None) -> Iterator[Any]:
    """Up to ``limit`` batches of ``loader`` (all when None or infinite), from a fresh view."""
    view = _fresh_view(loader)
    if limit is None or limit == float("inf"):
        return iter(view)
    return islice(view, int(limit))


class _BatchForward(nn.Module):
    """Runs ``forward(batch)`` for ``update_bn``, which calls ``model(input[0])``."""

    def __init__(self, module: nn.Module, forward: Callable[[Any], object]) -> None:
        super().__init__()
        self.module = module
        self._forward = forward

    def forward(self, batch: Any) -> None:
        self._forward(batch)


def recalibrate(
    module: nn.Module, batches: Iterable[Any], forward: Callable[[Any], object] | None = None
) -> int:
    """Reset every BatchNorm of ``module`` and recompute its running statistics while
    ``forward`` (default: ``module`` itself) runs each of ``batches``, as a cumulative average
    (``torch.optim.swa_utils.update_bn``: train mode, no grad, momentum None, one pass).
    Restores each submodule's train/eval mode and returns the number of batches used.

    Each batch weighs the same; the running variance is the mean of the batches' unbiased
    variances, as BatchNorm's own running estimate is (what it normalised with in training).
    """
    modes = {m: m.training for m in module.modules()}
    count = 0

    def counted() -> Iterator[list[Any]]:
        nonlocal count
        for batch in batches:
            count += 1
            yield [batch]  # update_bn passes input[0] of a list: the whole batch

    try:
        update_bn(counted(), _BatchForward(module, forward or module))
    finally:
        for m, training in modes.items():
            m.training = training
    return count


def pool_across_ranks(layers: Iterable[_BatchNorm], count: int, strategy: Any) -> None:
    """Make every rank hold the cumulative average over ALL ranks' batches.

    Each rank's statistics are averages over its own ``count`` batches; the batch-weighted
    mean of them is the average over every batch of every rank, exactly what one process
    iterating all those batches would hold (one all-reduce for all layers). Adding the
    spread of the ranks' means would estimate a population variance instead: not what BN
    normalised with in training, where each rank's batch is just another batch.
    ``num_batches_tracked`` becomes the total batch count, so the buffers are identical.
    """
    layers = list(layers)
    if not layers:
        return
    device = layers[0].running_mean.device
    parts = [torch.cat([m.running_mean.float(), m.running_var.float()]) for m in layers]
    flat = torch.cat([*parts, torch.ones(1, device=device)]) * float(count)
    total = strategy.reduce(flat, reduce_op="sum")
    batches = total[-1]
    pooled = total[:-1] / batches.clamp_min(1.0)
    offset = 0
    for m in layers:
        size = m.running_mean.numel()
        m.running_mean.copy_(pooled[offset : offset + size])
        m.running_var.copy_(pooled[offset + size : offset + 2 * size])
        m.num_batches_tracked.fill_(batches.round().long())
        offset += 2 * size
