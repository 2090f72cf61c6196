"""Fold statistics: checked against scipy and by hand on made-up numbers, degenerate cases."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scipy import stats

from dsrelu_lightning.study.stats import mean_std, paired_tests

A = [0.912, 0.897, 0.934, 0.905, 0.921]
B = [0.903, 0.899, 0.917, 0.886, 0.915]


def test_paired_tests_match_scipy_and_the_definition_of_d() -> None:
    result = paired_tests(A, B)
    t = stats.ttest_rel(A, B)
    w = stats.wilcoxon(A, B)
    diff = np.subtract(A, B)
    assert result.n == 5
    assert result.mean_difference == pytest.approx(diff.mean())
    assert result.t_statistic == pytest.approx(t.statistic)
    assert result.t_pvalue == pytest.approx(t.pvalue)
    assert result.wilcoxon_statistic == pytest.approx(w.statistic)
    assert result.wilcoxon_pvalue == pytest.approx(w.pvalue)
    # Paired d_z by hand: mean difference over the sample SD of the differences.
    assert result.cohens_d == pytest.approx(statistics.mean(diff) / statistics.stdev(diff))
    assert result.note == ""


def test_direction_flips_the_signs_only() -> None:
    forward, backward = paired_tests(A, B), paired_tests(B, A)
    assert backward.t_statistic == pytest.approx(-forward.t_statistic)
    assert backward.cohens_d == pytest.approx(-forward.cohens_d)
    assert backward.t_pvalue == pytest.approx(forward.t_pvalue)
    assert backward.wilcoxon_pvalue == pytest.approx(forward.wilcoxon_pvalue)


def test_fewer_than_two_folds_gives_a_reason_not_nan() -> None:
    one = paired_tests([0.9], [0.8])
    assert one.n == 1 and one.mean_difference == pytest.approx(0.1)
    assert one.t_statistic is None and one.wilcoxon_pvalue is None and one.cohens_d is None
    assert "needs >= 2 folds" in one.note
    none = paired_tests([], [])
    assert none.n == 0 and none.mean_difference is None and "needs >= 2 folds" in none.note


def test_identical_folds_give_a_reason() -> None:
    result = paired_tests(A, A)
    assert result.mean_difference == 0.0
    assert (result.t_statistic, result.wilcoxon_statistic, result.cohens_d) == (None, None, None)
    assert "identical on every fold" in result.note


def test_constant_difference_keeps_wilcoxon_and_explains_the_missing_t_test() -> None:
    shifted = [a - 0.1 for a in A]  # float noise: not exactly equal differences
    result = paired_tests(A, shifted)
    assert result.t_statistic is None and result.cohens_d is None
    assert result.wilcoxon_pvalue == pytest.approx(stats.wilcoxon(A, shifted).pvalue)
    assert "zero variance" in result.note


def test_tied_folds_are_reported() -> None:
    b = [*B[:4], A[4]]
    result = paired_tests(A, b)
    assert result.t_pvalue == pytest.approx(stats.ttest_rel(A, b).pvalue)
    assert "dropped 1 fold" in result.note


@pytest.mark.parametrize(
    ("a", "b"), [([0.1, 0.2], [0.1]), ([0.1, float("nan")], [0.1, 0.2]), ([[0.1]], [[0.2]])]
)
def test_bad_samples_raise(a: list, b: list) -> None:
    with pytest.raises(ValueError):
        paired_tests(a, b)


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std(A) == (pytest.approx(statistics.mean(A)), pytest.approx(statistics.stdev(A)))
    assert mean_std([0.5]) == (0.5, None)
    assert mean_std([]) == (None, None)
