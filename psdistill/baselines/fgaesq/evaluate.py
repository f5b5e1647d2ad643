"""The FGAesQ paper's metrics (Sec. 5.1) on a set of records, through `psdistill.metrics`.

- coarse: SRCC / PLCC between predictions and `scores[dimension]` (records that have one);
- pair level: Acc over within-series pairs whose ranks differ;
- series level: s-Acc (the best image gets the top prediction) and s-SRCC, length-weighted.
See `psdistill.metrics` for ties and undefined cases (NaN with a warning, silenced here).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from psdistill import metrics as M
from psdistill.data.records import ImageRecord


def evaluate(records: Sequence[ImageRecord], predictions: Sequence[float], dimension: str = "overall") -> dict:
    pred = np.asarray(predictions, dtype=np.float64)
    gt = np.array([r.score(dimension) for r in records], dtype=np.float64)
    has = ~np.isnan(gt)
    ranked = np.array([bool(r.series) and r.rank is not None for r in records], dtype=bool)
    out: dict = {"n_images": len(records), "n_scored": int(has.sum())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.UndefinedMetricWarning)
        out["srcc"] = M.srcc(pred[has], gt[has]) if has.any() else float("nan")
        out["plcc"] = M.plcc(pred[has], gt[has]) if has.any() else float("nan")
        groups = np.array([f"{r.category}\x1f{r.series}" for r in records], dtype=object)[ranked]
        neg_rank = -np.array([r.rank for r in records if bool(r.series) and r.rank is not None], dtype=np.float64)
        series = M.series_metrics(pred[ranked], neg_rank, groups) if ranked.any() else {}
    out["n_series"] = int(sum(1 for g in set(groups) if (groups == g).sum() >= 2)) if ranked.any() else 0
    # The paper's F1 is left out: psdistill.metrics' reading of it degenerates on manifests sorted
    # by rank inside each series (every pair is "first better"), as the demo's are.
    for ours, theirs in (("pair_acc", "pair_accuracy"), ("s_acc", "series_accuracy"), ("s_srcc", "series_srcc")):
        out[ours] = series[theirs][0] if theirs in series else float("nan")
    return out
