"""The papers' evaluation protocols on records and predictions (no model is loaded here).

    by_training_category = {"landscape": preds_l, "figure": preds_f, "bird-and-flower": preds_b}
    cross = ppaint_cross_category(ppaint.records, by_training_category)
    cross.write("runs/eval_ppaint")              # ppaint_cross.json/.md + cross_category_<dim>.json/.md/.png
    apdd = apdd_transfer(apdd.records, {"psdistill": preds, "fgaesq": preds_fg})
    apdd.write("runs/eval_apdd")                 # summary + a report for all categories and one for Chinese painting
    write_report(fg_series(fg.records, preds), "runs/eval_fg")
    write_report(ava(ava_test.records, preds), "runs/eval_ava")

Predictions are as for `evaluate`: per scorer (or per training category) {dimension: {image id:
score}}, as read from a predictions file, or {image id: score}. A scorer that predicts a single
dimension which is not a ground-truth dimension (a student trained on "overall" scoring APDDv2,
whose dimensions are "total" and the attributes) is a one-score scorer and is compared with every
dimension (`one_score`).

- PPaint cross-category (PSDistill): train on one category, test on all three; per dimension a
  train x test SRCC matrix, and the mean SRCC over the test categories per training category (the
  paper's headline figure) and dimension.
- APDDv2 transfer (`apdd.py`): every metric of `evaluate` per category, for the total score and each
  attribute; the Chinese-painting categories again as a subset of their own.
- FGAesthetics series (FGAesQ): pair Acc, pair F1, s-Acc and s-SRCC per subset (the record category:
  Natural, AIGC, Cropping) and pooled, with bootstrap CIs over series.
- AVA: SRCC, PLCC and acc@5 (a photo is "good" above 5 on AVA's 1-10 mean vote) on the records given:
  the test split, read by `load_ava(..., split=<test list>)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from psdistill.core.errors import DataError
from psdistill.data.records import ImageRecord
# APDDv2 lives in its own module (apdd.py); its names are imported from here as well.
from psdistill.evaluation.apdd import (APDD_DIMENSION_MAP, CHINESE_PAINTING_STYLES, ApddAuthors, ApddTransfer,
                                       PredictionScale, apdd_authors_metrics, apdd_scale, apdd_transfer,
                                       chinese_painting_categories, map_dimensions, read_dimension_map)
from psdistill.evaluation.cross import CrossCategoryMatrix, cross_category_matrix
from psdistill.evaluation.files import write_json_markdown
from psdistill.evaluation.report import (EvalResult, evaluate, format_number, one_score, quiet_nanmean,
                                         split_predictions, truth_dimensions)

__all__ = ["APDD_DIMENSION_MAP", "AVA_THRESHOLD", "CHINESE_PAINTING_STYLES", "ApddAuthors", "ApddTransfer",
           "PPaintCross", "PredictionScale", "apdd_authors_metrics", "apdd_scale", "apdd_transfer", "ava",
           "chinese_painting_categories", "fg_series", "map_dimensions", "one_score", "ppaint_cross_category",
           "read_dimension_map"]

AVA_THRESHOLD = 5.0  # AVA's customary binary split: mean vote above 5 = a good photo


def _predicts(name: str, preds: Mapping, dimension: str) -> bool:
    nested, flat = split_predictions(name, preds)
    return flat is not None or dimension in nested


# ---- PPaint cross-category -----------------------------------------------------------------------

@dataclass
class PPaintCross:
    """Per dimension, the SRCC of each training category's model on each test category."""

    matrices: dict[str, CrossCategoryMatrix]

    @property
    def dimensions(self) -> list[str]:
        return list(self.matrices)

    @property
    def train(self) -> list[str]:
        return list(dict.fromkeys(t for m in self.matrices.values() for t in m.train))

    def mean_srcc(self) -> np.ndarray:
        """(training categories, dimensions + 1): mean SRCC over the test categories, then over dimensions.

        A training category whose predictions lack a dimension is NaN there and left out of its mean.
        """
        table = np.full((len(self.train), len(self.matrices)), np.nan)
        for j, m in enumerate(self.matrices.values()):
            for t, value in zip(m.train, m.row_means()):
                table[self.train.index(t), j] = value
        return np.column_stack([table, quiet_nanmean(table, axis=1)])

    def to_dict(self) -> dict:
        table = self.mean_srcc()
        columns = [*self.dimensions, "mean"]
        return {"dimensions": self.dimensions, "train": self.train,
                "mean_srcc": {t: {c: None if math.isnan(v) else float(v) for c, v in zip(columns, row)}
                              for t, row in zip(self.train, table)},
                "matrices": {d: m.to_dict() for d, m in self.matrices.items()}}

    def to_markdown(self) -> str:
        table = self.mean_srcc()
        lines = ["# PPaint cross-category", "",
                 "Mean SRCC over the test categories (all of them, the training one included), rows: training "
                 "category; `mean`: over the dimensions.", "",
                 "| train | " + " | ".join(self.dimensions) + " | mean |",
                 "|---|" + "---:|" * (len(self.dimensions) + 1)]
        lines += [f"| {t} | " + " | ".join(map(format_number, row)) + " |" for t, row in zip(self.train, table)]
        lines += ["| mean | " + " | ".join(map(format_number, quiet_nanmean(table, axis=0))) + " |", ""]
        for m in self.matrices.values():
            lines += ["## " + m.dimension, "", m.to_markdown()]
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """ppaint_cross.json/.md, and cross_category_<dimension>.json/.md/.png per dimension (those of an
        earlier run, whose dimensions may have been others, removed first)."""
        for stale in Path(out_dir).glob("cross_category_*.*"):
            stale.unlink()
        paths = write_json_markdown(out_dir, "ppaint_cross", self.to_dict(), self.to_markdown())
        for d, m in self.matrices.items():
            paths.update({f"{kind}:{d}": p for kind, p in m.write(out_dir).items()})
        return paths


