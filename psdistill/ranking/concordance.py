"""Kendall's coefficient of concordance W among raters, with the correction for tied ranks.

    W = 12 S / (m^2 (n^3 - n) - m T)

for m raters ranking n items: S is the sum of squared deviations of the items' rank sums from
their mean m (n + 1) / 2, and T = sum over raters and their groups of t tied items of t^3 - t
(Kendall & Babington Smith, 1939; Kendall, *Rank Correlation Methods*, ch. 6). W is 1 when every
rater orders the items alike and 0 when their rank sums are all equal. Friedman's statistic is
chi2 = m (n - 1) W, chi-square with n - 1 degrees of freedom under no agreement.

W needs every rater's rank of every item. Scores are an (n_raters, n_items) array with NaN where a
rater did not score an item: raters who scored nothing are left out, then so is every item that
some remaining rater did not score (`n_dropped_items` says how many). Where that leaves few items,
`w_pairwise` uses them all: Kendall's identity mean(rho_s) = (m W - 1) / (m - 1) between W and the
mean Spearman correlation of the m (m - 1) / 2 pairs of raters, with each pair's rho_s on the items
both scored (at least 3, not all tied). It equals W on complete data without ties and is close with
ties (each rater's ties then weigh differently).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import chi2 as chi2_distribution
from scipy.stats import rankdata, spearmanr

from psdistill.core.errors import DataError

__all__ = ["Concordance", "kendall_w"]


@dataclass(frozen=True)
class Concordance:
    """``w`` (NaN when undefined: fewer than 2 raters or items, or every rater ties every item),
    Friedman's ``chi2`` and its ``p_value``, and the raters and items it is computed on;
    ``w_pairwise`` from the ``n_rater_pairs`` pairs of raters whose correlation is defined."""

    w: float
    chi2: float
    p_value: float
    n_raters: int
    n_items: int
    n_dropped_items: int
    w_pairwise: float
    n_rater_pairs: int

    def to_dict(self) -> dict:
        return dict(vars(self))


def kendall_w(scores) -> Concordance:
    """Kendall's W of the raters' scores (higher = better or lower = better alike: only ranks count).

    Raises
    ------
    DataError
        If ``scores`` is not 2-D or holds an infinite value.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise DataError(f"scores: need shape (n_raters, n_items), got {s.shape}")
    if np.isinf(s).any():
        raise DataError("scores: infinite values; use NaN for an item a rater did not score")
    s = s[~np.isnan(s).all(axis=1)]
    w_pairwise, n_pairs = _pairwise_w(s)
    complete = ~np.isnan(s).any(axis=0)
    s = s[:, complete]
    m, n = s.shape
    dropped = int((~complete).sum())
    ranks = rankdata(s, axis=1) if m and n else s
    ties = sum(float(np.sum(t ** 3 - t)) for t in (np.unique(row, return_counts=True)[1] for row in ranks))
    denominator = m ** 2 * (n ** 3 - n) - m * ties
    if m < 2 or n < 2 or denominator <= 0:
        return Concordance(float("nan"), float("nan"), float("nan"), m, n, dropped, w_pairwise, n_pairs)
    rank_sums = ranks.sum(axis=0)
    w = 12 * float(np.sum((rank_sums - m * (n + 1) / 2) ** 2)) / denominator
    chi2 = m * (n - 1) * w
    return Concordance(w, chi2, float(chi2_distribution.sf(chi2, n - 1)), m, n, dropped, w_pairwise, n_pairs)


def _pairwise_w(s: np.ndarray) -> tuple[float, int]:
    """((m - 1) mean rho_s + 1) / m over the pairs of raters with a defined rho_s; m: the raters."""
    rhos = []
    for i, j in combinations(range(len(s)), 2):
        both = ~np.isnan(s[i]) & ~np.isnan(s[j])
        if both.sum() >= 3 and np.ptp(s[i][both]) > 0 and np.ptp(s[j][both]) > 0:
            rhos.append(spearmanr(s[i][both], s[j][both])[0])
    m = len(s)
    return (((m - 1) * float(np.mean(rhos)) + 1) / m if rhos else float("nan")), len(rhos)
