"""One LightningDataModule per dataset, all on the shared k-fold base."""

from dsrelu_lightning.data.digits import DigitsDataModule
from dsrelu_lightning.data.kfold import KFoldDataModule, holdout_indices, kfold_indices

__all__ = ["DigitsDataModule", "KFoldDataModule", "holdout_indices", "kfold_indices"]