def ppaint_cross_category(records: Sequence[ImageRecord], predictions_by_train_category: Mapping[str, Mapping],
                          dimensions: Optional[Sequence[str]] = None, *, n_bootstrap: int = 0,
                          confidence: float = 0.95, seed: int = 0) -> PPaintCross:
    """One `CrossCategoryMatrix` per dimension; keys of the predictions are the training categories.

    dimensions: default, the ground-truth dimensions some training category's predictions cover.
    """
    cats = sorted({r.category for r in records})
    unknown = [t for t in predictions_by_train_category if t not in cats]
    if unknown:
        raise DataError(f"training categories {unknown} are not categories of the images (they have {cats})")
    preds = one_score(predictions_by_train_category, records)
    truth = sorted(truth_dimensions(records))
    if dimensions is None:
        dimensions = [d for d in truth if any(_predicts(t, p, d) for t, p in preds.items())]
    missing = [d for d in dimensions if d not in truth]
    if missing or not dimensions:
        raise DataError(f"dimensions {missing or list(dimensions)}: no ground truth, or no training category's "
                        f"predictions cover them (ground truth has {truth})")
    matrices = {}
    for d in dimensions:
        trained = {t: p for t, p in preds.items() if _predicts(t, p, d)}
        if not trained:
            raise DataError(f"dimension {d!r}: no training category's predictions cover it")
        matrices[d] = cross_category_matrix(records, trained, d, n_bootstrap=n_bootstrap, confidence=confidence,
                                            seed=seed)
    return PPaintCross(matrices)


# ---- FGAesthetics series and AVA -----------------------------------------------------------------

def fg_series(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping], *, n_bootstrap: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> EvalResult:
    """Series metrics per FG subset (the record category) and pooled, on records of `load_fg_series`."""
    if not any(r.series and r.rank is not None for r in records):
        raise DataError("fg_series: no image has a series and a rank (read them with load_fg_series)")
    return evaluate(records, predictions, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)


def ava(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping], *, threshold: float = AVA_THRESHOLD,
        n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> EvalResult:
    """SRCC, PLCC (and the rest of `evaluate`'s item metrics) and acc@`threshold` of the mean vote.

    acc@5 compares predictions with the threshold directly, so they must be on AVA's 1-10 scale.
    """
    if not any("overall" in r.scores for r in records):
        raise DataError("ava: no image has a mean vote (scores['overall']); read them with load_ava")
    return evaluate(records, one_score(predictions, records), dimensions=["overall"], acc_threshold=threshold,
                    n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
