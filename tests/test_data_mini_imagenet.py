"""MiniImageNetDataModule on small JPEG trees in both accepted layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyTrainer
from fake_datasets import (
    COLOURS,
    WNIDS,
    assert_folds_partition,
    cli_error_line,
    data_fit_args,
    write_csv_layout,
    write_image_folder,
)

from dsrelu_lightning.__main__ import main
from dsrelu_lightning.cli.app import build_cli
from dsrelu_lightning.data import MiniImageNetDataModule
from dsrelu_lightning.data import mini_imagenet as mini_module
from dsrelu_lightning.data.mini_imagenet import IMAGENET_MEAN, IMAGENET_STD
from dsrelu_lightning.errors import ConfigurationError


def _module(root: Path, **kwargs: object) -> MiniImageNetDataModule:
    settings = {"image_size": 16, "num_classes": 4, "test_fraction": 0.25, "num_folds": 3}
    return MiniImageNetDataModule(data_dir=str(root), **(settings | kwargs))


def _colour(image: torch.Tensor) -> np.ndarray:
    """Mean RGB (0..255) of a normalised image."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((image * std + mean) * 255).mean(dim=(1, 2)).numpy()


@pytest.mark.parametrize("layout", [write_image_folder, write_csv_layout])
def test_both_layouts_pool_into_one_resized_labelled_set(tmp_path: Path, layout: object) -> None:
    layout(tmp_path)  # type: ignore[operator]
    dm = _module(tmp_path)
    dm.setup("fit")
    assert dm.class_names == WNIDS
    assert dm.summary() == {"train": [4] * 4, "val": [2] * 4, "test": [2] * 4}
    for dataset in (dm.train_dataset, dm.val_dataset, dm.test_dataset):
        for image, label in (dataset[i] for i in range(len(dataset))):
            assert image.shape == (3, 16, 16) and image.dtype == torch.float32
            assert np.allclose(_colour(image), COLOURS[int(label)], atol=6)


def test_folds_are_disjoint_and_cover_the_pool(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    assert_folds_partition(lambda fold: _module(tmp_path, fold_index=fold), num_folds=3)


def test_decoded_images_are_cached_per_image_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image_folder(tmp_path)
    first = _module(tmp_path)
    first.prepare_data()
    caches = list(tmp_path.glob("mini_imagenet-16px-*.npz"))
    assert len(caches) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(mini_module, "decode_images", no_decoding)
    second = _module(tmp_path)
    second.setup("fit")
    assert len(second.train_dataset) == 16
    with pytest.raises(AssertionError, match="decoded again"):
        _module(tmp_path, image_size=24).setup("fit")


def test_missing_or_empty_data_names_both_layouts(tmp_path: Path) -> None:
    for root in (tmp_path / "absent", tmp_path):
        with pytest.raises(ConfigurationError) as info:
            _module(root).setup("fit")
        message = str(info.value)
        assert "one folder per class" in message and "train.csv" in message
        assert "no public download" in message


def test_images_folder_without_its_csvs_names_them(tmp_path: Path) -> None:
    write_csv_layout(tmp_path)
    for table in ("train.csv", "val.csv", "test.csv"):
        (tmp_path / table).unlink()
    with pytest.raises(ConfigurationError) as info:
        _module(tmp_path, num_classes=100).setup("fit")
    message = str(info.value)
    assert f"{tmp_path / 'images'} exists but {tmp_path} lacks train.csv, val.csv and " in message
    assert "one folder per class" in message and "no public download" in message
    assert "found 1 classes" not in message and "--data.num_classes" not in message


def test_bad_contents_are_reported(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "tree")
    with pytest.raises(ConfigurationError, match="--data.num_classes 4"):
        MiniImageNetDataModule(data_dir=str(tmp_path / "tree"), image_size=16).setup("fit")

    (tmp_path / "tree" / WNIDS[0] / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConfigurationError, match=r"broken\.jpg"):
        _module(tmp_path / "tree").setup("fit")
    assert not list((tmp_path / "tree").glob("*.npz"))
    assert not list((tmp_path / "tree").glob(".*tmp"))

    write_csv_layout(tmp_path / "csv")
    next((tmp_path / "csv" / "images").iterdir()).unlink()
    with pytest.raises(ConfigurationError, match="1 images listed"):
        _module(tmp_path / "csv").setup("fit")
    (tmp_path / "csv" / "val.csv").write_text("name,class\nx.jpg,n0\n")
    with pytest.raises(ConfigurationError, match="filename,label"):
        _module(tmp_path / "csv").setup("fit")


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="image_size"):
        MiniImageNetDataModule(image_size=4)
    with pytest.raises(ConfigurationError, match="test_fraction"):
        MiniImageNetDataModule(test_fraction=1.5)


def test_config_runs_fast_dev_run(tiny: TinyTrainer, tmp_path: Path) -> None:
    write_csv_layout(tmp_path / "mini", per_class=12)
    args = data_fit_args(tiny, "mini_imagenet.yaml", tmp_path / "mini")
    cli = build_cli([*args, "--data.image_size", "32", "--data.num_classes", "4"])
    assert cli.trainer.state.finished
    assert cli.model.hparams.num_classes == 4 and cli.model.hparams.lr == pytest.approx(1e-4)
    assert np.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def test_cli_reports_missing_data_in_one_line(
    tiny: TinyTrainer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(data_fit_args(tiny, "mini_imagenet.yaml", tmp_path / "none"))
    line = cli_error_line(capsys.readouterr().err)
    assert "Mini-ImageNet not found" in line and "train.csv" in line


def test_download_is_refused_saying_where_to_put_the_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        MiniImageNetDataModule(data_dir=str(tmp_path), download=True)
    message = str(info.value)
    assert message.startswith(
        f"MiniImageNetDataModule cannot download: put Mini-ImageNet in {tmp_path}"
    )
    assert message.endswith("it has no public download URL")
