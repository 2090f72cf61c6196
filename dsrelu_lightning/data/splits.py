"""Stratified, seeded splits: the k folds of a pool, and the held-out test part."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from dsrelu_lightning.errors import ConfigurationError

__all__ = [
    "MAX_SEED",
    "check_folds",
    "check_seed",
    "check_test_fraction",
    "check_train_fraction",
    "fraction_indices",
    "holdout_indices",
    "kfold_indices",
]

GROUP_FRACTION_TOLERANCE = 0.05
"""How far a group-aware held-out share may be from test_fraction before a warning."""


def kfold_indices(
    labels: np.ndarray,
    num_folds: int,
    fold_index: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices of fold ``fold_index`` of a stratified k-fold split.

    Folds are shuffled with ``seed`` (deterministic), their validation parts are
    disjoint and together cover every index. With ``groups`` (e.g. patient ids) the
    split is scikit-learn's StratifiedGroupKFold: no group in both train and validation.
    """
    check_folds(num_folds, fold_index)
    labels = np.asarray(labels)
    placeholder = np.zeros(len(labels))
    if groups is None:
        splitter: Any = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(placeholder, labels)
    else:
        if len(np.unique(groups)) < num_folds:
            raise ConfigurationError(
                f"num_folds={num_folds} exceeds the {len(np.unique(groups))} groups in the data"
            )
        splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(placeholder, labels, groups)
    try:
        for index, (train, val) in enumerate(splits):
            if index == fold_index:
                return train, val
    except ValueError as exc:  # scikit-learn's verdict on data too small to split
        raise ConfigurationError(
            f"cannot split {len(labels)} samples into {num_folds} stratified folds: {exc}"
        ) from exc
    raise AssertionError("unreachable: fold_index was checked")  # pragma: no cover


def check_test_fraction(test_fraction: float) -> float:
    """``test_fraction`` if it lies in (0, 1), else a ConfigurationError."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigurationError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    return test_fraction


def check_train_fraction(train_fraction: float) -> float:
    """``train_fraction`` if it lies in (0, 1], else a ConfigurationError."""
    if (
        isinstance(train_fraction, bool)
        or not isinstance(train_fraction, numbers.Real)
        or not 0.0 < train_fraction <= 1.0
    ):
        raise ConfigurationError(
            f"train_fraction must lie in (0, 1] (e.g. 0.1 for a tenth of the fold's training "
            f"part), got {train_fraction!r}"
        )
    return float(train_fraction)


def fraction_indices(labels: np.ndarray, train_fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a stratified ``train_fraction`` of ``labels``: ``round(F * n_c)``
    of each class's ``n_c`` samples, the first ones of a per-class order fixed by ``seed``,
    so that for one seed a smaller fraction's subset lies inside a larger one's (nested).

    A class that would keep no sample raises a ConfigurationError.
    """
    check_train_fraction(train_fraction)
    labels = np.asarray(labels)
    if train_fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))  # one shuffle; each class keeps its own order in it
    kept = []
    for label in np.unique(labels):
        members = order[labels[order] == label]
        count = int(np.floor(train_fraction * len(members) + 0.5))
        if count < 1:
            raise ConfigurationError(
                f"train_fraction={train_fraction} leaves class {label} with no training sample "
                f"(it has {len(members)} in this fold's training part); use a train_fraction "
                f">= {0.5 / len(members):.3g}"
            )
        kept.append(members[:count])
    return np.sort(np.concatenate(kept))


def holdout_indices(
    labels: np.ndarray,
    test_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (pool, test) indices: ``test_fraction`` of the samples are held out.

    With ``groups`` (e.g. patient ids) whole groups are held out: the test part is one
    fold of a StratifiedGroupKFold with ``n = max(2, round(1 / test_fraction))`` folds, so
    its share is about ``1 / n``, not ``test_fraction`` itself (0.2 gives 1/5, 0.3 gives
    1/3, 0.4 gives 1/2), and no group is on both sides. Where ``1 / n`` differs from
    ``test_fraction`` by more than 0.05, a warning says which share is used.
    """
    check_test_fraction(test_fraction)
    indices = np.arange(len(labels))
    num_parts = max(2, round(1.0 / test_fraction))
    if groups is not None and len(np.unique(groups)) < num_parts:
        raise ConfigurationError(
            f"test_fraction={test_fraction} needs at least {num_parts} groups to hold whole "
            f"groups out, but the data has {len(np.unique(groups))}"
        )
    if (
        groups is not None
        and abs(1.0 / num_parts - test_fraction) > GROUP_FRACTION_TOLERANCE + 1e-9
    ):
        rank_zero_warn(
            f"test_fraction={test_fraction} with whole groups held out is realised as one "
            f"of {num_parts} parts: about {1.0 / num_parts:.3f} of the data is the test set. "
            f"Choose 1/n (e.g. 0.2, 0.25, 0.333) to get the share you ask for"
        )
    try:
        if groups is None:
            pool, test = train_test_split(
                indices, test_size=test_fraction, stratify=labels, random_state=seed
            )
        else:
            splitter = StratifiedGroupKFold(n_splits=num_parts, shuffle=True, random_state=seed)
            pool, test = next(splitter.split(np.zeros(len(labels)), labels, groups))
    except ValueError as exc:  # e.g. a class with a single sample cannot be stratified
        raise ConfigurationError(
            f"cannot hold out a stratified test_fraction={test_fraction} of {len(labels)} "
            f"samples: {exc}"
        ) from exc
    return np.sort(pool), np.sort(test)


def check_folds(num_folds: int, fold_index: int) -> None:
    if num_folds < 2:
        raise ConfigurationError(f"num_folds must be >= 2, got {num_folds}")
    if not 0 <= fold_index < num_folds:
        raise ConfigurationError(
            f"fold_index must lie in [0, {num_folds - 1}] for num_folds={num_folds}, "
            f"got {fold_index}"
        )


MAX_SEED = 2**32 - 1
"""Largest seed scikit-learn's splitters accept (their random_state is a NumPy seed)."""


def check_seed(seed: int) -> None:
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed <= MAX_SEED
    ):
        raise ConfigurationError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
