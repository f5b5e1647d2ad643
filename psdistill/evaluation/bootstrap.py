"""Percentile bootstrap confidence intervals (seeded) of the metrics in `psdistill.evaluation.metrics`.

Item metrics resample images, series metrics whole series. Hand-written rather than
scipy.stats.bootstrap because it must resample clusters and drop the resamples where a metric is
undefined (a constant resample), which would turn scipy's interval into NaN. SRCC and PLCC are
computed for a whole batch of resamples at once.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats

from psdistill.evaluation.metrics import (NanPolicy, UndefinedMetricWarning, clean_inputs, pair_accuracy, pair_f1,
                                          plcc, series_accuracy, series_metrics, series_srcc, srcc)

__all__ = ["bootstrap_samples", "percentile_ci", "bootstrap_ci"]

_SERIES_FUNCTIONS = {pair_accuracy: "pair_accuracy", pair_f1: "pair_f1", series_accuracy: "series_accuracy",
                     series_srcc: "series_srcc"}


def _rowwise_plcc(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    return stats.pearsonr(p, g, axis=1).statistic


def _rowwise_srcc(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Spearman's rho is Pearson's r of the (average) ranks, as in scipy.stats.spearmanr
    return _rowwise_plcc(stats.rankdata(p, axis=1), stats.rankdata(g, axis=1))


_ROWWISE = {srcc: _rowwise_srcc, plcc: _rowwise_plcc}  # metrics with a vectorized form, default kwargs only


def bootstrap_samples(metric: Callable, pred, gt, groups=None, *, n_resamples: int = 1000, seed: int = 0,
                      nan_policy: NanPolicy = "raise", **kwargs) -> np.ndarray:
    """`metric` on `n_resamples` bootstrap resamples (NaN where undefined in a resample).

    Item metrics resample images with replacement; series metrics resample whole series. Empty
    when the metric is undefined on the data itself.
    """
    if metric in _SERIES_FUNCTIONS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            table = series_metrics(pred, gt, groups, n_resamples=n_resamples, seed=seed, nan_policy=nan_policy)
        return table[_SERIES_FUNCTIONS[metric]][1]
    if groups is not None:
        raise ValueError(f"{getattr(metric, '__name__', metric)} is an item metric: it takes no groups")
    clean = clean_inputs(pred, gt, nan_policy)
    if clean is None:
        return np.empty(0)
    p, g, _ = clean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if np.isnan(metric(p, g, **kwargs)):
            return np.empty(0)
    fast = None if kwargs else _ROWWISE.get(metric)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    batch = max(1, min(n_resamples, 2_000_000 // max(len(p), 1)))  # bound the (batch, n) index matrix
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # constant resamples give NaN, not noise
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        for start in range(0, n_resamples, batch):
            idx = rng.integers(0, len(p), size=(min(batch, n_resamples - start), len(p)))
            out[start:start + len(idx)] = (fast(p[idx], g[idx]) if fast else
                                           [metric(p[i], g[i], **kwargs) for i in idx])
    return out


def percentile_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the defined samples; NaN when fewer than half of them are defined."""
    samples = np.asarray(samples, dtype=np.float64)
    ok = samples[np.isfinite(samples)]
    if len(ok) == 0 or len(ok) < 0.5 * len(samples):
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(ok, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def bootstrap_ci(metric: Callable, pred, gt, groups: Optional[Sequence] = None, *, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0, nan_policy: NanPolicy = "raise",
                 **kwargs) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `metric(pred, gt[, groups], **kwargs)`."""
    return percentile_ci(bootstrap_samples(metric, pred, gt, groups, n_resamples=n_resamples, seed=seed,
                                           nan_policy=nan_policy, **kwargs), confidence)
