"""One LightningDataModule per dataset, all on the shared k-fold base."""

from dsrelu_lightning.data.cifar100 import CIFAR100DataModule
from dsrelu_lightning.data.digits import DigitsDataModule
from dsrelu_lightning.data.kfold import KFoldDataModule, holdout_indices, kfold_indices
from dsrelu_lightning.data.mini_imagenet import MiniImageNetDataModule
from dsrelu_lightning.data.mitbih import MITBIHDataModule

__all__ = [
    "CIFAR100DataModule",
    "DigitsDataModule",
    "KFoldDataModule",
    "MITBIHDataModule",
    "MiniImageNetDataModule",
    "holdout_indices",
    "kfold_indices",
]
