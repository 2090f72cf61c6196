"""Training-set shuffles that a resumed fit can reproduce."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler

__all__ = ["EpochSeededRandomSampler"]


class EpochSeededRandomSampler(RandomSampler):
    """A shuffle that depends only on ``(seed, epoch)``.

    ``RandomSampler`` draws each epoch's order from the global RNG, whose state a
    checkpoint does not hold: a fit resumed at epoch k would replay the order of epoch 0.
    Lightning calls :meth:`set_epoch` at each epoch start (as for ``DistributedSampler``,
    which replaces this sampler under DDP, itself seeded by the global seed and the
    epoch), so a resumed epoch sees the batches the uninterrupted run saw.

    Args:
        data_source: the dataset to shuffle.
        seed: the base seed; by default ``torch.initial_seed()``, which
            ``seed_everything`` (the CLI's ``seed_everything: 42``) fixes.
    """

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = torch.initial_seed() if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed((self.seed + self.epoch) % 2**63)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()
