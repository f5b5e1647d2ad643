"""Rating-anchored fusion of preferences and ratings (PPaint's fused expert ground truth).

Preferences order the items more consistently; ratings fix the absolute scale (docs/method.md
section 2). Two independent constructions put latent preference scores on the rating scale, and
`fusion_agreement` measures how far they agree:

- `fuse_anchored`: Bradley-Terry scores from the comparisons alone, then the least-squares line
  of mean rating on score (or a mean/sd match) over the rated items. Two stages: the ratings
  never move the order.
- `fuse_unified`: one joint likelihood, in the spirit of pwcmp's unified scaling (Perez-Ortiz et
  al., "From pairwise comparisons and rating to a unified quality scale", IEEE TIP 2019): Thurstone
  Case V for the comparisons and every individual rating r_ui ~ N(a q_i + b, sigma^2), all of
  q, a, b, sigma fitted together, so ratings and comparisons both inform each score.

Ratings are an (n_annotators, n_items) array with NaN where an annotator did not rate an item
(a 1-D array is one row). `annotator_quality` scores each annotator against the consensus.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.stats import pearsonr, spearmanr

from psdistill.core.errors import DataError
from psdistill.ranking.pairwise import _incidence, _lbfgs, _probit, fit_bradley_terry, fit_thurstone
from psdistill.ranking.utils import check_comparisons, check_connected

__all__ = ["FusedScores", "Agreement", "AnnotatorQuality", "mean_ratings", "anchor_to_ratings", "fuse_anchored",
           "fuse_unified", "fusion_agreement", "annotator_quality"]


@dataclass(frozen=True)
class FusedScores:
    """``scores`` on the rating scale = ``slope * latent + intercept``; ``rating_sd``: sd of
    individual ratings about the line (`fuse_unified` only)."""

    scores: np.ndarray
    latent: np.ndarray
    slope: float
    intercept: float
    method: str
    rating_sd: Optional[float] = None


@dataclass(frozen=True)
class Agreement:
    """Agreement of two score vectors: Spearman (SRCC) and Pearson (PLCC) correlation, mean and
    largest absolute difference (in the scores' units)."""

    srcc: float
    plcc: float
    mad: float
    max_abs_diff: float


def _ratings_matrix(ratings, n_items: int) -> np.ndarray:
    r = np.atleast_2d(np.asarray(ratings, dtype=float))
    if r.ndim != 2 or r.shape[1] != n_items:
        raise DataError(f"ratings: need shape (n_items,) or (n_annotators, n_items) with n_items={n_items}, "
                        f"got {np.shape(ratings)}")
    if np.isinf(r).any():
        raise DataError("ratings: infinite values; use NaN for a missing rating")
    return r


def mean_ratings(ratings, n_items: int):
    """(mean rating per item, number of ratings per item); the mean is NaN for unrated items."""
    r = _ratings_matrix(ratings, n_items)
    count = np.sum(~np.isnan(r), axis=0)
    total = np.nansum(r, axis=0)
    return np.divide(total, count, out=np.full(n_items, np.nan), where=count > 0), count


def anchor_to_ratings(latent, ratings, method: str = "least_squares"):
    """Affine map of latent scores onto the rating scale, fitted on the rated items.

    ``method="least_squares"``: the line of mean rating on score, weighted by each item's number
    of ratings. ``"moments"``: match the rated items' mean and standard deviation.

    Returns
    -------
    scores, slope, intercept

    Raises
    ------
    DataError
        With fewer than two rated items of different scores, or when ratings fall as scores rise.
    """
    latent = np.asarray(latent, dtype=float)
    mean, count = mean_ratings(ratings, len(latent))
    rated = count > 0
    if rated.sum() < 2 or np.ptp(latent[rated]) == 0:
        raise DataError(f"ratings: need at least two rated items with different scores, got {int(rated.sum())}")
    x, yv, w = latent[rated], mean[rated], count[rated].astype(float)
    if method == "least_squares":
        xm, ym = np.average(x, weights=w), np.average(yv, weights=w)
        slope = np.sum(w * (x - xm) * (yv - ym)) / np.sum(w * (x - xm) ** 2)
        intercept = ym - slope * xm
        if slope <= 0:
            raise DataError(f"ratings: they decrease as the preference scores increase (slope {slope:.3g}); "
                            "check that a higher rating means better")
    elif method == "moments":
        slope = np.std(yv) / np.std(x)
        intercept = yv.mean() - slope * x.mean()
    else:
        raise DataError(f"method: use 'least_squares' or 'moments', got {method!r}")
    return slope * latent + intercept, float(slope), float(intercept)


def fuse_anchored(n_items, pairs, outcomes=None, ratings=None, *, weights=None, alpha: float = 0.0,
                  method: str = "least_squares") -> FusedScores:
    """Bradley-Terry scores from the comparisons, anchored to the rating scale by `anchor_to_ratings`.

    Raises `DataError` as `fit_bradley_terry` and `anchor_to_ratings` do.
    """
    fit = fit_bradley_terry(n_items, pairs, outcomes, weights=weights, alpha=alpha, se=False)
    scores, slope, intercept = anchor_to_ratings(fit.params, ratings, method)
    return FusedScores(scores, fit.params, slope, intercept, f"bradley-terry+{method}")


def fuse_unified(n_items, pairs, outcomes=None, ratings=None, *, weights=None, alpha: float = 0.0,
                 max_iter: int = 5000, tol: float = 1e-6) -> FusedScores:
    """Joint maximum likelihood of comparisons (Thurstone Case V) and ratings on one scale.

    Maximises

        sum_r w_r [y_r log Phi(q_a - q_b) + (1 - y_r) log Phi(q_b - q_a)]
        + sum_(u,i rated) log N(r_ui; a q_i + b, sigma^2) - alpha/2 |q|^2

    over q, a, b and log sigma, by L-BFGS-B from the Thurstone fit and its least-squares anchor.
    The comparisons fix the unit of q (the Case V noise) and the ratings its mapping to the scale;
    q is returned with mean zero (b absorbs the shift).

    Raises
    ------
    DataError
        As `fit_thurstone` (malformed or disconnected comparisons), for malformed ratings, or
        when ratings fall as scores rise (a <= 0).
    ConvergenceError
        If L-BFGS-B stops before meeting ``tol``.
    """
    a_idx, b_idx, y, w = check_comparisons(n_items, pairs, outcomes, weights)
    check_connected(n_items, a_idx, b_idx, y, w)
    r = _ratings_matrix(ratings, n_items)
    rater, item = np.nonzero(~np.isnan(r))
    value = r[rater, item]
    if len(np.unique(item)) < 2:
        raise DataError("ratings: need ratings of at least two items")
    # a regularised start: only a starting point, and finite even where an item never loses
    start = fit_thurstone(n_items, np.column_stack([a_idx, b_idx]), y, weights=weights, alpha=max(alpha, 0.1),
                          se=False).params
    _, slope0, intercept0 = anchor_to_ratings(start, r)
    sd0 = max(np.std(value - (slope0 * start[item] + intercept0)), 1e-3 * max(np.ptp(value), 1.0))
    incidence, incidence_t = _incidence(a_idx, b_idx, n_items)
    n_rated = np.bincount(item, minlength=n_items)

    def objective(x):
        q, slope, intercept, log_sd = x[:n_items], x[-3], x[-2], x[-1]
        loss, g = _probit(incidence @ q, y, w)
        grad = np.zeros_like(x)
        grad[:n_items] = incidence_t @ g
        resid = value - (slope * q[item] + intercept)
        prec = np.exp(-2 * log_sd)
        loss += 0.5 * prec * np.sum(resid ** 2) + len(value) * log_sd + 0.5 * alpha * np.sum(q ** 2)
        grad[:n_items] += -prec * slope * np.bincount(item, resid, n_items) + alpha * q
        grad[-3] = -prec * np.sum(resid * q[item])
        grad[-2] = -prec * np.sum(resid)
        grad[-1] = len(value) - prec * np.sum(resid ** 2)
        return loss, grad

    scale = np.concatenate([1.0 + np.bincount(a_idx, w, n_items) + np.bincount(b_idx, w, n_items) + n_rated,
                            np.full(3, 1.0 + len(value))])
    x, _ = _lbfgs(objective, np.concatenate([start, [slope0, intercept0, np.log(sd0)]]), scale, max_iter, tol)
    q, slope, intercept = x[:n_items], float(x[-3]), float(x[-2])
    if slope <= 0:
        raise DataError(f"ratings: they decrease as the preference scores increase (slope {slope:.3g}); "
                        "check that a higher rating means better")
    intercept += slope * q.mean()
    q = q - q.mean()
    return FusedScores(slope * q + intercept, q, slope, intercept, "unified-thurstone", float(np.exp(x[-1])))


def fusion_agreement(x, y) -> Agreement:
    """SRCC, PLCC, mean and largest absolute difference between two score vectors of one scale."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise DataError(f"need two 1-D score vectors of the same length >= 3, got shapes {x.shape} and {y.shape}")
    diff = np.abs(x - y)
    return Agreement(float(spearmanr(x, y)[0]), float(pearsonr(x, y)[0]), float(diff.mean()), float(diff.max()))


@dataclass(frozen=True)
class AnnotatorQuality:
    """Per annotator (arrays of length n_annotators; NaN where undefined).

    ``consensus_agreement``: mean share of each judgment that agrees with the consensus order
    (a soft outcome y for ``a`` counts y if the consensus ranks ``a`` higher, else 1 - y).
    ``circular_triads`` / ``complete_triads``: 3-cycles a > b > c > a among the annotator's
    majority preferences, out of the triads whose three pairs they all decided
    (Kendall & Babington Smith, 1940); ``intransitivity`` is their ratio.
    ``rating_consistency``: the same agreement share measured against the annotator's own
    ratings, over their comparisons of two items they rated differently (``n_rating_pairs``).
    """

    n_comparisons: np.ndarray
    consensus_agreement: np.ndarray
    circular_triads: np.ndarray
    complete_triads: np.ndarray
    intransitivity: np.ndarray
    rating_consistency: np.ndarray
    n_rating_pairs: np.ndarray


def annotator_quality(n_items, pairs, outcomes, annotators, consensus, ratings=None) -> AnnotatorQuality:
    """Agreement with the consensus, intransitive triads and rating-preference consistency.

    Parameters
    ----------
    n_items : int
    pairs, outcomes : array_like
        Comparisons as in `fit_bradley_terry`.
    annotators : array_like of int, shape (m,)
        Annotator 0..n_annotators-1 of each comparison.
    consensus : array_like, shape (n_items,)
        Consensus scores (e.g. `fuse_anchored(...).scores`).
    ratings : array_like, shape (n_annotators, n_items), optional
        Each annotator's ratings, NaN where not rated; row u belongs to annotator u.

    Returns
    -------
    AnnotatorQuality
    """
    a, b, y, _ = check_comparisons(n_items, pairs, outcomes)
    who = np.asarray(annotators)
    if who.shape != a.shape or not np.issubdtype(who.dtype, np.integer) or (who < 0).any():
        raise DataError(f"annotators: need one non-negative integer per comparison, shape {a.shape}")
    consensus = np.asarray(consensus, dtype=float)
    if consensus.shape != (n_items,) or not np.all(np.isfinite(consensus)):
        raise DataError(f"consensus: need one finite score per item, shape ({n_items},)")
    r = None if ratings is None else _ratings_matrix(ratings, n_items)
    n_ann = int(who.max()) + 1 if r is None else max(int(who.max()) + 1, r.shape[0])
    if r is not None and r.shape[0] < n_ann:
        raise DataError(f"ratings: {r.shape[0]} rows for {n_ann} annotators")
    out = {name: np.full(n_ann, np.nan) for name in
           ("n_comparisons", "consensus_agreement", "circular_triads", "complete_triads", "intransitivity",
            "rating_consistency", "n_rating_pairs")}
    for u in range(n_ann):
        mine = who == u
        out["n_comparisons"][u] = mine.sum()
        if not mine.any():
            continue
        ua, ub, uy = a[mine], b[mine], y[mine]
        out["consensus_agreement"][u] = _agreement(ua, ub, uy, consensus)
        cyc, tri = _triads(ua, ub, uy)
        out["circular_triads"][u], out["complete_triads"][u] = cyc, tri
        out["intransitivity"][u] = cyc / tri if tri else np.nan
        if r is not None:
            own = r[u]
            both = ~np.isnan(own[ua]) & ~np.isnan(own[ub]) & (own[ua] != own[ub])
            out["n_rating_pairs"][u] = both.sum()
            if both.any():
                out["rating_consistency"][u] = _agreement(ua[both], ub[both], uy[both], own)
    return AnnotatorQuality(**out)


def _agreement(a, b, y, score) -> float:
    """Mean share of each soft judgment that agrees with the order of ``score`` (its ties skipped)."""
    differ = score[a] != score[b]
    if not differ.any():
        return np.nan
    return float(np.mean(np.where(score[a][differ] > score[b][differ], y[differ], 1 - y[differ])))


def _triads(a, b, y):
    """(circular, complete) triads of the majority tournament of one annotator's judgments.

    With D[i, j] = 1 when i is preferred over j on average, trace(D^3) counts each 3-cycle three
    times; with the undirected decided-pair graph A = D + D^T, trace(A^3) counts each fully
    decided triad six times. Ties (mean preference exactly 0.5) leave the pair undecided.
    """
    items, idx = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = idx[: len(a)], idx[len(a):]
    n = len(items)
    wins = np.zeros((n, n))
    count = np.zeros((n, n))
    np.add.at(wins, (ia, ib), y)
    np.add.at(wins, (ib, ia), 1 - y)
    np.add.at(count, (ia, ib), 1)
    np.add.at(count, (ib, ia), 1)
    pref = np.divide(wins, count, out=np.full((n, n), 0.5), where=count > 0)
    d = (pref > 0.5).astype(float)
    adj = d + d.T
    return int(round(np.trace(d @ d @ d) / 3)), int(round(np.trace(adj @ adj @ adj) / 6))
