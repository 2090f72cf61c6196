"""CIFAR100DataModule on torchvision-format pickles written by the test."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyTrainer
from fake_datasets import (
    assert_folds_partition,
    cli_error_line,
    data_fit_args,
    trust_cifar100_files,
    write_cifar100,
)
from torchvision.datasets import CIFAR100

from dsrelu_lightning.__main__ import main
from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.data import CIFAR100DataModule
from dsrelu_lightning.data import kfold as kfold_module
from dsrelu_lightning.data.cifar100 import CIFAR100_MEAN, CIFAR100_STD
from dsrelu_lightning.errors import ConfigurationError


@pytest.fixture
def cifar_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cifar100"
    trust_cifar100_files(monkeypatch, write_cifar100(root))
    return root


def test_reads_the_pickles_into_normalised_tensors(
    cifar_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[str] = []
    monkeypatch.setattr(kfold_module, "rank_zero_info", logged.append)
    dm = CIFAR100DataModule(data_dir=str(cifar_dir), batch_size=8)
    assert (dm.num_classes, dm.in_channels) == (100, 3)
    dm.setup("fit")
    dm.setup("test")
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (400, 100, 100)
    assert dm.summary() == {"train": [4] * 100, "val": [1] * 100, "test": [1] * 100}
    assert len(logged) == 1 and "100 classes, 4 to 4 per class" in logged[0]
    assert dm.class_names[:2] == ["class_00", "class_01"]

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # The first red pixel of every image stores its label (see write_cifar100).
    expected = (y.float() / 255 - CIFAR100_MEAN[0]) / CIFAR100_STD[0]
    assert torch.allclose(x[:, 0, 0, 0], expected, atol=1e-5)
    image, label = dm.test_dataset[3]
    assert image[0, 0, 0] == pytest.approx((int(label) / 255 - CIFAR100_MEAN[0]) / CIFAR100_STD[0])


def test_folds_are_disjoint_and_cover_the_training_images(cifar_dir: Path) -> None:
    def make(fold: int) -> CIFAR100DataModule:
        return CIFAR100DataModule(data_dir=str(cifar_dir), fold_index=fold)

    assert_folds_partition(make, num_folds=5)


def test_augmentation_is_off_by_default_and_touches_only_the_training_split(
    cifar_dir: Path,
) -> None:
    plain = CIFAR100DataModule(data_dir=str(cifar_dir))
    plain.setup("fit")
    assert plain.train_dataset.dataset.transform is None
    augmented = CIFAR100DataModule(data_dir=str(cifar_dir), augment=True)
    augmented.setup("fit")
    assert augmented.val_dataset.dataset.transform is None
    assert augmented.train_dataset.dataset.images is augmented.val_dataset.dataset.images
    torch.manual_seed(0)
    draws = torch.stack([augmented.train_dataset[0][0] for _ in range(8)])
    reference = plain.train_dataset[0][0]
    assert not all(torch.equal(draw, reference) for draw in draws)
    assert torch.equal(augmented.val_dataset[0][0], plain.val_dataset[0][0])


def test_missing_or_corrupt_data_is_one_clear_error(tmp_path: Path, cifar_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="download true"):
        CIFAR100DataModule(data_dir=str(tmp_path / "nothing")).setup("fit")
    (cifar_dir / CIFAR100.base_folder / "train").write_bytes(b"truncated")
    with pytest.raises(ConfigurationError, match="corrupt"):
        CIFAR100DataModule(data_dir=str(cifar_dir)).setup("fit")


def test_download_moves_only_a_complete_dataset_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5s: dict = {}

    def fake_download(self: CIFAR100) -> None:  # stands in for the network fetch
        (Path(self.root) / "cifar-100-python.tar.gz").write_bytes(b"archive")
        md5s.update(write_cifar100(Path(self.root)))
        trust_cifar100_files(monkeypatch, md5s)

    monkeypatch.setattr(CIFAR100, "download", fake_download)
    target = tmp_path / "cifar100"
    dm = CIFAR100DataModule(data_dir=str(target), download=True)
    dm.prepare_data()
    assert sorted(p.name for p in target.iterdir()) == [CIFAR100.base_folder]
    dm.setup("fit")
    assert len(dm.train_dataset) == 400

    def failing_download(self: CIFAR100) -> None:
        (Path(self.root) / CIFAR100.base_folder).mkdir()
        (Path(self.root) / CIFAR100.base_folder / "train").write_bytes(b"half")
        raise ConnectionError("network down")

    monkeypatch.setattr(CIFAR100, "download", failing_download)
    broken = tmp_path / "broken"
    with pytest.raises(ConfigurationError, match="could not download CIFAR-100"):
        CIFAR100DataModule(data_dir=str(broken), download=True).prepare_data()
    assert list(broken.iterdir()) == []


def test_network_failure_is_one_line_at_the_cli(
    tiny: TinyTrainer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def offline(self: CIFAR100) -> None:  # what torchvision's download_url raises offline
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(CIFAR100, "download", offline)
    target = tmp_path / "cifar100"
    with pytest.raises(ConfigurationError) as info:
        CIFAR100DataModule(data_dir=str(target), download=True).prepare_data()
    assert str(info.value) == (
        "could not download CIFAR-100 with torchvision (URLError: <urlopen error [Errno -3] "
        "Temporary failure in name resolution>); check the network or put torchvision's "
        f"cifar-100-python folder (train, test, meta) into {target}"
    )
    args = data_fit_args(tiny, "cifar100.yaml", target, "--data.download", "true")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    line = cli_error_line(capsys.readouterr().err)
    assert "could not download CIFAR-100 with torchvision (URLError" in line


def test_config_runs_fast_dev_run(tiny: TinyTrainer, cifar_dir: Path, tmp_path: Path) -> None:
    cli = build_cli(data_fit_args(tiny, "cifar100.yaml", cifar_dir))
    assert cli.trainer.state.finished
    assert cli.model.hparams.lr == pytest.approx(1e-4)
    assert cli.model.hparams.stem == "imagenet"
    assert cli.datamodule.batch_size == 32 and not cli.datamodule.augment
    assert np.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def test_cli_reports_missing_data_in_one_line(
    tiny: TinyTrainer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(data_fit_args(tiny, "cifar100.yaml", tmp_path / "empty"))
    assert exit_info.value.code == 2
    line = cli_error_line(capsys.readouterr().err)
    assert "CIFAR-100 not found" in line and "--data.download true" in line
