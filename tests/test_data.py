"""The k-fold base and the digits data module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsrelu_lightning.data import DigitsDataModule, holdout_indices, kfold_indices


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
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataModule(test_fraction=0.0)


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
