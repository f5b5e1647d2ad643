"""Agreement between predicted and ground-truth scores: numpy arrays in, floats out.

Item metrics (`pred`, `gt`: one value per image, ground truth higher = better)
    srcc, krcc (Kendall tau-b), plcc          scipy.stats
    plcc / rmse / mae with fit="logistic"       after the 4-parameter logistic map customary in IQA
                                                (VQEG), `logistic4`, fitted with scipy.optimize.curve_fit;
                                                the map may be decreasing, so the fitted PLCC says how
                                                well predictions predict, not in which direction
    binary_accuracy (acc@5)                     APDDv2's convention (its eval.py): an image is "good"
                                                when its score is > threshold (5 on the 0-10 scale, so
                                                50 for APDDv2's 0-100 total); the share of images whose
                                                predicted and true labels agree. Predictions must be on
                                                the ground truth's scale.

Series metrics (FGAesQ paper, Sec. 5.1; `groups` names each image's series, `gt` orders images
inside a series: pass -rank for ranks with 0 = best)
    pair_accuracy   over every within-series pair whose ground truth differs, the share predicted in
                    the right order.
    pair_f1         our reading of the paper's F1: macro F1 over the two classes "first better" and
                    "second better", a pair's first image being the one earlier in the arrays. The
                    paper's Acc and F1 nearly coincide, as they do here when the two classes are
                    about balanced; with arrays sorted by ground truth inside each series every pair
                    is "first better" and F1 degenerates, so keep the data set's own order.
    series_accuracy (s-Acc)  share of series whose highest prediction is a best image, each series
                             weighted by its length ("length-weighted", our reading).
    series_srcc (s-SRCC)     per-series SRCC, weighted by series length.
    series_metrics           all four from one pass over the series, with bootstrap samples.
    A predicted tie counts half for each order (the expectation under a random tie-break): half a
    correct pair, and for s-Acc the share of tied top images that are best. A series with constant
    predictions has SRCC 0 (it ranks nothing). Series with fewer than two images or constant ground
    truth carry no ranking information and are left out.

Conventions
    NaN or infinite values: nan_policy="raise" (default: ValueError saying how many and where),
    "omit" (drop the items where either array has one) or "propagate" (return NaN).
    Undefined values: fewer than 2 items (4 for a logistic fit), or constant predictions or ground
    truth for the correlation and ranking metrics, return NaN with an `UndefinedMetricWarning`, never
    an exception. RMSE, MAE and acc@5 stay defined for constant predictions.

Confidence intervals of any of these: `psdistill.evaluation.bootstrap`.
"""
from __future__ import annotations

import warnings
from typing import Callable, Literal

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "UndefinedMetricWarning",
    "srcc",
    "krcc",
    "plcc",
    "rmse",
    "mae",
    "binary_accuracy",
    "logistic4",
    "fit_logistic4",
    "pair_accuracy",
    "pair_f1",
    "series_accuracy",
    "series_srcc",
    "series_metrics",
    "clean_inputs",
]

