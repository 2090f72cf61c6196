"""The k-fold base, the digits data module and the array caches."""

from __future__ import annotations

import errno
import os
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dsrelu_lightning.__main__ import main
from dsrelu_lightning.data import DigitsDataModule, holdout_indices, kfold_indices
from dsrelu_lightning.data.cache import file_fingerprint, load_arrays, save_arrays
from dsrelu_lightning.data.sampling import EpochSeededRandomSampler
from dsrelu_lightning.data.splits import check_test_fraction
from dsrelu_lightning.errors import ConfigurationError


def _labels(n_per_class: int = 20, classes: int = 4) -> np.ndarray:
    return np.repeat(np.arange(classes), n_per_class)


@pytest.mark.parametrize("num_folds", [2, 5])
def test_folds_are_disjoint_cover_the_pool_and_are_stratified(num_folds: int) -> None:
    labels = _labels()
    vals = []
    for k in range(num_folds):
        train, val = kfold_indices(labels, num_folds, k, seed=3)
        assert set(train).isdisjoint(val)
        assert len(train) + len(val) == len(labels)
        counts = np.bincount(labels[val], minlength=4)
        assert counts.max() - counts.min() <= 1
        vals.append(val)
    merged = np.concatenate(vals)
    assert len(merged) == len(labels) and set(merged) == set(range(len(labels)))


def test_folds_are_deterministic_for_a_seed() -> None:
    labels = _labels()
    a = kfold_indices(labels, 5, 2, seed=1)[1]
    assert np.array_equal(a, kfold_indices(labels, 5, 2, seed=1)[1])
    assert not np.array_equal(a, kfold_indices(labels, 5, 2, seed=2)[1])


def test_group_folds_keep_each_group_on_one_side() -> None:
    labels = np.tile([0, 1], 30)
    groups = np.repeat(np.arange(10), 6)
    for k in range(3):
        train, val = kfold_indices(labels, 3, k, seed=0, groups=groups)
        assert set(groups[train]).isdisjoint(groups[val])


@pytest.mark.parametrize(
    ("num_folds", "fold_index", "match"),
    [(1, 0, "num_folds"), (5, 5, "fold_index"), (5, -1, "fold_index")],
)
def test_bad_fold_arguments_raise(num_folds: int, fold_index: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        kfold_indices(_labels(), num_folds, fold_index, seed=0)
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(num_folds=num_folds, fold_index=fold_index)


def test_holdout_is_stratified_and_disjoint() -> None:
    labels = _labels(10, 5)
    pool, test = holdout_indices(labels, 0.2, seed=0)
    assert set(pool).isdisjoint(test) and len(pool) + len(test) == 50
    assert np.array_equal(np.bincount(labels[test]), [2] * 5)
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_indices(labels, 1.0, seed=0)


def test_group_holdout_warns_where_the_share_it_realises_differs() -> None:
    labels = np.tile([0, 1], 60)
    groups = np.repeat(np.arange(20), 6)
    with pytest.warns(UserWarning, match=r"test_fraction=0.4 .*one of 2 parts: about 0.500"):
        pool, test = holdout_indices(labels, 0.4, seed=0, groups=groups)
    assert len(test) == len(labels) // 2  # 1 / round(1 / 0.4): half, not 40%
    assert set(groups[pool]).isdisjoint(groups[test])
    for fraction in (0.2, 0.25, 0.3, 0.45):  # within 0.05 of 1/5, 1/4, 1/3 and 1/2
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            holdout_indices(labels, fraction, seed=0, groups=groups)
    with warnings.catch_warnings():  # without groups the share is test_fraction itself
        warnings.simplefilter("error")
        _, test = holdout_indices(labels, 0.4, seed=0)
    assert len(test) == 48


def test_digits_module_shapes_and_splits() -> None:
    dm = DigitsDataModule(batch_size=16, fold_index=1)
    assert (dm.num_classes, dm.in_channels) == (10, 1)
    dm.setup("fit")
    dm.setup("test")
    sizes = len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)
    assert sum(sizes) == 1797 and sizes[2] == pytest.approx(1797 * 0.2, abs=1)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(dm.train_dataset.dataset.tensors[0].mean())) < 1e-4


