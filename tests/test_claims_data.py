"""--data.train_fraction: a stratified, nested share of the fold's training part; validation
and test untouched; refused in one line outside (0, 1] or where a class would be empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DIGITS_CONFIG, run_main

from dsrelu_lightning.data import DigitsDataModule
from dsrelu_lightning.data.splits import fraction_indices
from dsrelu_lightning.errors import ConfigurationError
from dsrelu_lightning.study.run.grid import grid_cells, parse_train_fractions
from dsrelu_lightning.study.run.variants import plain_variant


def _train_indices(module: DigitsDataModule) -> set[int]:
    return set(module.train_dataset.indices)  # type: ignore[union-attr]


def test_fractions_are_nested_stratified_and_leave_validation_and_test_alone() -> None:
    modules = {f: DigitsDataModule(train_fraction=f) for f in (0.05, 0.1, 0.25, 1.0)}
    for module in modules.values():
        module.setup()
    sets = {f: _train_indices(m) for f, m in modules.items()}
    assert sets[0.05] < sets[0.1] < sets[0.25] < sets[1.0]
    full = np.asarray(modules[1.0].summary()["train"])
    for fraction, module in modules.items():
        counts = np.asarray(module.summary()["train"])
        # each class keeps round(F * its count): the share of every class is F to a sample
        assert np.all(np.abs(counts - fraction * full) <= 0.5 + 1e-9), (fraction, counts)
        assert module.summary()["val"] == modules[1.0].summary()["val"]
        assert module.summary()["test"] == modules[1.0].summary()["test"]
        assert module.val_dataset.indices == modules[1.0].val_dataset.indices  # type: ignore[union-attr]


def test_another_seed_draws_another_subset() -> None:
    labels = np.repeat(np.arange(4), 50)
    first, second = fraction_indices(labels, 0.2, 1), fraction_indices(labels, 0.2, 2)
    assert len(first) == len(second) == 40 and set(first) != set(second)
    assert np.array_equal(first, fraction_indices(labels, 0.2, 1))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True])
def test_a_fraction_outside_zero_one_is_refused(fraction: float) -> None:
    with pytest.raises(ConfigurationError, match=r"train_fraction must lie in \(0, 1\]"):
        DigitsDataModule(train_fraction=fraction)


def test_a_fraction_that_empties_a_class_says_the_smallest_that_works() -> None:
    module = DigitsDataModule(train_fraction=0.001)
    with pytest.raises(ConfigurationError, match="leaves class 0 with no training sample"):
        module.setup()


def test_the_cli_refuses_a_bad_fraction_in_one_line(tmp_path: Path) -> None:
    result = run_main(
        "fit", "--config", DIGITS_CONFIG, "--data.init_args.train_fraction", "1.5",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.code == 2
    assert result.err.count("\n") == 1 and "train_fraction must lie in (0, 1]" in result.err
    assert not (tmp_path / "run").exists()


def test_train_fractions_multiply_the_cells_and_name_their_folders() -> None:
    fractions = parse_train_fractions("0.05, 0.1,1.0")
    assert fractions == (0.05, 0.1, 1.0)
    cells = grid_cells(
        {"digits": Path(DIGITS_CONFIG)}, [plain_variant("relu")], {"digits": (0,)},
        {"digits": (42,)}, train_fractions=fractions,
    )  # fmt: skip
    assert len(cells) == 3
    folders = [c.directory("out").as_posix() for c in cells]
    assert folders[0] == "out/digits/fraction0.05/relu/seed42/fold0"
    assert folders[2] == "out/digits/fraction1/relu/seed42/fold0"
    assert cells[1].cli_args()[:2] == ["--data.init_args.train_fraction", "0.1"]
    assert cells[1].name == "digits/fraction 0.1/relu/seed 42/fold 0"


@pytest.mark.parametrize("text", ["0", "0.1,1.2", "a", "0.1,0.1", ""])
def test_bad_train_fractions_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="--train_fractions"):
        parse_train_fractions(text)