NanPolicy = Literal["raise", "omit", "propagate"]
Fit = Literal["none", "logistic"]


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined for this input (constant or too few values) and was returned as NaN."""


def _undefined(name: str, why: str, stacklevel: int = 4) -> float:
    # stacklevel 4: the caller of the public metric, through the metric and one helper
    warnings.warn(f"{name}: {why}; returning NaN", UndefinedMetricWarning, stacklevel=stacklevel)
    return float("nan")


def clean_inputs(pred, gt, nan_policy: NanPolicy, groups=None):
    """Float arrays of equal length without non-finite items; None when NaN must propagate."""
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 1 or p.shape != g.shape:
        raise ValueError(f"pred and gt must be 1-D of equal length, got shapes {p.shape} and {g.shape}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != p.shape:
            raise ValueError(f"groups must have one label per item: shape {groups.shape}, pred {p.shape}")
    bad = ~(np.isfinite(p) & np.isfinite(g))
    if bad.any():
        if nan_policy == "raise":
            raise ValueError(f"{int(bad.sum())} of {len(p)} items have NaN or infinite values (first at "
                             f"index {int(np.flatnonzero(bad)[0])}); pass nan_policy='omit' to drop them")
        if nan_policy == "propagate":
            return None
        if nan_policy != "omit":
            raise ValueError(f"nan_policy must be 'raise', 'omit' or 'propagate', got {nan_policy!r}")
        p, g = p[~bad], g[~bad]
        groups = None if groups is None else groups[~bad]
    return p, g, groups


def _correlation(name: str, pred, gt, nan_policy: NanPolicy):
    """Cleaned arrays, or a float (NaN) when the correlation is undefined."""
    clean = clean_inputs(pred, gt, nan_policy)
    if clean is None:
        return float("nan")
    p, g, _ = clean
    if len(p) < 2:
        return _undefined(name, f"needs at least 2 items, got {len(p)}")
    if np.ptp(p) == 0:
        return _undefined(name, "all predictions are equal")
    if np.ptp(g) == 0:
        return _undefined(name, "all ground-truth values are equal")
    return p, g


# ---- item metrics --------------------------------------------------------------------------------

def srcc(pred, gt, nan_policy: NanPolicy = "raise") -> float:
    """Spearman rank correlation (ties get average ranks)."""
    c = _correlation("srcc", pred, gt, nan_policy)
    return c if isinstance(c, float) else float(stats.spearmanr(*c).statistic)


def krcc(pred, gt, nan_policy: NanPolicy = "raise") -> float:
    """Kendall's tau-b."""
    c = _correlation("krcc", pred, gt, nan_policy)
    return c if isinstance(c, float) else float(stats.kendalltau(*c).statistic)


def plcc(pred, gt, fit: Fit = "none", nan_policy: NanPolicy = "raise") -> float:
    """Pearson correlation, of the raw predictions or of their logistic map onto the ground truth."""
    c = _correlation("plcc", pred, gt, nan_policy)
    if isinstance(c, float):
        return c
    p, g = c
    if fit == "logistic":
        if len(p) < 4:
            return _undefined("plcc", f"a 4-parameter fit needs at least 4 items, got {len(p)}", 3)
        p = fit_logistic4(p, g)(p)
        if np.ptp(p) == 0:
            return _undefined("plcc", "the logistic map is flat", 3)
    elif fit != "none":
        raise ValueError(f"fit must be 'none' or 'logistic', got {fit!r}")
    return float(stats.pearsonr(p, g).statistic)


def _errors(name: str, pred, gt, fit: Fit, nan_policy: NanPolicy):
    clean = clean_inputs(pred, gt, nan_policy)
    if clean is None:
        return None
    p, g, _ = clean
    if len(p) == 0:
        _undefined(name, "no items")
        return None
    if fit == "logistic":
        if len(p) < 4 or np.ptp(p) == 0 or np.ptp(g) == 0:
            _undefined(name, "a logistic fit needs at least 4 items and non-constant values")
            return None
        p = fit_logistic4(p, g)(p)
    elif fit != "none":
        raise ValueError(f"fit must be 'none' or 'logistic', got {fit!r}")
    return p - g


def rmse(pred, gt, fit: Fit = "none", nan_policy: NanPolicy = "raise") -> float:
    """Root mean squared error, on the ground truth's scale (fit="logistic" maps predictions onto it)."""
    d = _errors("rmse", pred, gt, fit, nan_policy)
    return float("nan") if d is None else float(np.sqrt(np.mean(d ** 2)))


def mae(pred, gt, fit: Fit = "none", nan_policy: NanPolicy = "raise") -> float:
    """Mean absolute error, on the ground truth's scale."""
    d = _errors("mae", pred, gt, fit, nan_policy)
    return float("nan") if d is None else float(np.mean(np.abs(d)))