def test_digits_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DigitsDataModule(batch_size=0)
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigurationError, match=r"test_fraction must lie in \(0, 1\)"):
            DigitsDataModule(test_fraction=fraction)
    for seed in (-1, 2**32, 1.5):
        with pytest.raises(ConfigurationError, match=r"seed must be an integer in \[0, "):
            DigitsDataModule(seed=seed)  # type: ignore[arg-type]


def test_digits_test_fraction_is_judged_on_the_real_labels() -> None:
    dm = DigitsDataModule(test_fraction=0.05)  # 90 of 1,797 images: 9 per class
    dm.setup("fit")
    assert sum(dm.summary()["test"]) == 90 and min(dm.summary()["test"]) >= 8
    too_small = DigitsDataModule(test_fraction=0.003)  # 6 test images for 10 classes
    with pytest.raises(ConfigurationError, match="of 1797 samples"):
        too_small.setup("fit")


def test_summary_counts_every_split_and_setup_logs_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dsrelu_lightning.data import kfold

    logged: list[str] = []
    monkeypatch.setattr(kfold, "rank_zero_info", logged.append)
    dm = DigitsDataModule()
    counts = dm.summary()  # sets up on first use
    dm.setup("fit")
    dm.setup("test")
    assert set(counts) == {"train", "val", "test"} and all(len(c) == 10 for c in counts.values())
    assert sum(map(sum, counts.values())) == 1797
    assert counts["val"] == np.bincount(dm.val_dataset[:][1].numpy(), minlength=10).tolist()
    assert len(logged) == 1 and "test" in logged[0] and "%)" in logged[0]


