"""One LightningDataModule per dataset, all on the shared k-fold base (imported on first use:
the names are the imports under ``TYPE_CHECKING``, see ``dsrelu_lightning.lazy_exports``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsrelu_lightning.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)

if TYPE_CHECKING:
    from dsrelu_lightning.data.cifar100 import CIFAR100DataModule
    from dsrelu_lightning.data.digits import DigitsDataModule
    from dsrelu_lightning.data.kfold import KFoldDataModule
    from dsrelu_lightning.data.mini_imagenet import MiniImageNetDataModule
    from dsrelu_lightning.data.mitbih import MITBIHDataModule
    from dsrelu_lightning.data.splits import holdout_indices, kfold_indices
