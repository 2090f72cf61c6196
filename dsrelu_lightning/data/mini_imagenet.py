"""Mini-ImageNet: 100 classes pooled from either common on-disk layout, decoded once."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from dsrelu_lightning.data.cache import cache_key, load_arrays, save_arrays
from dsrelu_lightning.data.kfold import KFoldDataModule
from dsrelu_lightning.data.splits import check_test_fraction, holdout_indices
from dsrelu_lightning.data.tensor_images import (
    TensorImageDataset,
    crop_flip_augmentation,
    decode_images,
)
from dsrelu_lightning.errors import ConfigurationError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MiniImageNetDataModule", "find_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_FILES = ("train.csv", "val.csv", "test.csv")
CACHE_VERSION = 1


def _layouts_hint(root: Path) -> str:
    return (
        f"put Mini-ImageNet in {root} in one of two layouts: one folder per class "
        f"({root}/<class>/<image>.jpg), or {root}/images/ with train.csv, val.csv and "
        "test.csv (columns filename,label); it has no public download URL"
    )


def _read_csv_layout(root: Path, tables: list[Path]) -> list[tuple[Path, str]]:
    entries: list[tuple[Path, str]] = []
    for table in tables:
        with table.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"filename", "label"} <= set(reader.fieldnames or []):
                raise ConfigurationError(
                    f"{table} must have the header 'filename,label', got {reader.fieldnames}"
                )
            entries += [(root / "images" / row["filename"], row["label"]) for row in reader]
    missing = [path for path, _ in entries if not path.is_file()]
    if missing:
        raise ConfigurationError(
            f"{len(missing)} images listed in {root}'s CSV files are missing, e.g. {missing[0]}"
        )
    return entries


def find_images(root: str | Path) -> list[tuple[Path, str]]:
    """``(image path, class name)`` of every image under ``root``, in a stable order.

    Accepts the ``images/`` + ``train.csv``/``val.csv``/``test.csv`` layout (the CSV
    splits, whose classes are disjoint, are pooled) or an ImageFolder tree. An
    ``images/`` folder without any of the CSVs is an error, not a class called "images".
    """
    root = Path(root)
    tables = [root / name for name in SPLIT_FILES if (root / name).is_file()]
    if (root / "images").is_dir():
        if not tables:  # not an ImageFolder tree with one class called "images"
            raise ConfigurationError(
                f"{root / 'images'} exists but {root} lacks train.csv, val.csv and test.csv "
                f"(columns filename,label) that label its images; {_layouts_hint(root)}"
            )
        return _read_csv_layout(root, tables)
    if not root.is_dir():
        raise ConfigurationError(
            f"Mini-ImageNet not found: no folder {root}; {_layouts_hint(root)}"
        )
    try:
        classes, class_to_idx = find_classes(root)
        samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"no Mini-ImageNet images in {root} ({exc}); {_layouts_hint(root)}"
        ) from exc
    return [(Path(path), classes[index]) for path, index in samples]


class MiniImageNetDataModule(KFoldDataModule):
    """Mini-ImageNet (100 classes x 600 images) resized once and held in memory.

    Both layouts are pooled into one set, as in the paper; a stratified
    ``test_fraction`` is held out for ``trainer.test`` before the folds. The images are
    decoded and resized once and cached in ``data_dir`` as a uint8 ``.npz`` keyed by
    ``image_size`` and the file list. Pixels are normalised with ImageNet's statistics.
    Samples are ``(3, image_size, image_size)`` float32 tensors.

    Args:
        data_dir: the Mini-ImageNet folder (either layout); the decoded cache goes there too.
        image_size: side of the square images (the paper's 84; the authors' code used 128).
        test_fraction: share of the images held out as the test set.
        num_classes: classes expected on disk (fewer only for a subset).
        augment: random crop (zero padding ``image_size // 8``) and horizontal flip on the
            training split only. Off by default: the paper used no augmentation.
        **kwargs: the shared arguments of :class:`~dsrelu_lightning.data.kfold.KFoldDataModule`
            (``download=True`` is refused: there is no public download).
    """

    def __init__(
        self,
        data_dir: str = "data/mini_imagenet",
        *,
        image_size: int = 84,
        test_fraction: float = 0.15,
        num_classes: int = 100,
        augment: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.refuse_download(_layouts_hint(Path(self.data_dir)))
        if image_size < 8:
            raise ConfigurationError(f"image_size must be >= 8 pixels, got {image_size}")
        if num_classes < 2:
            raise ConfigurationError(f"num_classes must be >= 2, got {num_classes}")
        self.image_size = image_size
        self.test_fraction = check_test_fraction(test_fraction)
        self.augment = augment
        self.num_classes = num_classes
        self.in_channels = 3
        self._splits: dict[str, TensorImageDataset] = {}

    def input_preprocessing(self) -> dict[str, Any]:
        """Images resized to ``image_size`` squared (bilinear), RGB pixels scaled to [0, 1]
        and normalised per channel with ImageNet's statistics."""
        size = self.image_size
        return {
            "formula": f"resize to {size}x{size} (PIL bilinear, antialiased), then "
            "(pixel / 255 - mean[c]) / std[c] per RGB channel c",
            "image_size": size,
            "pixel_scale": 1 / 255,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }

    def _decoded(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All images ``(N, 3, S, S)`` uint8, their labels and the sorted class names."""
        root = Path(self.data_dir)
        entries = find_images(root)
        classes = sorted({name for _, name in entries})
        if len(classes) != self.num_classes:
            raise ConfigurationError(
                f"found {len(classes)} classes in {root}, expected num_classes="
                f"{self.num_classes}; set --data.num_classes {len(classes)} to use this subset"
            )
        index = {name: position for position, name in enumerate(classes)}
        labels = np.asarray([index[name] for _, name in entries], dtype=np.int64)
        key = cache_key(
            version=CACHE_VERSION,
            image_size=self.image_size,
            files=[
                [str(path.relative_to(root)), name, path.stat().st_size] for path, name in entries
            ],
        )
        cache = root / f"mini_imagenet-{self.image_size}px-{key}.npz"
        cached = load_arrays(cache)
        if cached is not None:
            return cached["images"], labels, classes
        images = decode_images([path for path, _ in entries], self.image_size)
        save_arrays(cache, images=images)
        return images, labels, classes

    def prepare_data(self) -> None:
        """Decode the images into the cache once (rank 0 only)."""
        self._decoded()

    def _split(self) -> dict[str, TensorImageDataset]:
        if not self._splits:
            images, labels, classes = self._decoded()
            self.class_names = classes
            pool, test = holdout_indices(labels, self.test_fraction, self.seed)
            for name, indices in (("pool", pool), ("test", test)):
                self._splits[name] = TensorImageDataset(
                    torch.from_numpy(images[indices]),
                    torch.from_numpy(labels[indices]),
                    IMAGENET_MEAN,
                    IMAGENET_STD,
                )
        return self._splits

    def load_pool(self) -> tuple[Dataset, np.ndarray]:
        pool = self._split()["pool"]
        return pool, pool.labels.numpy()

    def load_test(self) -> Dataset:
        return self._split()["test"]

    def train_view(self, pool: Dataset) -> Dataset:
        if self.augment and isinstance(pool, TensorImageDataset):
            padding = max(1, self.image_size // 8)
            return pool.with_transform(crop_flip_augmentation(self.image_size, padding))
        return pool
