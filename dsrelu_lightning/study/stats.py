"""Summary statistics and paired significance tests over cross-validation folds."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedTests", "mean_std", "paired_tests"]


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1); None where undefined (n < 1, n < 2)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return None, None
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None


@dataclass(frozen=True)
class PairedTests:
    """Paired comparison of ``a`` against ``b`` over the same folds.

    ``mean_difference`` is mean(a - b); ``cohens_d`` is the paired effect size
    d_z = mean(a - b) / sd(a - b). A statistic is None where it is undefined, and
    ``note`` then says why.
    """

    n: int
    mean_difference: float | None
    t_statistic: float | None = None
    t_pvalue: float | None = None
    wilcoxon_statistic: float | None = None
    wilcoxon_pvalue: float | None = None
    cohens_d: float | None = None
    note: str = ""


def paired_tests(a: Sequence[float], b: Sequence[float]) -> PairedTests:
    """Two-sided paired t-test and Wilcoxon signed-rank test of ``a`` vs ``b``, with Cohen's d.

    Degenerate inputs give None statistics and a stated reason instead of NaN:
    fewer than two pairs, identical values on every fold, or differences that are
    all equal (zero variance: the t statistic and d are undefined, Wilcoxon is not).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired samples must be finite numbers")
    n = int(x.size)
    if n < 2:
        return PairedTests(
            n, float((x - y).mean()) if n else None, note=f"needs >= 2 folds, has {n}"
        )
    diff = x - y
    mean = float(diff.mean())
    if not diff.any():
        return PairedTests(n, mean, note="identical on every fold: nothing to test")
    with warnings.catch_warnings():  # scipy warns when zeros force its normal approximation
        warnings.simplefilter("ignore", UserWarning)
        wilcoxon = stats.wilcoxon(x, y)
    w_stat, w_p = float(wilcoxon.statistic), float(wilcoxon.pvalue)
    sd = float(diff.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):
        note = "the difference is the same on every fold (zero variance): no t-test or d"
        return PairedTests(n, mean, None, None, w_stat, w_p, None, note)
    t = stats.ttest_rel(x, y)
    zeros = int((diff == 0).sum())
    note = f"Wilcoxon dropped {zeros} fold(s) without a difference" if zeros else ""
    return PairedTests(n, mean, float(t.statistic), float(t.pvalue), w_stat, w_p, mean / sd, note)
