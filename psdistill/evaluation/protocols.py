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
- APDDv2 transfer: every metric of `evaluate` per category, for the total score and each attribute.
  An attribute left blank for a category (it does not apply there) has no ground truth in that
  category: it is absent from that category's cells and from its mean, not an undefined value. The
  Chinese-painting categories are evaluated again as a subset of their own.
- FGAesthetics series (FGAesQ): pair Acc, pair F1, s-Acc and s-SRCC per subset (the record category:
  Natural, AIGC, Cropping) and pooled, with bootstrap CIs over series.
- AVA: SRCC, PLCC and acc@5 (a photo is "good" above 5 on AVA's 1-10 mean vote) on the records given:
  the test split, read by `load_ava(..., split=<test list>)`.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from psdistill.data.records import ImageRecord
from psdistill.errors import DataError
from psdistill.evaluation.cross import CrossCategoryMatrix, cross_category_matrix
from psdistill.evaluation.report import EvalResult, _cell, _json_safe, _split_predictions, evaluate, write_report

# The style field (before the first "*") of the APDDv2 categories that are Chinese painting. The release's
# category strings read style*substyle*subject, e.g. "中国画*工笔*山水" ("traditional Chinese painting*
# meticulous*mountains and water" in English copies); compared case-insensitively.
CHINESE_PAINTING_STYLES = ("中国画", "国画", "traditional Chinese painting", "Chinese painting")
AVA_THRESHOLD = 5.0  # AVA's customary binary split: mean vote above 5 = a good photo


def _truth_dimensions(records: Sequence[ImageRecord]) -> set[str]:
    return {d for r in records for d in r.scores}


def one_score(predictions: Mapping[str, Mapping], records: Sequence[ImageRecord]) -> dict[str, Mapping]:
    """The predictions, each that has one dimension without ground truth in `records` as {image id: score}.

    >>> recs = [ImageRecord("a", "a.png", scores={"total": 60.0})]
    >>> one_score({"student": {"overall": {"a": 6.1}}, "fg": {"total": {"a": 5.0}}}, recs)
    {'student': {'a': 6.1}, 'fg': {'total': {'a': 5.0}}}
    """
    truth = _truth_dimensions(records)
    out = {}
    for name, preds in predictions.items():
        nested, _ = _split_predictions(name, preds)
        out[name] = next(iter(nested.values())) if len(nested) == 1 and not set(nested) & truth else preds
    return out


def _predicts(name: str, preds: Mapping, dimension: str) -> bool:
    nested, flat = _split_predictions(name, preds)
    return flat is not None or dimension in nested


def _mean(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nothing defined along the axis: NaN
        return np.nanmean(values, axis=axis)


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _write_summary(out_dir: str | Path, stem: str, data: dict, markdown: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown, encoding="utf-8")
    return paths


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
        return np.column_stack([table, _mean(table, axis=1)])

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
        lines += [f"| {t} | " + " | ".join(map(_number, row)) + " |" for t, row in zip(self.train, table)]
        lines += ["| mean | " + " | ".join(map(_number, _mean(table, axis=0))) + " |", ""]
        for m in self.matrices.values():
            lines += ["## " + m.dimension, "", m.to_markdown()]
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """ppaint_cross.json/.md, and cross_category_<dimension>.json/.md/.png per dimension."""
        paths = _write_summary(out_dir, "ppaint_cross", self.to_dict(), self.to_markdown())
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
    truth = sorted(_truth_dimensions(records))
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


# ---- APDDv2 transfer -----------------------------------------------------------------------------

def chinese_painting_categories(records: Sequence[ImageRecord],
                                styles: Sequence[str] = CHINESE_PAINTING_STYLES) -> list[str]:
    """The categories of `records` whose style field (before the first "*") is one of `styles`."""
    wanted = {s.strip().casefold() for s in styles}
    return sorted({r.category for r in records if r.category.split("*")[0].strip().casefold() in wanted})


@dataclass
class ApddTransfer:
    """`all`: every category; `chinese`: the Chinese-painting categories alone (None when there are none)."""

    all: EvalResult
    chinese: Optional[EvalResult]
    chinese_styles: list[str]

    # (label, which result, group key in its metrics)
    _GROUPS = (("all", "all", "all"), ("mean of categories", "all", "category_mean"),
               ("Chinese painting", "chinese", "all"),
               ("Chinese painting, mean of categories", "chinese", "category_mean"))

    def rows(self) -> list[dict]:
        """SRCC per dimension and group, one dict per (dimension, group) with a cell per scorer."""
        out = []
        for dim in sorted(self.all.dimensions, key=lambda d: d != "total"):  # the total first, as APDDv2 reports
            for label, which, key in self._GROUPS:
                result = getattr(self, which)
                if result is None or dim not in result.dimensions:
                    continue
                cells = {s: result.metrics[s].get(dim, {}).get(key, {}) for s in result.scorers}
                if any("srcc" in c for c in cells.values()):
                    out.append({"dimension": dim, "group": label, "cells": cells})
        return out

    def to_dict(self) -> dict:
        keys = ("srcc", "srcc_ci", "n", "srcc_n_categories")
        return _json_safe({"chinese_styles": self.chinese_styles,
                           "chinese_categories": self.chinese.categories if self.chinese else [],
                           "srcc": [{"dimension": r["dimension"], "group": r["group"],
                                     "scorers": {s: {k: c[k] for k in keys if k in c} for s, c in r["cells"].items()}}
                                    for r in self.rows()]})

    def to_markdown(self) -> str:
        cats = self.chinese.categories if self.chinese else []
        s = self.all.settings
        lines = ["# APDDv2 transfer", "",
                 f"{s['n_records']} images in {len(self.all.categories)} categories; Chinese painting (style "
                 f"{' / '.join(self.chinese_styles)}): {', '.join(cats) or 'no such category'}.",
                 f"SRCC [{s['confidence']:.0%} bootstrap CI]; a mean of categories weighs each category the same and "
                 "leaves out those where the attribute is blank. Per category: report.md.", "",
                 "| dimension | group | images | " + " | ".join(self.all.scorers) + " |",
                 "|---|---|---:|" + "---:|" * len(self.all.scorers)]
        for row in self.rows():
            cells = row["cells"]
            sizes = [c.get("n_ground_truth", c.get("srcc_n_categories", 0)) for c in cells.values()]
            size = max(sizes)
            size = f"{size} categor{'y' if size == 1 else 'ies'}" if "mean" in row["group"] else str(size)
            values = [_cell(cells.get(name, {}), "srcc") if "srcc" in cells.get(name, {}) else "-"
                      for name in self.all.scorers]
            lines.append(f"| {row['dimension']} | {row['group']} | {size} | " + " | ".join(values) + " |")
        return "\n".join(lines + [""])

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """summary.json/.md; metrics.json, report.md, plots/ (all); chinese_painting/ (the same, the subset)."""
        paths = _write_summary(out_dir, "summary", self.to_dict(), self.to_markdown())
        paths.update(write_report(self.all, out_dir))
        if self.chinese is not None:
            paths.update({f"chinese_painting:{k}": p for k, p in
                          write_report(self.chinese, Path(out_dir) / "chinese_painting").items()})
        return paths


def apdd_transfer(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping], *,
                  chinese_styles: Sequence[str] = CHINESE_PAINTING_STYLES, n_bootstrap: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> ApddTransfer:
    """Scorers on APDDv2 records (`load_apddv2`): per category, total and each attribute; Chinese painting apart."""
    preds = one_score(predictions, records)
    options = dict(n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    chinese = chinese_painting_categories(records, chinese_styles)
    return ApddTransfer(evaluate(records, preds, **options),
                        evaluate(records, preds, categories=chinese, **options) if chinese else None,
                        list(chinese_styles))


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
