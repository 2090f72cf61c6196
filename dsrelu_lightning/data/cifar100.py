"""CIFAR-100: folds over the 50,000 training images, the official 10,000 as the test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR100

from dsrelu_lightning.data.download import download_into
from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.data.tensor_images import TensorImageDataset, crop_flip_augmentation
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "CIFAR100DataModule"]

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


class CIFAR100DataModule(KFoldDataModule):
    """CIFAR-100 (torchvision's python version) held in memory as uint8 tensors.

    Stratified folds split the 50,000 training images; the official test images serve
    ``trainer.test``. Pixels are normalised per channel with CIFAR-100's statistics.
    Samples are ``(3, 32, 32)`` float32 tensors.

    Args:
        data_dir: where torchvision's ``cifar-100-python`` folder is (or goes).
        augment: random crop (zero padding 4) and horizontal flip on the training split
            only. Off by default: the paper used no augmentation.
        **kwargs: the shared arguments of :class:`~dsrelu_lightning.data.kfold.KFoldDataModule`;
            ``download=True`` fetches the dataset (~160 MB) in ``prepare_data``.
    """

    def __init__(
        self, data_dir: str = "data/cifar100", *, augment: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.augment = augment
        self.num_classes = 100
        self.in_channels = 3
        self._splits: dict[str, TensorImageDataset] = {}

    def input_preprocessing(self) -> dict[str, Any]:
        """32x32 RGB pixels scaled to [0, 1] and normalised per channel with CIFAR-100's
        statistics."""
        return {
            "formula": "(pixel / 255 - mean[c]) / std[c] per RGB channel c of 32x32 images",
            "pixel_scale": 1 / 255,
            "mean": list(CIFAR100_MEAN),
            "std": list(CIFAR100_STD),
        }

    @property
    def _folder(self) -> Path:
        return Path(self.data_dir) / CIFAR100.base_folder

    def _read(self, train: bool) -> CIFAR100:
        if not self._folder.is_dir():
            raise ConfigurationError(
                f"CIFAR-100 not found: no {self._folder}; pass --data.download true to fetch it "
                f"(~160 MB) or put torchvision's {CIFAR100.base_folder} folder in {self.data_dir}"
            )
        try:
            return CIFAR100(self.data_dir, train=train, download=False)
        except RuntimeError as exc:
            raise ConfigurationError(
                f"CIFAR-100 in {self._folder} is incomplete or corrupt ({exc}); delete that "
                "folder and pass --data.download true to fetch it again"
            ) from exc

    def prepare_data(self) -> None:
        """Download CIFAR-100 into ``data_dir`` (rank 0 only) unless it is already intact."""
        if not self.download:
            return
        try:
            self._read(train=False)
            return
        except ConfigurationError:
            pass
        download_into(
            self.data_dir,
            lambda tmp: CIFAR100(tmp, train=True, download=True),
            keep=lambda entry: entry.name == CIFAR100.base_folder,
            what="CIFAR-100 with torchvision",
            manual=f"torchvision's {CIFAR100.base_folder} folder (train, test, meta)",
        )

    def _split(self, name: str) -> TensorImageDataset:
        if name not in self._splits:
            dataset = self._read(train=name == "pool")
            self.class_names = list(dataset.classes)
            # torchvision stores HWC views of CHW arrays: transposing back copies nothing.
            images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))
            labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
            self._splits[name] = TensorImageDataset(images, labels, CIFAR100_MEAN, CIFAR100_STD)
        return self._splits[name]

    def load_pool(self) -> tuple[Dataset, np.ndarray]:
        pool = self._split("pool")
        return pool, pool.labels.numpy()

    def load_test(self) -> Dataset:
        return self._split("test")

    def train_view(self, pool: Dataset) -> Dataset:
        if self.augment and isinstance(pool, TensorImageDataset):
            return pool.with_transform(crop_flip_augmentation(32, padding=4))
        return pool
