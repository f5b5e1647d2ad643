"""The APDDv2 transfer protocol (Jin et al., NeurIPS 2024 D&B) on records and predictions.

Every metric of `evaluate` per category, for the total score and each attribute. An attribute left
blank for a category (it does not apply there) has no ground truth in that category: it is absent
from that category's cells and from its mean, not an undefined value. The Chinese-painting
categories are evaluated again as a subset of their own, and the authors' own metrics (their
eval.py, on Score = total / 10) are reported beside ours (`ApddAuthors`). A scorer's scale is
stated or taken from its column names (`PredictionScale`); predicted dimensions can be mapped onto
APDDv2's (`read_dimension_map`, the bundled apdd_dimensions.yaml).
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

import psdistill.evaluation.metrics as M
from psdistill.core.errors import DataError
from psdistill.data.loaders.apdd import ATTRIBUTE_RANGE as APDD_ATTRIBUTE_RANGE
from psdistill.data.loaders.apdd import CHINESE_PAINTING_STYLE
from psdistill.data.loaders.apdd import TOTAL_RANGE as APDD_TOTAL_RANGE
from psdistill.data.records import ImageRecord
from psdistill.evaluation.files import json_safe, write_json_markdown
from psdistill.evaluation.report import (EvalResult, evaluate, format_cell, format_number, one_score,
                                         split_predictions, truth_dimensions, write_report)

# The style fields (before the first "*") of the APDDv2 categories that are Chinese painting, compared
# case-insensitively: the release's one (6 of its 24 categories, e.g. "traditional Chinese painting*
# meticulous*mountains and water").
CHINESE_PAINTING_STYLES = (CHINESE_PAINTING_STYLE,)
APDD_SCORE_TOP = 10.0  # the authors' Score: total / 10
APDD_DIMENSION_MAP = Path(__file__).resolve().parent / "apdd_dimensions.yaml"  # prompt sets -> APDDv2
APDD_AUTHORS_THRESHOLD = 5.0  # their eval.py: label 0 for a Score <= 5, 1 above
OUTSIDE_SHARE = 0.05  # more predictions than this outside the ground truth's scale: a wrong scale, noted


def chinese_painting_categories(records: Sequence[ImageRecord],
                                styles: Sequence[str] = CHINESE_PAINTING_STYLES) -> list[str]:
    """The categories of `records` whose style field (before the first "*") is one of `styles`."""
    wanted = {s.strip().casefold() for s in styles}
    return sorted({r.category for r in records if r.category.split("*")[0].strip().casefold() in wanted})


def apdd_scale(dimension: str) -> float:
    """The top of an APDDv2 ground-truth scale (all start at 0): 100 for the total, 10 for an attribute."""
    return APDD_TOTAL_RANGE[1] if dimension == "total" else APDD_ATTRIBUTE_RANGE[1]


@dataclass(frozen=True)
class PredictionScale:
    """Which scale a scorer's predictions are on: 0..`top`, or each column on the scale of the ground-truth
    dimension it is named after (`top` None, `own` True), or unknown (`top` None, `own` False)."""

    top: Optional[float]
    own: bool = False

    @property
    def known(self) -> bool:
        return self.top is not None or self.own

    def factor(self, dimension: str) -> float:
        """Multiplier onto `dimension`'s ground-truth scale (1 when unknown: then no error metric is computed)."""
        return apdd_scale(dimension) / self.top if self.top is not None else 1.0

    def describe(self, dimensions: Sequence[str]) -> str:
        if self.own:
            return "each column on the scale of the dimension it is named after (no conversion)"
        if self.top is None:
            return ("not stated: RMSE, MAE, MSE and ACC@5 are not computed (state it: --scale NAME=TOP, "
                    "predictions on 0..TOP)")
        tops = sorted({apdd_scale(d) for d in dimensions}, reverse=True)
        onto = "; ".join(f"x {t / self.top:g} onto the {'total' if t == APDD_TOTAL_RANGE[1] else 'attributes'} "
                         f"(0-{t:g})" for t in tops)
        return f"0-{self.top:g} (stated): {onto}; x {APDD_SCORE_TOP / self.top:g} onto the authors' Score (0-10)"


