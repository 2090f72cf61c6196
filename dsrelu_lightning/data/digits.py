"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset, TensorDataset

from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.data.splits import check_test_fraction, holdout_indices

__all__ = ["DigitsDataModule"]


class DigitsDataModule(KFoldDataModule):
    """1,797 grey 8x8 digit images in 10 classes, shipped with scikit-learn (no network).

    A stratified ``test_fraction`` is held out as the test set before the folds; the
    rest is the k-fold pool. Pixels are scaled to [0, 1] and standardised with the
    pool's mean and standard deviation. Samples are ``(1, 8, 8)`` float32 tensors.

    Args:
        batch_size: samples per batch (64 here; the base's default is 32).
        test_fraction: share of the images held out for ``trainer.test``, in (0, 1);
            ``setup`` reports a share too small or too large to stratify over 10 classes.
        **kwargs: the shared arguments of :class:`~dsrelu_lightning.data.kfold.KFoldDataModule`
            (``download=True`` is refused: the data ship with scikit-learn).
    """

    def __init__(self, *, batch_size: int = 64, test_fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.refuse_download(
            "scikit-learn ships the digits, there is nothing to fetch; drop --data.download"
        )
        # Only the range here: whether the 1,797 real labels can be split is setup's to say.
        self.test_fraction = check_test_fraction(test_fraction)
        self.num_classes = 10
        self.in_channels = 1
        self._tensors: dict[str, TensorDataset] = {}
        self._mean_std: tuple[float, float] | None = None

    def input_preprocessing(self) -> dict[str, Any]:
        """scikit-learn's 8x8 grey images (values 0..16) scaled to [0, 1], standardised with
        the k-fold pool's mean and standard deviation (computed in :meth:`setup`)."""
        if self._mean_std is None:
            self._split()
        assert self._mean_std is not None
        mean, std = self._mean_std
        return {
            "formula": "(pixel / 16 - mean) / std on 8x8 grey images with values 0..16 "
            "(sklearn.datasets.load_digits().images)",
            "pixel_scale": 1 / 16,
            "mean": [mean],
            "std": [std],
        }

    def _split(self) -> dict[str, TensorDataset]:
        if not self._tensors:
            digits = load_digits()
            images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
            labels = torch.from_numpy(digits.target.astype(np.int64))
            pool, test = holdout_indices(digits.target, self.test_fraction, self.seed)
            mean, std = images[pool].mean(), images[pool].std()
            images = (images - mean) / std
            self._mean_std = (float(mean), float(std))
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
