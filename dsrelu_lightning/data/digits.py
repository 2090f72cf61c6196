"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, TensorDataset

from dsrelu_lightning.data.kfold import KFoldDataModule, holdout_indices
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["DigitsDataModule"]


class DigitsDataModule(KFoldDataModule):
    """1,797 grey 8x8 digit images in 10 classes, shipped with scikit-learn (no network).

    A stratified ``test_fraction`` is held out as the test set before the folds; the
    rest is the k-fold pool. Pixels are scaled to [0, 1] and standardised with the
    pool's mean and standard deviation. Samples are ``(1, 8, 8)`` float32 tensors.

    Args:
        test_fraction: share of the images held out for ``trainer.test``, in (0, 1);
            ``setup`` reports a share too small or too large to stratify over 10 classes.
        **kwargs: see :class:`~dsrelu_lightning.data.kfold.KFoldDataModule`.
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        num_workers: int = 0,
        num_folds: int = 5,
        fold_index: int = 0,
        seed: int = 42,
        download: bool = False,
        test_fraction: float = 0.2,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, num_folds, fold_index, seed, download)
        # Only the range here: whether the 1,797 real labels can be split is setup's to say.
        if not 0.0 < test_fraction < 1.0:
            raise ConfigurationError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.test_fraction = test_fraction
        self.num_classes = 10
        self.in_channels = 1
        self._tensors: dict[str, TensorDataset] = {}

    def _split(self) -> dict[str, TensorDataset]:
        if not self._tensors:
            digits = load_digits()
            images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
            labels = torch.from_numpy(digits.target.astype(np.int64))
            pool, test = holdout_indices(digits.target, self.test_fraction, self.seed)
            mean, std = images[pool].mean(), images[pool].std()
            images = (images - mean) / std
            self._tensors = {
                "pool": TensorDataset(images[pool], labels[pool]),
                "test": TensorDataset(images[test], labels[test]),
            }
        return self._tensors

    def load_pool(self) -> tuple[Dataset, np.ndarray]:
        pool = self._split()["pool"]
        return pool, pool.tensors[1].numpy()

    def load_test(self) -> Dataset:
        return self._split()["test"]