def _prediction_scales(preds: Mapping[str, Mapping], records: Sequence[ImageRecord],
                       stated: Mapping[str, float]) -> dict[str, PredictionScale]:
    truth = truth_dimensions(records)
    unknown = sorted(set(stated) - set(preds))
    if unknown:
        raise DataError(f"scales given for {unknown}, which are not scorers here (scorers: {sorted(preds)})")
    out = {}
    for name, p in preds.items():
        nested, _ = split_predictions(name, p)
        if name in stated:
            if not stated[name] > 0:
                raise DataError(f"scale of {name!r}: the top of its scale must be > 0, got {stated[name]}")
            out[name] = PredictionScale(float(stated[name]))
        else:  # a column named after a ground-truth dimension claims that dimension's scale
            out[name] = PredictionScale(None, own=bool(nested) and set(nested) <= truth)
    return out


def _scale_notes(name: str, converted: Mapping[str, Mapping[str, float]], scale: PredictionScale) -> list[str]:
    """Signs that a scale is wrong: after conversion, many predictions outside the ground truth's scale
    (a few are what a regression head does), or all of them within its bottom tenth."""
    if not scale.known:
        return []
    outside, low = [], []
    for dim, values in converted.items():
        v = np.array(list(values.values()), dtype=float)
        top = apdd_scale(dim)
        share = float(np.mean((v < 0) | (v > top))) if len(v) else 0.0
        if share > OUTSIDE_SHARE:
            outside.append(f"{dim} {share:.0%} outside 0-{top:g}")
        elif len(v) and v.max() <= top / 10:
            low.append(f"{dim} at most {v.max():.3g} on 0-{top:g}")
    return [f"{name}: after the scale conversion, {', '.join(found)}: is its scale right? (--scale {name}=TOP)"
            for found in (outside, low) if found]


