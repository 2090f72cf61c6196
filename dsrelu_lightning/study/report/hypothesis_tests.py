"""The hypothesis tests of the report: paired tests between two labels and rank tests across many.

k-fold training sets overlap, so the plain paired t-test over folds is anti-conservative.
:func:`compare_paired` leads with the corrected resampled t-test (Nadeau & Bengio 2003 for one
k-fold, Bouckaert & Frank 2004 for r repetitions of k-fold)::

    t = mean(d) / sqrt((1 / n + n_test / n_train) * s_d^2),   df = n - 1,

n = r * k paired cells, and keeps the plain paired t and Wilcoxon tests, which ignore the
overlap, beside it. :func:`holm` adjusts a family of p-values (Holm 1979).

:func:`friedman_nemenyi` ranks labels across blocks, the units every label was measured on (a
dataset's (seed, fold) cells, or the datasets themselves); rank 1 is the best (highest) score
in a block, ties share their mean rank (Demšar 2006). scipy.stats runs the Friedman test;
scikit-posthocs the Nemenyi test.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import optimize, stats

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PairedComparison",
    "RankTest",
    "compare_paired",
    "critical_difference",
    "friedman_nemenyi",
    "holm",
    "mean_std",
]

ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1); None where undefined (n < 1, n < 2)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return None, None
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None


@dataclass(frozen=True)
class PairedComparison:
    """``a`` against ``b`` over the same cells; every difference is ``a - b``.

    A statistic is None where it is undefined, and ``note`` then says why. ``ci_low/high``
    belong to the corrected test; ``wilcoxon_min_p`` is the smallest p the exact Wilcoxon
    test can reach with these pairs (the t tests can reach any p); ``detectable_diff`` is
    the smallest true difference the corrected test would detect with 80% power at
    alpha 0.05, given the observed spread.
    """

    n: int
    mean_diff: float | None
    test_train_ratio: float | None = None
    t_corrected: float | None = None
    p_corrected: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    t_plain: float | None = None
    p_plain: float | None = None
    wilcoxon_p: float | None = None
    wilcoxon_min_p: float | None = None
    bootstrap_ci_low: float | None = None
    bootstrap_ci_high: float | None = None
    d_z: float | None = None
    p_improvement: float | None = None
    detectable_diff: float | None = None
    note: str = ""


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (Holm 1979); None entries stay None, outside the family.

    Sorted ascending, p_(i) becomes max_{j <= i} min(1, (m - j + 1) * p_(j)) over the m
    p-values present, which controls the family-wise error rate under any dependence.
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[index] = running
    return adjusted


def _detectable_difference(se: float, df: int) -> float:
    """Smallest true mean difference with power POWER in a two-sided t-test of standard error se."""
    critical = stats.t.ppf(1 - ALPHA / 2, df)

    def power_gap(noncentrality: float) -> float:
        # P(T > c) + P(T < -c); the lower tail as sf at -noncentrality (its cdf gives NaN far out)
        upper = stats.nct.sf(critical, df, noncentrality)
        return float(upper + stats.nct.sf(critical, df, -noncentrality)) - POWER

    high = critical + 1.0
    while power_gap(high) < 0:  # power rises with the noncentrality: bracket the root
        high *= 2
    return float(optimize.brentq(power_gap, 0.0, high) * se)


def _bootstrap_ci(diff: np.ndarray, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of mean(diff), resampling the pairs; reproducible for a seed."""
    result = stats.bootstrap(
        (diff,),
        np.mean,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=1 - ALPHA,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare_paired(
    a: Sequence[float],
    b: Sequence[float],
    test_train_ratio: float | None,
    seed: int = BOOTSTRAP_SEED,
) -> PairedComparison:
    """Every paired statistic of ``a`` vs ``b`` (two-sided, alpha 0.05).

    Args:
        a, b: one score per cell (seed x fold), in the same order.
        test_train_ratio: n_test / n_train of the cells' splits (k-fold: 1 / (k - 1)); None
            leaves the corrected test out (with a note).
        seed: the bootstrap's random seed (the same seed gives the same interval).

    Degenerate inputs give None statistics and a stated reason instead of NaN: fewer than
    two pairs, identical values in every pair, or a constant difference (zero variance: the
    t tests, d_z and the bootstrap are undefined; Wilcoxon is not).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired samples must be finite numbers")
    if test_train_ratio is not None and not test_train_ratio > 0:
        raise ValueError(f"n_test / n_train must be positive, got {test_train_ratio}")
    n = int(x.size)
    diff = x - y
    if n < 2:
        mean = float(diff.mean()) if n else None
        return PairedComparison(n, mean, test_train_ratio, note=f"needs >= 2 pairs, has {n}")
    mean = float(diff.mean())
    improvement = float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / n)
    base = {"n": n, "mean_diff": mean, "test_train_ratio": test_train_ratio}
    if not diff.any():
        note = "identical in every pair: nothing to test"
        return PairedComparison(**base, p_improvement=improvement, note=note)
    nonzero = int(np.count_nonzero(diff))
    with warnings.catch_warnings():  # scipy warns when zeros or ties force its normal approximation
        warnings.simplefilter("ignore", UserWarning)
        wilcoxon_p = float(stats.wilcoxon(x, y).pvalue)
        min_p = float(stats.wilcoxon(np.arange(1.0, nonzero + 1)).pvalue) if nonzero else None
    wilcoxon = {"wilcoxon_p": wilcoxon_p, "wilcoxon_min_p": min_p, "p_improvement": improvement}
    notes = [f"Wilcoxon dropped {n - nonzero} pair(s) without a difference"] * (nonzero < n)
    sd = float(diff.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        notes.insert(0, "the same difference in every pair (zero variance): no t, CI or d_z")
        return PairedComparison(**base, **wilcoxon, note="; ".join(notes))
    plain = stats.ttest_rel(x, y)
    low, high = _bootstrap_ci(diff, seed)
    result = {
        **base,
        **wilcoxon,
        "t_plain": float(plain.statistic),
        "p_plain": float(plain.pvalue),
        "bootstrap_ci_low": low,
        "bootstrap_ci_high": high,
        "d_z": mean / sd,
    }
    if test_train_ratio is None:
        notes.insert(0, "split sizes unknown: no corrected test")
        return PairedComparison(**result, note="; ".join(notes))
    df = n - 1
    se = float(np.sqrt((1.0 / n + test_train_ratio) * sd**2))
    t = mean / se
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return PairedComparison(
        **result,
        t_corrected=t,
        p_corrected=float(2 * stats.t.sf(abs(t), df)),
        ci_low=mean - half,
        ci_high=mean + half,
        detectable_diff=_detectable_difference(se, df),
        note="; ".join(notes),
    )


@dataclass(frozen=True)
class RankTest:
    """Friedman and Nemenyi over ``blocks`` blocks; ``reason`` says why a test is missing."""

    labels: tuple[str, ...]
    blocks: int
    mean_ranks: dict[str, float] = field(default_factory=dict)
    statistic: float | None = None
    pvalue: float | None = None
    critical_difference: float | None = None
    nemenyi: pd.DataFrame | None = None
    reason: str = ""


def critical_difference(num_labels: int, num_blocks: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks: q_alpha * sqrt(k (k + 1) / (6 N)) (Demšar 2006).

    q_alpha is the studentized range quantile for k groups and infinite df over sqrt(2).
    """
    q = stats.studentized_range.ppf(1 - alpha, num_labels, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(num_labels * (num_labels + 1) / (6 * num_blocks)))


def friedman_nemenyi(scores: Mapping[str, Sequence[float]]) -> RankTest:
    """The Friedman test of ``scores`` (label -> one score per block, blocks aligned), then Nemenyi.

    Fewer than 3 labels or 2 blocks, or every block tied, give a stated reason and no test.
    """
    labels = tuple(scores)
    lengths = {len(values) for values in scores.values()}
    if len(lengths) > 1:
        raise ValueError(f"every label needs one score per block, got lengths {sorted(lengths)}")
    blocks = lengths.pop() if lengths else 0
    if len(labels) < 3 or blocks < 2:
        reason = f"needs >= 3 labels and >= 2 complete blocks, has {len(labels)} and {blocks}"
        return RankTest(labels, blocks, reason=reason)
    matrix = np.array([scores[label] for label in labels], dtype=float).T  # blocks x labels
    ranks = stats.rankdata(-matrix, axis=1)
    mean_ranks = dict(zip(labels, map(float, ranks.mean(axis=0)), strict=True))
    if (matrix == matrix[:, :1]).all():
        return RankTest(labels, blocks, mean_ranks, reason="every label ties in every block")
    friedman = stats.friedmanchisquare(*matrix.T)
    import pandas as pd
    import scikit_posthocs  # imported here: it loads seaborn and statsmodels

    nemenyi = scikit_posthocs.posthoc_nemenyi_friedman(pd.DataFrame(matrix, columns=labels))
    return RankTest(
        labels,
        blocks,
        mean_ranks,
        float(friedman.statistic),
        float(friedman.pvalue),
        critical_difference(len(labels), blocks),
        nemenyi,
    )