def binary_accuracy(pred, gt, threshold: float = 5.0, nan_policy: NanPolicy = "raise") -> float:
    """acc@threshold: share of items on the same side of `threshold` (APDDv2: "good" = score > 5)."""
    clean = clean_inputs(pred, gt, nan_policy)
    if clean is None:
        return float("nan")
    p, g, _ = clean
    if len(p) == 0:
        return _undefined("binary_accuracy", "no items", 3)
    return float(np.mean((p > threshold) == (g > threshold)))


def logistic4(x, b1: float, b2: float, b3: float, b4: float):
    """VQEG's monotonic logistic: b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return b2 + (b1 - b2) * special.expit((np.asarray(x) - b3) / np.abs(b4))


def fit_logistic4(pred, gt) -> Callable[[np.ndarray], np.ndarray]:
    """The least-squares logistic4 map from predictions onto ground truth, as a function.

    The fit runs on standardized predictions, so one initial guess works for any score scale:
    asymptotes at the ground truth's extremes (swapped for a negative correlation), centre 0,
    slope 1. If curve_fit fails, warns and falls back to the least-squares line (PLCC unchanged).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if np.ptp(p) == 0 or np.ptp(g) == 0:
        raise ValueError("fit_logistic4: predictions and ground truth must not be constant")
    mu, sd = p.mean(), p.std()
    z = (p - mu) / sd
    lo, hi = g.min(), g.max()
    if np.corrcoef(z, g)[0, 1] < 0:
        lo, hi = hi, lo
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic4, z, g, p0=[hi, lo, 0.0, 1.0], maxfev=10000)
        if not np.all(np.isfinite(params)):
            raise RuntimeError(f"non-finite parameters {params}")
    except RuntimeError as e:
        warnings.warn(f"fit_logistic4: curve_fit failed ({e}); using a linear map", UndefinedMetricWarning,
                      stacklevel=2)
        slope, intercept = np.polyfit(z, g, 1)
        return lambda x: intercept + slope * (np.asarray(x, dtype=np.float64) - mu) / sd
    return lambda x: logistic4((np.asarray(x, dtype=np.float64) - mu) / sd, *params)


# ---- series metrics ------------------------------------------------------------------------------
# Each series metric is a weighted sum of per-series statistics, so resampling series for the
# bootstrap is a matrix product with the number of times each series was drawn.

