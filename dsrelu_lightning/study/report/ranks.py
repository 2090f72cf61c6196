"""Ranks across labels: the Friedman test, Nemenyi's post-hoc test and its critical difference.

Blocks are the units every label was measured on (a dataset's (seed, fold) cells, or the
datasets themselves); rank 1 is the best (highest) score in a block, ties share their mean
rank (Demšar 2006). scipy.stats runs the Friedman test; scikit-posthocs the Nemenyi test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RankTest", "critical_difference", "friedman_nemenyi"]

ALPHA = 0.05


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
