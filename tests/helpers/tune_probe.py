"""A digits data module whose held-out test split fails loudly when anything reaches for it:
a tuning search that builds its test loader (or sets up the test stage) fails its trials."""

from __future__ import annotations

from torch.utils.data import DataLoader

from dsrelu_lightning.data import DigitsDataModule


class NoTestDigits(DigitsDataModule):
    """DigitsDataModule that raises on ``setup("test")`` and ``test_dataloader()``."""

    def setup(self, stage: str | None = None) -> None:
        if stage == "test":
            raise AssertionError("the test stage was set up during tune")
        super().setup(stage)

    def test_dataloader(self) -> DataLoader:
        raise AssertionError("the test loader was built during tune")