class _SeriesTable:
    """Per-series statistics of the series that carry ranking information."""

    def __init__(self, p: np.ndarray, g: np.ndarray, groups: np.ndarray):
        _, inverse = np.unique(groups.astype(str), return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # stable: keeps the arrays' order inside a series
        splits = np.flatnonzero(np.diff(inverse[order])) + 1
        size, top1, rho, confusion = [], [], [], []
        for idx in np.split(order, splits):
            ps, gs = p[idx], g[idx]
            if len(idx) < 2 or np.ptp(gs) == 0:
                continue
            size.append(len(idx))
            best, top = gs == gs.max(), ps == ps.max()
            top1.append((best & top).sum() / top.sum())
            # Pearson r of average ranks is scipy.stats.spearmanr's rho, at a fraction of its overhead
            rho.append(0.0 if np.ptp(ps) == 0 else np.corrcoef(stats.rankdata(ps), stats.rankdata(gs))[0, 1])
            i, j = np.triu_indices(len(idx), 1)  # i earlier in the arrays: the pair's "first" image
            true_first = gs[i] > gs[j]
            decided = gs[i] != gs[j]
            pred_first = np.where(ps[i] > ps[j], 1.0, np.where(ps[i] == ps[j], 0.5, 0.0))
            t, f = true_first[decided], pred_first[decided]
            # confusion counts (true first, predicted first), (first, second), (second, first), (second, second)
            confusion.append([np.sum(f[t]), np.sum(1 - f[t]), np.sum(f[~t]), np.sum(1 - f[~t])])
        self.size = np.asarray(size, dtype=np.float64)
        self.top1 = np.asarray(top1, dtype=np.float64)
        self.rho = np.asarray(rho, dtype=np.float64)
        self.confusion = np.asarray(confusion, dtype=np.float64).reshape(-1, 4)

    def __len__(self):
        return len(self.size)


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _pair_accuracy_from(t: _SeriesTable, w: np.ndarray) -> np.ndarray:
    c = w @ t.confusion
    return _ratio(c[..., 0] + c[..., 3], c.sum(axis=-1))


def _pair_f1_from(t: _SeriesTable, w: np.ndarray) -> np.ndarray:
    c = w @ t.confusion
    ff, fs, sf, ss = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    # F1 = 2TP / (2TP + FP + FN); a class absent from truth and predictions is left out (as sklearn)
    f1_first, f1_second = _ratio(2 * ff, 2 * ff + sf + fs), _ratio(2 * ss, 2 * ss + fs + sf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # both NaN: no pairs at all
        return np.nanmean(np.stack([f1_first, f1_second]), axis=0)


def _series_accuracy_from(t: _SeriesTable, w: np.ndarray) -> np.ndarray:
    return _ratio(w @ (t.size * t.top1), w @ t.size)


def _series_srcc_from(t: _SeriesTable, w: np.ndarray) -> np.ndarray:
    return _ratio(w @ (t.size * t.rho), w @ t.size)


def _series_table(name: str, pred, gt, groups, nan_policy: NanPolicy):
    """The table, or a float (NaN) when the metric is undefined."""
    if groups is None:
        raise ValueError(f"{name}: needs `groups`, the series of each item")
    clean = clean_inputs(pred, gt, nan_policy, groups)
    if clean is None:
        return float("nan")
    p, g, groups = clean
    if len(p) >= 2 and np.ptp(p) == 0:
        return _undefined(name, "all predictions are equal")
    table = _SeriesTable(p, g, groups)
    if not len(table):
        return _undefined(name, "no series with at least 2 items and differing ground truth")
    return table


def _series_metric(name: str, aggregate):
    def metric(pred, gt, groups, nan_policy: NanPolicy = "raise") -> float:
        t = _series_table(name, pred, gt, groups, nan_policy)
        return t if isinstance(t, float) else float(aggregate(t, np.ones(len(t))))
    metric.__name__ = name
    return metric


pair_accuracy = _series_metric("pair_accuracy", _pair_accuracy_from)
pair_accuracy.__doc__ = "Share of within-series pairs ordered as the ground truth (a predicted tie: 1/2)."
pair_f1 = _series_metric("pair_f1", _pair_f1_from)
pair_f1.__doc__ = "Macro F1 over the classes 'first better' / 'second better' of within-series pairs."
series_accuracy = _series_metric("series_accuracy", _series_accuracy_from)
series_accuracy.__doc__ = "s-Acc: series whose top prediction is a best image, weighted by series length."
series_srcc = _series_metric("series_srcc", _series_srcc_from)
series_srcc.__doc__ = "s-SRCC: per-series SRCC weighted by series length (constant predictions: 0)."

_SERIES_AGGREGATES = {"pair_accuracy": _pair_accuracy_from, "pair_f1": _pair_f1_from,
                      "series_accuracy": _series_accuracy_from, "series_srcc": _series_srcc_from}


def series_metrics(pred, gt, groups, *, n_resamples: int = 0, seed: int = 0,
                   nan_policy: NanPolicy = "raise") -> dict[str, tuple[float, np.ndarray]]:
    """All four series metrics from one pass over the series: {name: (value, bootstrap samples)}.

    The samples (`n_resamples` of them, series drawn with replacement) share their resamples across
    the four metrics; they are empty where the metric is undefined on the data.
    """
    t = _series_table("series_metrics", pred, gt, groups, nan_policy)
    if isinstance(t, float):
        return {name: (float("nan"), np.empty(0)) for name in _SERIES_AGGREGATES}
    rng = np.random.default_rng(seed)
    # drawing len(t) series with replacement = multinomial counts of how often each series is drawn
    counts = rng.multinomial(len(t), np.full(len(t), 1.0 / len(t)), size=n_resamples).astype(np.float64)
    return {name: (float(aggregate(t, np.ones(len(t)))), aggregate(t, counts))
            for name, aggregate in _SERIES_AGGREGATES.items()}