@dataclass
class ApddAuthors:
    """The metrics of the APDDv2 authors' eval.py (BestiVictory/APDDv2 at 3ff08cd, `validate`) on Score =
    total / 10: spearmanr, pearsonr, MSE (sklearn's mean_squared_error), MAE (their "WASD"), and ACC: the
    share of images whose predicted and true labels agree, a label being 0 for a Score <= 5 and 1 above.
    Per scorer: {n, n_ground_truth, srcc, plcc, mse, mae, acc}; the last three only on a known scale."""

    split: str
    scorers: dict[str, dict]

    def to_markdown(self) -> str:
        lines = [f"Score = total / 10 on {self.split}; predictions converted onto 0-10 as stated under Scales; "
                 "SRCC, PLCC, MSE, MAE, ACC@5 as the authors' eval.py computes them (float64 here, float32 there).",
                 "", "| scorer | images | SRCC | PLCC | MSE | MAE | ACC@5 |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, c in self.scorers.items():
            n = f"{c['n']}" + (f" of {c['n_ground_truth']} (partial)" if c["n"] < c["n_ground_truth"] else "")
            lines.append(f"| {name} | {n} | " + " | ".join(format_number(c.get(m)) for m in
                                                          ("srcc", "plcc", "mse", "mae", "acc")) + " |")
        return "\n".join(lines + [""])


def apdd_authors_metrics(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping[str, float]],
                         scales: Mapping[str, PredictionScale], split: str) -> ApddAuthors:
    """`ApddAuthors` of each scorer's total-score predictions ({scorer: {image id: prediction}})."""
    truth = [r for r in records if not math.isnan(r.score("total"))]
    out = {}
    for name, preds in predictions.items():
        scale = scales[name]
        factor = APDD_SCORE_TOP / scale.top if scale.top is not None else 1 / 10 if scale.own else 1.0
        scored = [r for r in truth if math.isfinite(preds.get(r.id, math.nan))]
        p = np.array([preds[r.id] * factor for r in scored], dtype=float)
        g = np.array([r.score("total") / 10 for r in scored])  # eval.py's y: the split file's Score = total / 10
        cell = {"n": len(scored), "n_ground_truth": len(truth)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", M.UndefinedMetricWarning)  # undefined: NaN, "n/a" in the table
            cell.update(srcc=M.srcc(p, g), plcc=M.plcc(p, g))
            if scale.known and len(p):
                cell.update(mse=float(np.mean((g - p) ** 2)), mae=M.mae(p, g),
                            acc=M.binary_accuracy(p, g, APDD_AUTHORS_THRESHOLD))
        out[name] = cell
    return ApddAuthors(split, out)


@dataclass
class ApddTransfer:
    """`all`: every category; `chinese`: the Chinese-painting categories alone (None when there are none);
    `authors`: the authors' eval.py metrics; `scales`: each scorer's, as described in the tables;
    `inputs`: what the run read (files with sha256), recorded by the caller; `notes`: scale warnings."""

    all: EvalResult
    chinese: Optional[EvalResult]
    chinese_styles: list[str]
    authors: ApddAuthors
    scales: dict[str, PredictionScale]
    inputs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

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
        keys = ("srcc", "srcc_ci", "n", "n_ground_truth", "srcc_n_categories")
        return json_safe({"chinese_styles": self.chinese_styles,
                          "chinese_categories": self.chinese.categories if self.chinese else [],
                          "scales": {s: self.scales[s].describe(self.all.dimensions) for s in self.all.scorers},
                          "coverage": self.all.partial_coverage(),
                          "authors_eval": {"split": self.authors.split, "scorers": self.authors.scorers},
                          "srcc": [{"dimension": r["dimension"], "group": r["group"],
                                    "scorers": {s: {k: c[k] for k in keys if k in c} for s, c in r["cells"].items()}}
                                   for r in self.rows()],
                          "notes": self.notes + self.all.notes, "inputs": self.inputs})

    def to_markdown(self) -> str:
        cats = self.chinese.categories if self.chinese else []
        s = self.all.settings
        lines = ["# APDDv2 transfer", "",
                 f"Ground truth: {s['n_records']} images in {len(self.all.categories)} categories, "
                 f"{self.authors.split}; Chinese painting (style {' / '.join(self.chinese_styles)}): "
                 f"{', '.join(cats) or 'no such category'}.", ""]
        lines += self.all.coverage_lines() or ["Every scorer scores every image with ground truth."]
        lines += ["", "Scales:"] + [f"- {name}: {self.scales[name].describe(self.all.dimensions)}"
                                    for name in self.all.scorers]
        lines += ["", "## As the authors' eval.py", "", self.authors.to_markdown(),
                  "## SRCC per dimension", "",
                  f"SRCC [{s['confidence']:.0%} bootstrap CI]; `images`: with ground truth in the group; (n=K): a "
                  "scorer's images when fewer; a mean of categories weighs each category the same and leaves out "
                  "those where the attribute is blank. Every metric per category: report.md.", "",
                  "| dimension | group | images | " + " | ".join(self.all.scorers) + " |",
                  "|---|---|---:|" + "---:|" * len(self.all.scorers)]
        for row in self.rows():
            cells = row["cells"]
            mean = "mean" in row["group"]
            size = max(c.get("srcc_n_categories" if mean else "n_ground_truth", 0) for c in cells.values())
            size = f"{size} categor{'y' if size == 1 else 'ies'}" if mean else str(size)
            values = []
            for name in self.all.scorers:
                c = cells.get(name, {})
                text = format_cell(c, "srcc") if "srcc" in c else "-"
                if "n" in c and c["n"] < c.get("n_ground_truth", 0):
                    text += f" (n={c['n']})"
                values.append(text)
            lines.append(f"| {row['dimension']} | {row['group']} | {size} | " + " | ".join(values) + " |")
        notes = self.notes + self.all.notes
        if notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
        if self.inputs:
            lines += ["", "## Inputs", "", "```json", json.dumps(self.inputs, indent=1, ensure_ascii=False), "```"]
        return "\n".join(lines + [""])

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """summary.json/.md; metrics.json, report.md, plots/ (all); chinese_painting/ (the same, the subset,
        emptied first)."""
        paths = write_json_markdown(out_dir, "summary", self.to_dict(), self.to_markdown())
        paths.update(write_report(self.all, out_dir))
        chinese_dir = Path(out_dir) / "chinese_painting"
        if chinese_dir.is_dir():
            shutil.rmtree(chinese_dir)  # an earlier run's, with other styles or scorers
        if self.chinese is not None:
            paths.update({f"chinese_painting:{k}": p for k, p in write_report(self.chinese, chinese_dir).items()})
        return paths


def read_dimension_map(path: str | Path) -> dict[str, str]:
    """{predicted dimension: ground-truth dimension} from a YAML mapping (e.g. APDD_DIMENSION_MAP)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"--dimension-map: file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise DataError(f"{path}: expected a mapping of predicted dimension -> ground-truth dimension (names)")
    return data


def map_dimensions(predictions: Mapping[str, Mapping], dimension_map: Mapping[str, str],
                   records: Sequence[ImageRecord]) -> dict[str, Mapping]:
    """Every scorer's predicted dimensions renamed by `dimension_map` (others kept), so that e.g. a student's
    `composition` is evaluated against APDDv2's `layout_and_composition`. A renamed column must land on a
    ground-truth dimension of `records`, and no two columns of one scorer on the same one."""
    truth = truth_dimensions(records)
    out = {}
    for name, preds in predictions.items():
        nested, flat = split_predictions(name, preds)
        if flat is not None:
            out[name] = preds
            continue
        renamed: dict[str, Mapping] = {}
        for dim, scores in nested.items():
            target = dimension_map.get(dim, dim)
            if dim in dimension_map and target not in truth:
                raise DataError(f"dimension map: {dim} -> {target!r}, which is no ground-truth dimension of these "
                                f"records ({', '.join(sorted(truth))})")
            if target in renamed:
                raise DataError(f"dimension map: two columns of {name!r} map onto {target!r}")
            renamed[target] = scores
        out[name] = renamed
    return out


def apdd_transfer(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping], *,
                  scales: Optional[Mapping[str, float]] = None, split: Optional[str] = None,
                  dimension_map: Optional[Mapping[str, str]] = None,
                  chinese_styles: Sequence[str] = CHINESE_PAINTING_STYLES, n_bootstrap: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> ApddTransfer:
    """Scorers on APDDv2 records (`load_apddv2`): per category, total and each attribute; Chinese painting
    apart; and the authors' eval.py metrics on the total.

    scales: {scorer: TOP}, its predictions on 0..TOP, converted onto each ground-truth scale (the total's
        0-100, an attribute's 0-10, the authors' Score 0-10) before any error metric. A scorer not there whose
        columns are ground-truth dimensions is taken to be on their scales; any other has no error metric.
    split: what the records are (e.g. the authors' test split file), for the tables.
    dimension_map: {predicted dimension: APDDv2 dimension} applied first (`map_dimensions`): a multi-dimension
        student's columns onto the total and the attributes (APDD_DIMENSION_MAP is the bundled one).
    """
    if dimension_map:
        predictions = map_dimensions(predictions, dimension_map, records)
    preds = one_score(predictions, records)
    prediction_scales = _prediction_scales(preds, records, scales or {})
    truth = sorted(truth_dimensions(records))
    converted, notes, total = {}, [], {}
    for name, p in preds.items():
        nested, flat = split_predictions(name, p)
        by_dim = {d: nested.get(d, flat) for d in truth if nested.get(d, flat) is not None}
        scale = prediction_scales[name]
        converted[name] = {d: {i: v * scale.factor(d) for i, v in values.items()} for d, values in by_dim.items()}
        notes += _scale_notes(name, converted[name], scale)
        if "total" in by_dim:
            total[name] = by_dim["total"]
    options = dict(n_bootstrap=n_bootstrap, confidence=confidence, seed=seed,
                   unscaled=[n for n, sc in prediction_scales.items() if not sc.known])
    chinese = chinese_painting_categories(records, chinese_styles)
    split = split or "every image of the CSV, not the authors' test split (which --split csvfiles/test.csv selects)"
    return ApddTransfer(evaluate(records, converted, **options),
                        evaluate(records, converted, categories=chinese, **options) if chinese else None,
                        list(chinese_styles), apdd_authors_metrics(records, total, prediction_scales, split),
                        prediction_scales, notes=notes)