def test_file_fingerprint_changes_with_a_same_size_edit(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("1,0\n")
    before = file_fingerprint(path)
    path.write_text("1,4\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = file_fingerprint(path)
    assert before[:2] == after[:2] == ["labels.csv", 4] and before != after


def test_save_arrays_streams_into_the_file_without_copies_in_memory(tmp_path: Path) -> None:
    images = np.arange(48 * 2**20, dtype=np.uint8)  # 48 MiB
    tracemalloc.start()
    try:
        assert save_arrays(tmp_path / "cache.npz", images=images)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < images.nbytes // 2, f"peak {peak / 2**20:.0f} MiB while saving 48 MiB"
    loaded = load_arrays(tmp_path / "cache.npz")
    assert loaded is not None and np.array_equal(loaded["images"], images)
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_save_arrays_respects_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        assert save_arrays(tmp_path / "cache.npz", x=np.zeros(3))
    finally:
        os.umask(previous)
    assert (tmp_path / "cache.npz").stat().st_mode & 0o777 == 0o640


def test_save_arrays_on_a_full_disk_keeps_the_old_cache_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cache.npz"
    assert save_arrays(path, x=np.zeros(3))

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.warns(UserWarning, match="could not write the cache .*No space left"):
        assert not save_arrays(path, x=np.ones(1000))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]
    loaded = load_arrays(path)
    assert loaded is not None and np.array_equal(loaded["x"], np.zeros(3))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_arrays(path, x=np.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_training_shuffle_depends_only_on_seed_and_epoch() -> None:
    datamodule = DigitsDataModule(batch_size=16)
    datamodule.setup()
    torch.manual_seed(42)  # as seed_everything(42)
    sampler = datamodule.train_dataloader().sampler
    assert isinstance(sampler, EpochSeededRandomSampler) and sampler.seed == 42
    orders = []
    for epoch in (0, 1, 1):
        torch.rand(7)  # the global RNG's state must not matter (a resumed fit's differs)
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[1] == orders[2] != orders[0]
    assert sorted(orders[0]) == list(range(len(datamodule.train_dataset)))
    fresh = EpochSeededRandomSampler(datamodule.train_dataset, seed=42)
    fresh.set_epoch(1)
    assert list(fresh) == orders[1]
    assert datamodule.val_dataloader().sampler.__class__.__name__ == "SequentialSampler"


def test_more_processes_than_evaluation_samples_is_refused(monkeypatch) -> None:
    datamodule = DigitsDataModule(batch_size=16)
    datamodule.setup()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 1000)
    with pytest.raises(ConfigurationError, match="288 evaluation samples cannot be shared by 1000"):
        datamodule.val_dataloader()


SHARED_PARAMETERS = {
    "data_dir",
    "batch_size",
    "num_workers",
    "num_folds",
    "fold_index",
    "seed",
    "train_fraction",
    "download",
}


def _data_section(text: str) -> dict:
    return yaml.safe_load(text)["data"]


@pytest.mark.parametrize(
    ("config", "module", "own"),
    [
        ("digits.yaml", "DigitsDataModule", {"test_fraction"}),
        ("mitbih.yaml", "MITBIHDataModule", {"source", "split", "records", "test_fraction"}),
    ],
)
def test_print_config_and_help_list_the_shared_parameters(
    config: str, module: str, own: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # The data modules pass the shared parameters on with **kwargs: LightningCLI must
    # still see (and print, and document) every one of them.
    path = str(Path(__file__).resolve().parents[1] / "configs" / config)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", path, "--data.num_folds", "3", "--print_config"])
    assert info.value.code in (0, None)
    data = _data_section(capsys.readouterr().out)
    assert data["class_path"] == f"dsrelu_lightning.data.{module}"
    assert set(data["init_args"]) == SHARED_PARAMETERS | own
    assert data["init_args"]["num_folds"] == 3
    with pytest.raises(SystemExit):
        main(["fit", "--config", path, "--data.help", f"dsrelu_lightning.data.{module}"])
    help_text = capsys.readouterr().out
    for name in SHARED_PARAMETERS | own:
        assert f"--data.{name} " in help_text, name


def test_shared_parameters_reach_the_base_and_keep_a_subclass_default() -> None:
    dm = DigitsDataModule(num_workers=1, num_folds=3, fold_index=2, seed=7)
    assert (dm.num_workers, dm.num_folds, dm.fold_index, dm.seed) == (1, 3, 2, 7)
    assert dm.batch_size == 64  # digits' own default, not the base's 32
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        DigitsDataModule(batchsize=8)  # type: ignore[call-arg]


def test_digits_refuse_to_download() -> None:
    with pytest.raises(ConfigurationError) as info:
        DigitsDataModule(download=True)
    assert str(info.value) == (
        "DigitsDataModule cannot download: scikit-learn ships the digits, there is nothing "
        "to fetch; drop --data.download"
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_the_one_fraction_check(fraction: float) -> None:
    with pytest.raises(
        ConfigurationError, match=rf"test_fraction must lie in \(0, 1\), got {fraction}"
    ):
        check_test_fraction(fraction)
    assert check_test_fraction(0.25) == 0.25


def test_digits_preprocessing_as_described_reproduces_its_samples() -> None:
    # What an exported model's sidecar tells a deployment: applied to scikit-learn's raw
    # images it must give exactly the inputs the model was trained and checked on.
    from sklearn.datasets import load_digits

    data = DigitsDataModule()
    data.setup()
    described = data.input_preprocessing()
    raw = torch.from_numpy(load_digits().images.astype(np.float32)).unsqueeze(1)
    mean, std = described["mean"][0], described["std"][0]
    prepared = (raw * described["pixel_scale"] - mean) / std
    test_indices = holdout_indices(load_digits().target, data.test_fraction, data.seed)[1]
    torch.testing.assert_close(prepared[test_indices], data.test_dataset.tensors[0])
