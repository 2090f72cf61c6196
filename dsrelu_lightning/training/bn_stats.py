"""BatchNorm statistics helpers: find the layers, recompute their running statistics from
batches (in train mode as ``torch.optim.swa_utils.update_bn`` does, or consistent with eval
mode), pool them across ranks, and iterate a loader without moving any random stream the
training uses."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from dsrelu_lightning.nn.probing import probing

__all__ = [
    "batch_norms",
    "loader_batches",
    "pool_across_ranks",
    "preserved_rng",
    "recalibrate",
    "recalibrate_eval_consistent",
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
    count = 0

    def counted() -> Iterator[list[Any]]:
        nonlocal count
        for batch in batches:
            count += 1
            yield [batch]  # update_bn passes input[0] of a list: the whole batch

    with probing(module):
        update_bn(counted(), _BatchForward(module, forward or module))
    return count


def _concatenate(batches: list[Any]) -> Any:
    """The batches as one: tensors concatenated along dim 0, tuples/lists/dicts per item."""
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.cat(batches)
    if isinstance(first, Mapping):
        return {key: _concatenate([b[key] for b in batches]) for key in first}
    if isinstance(first, list | tuple):
        parts = [_concatenate(list(items)) for items in zip(*batches, strict=True)]
        return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)
    return first


def _batch_size(batch: Any) -> int:
    while not isinstance(batch, Tensor):
        batch = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    return batch.shape[0]


def recalibrate_eval_consistent(
    module: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[Any], object] | None = None,
    sum_across_ranks: Callable[[Tensor], Tensor] | None = None,
) -> int:
    """Give every BatchNorm of ``module`` the statistics of the inputs it receives in EVAL
    mode: one eval-mode forward of all ``batches`` at once, in which each layer, when its
    input arrives, gets that input's mean and variance (each batch's mean and unbiased
    variance, averaged over the batches, as :func:`recalibrate` averages them) before it
    normalises with them. Every layer then sees its predecessors' final statistics, as in
    evaluation; train-mode estimation (:func:`recalibrate`) cannot (Wu & Johnson 2021).

    The forward holds every batch's activations at once. ``sum_across_ranks`` (an all-reduce
    sum, called by every rank) pools the statistics over ranks, so every rank holds the same
    buffers: each layer's as its input arrives when every rank has batches; when some rank
    has none, each rank recalibrates from its own batches and the results are pooled once
    (:func:`pool_across_ranks`), so every rank takes part in the same collectives. Returns
    the number of batches this rank used.
    """
    batches = list(batches)
    layers = batch_norms(module)
    if sum_across_ranks is None or not layers:
        pool_in_hooks = False
    else:  # agree first on who has work: ranks with batches, ranks
        flag = [1.0 if batches else 0.0, 1.0]
        working, ranks = sum_across_ranks(_on(layers, torch.tensor(flag))).tolist()
        if working == 0:
            return 0
        pool_in_hooks = working == ranks
    if batches:
        _fill_in_eval_mode(module, batches, forward, sum_across_ranks if pool_in_hooks else None)
    if sum_across_ranks is not None and layers and not pool_in_hooks:
        pool_across_ranks(layers.values(), len(batches), sum_across_ranks)
    return len(batches)


def _on(layers: Mapping[str, _BatchNorm], value: Tensor) -> Tensor:
    """``value`` on the device of ``layers``' buffers (where the collectives run)."""
    return value.to(next(iter(layers.values())).running_mean.device)


def _fill_in_eval_mode(
    module: nn.Module,
    batches: list[Any],
    forward: Callable[[Any], object] | None,
    sum_across_ranks: Callable[[Tensor], Tensor] | None,
) -> None:
    """:func:`recalibrate_eval_consistent`'s forward: each layer filled as its input arrives."""
    sizes = [_batch_size(b) for b in batches]
    filled: set[nn.Module] = set()

    def fill(layer: _BatchNorm, args: tuple[Tensor, ...]) -> None:
        if layer in filled:  # a layer called twice keeps what its first call measured
            return
        filled.add(layer)
        x = args[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]
        chunks = [c for c in x.split(sizes) if c.numel() > c.shape[1]]  # variance needs 2 values
        means = torch.stack([c.mean(dims) for c in x.split(sizes)])
        variances = torch.stack([c.var(dims, unbiased=True) for c in chunks])
        totals = torch.stack([means.sum(0), variances.sum(0)])
        counts = torch.tensor([len(sizes), len(chunks)], dtype=x.dtype, device=x.device)
        if sum_across_ranks is not None:
            totals, counts = sum_across_ranks(totals), sum_across_ranks(counts)
        layer.running_mean.copy_(totals[0] / counts[0])
        layer.running_var.copy_(totals[1] / counts[1].clamp_min(1.0))
        layer.num_batches_tracked.fill_(int(counts[0]))

    hooks = [m.register_forward_pre_hook(fill) for m in batch_norms(module).values()]
    try:
        with probing(module), torch.no_grad():
            module.eval()
            (forward or module)(_concatenate(batches))
    finally:
        for hook in hooks:
            hook.remove()


def pool_across_ranks(
    layers: Iterable[_BatchNorm], count: int, sum_across_ranks: Callable[[Tensor], Tensor]
) -> None:
    """Make every rank hold the cumulative average over ALL ranks' batches.

    Each rank's statistics are averages over its own ``count`` batches (a rank with none
    adds nothing); the batch-weighted mean of them is the average over every batch of every
    rank, exactly what one process iterating all those batches would hold (one all-reduce
    sum, ``sum_across_ranks``, for all layers). Adding the spread of the ranks' means would
    estimate a population variance instead: not what BN normalised with in training, where
    each rank's batch is just another batch. ``num_batches_tracked`` becomes the total batch
    count, so the buffers are identical.
    """
    layers = list(layers)
    if not layers:
        return
    device = layers[0].running_mean.device
    parts = [torch.cat([m.running_mean.float(), m.running_var.float()]) for m in layers]
    flat = torch.cat([*parts, torch.ones(1, device=device)])
    flat = flat * float(count) if count else torch.zeros_like(flat)
    total = sum_across_ranks(flat)
    batches = total[-1]
    pooled = total[:-1] / batches.clamp_min(1.0)
    offset = 0
    for m in layers:
        size = m.running_mean.numel()
        m.running_mean.copy_(pooled[offset : offset + size])
        m.running_var.copy_(pooled[offset + size : offset + 2 * size])
        m.num_batches_tracked.fill_(batches.round().long())
        offset += 2 * size
