"""Images held in memory as one uint8 tensor: no per-sample file reads or PIL decoding."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from dsrelu_lightning.errors import ConfigurationError

__all__ = ["TensorImageDataset", "crop_flip_augmentation", "decode_images"]

Transform = Callable[[Tensor], Tensor]


class TensorImageDataset(Dataset[tuple[Tensor, Tensor]]):
    """``(N, C, H, W)`` uint8 images and int64 labels, normalised per channel on access.

    Samples are ``((C, H, W) float32, int64 label)``; ``transform`` (e.g. augmentation)
    sees the uint8 image before normalisation. ``__getitems__`` normalises a whole batch
    at once, which DataLoader uses automatically.

    Args:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: int64 tensor ``(N,)``.
        mean: per-channel mean of the [0, 1] pixel values.
        std: per-channel standard deviation of the [0, 1] pixel values.
        transform: optional uint8 ``(C, H, W)`` -> uint8 ``(C, H, W)`` transform.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        transform: Transform | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}"
            )
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if not len(mean) == len(std) == images.shape[1]:
            raise ValueError(f"mean and std need one value per channel ({images.shape[1]})")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.transform = transform
        std_t = torch.tensor(self.std).view(-1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = torch.tensor(self.mean).view(-1, 1, 1) / std_t

    def with_transform(self, transform: Transform | None) -> TensorImageDataset:
        """The same images (shared memory) seen through ``transform``."""
        return TensorImageDataset(self.images, self.labels, self.mean, self.std, transform)

    def __len__(self) -> int:
        return len(self.images)

    def _normalise(self, images: Tensor) -> Tensor:
        return images.float().mul_(self._scale).sub_(self._shift)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return self._normalise(image), self.labels[index]

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        images = self.images[index]
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        return list(
            zip(self._normalise(images).unbind(0), self.labels[index].unbind(0), strict=True)
        )


def crop_flip_augmentation(size: int, padding: int) -> Transform:
    """Random crop of ``size`` after zero-padding by ``padding``, then a horizontal flip."""
    return v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()])


def _decode(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigurationError(f"cannot read the image {path}: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_images(paths: Sequence[Path], size: int, max_workers: int | None = None) -> np.ndarray:
    """Decode image files into one uint8 ``(N, 3, size, size)`` RGB array.

    Images are resized to ``size`` x ``size`` (bilinear, antialiased when shrinking)
    in a thread pool (Pillow releases the GIL while decoding). An unreadable file
    raises ConfigurationError naming it.
    """
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def fill(item: tuple[int, Path]) -> None:
        out[item[0]] = _decode(item[1], size)

    workers = max_workers or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(fill, enumerate(paths)):
            pass
    return out
