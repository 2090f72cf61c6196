"""Statistics against independent oracles: published formulas by hand, worked examples, scipy,
statsmodels (installed with scikit-posthocs) and Demšar's table; degenerate inputs."""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from dsrelu_lightning.study.report.hypothesis_tests import (
    compare_paired,
    critical_difference,
    friedman_nemenyi,
    holm,
    mean_std,
)

A = [0.912, 0.897, 0.934, 0.905, 0.921]
B = [0.903, 0.899, 0.917, 0.886, 0.915]


def corrected_by_hand(a: list[float], b: list[float], ratio: float) -> tuple[float, float, float]:
    """t, p and the CI half-width from Nadeau-Bengio / Bouckaert-Frank's published formula."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    se = math.sqrt((1 / n + ratio) * statistics.variance(d))
    t = statistics.mean(d) / se
    return t, 2 * stats.t.sf(abs(t), n - 1), stats.t.ppf(0.975, n - 1) * se


@pytest.mark.parametrize("repeats", [1, 2])
def test_corrected_t_matches_the_published_formula(repeats: int) -> None:
    # r repetitions of 5-fold: n = 5 r pairs, n_test / n_train = 1 / 4.
    rng = np.random.default_rng(3)
    a = [x + float(rng.normal(0, 0.004)) for x in A * repeats]
    b = B * repeats
    t, p, half = corrected_by_hand(a, b, 0.25)
    result = compare_paired(a, b, 0.25)
    mean = statistics.mean(x - y for x, y in zip(a, b, strict=True))
    assert result.n == 5 * repeats
    assert result.t_corrected == pytest.approx(t)
    assert result.p_corrected == pytest.approx(p)
    assert (result.ci_low, result.ci_high) == (
        pytest.approx(mean - half),
        pytest.approx(mean + half),
    )
    # The correction only widens the plain test's standard error, by sqrt(1 + n * ratio).
    assert result.t_plain == pytest.approx(stats.ttest_rel(a, b).statistic)
    assert result.t_plain / result.t_corrected == pytest.approx(math.sqrt(1 + 5 * repeats * 0.25))
    assert result.p_plain < result.p_corrected


def test_corrected_t_on_fixed_numbers() -> None:
    # d = (0.009, -0.002, 0.017, 0.019, 0.006): mean 0.0098, s_d^2 = 7.27e-5.
    result = compare_paired(A, B, 0.25)
    assert result.mean_diff == pytest.approx(0.0098)
    assert result.t_corrected == pytest.approx(0.0098 / math.sqrt(0.45 * 7.27e-5))
    assert result.t_corrected == pytest.approx(1.71338, abs=1e-5)


def test_plain_tests_effect_size_and_improvement_match_their_definitions() -> None:
    result = compare_paired(A, B, 0.25)
    diff = np.subtract(A, B)
    assert result.p_plain == pytest.approx(stats.ttest_rel(A, B).pvalue)
    assert result.wilcoxon_p == pytest.approx(stats.wilcoxon(A, B).pvalue)
    assert result.d_z == pytest.approx(statistics.mean(diff) / statistics.stdev(diff))
    assert result.p_improvement == pytest.approx(4 / 5)  # one pair of five goes the other way
    assert result.wilcoxon_min_p == pytest.approx(0.0625)  # 2 / 2^5, the exact test's floor
    assert result.note == ""


def test_ties_count_half_and_lower_the_wilcoxon_floor() -> None:
    b = [*B[:4], A[4]]
    result = compare_paired(A, b, 0.25)
    assert result.p_improvement == pytest.approx((3 + 0.5) / 5)
    assert result.wilcoxon_min_p == pytest.approx(0.125)  # 4 pairs left: 2 / 2^4
    assert "dropped 1 pair" in result.note


def test_detectable_difference_matches_statsmodels_power() -> None:
    power = pytest.importorskip("statsmodels.stats.power")
    result = compare_paired(A, B, 0.25)
    diff = np.subtract(A, B)
    se = math.sqrt((1 / 5 + 0.25) * statistics.variance(diff))
    # statsmodels' one-sample t power: noncentrality = effect size * sqrt(n), df n - 1.
    effect = power.TTestPower().solve_power(nobs=5, alpha=0.05, power=0.8)
    assert result.detectable_diff == pytest.approx(effect * math.sqrt(5) * se, rel=1e-4)


def test_holm_matches_the_worked_example_and_statsmodels() -> None:
    # Wikipedia's Holm-Bonferroni example: m = 4, alpha 0.05 rejects H1 and H4 only.
    pvalues = [0.01, 0.04, 0.03, 0.005]
    adjusted = holm(pvalues)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(5)
    many = list(rng.uniform(0, 0.2, 9))
    expected = multitest.multipletests(many, method="holm")[1]
    assert holm(many) == pytest.approx(list(expected))


def test_holm_leaves_missing_p_values_out_of_the_family() -> None:
    assert holm([0.01, None, 0.04]) == [pytest.approx(0.02), None, pytest.approx(0.04)]
    assert holm([]) == []


def test_bootstrap_ci_is_reproducible_and_is_scipys() -> None:
    rng = np.random.default_rng(4)
    a, b = list(rng.uniform(0.8, 0.9, 30)), list(rng.uniform(0.8, 0.9, 30))

    def interval(seed: int) -> tuple[float | None, float | None]:
        result = compare_paired(a, b, 0.25, seed=seed)
        return result.bootstrap_ci_low, result.bootstrap_ci_high

    assert interval(11) == interval(11)
    assert interval(11) != interval(12)
    reference = stats.bootstrap(
        (np.subtract(a, b),), np.mean, method="percentile", rng=np.random.default_rng(11)
    ).confidence_interval
    assert interval(11) == (pytest.approx(reference.low), pytest.approx(reference.high))
    low, high = interval(11)
    assert low < statistics.mean(np.subtract(a, b)) < high


def test_direction_flips_the_signs_only() -> None:
    forward, backward = compare_paired(A, B, 0.25), compare_paired(B, A, 0.25)
    assert backward.t_corrected == pytest.approx(-forward.t_corrected)
    assert backward.d_z == pytest.approx(-forward.d_z)
    assert backward.p_corrected == pytest.approx(forward.p_corrected)
    assert backward.ci_low == pytest.approx(-forward.ci_high)
    assert backward.p_improvement == pytest.approx(1 - forward.p_improvement)


def no_nan(result: object) -> bool:
    return not any(
        isinstance(v, float) and math.isnan(v) for v in dataclasses.asdict(result).values()
    )


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ([0.9], [0.8], "needs >= 2 pairs, has 1"),
        ([], [], "needs >= 2 pairs, has 0"),
        (A, A, "identical in every pair"),
        (A, [a - 0.1 for a in A], "zero variance"),  # float noise: not exactly equal differences
        (A, B, "split sizes unknown"),
    ],
)
def test_degenerate_inputs_give_a_reason_never_nan(a: list, b: list, reason: str) -> None:
    result = compare_paired(a, b, None if reason.startswith("split") else 0.25)
    assert reason in result.note
    assert result.t_corrected is None and result.p_corrected is None
    assert no_nan(result)


def test_a_constant_difference_keeps_wilcoxon() -> None:
    shifted = [a - 0.1 for a in A]
    result = compare_paired(A, shifted, 0.25)
    assert result.wilcoxon_p == pytest.approx(stats.wilcoxon(A, shifted).pvalue)
    assert result.d_z is None and result.bootstrap_ci_low is None and result.p_improvement == 1


@pytest.mark.parametrize(
    ("a", "b", "ratio"),
    [
        ([0.1, 0.2], [0.1], 0.25),
        ([0.1, float("nan")], [0.1, 0.2], 0.25),
        ([[0.1]], [[0.2]], 0.25),
        ([0.1, 0.2], [0.2, 0.1], 0.0),
    ],
)
def test_bad_samples_raise(a: list, b: list, ratio: float) -> None:
    with pytest.raises(ValueError):
        compare_paired(a, b, ratio)


def test_friedman_matches_scipy_and_ranks_best_first() -> None:
    rng = np.random.default_rng(0)
    scores = {
        name: list(rng.uniform(size=8) + shift)
        for name, shift in zip("abcd", (0, 0.2, 0.4, 0.6), strict=True)
    }
    test = friedman_nemenyi(scores)
    expected = stats.friedmanchisquare(*scores.values())
    assert test.statistic == pytest.approx(expected.statistic)
    assert test.pvalue == pytest.approx(expected.pvalue)
    matrix = np.array(list(scores.values())).T
    ranks = stats.rankdata(-matrix, axis=1).mean(axis=0)
    assert list(test.mean_ranks.values()) == pytest.approx(list(ranks))
    assert sum(test.mean_ranks.values()) == pytest.approx(4 * 5 / 2)


def test_critical_difference_matches_demsars_table() -> None:
    # Demšar (2006), Table 5 (q_0.05) and its example: k = 4 classifiers, N = 14 data sets: CD 1.25.
    for k, q in ((2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850)):
        scale = math.sqrt(k * (k + 1) / (6 * 14))
        assert critical_difference(k, 14) / scale == pytest.approx(q, abs=1e-3)
    assert critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)


def test_nemenyi_separates_exactly_the_pairs_further_apart_than_the_cd() -> None:
    rng = np.random.default_rng(1)
    scores = {
        name: list(rng.normal(shift, 0.05, 12))
        for name, shift in zip("abcde", (0, 0.01, 0.05, 0.1, 0.12), strict=True)
    }
    test = friedman_nemenyi(scores)
    assert test.nemenyi is not None
    for a in test.labels:
        for b in test.labels:
            if a < b:
                apart = abs(test.mean_ranks[a] - test.mean_ranks[b]) > test.critical_difference
                assert (test.nemenyi.loc[a, b] < 0.05) == apart


@pytest.mark.parametrize(
    ("scores", "reason"),
    [
        ({"a": [1.0, 2.0], "b": [2.0, 1.0]}, "needs >= 3 labels"),
        ({"a": [1.0], "b": [2.0], "c": [3.0]}, "has 3 and 1"),
        ({"a": [1.0, 2.0], "b": [1.0, 2.0], "c": [1.0, 2.0]}, "every label ties"),
    ],
)
def test_rank_tests_that_cannot_run_say_why(scores: dict, reason: str) -> None:
    test = friedman_nemenyi(scores)
    assert test.statistic is None and reason in test.reason


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std(A) == (pytest.approx(statistics.mean(A)), pytest.approx(statistics.stdev(A)))
    assert mean_std([0.5]) == (0.5, None)
    assert mean_std([]) == (None, None)
