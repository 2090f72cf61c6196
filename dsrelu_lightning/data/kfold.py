"""The shared k-fold base: a data module whose validation set is one fold of its pool
(:mod:`~dsrelu_lightning.data.splits`), plus a held-out test set."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from dsrelu_lightning.data.sampling import EpochSeededRandomSampler
from dsrelu_lightning.data.splits import (
    check_folds,
    check_seed,
    check_train_fraction,
    fraction_indices,
    kfold_indices,
)
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["KFoldDataModule", "dataset_labels", "format_class_counts"]


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """The integer class label of every sample of ``dataset``, without loading its inputs.

    Understands a ``labels`` or ``targets`` attribute, TensorDataset (last tensor) and
    Subset; any other dataset is iterated.
    """
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    for name in ("labels", "targets"):
        labels = getattr(dataset, name, None)
        if labels is not None:
            return np.asarray(labels, dtype=np.int64)
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[-1].numpy().astype(np.int64)
    return np.asarray([int(target) for _, target in dataset], dtype=np.int64)  # type: ignore[attr-defined]


def format_class_counts(
    counts: dict[str, list[int]], class_names: Sequence[str] | None = None
) -> str:
    """Human-readable class counts per split, one line each.

    Up to 10 classes are listed with their share of the split; more are summarised as
    the smallest and largest class.
    """
    lines = []
    for split, per_class in counts.items():
        total = sum(per_class)
        head = f"  {split:<5} {total:>8,}"
        if len(per_class) <= 10:
            names = class_names or [str(index) for index in range(len(per_class))]
            parts = [
                f"{name} {count:,} ({100.0 * count / max(total, 1):.1f}%)"
                for name, count in zip(names, per_class, strict=True)
            ]
            lines.append(f"{head}: " + ", ".join(parts))
        else:
            lines.append(
                f"{head}: {len(per_class)} classes, {min(per_class):,} to "
                f"{max(per_class):,} per class"
            )
    return "\n".join(lines)


class KFoldDataModule(pl.LightningDataModule, ABC):
    """Base of every data module: fold ``fold_index`` of ``num_folds`` is validation.

    Subclasses set ``num_classes`` and ``in_channels`` in ``__init__`` (the CLI links
    them into the model) and implement :meth:`load_pool`; they may override
    :meth:`load_test` (the held-out test set), :meth:`pool_groups` (subject ids for a
    group-aware split) and :meth:`train_view` (e.g. augmentation of the training split
    only), and may set ``class_names``. The first :meth:`setup` builds every split and
    logs :meth:`summary`, the class counts of each split, once.

    Subclasses take their own arguments keyword-only and pass the shared ones below on
    with ``**kwargs`` (re-declaring only those whose default differs, e.g. ``data_dir``);
    LightningCLI follows ``**kwargs`` here, so ``--help`` and ``--print_config`` list them.
    Where nothing can be downloaded, a subclass calls :meth:`refuse_download`.

    Args:
        data_dir: where the dataset lives (or is downloaded to).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (0 loads in the main process).
        num_folds: number of cross-validation folds (>= 2).
        fold_index: which fold is the validation set, in [0, num_folds).
        seed: seed of the fold shuffling, in [0, 2**32 - 1]; the same seed gives the same
            folds.
        download: fetch the data in ``prepare_data`` where a public source exists.
        train_fraction: train on a stratified share in (0, 1] of the fold's training part
            (validation and test untouched); nested across fractions for one seed.
    """

    num_classes: int
    in_channels: int
    class_names: Sequence[str] | None = None

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 32,
        num_workers: int = 0,
        num_folds: int = 5,
        fold_index: int = 0,
        seed: int = 42,
        download: bool = False,
        train_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        check_folds(num_folds, fold_index)
        self.train_fraction = check_train_fraction(train_fraction)
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigurationError(f"num_workers must be >= 0, got {num_workers}")
        check_seed(seed)
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_folds = num_folds
        self.fold_index = fold_index
        self.seed = seed
        self.download = download
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self._split_labels: dict[str, np.ndarray] = {}
        self._train_eval_pool: tuple[Dataset, np.ndarray] | None = None

    def refuse_download(self, reason: str) -> None:
        """Refuse ``download=True`` in one line where nothing can be downloaded.

        ``reason`` says why and what to do instead, e.g. where to put the files.
        """
        if self.download:
            raise ConfigurationError(f"{type(self).__name__} cannot download: {reason}")

    @abstractmethod
    def load_pool(self) -> tuple[Dataset, np.ndarray]:
        """The dataset split into folds, and its integer class labels (one per sample)."""

    def load_test(self) -> Dataset | None:
        """The held-out test set, or None where the dataset has none."""
        return None

    def pool_groups(self) -> np.ndarray | None:
        """Group id per pool sample (e.g. patient) for a group-aware split, or None."""
        return None

    def train_view(self, pool: Dataset) -> Dataset:
        """The pool as the training split sees it (validation always sees ``pool``).

        Override to add training-only augmentation; the default returns ``pool``.
        """
        return pool

    def input_preprocessing(self) -> dict[str, Any]:
        """What a deployment must do to raw inputs to get this module's samples: a
        ``formula`` in words and its constants (``mean``, ``std``...); valid after
        :meth:`setup` (some constants come from the data). Subclasses describe their own."""
        return {"formula": f"not described by {type(self).__name__}"}

    def setup(self, stage: str | None = None) -> None:
        """Build train/val (fold ``fold_index``) and test once, whatever the stage.

        The test set is built with the folds so that the logged summary shows every
        split's class balance before training starts.
        """
        if self._split_labels:
            return
        pool, labels = self.load_pool()
        labels = np.asarray(labels)
        train, val = kfold_indices(
            labels, self.num_folds, self.fold_index, self.seed, self.pool_groups()
        )
        train = train[fraction_indices(labels[train], self.train_fraction, self.seed)]
        self._train_eval_pool = (pool, train)
        self.train_dataset = Subset(self.train_view(pool), train.tolist())
        self.val_dataset = Subset(pool, val.tolist())
        self.test_dataset = self.load_test()
        split_labels = {"train": labels[train], "val": labels[val]}
        if self.test_dataset is not None:
            split_labels["test"] = dataset_labels(self.test_dataset)
        self._split_labels = split_labels
        rank_zero_info(
            f"{type(self).__name__} fold {self.fold_index} of {self.num_folds}, samples "
            f"per class:\n{format_class_counts(self.summary(), self.class_names)}"
        )

    def summary(self) -> dict[str, list[int]]:
        """Class counts of each split: ``{"train": [...], "val": [...], "test": [...]}``.

        One count per class index; ``"test"`` is absent where there is no test set.
        Calls :meth:`setup` first if needed.
        """
        if not self._split_labels:
            self.setup()
        return {
            split: np.bincount(labels, minlength=self.num_classes).tolist()
            for split, labels in self._split_labels.items()
        }

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise ConfigurationError(f"{type(self).__name__} has no such split for this stage")
        sampler: Sampler[int] | None = None
        if shuffle:
            sampler = EpochSeededRandomSampler(dataset)  # a resumed epoch keeps its order
        elif dist.is_available() and dist.is_initialized():
            world_size = dist.get_world_size()
            if len(dataset) < world_size:  # a rank without batches would hang the others
                raise ConfigurationError(
                    f"{type(self).__name__}: {len(dataset)} evaluation samples cannot be "
                    f"shared by {world_size} processes; use fewer --trainer.devices"
                )
            # Lightning's DistributedSampler pads evaluation data with repeated samples,
            # which would bias validation/test metrics: give each sample to one rank only.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)

    def train_eval_dataloader(self, num_samples: int | None = None) -> DataLoader:
        """A fixed, seeded subset of the training split as validation sees data (no
        augmentation, the same order each epoch): ``num_samples`` of it, default as many as
        the validation split holds (all of it where it holds fewer); a smaller subset is
        the first samples of a larger one."""
        if self._train_eval_pool is None:
            self.setup()
        assert self._train_eval_pool is not None and self.val_dataset is not None
        pool, train = self._train_eval_pool
        size = len(self.val_dataset) if num_samples is None else int(num_samples)
        # In the seeded order: the first n samples of a larger subset are the n-sample one.
        chosen = np.random.default_rng(self.seed).permutation(train)[: max(size, 1)]
        return self._loader(Subset(pool, chosen.tolist()), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset or self.val_dataset, shuffle=False)
