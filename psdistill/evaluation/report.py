"""Evaluate scorers against ground truth overall, per category and per dimension; write the report.

    result = evaluate(records, {"student": {"overall": {id: score}}, "zero-shot": {id: score}})
    paths = write_report(result, "runs/x/report")     # metrics.json, report.md, plots/*.png

Predictions per scorer are {dimension: {image id: score}} (the predictions-file format) or
{image id: score} for a scorer with one score per image, which is then compared with every
dimension. A scorer is evaluated on the images it scored: a scorer that covers only some images
(e.g. the teacher's pseudo-scores of the training images) shows its own n.

Every (scorer, dimension) gets, for all images, the held-out categories pooled, the mean over
categories (each category weighs the same, as the PSDistill paper averages over categories) and
each category:
- from `scores[dimension]`: n, srcc, plcc, plcc_logistic, krcc, rmse, mae (and acc at
  `acc_threshold` when given);
- from series ranks (records with `series` and `rank`, 0 = best): pair_acc, pair_f1, s_acc, s_srcc,
  with series keyed by (category, series); for pair_f1 a pair's first image is the earlier one in
  a seeded shuffle of the images (see `psdistill.evaluation.metrics`).
A scorer in `unscaled` (its predictions' scale is not the ground truth's, or unknown) gets no
scale-dependent metric (rmse, mae, acc): rank and linear correlations only, never an error between
two scales.
Metrics in `ci_metrics` get percentile bootstrap intervals (images resampled for item metrics,
series for series metrics; the mean over categories resamples within each category).
An undefined metric is NaN (null in JSON), and why is listed in `EvalResult.notes`.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

import psdistill.evaluation.metrics as M
from psdistill.evaluation.bootstrap import bootstrap_samples, percentile_ci
from psdistill.data.records import ImageRecord
from psdistill.core.errors import DataError
from psdistill.evaluation.files import figures_markdown, fresh_dir, json_safe, write_json_markdown

ITEM_METRICS = {"srcc": M.srcc, "plcc": M.plcc, "plcc_logistic": partial(M.plcc, fit="logistic"),
                "krcc": M.krcc, "rmse": M.rmse, "mae": M.mae}
SERIES_METRICS = {"pair_acc": "pair_accuracy", "pair_f1": "pair_f1", "s_acc": "series_accuracy",
                  "s_srcc": "series_srcc"}  # report name -> psdistill.evaluation.metrics.series_metrics name
SCALE_METRICS = ("rmse", "mae", "acc")  # meaningful only when predictions are on the ground truth's scale
DEFAULT_CI = ("srcc", "plcc", "pair_acc", "pair_f1", "s_acc", "s_srcc")  # the ones with a fast bootstrap
LABELS = {"srcc": "SRCC", "plcc": "PLCC", "plcc_logistic": "PLCC (logistic fit)", "krcc": "KRCC",
          "rmse": "RMSE", "mae": "MAE", "acc": "acc@{threshold:g}", "pair_acc": "pair Acc", "pair_f1": "pair F1",
          "s_acc": "s-Acc", "s_srcc": "s-SRCC"}
_HISTOGRAM = re.compile(r"votes_\d+$")  # AVA vote counts stored as scores: not a dimension to evaluate


@dataclass
class EvalResult:
    """metrics[scorer][dimension] = {"all": cell, "held_out": cell, "category_mean": cell,
    "categories": {category: cell}}; a cell maps metric names to values, `<metric>_ci` to [low, high]."""

    scorers: list[str]
    dimensions: list[str]
    categories: list[str]
    held_out: list[str]
    metrics: dict
    settings: dict
    notes: list[str] = field(default_factory=list)
    # scorer -> dimension -> (pred, gt, category) arrays over all scored images, for the plots
    points: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return json_safe({"scorers": self.scorers, "dimensions": self.dimensions, "categories": self.categories,
                           "held_out": self.held_out, "settings": self.settings, "metrics": self.metrics,
                           "notes": self.notes})

    def partial_coverage(self) -> dict[str, list[tuple[str, int, int]]]:
        """{scorer: [(dimension, images scored, images with ground truth)]} where a scorer misses some images."""
        out = {}
        for scorer in self.scorers:
            cells = [(d, self.metrics[scorer][d].get("all", {})) for d in self.dimensions if d in self.metrics[scorer]]
            missing = [(d, c["n"], c["n_ground_truth"]) for d, c in cells if c.get("n", 0) < c.get("n_ground_truth", 0)]
            if missing:
                out[scorer] = missing
        return out

    def coverage_lines(self) -> list[str]:
        """A markdown warning per scorer that misses images: its numbers are on fewer images than the table's."""
        lines = []
        for scorer, missing in self.partial_coverage().items():
            # the dimension with the most ground truth first (APDDv2's total, AVA's overall), then by name
            missing = sorted(missing, key=lambda m: (-m[2], m[0] not in ("total", "overall"), m[0]))
            shown = ", ".join(f"{n} of {total} on {d}" for d, n, total in missing[:3])
            more = f" and {len(missing) - 3} more dimensions" if len(missing) > 3 else ""
            lines.append(f"- **partial coverage: {scorer}** scores {shown}{more}; its cells are on those images "
                         "only, marked (n=K).")
        return lines

    def to_markdown(self) -> str:
        s = self.settings
        out = ["# Evaluation", "",
               f"Ground truth: {s['n_records']} images; categories: {', '.join(self.categories) or '-'}; "
               f"held out: {', '.join(self.held_out) or '-'}.",
               f"Cells: value [{s['confidence']:.0%} percentile bootstrap CI, {s['n_bootstrap']} resamples, "
               f"seed {s['seed']}]; `images`: with ground truth; (n=K) when a scorer covers fewer of them.", ""]
        out += self.coverage_lines() + ([""] if self.partial_coverage() else [])
        for dim in self.dimensions:
            out += [f"## {dim}", ""]
            names = [m for m in [*ITEM_METRICS, "acc", *SERIES_METRICS]
                     if any(m in c for sc in self.scorers for c in _cells(self.metrics[sc].get(dim, {})))]
            for m in names:
                out += [f"### {LABELS[m].format(threshold=s.get('acc_threshold') or 0)}", "",
                        "| group | images | " + " | ".join(self.scorers) + " |",
                        "|---|---:|" + "---:|" * len(self.scorers)]
                for key, label in self._group_rows(dim):
                    cells = [_get(self.metrics[sc].get(dim, {}), key) for sc in self.scorers]
                    if not any(m in c for c in cells):
                        continue
                    size_key = "n_series_ground_truth" if m in SERIES_METRICS else "n_ground_truth"
                    size = max((c.get(size_key, 0) for c in cells), default=0)
                    row = []
                    for c in cells:
                        text = format_cell(c, m) if m in c else "-"
                        n_key = "n_series" if m in SERIES_METRICS else "n"
                        if m in c and n_key in c and c[n_key] < c.get(size_key, 0):
                            text += f" (n={c[n_key]})"
                        row.append(text)
                    out.append(f"| {label} | {size or ''} | " + " | ".join(row) + " |")
                out.append("")
        if self.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)

    def _group_rows(self, dim: str):
        yield ("all",), "all"
        if self.held_out:
            yield ("held_out",), "held-out (pooled)"
        if len(self.categories) > 1:
            yield ("category_mean",), "mean of categories"
            for c in self.categories:
                yield ("categories", c), c


def _cells(groups: dict):
    for key, value in groups.items():
        yield from (value.values() if key == "categories" else [value])


def _get(groups: dict, key: tuple) -> dict:
    for k in key:
        groups = groups.get(k, {})
    return groups


def format_number(value) -> str:
    """3 decimals; "n/a" for an undefined value (None or NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def quiet_nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without the warning for a slice with nothing defined (that slice is NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def format_cell(cell: dict, metric: str) -> str:
    value = cell.get(metric)
    ci = cell.get(f"{metric}_ci")
    if value is not None and not math.isnan(value) and ci and not any(v is None or math.isnan(v) for v in ci):
        return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return format_number(value)


# ---- evaluate ------------------------------------------------------------------------------------

def split_predictions(name: str, preds: Mapping) -> tuple[dict, Optional[dict]]:
    """({dimension: {id: score}}, None) or ({}, {id: score}) for a one-score-per-image scorer."""
    values = list(preds.values())
    if all(isinstance(v, Mapping) for v in values):
        return {d: dict(v) for d, v in preds.items()}, None
    if all(isinstance(v, (int, float, np.number)) for v in values):
        return {}, dict(preds)
    raise DataError(f"predictions of {name!r}: expected {{dimension: {{image id: score}}}} or "
                    "{image id: score}, got a mix")


def truth_dimensions(records: Sequence[ImageRecord]) -> set[str]:
    return {d for r in records for d in r.scores}


def one_score(predictions: Mapping[str, Mapping], records: Sequence[ImageRecord]) -> dict[str, Mapping]:
    """The predictions, each that has one dimension without ground truth in `records` as {image id: score}.

    >>> recs = [ImageRecord("a", "a.png", scores={"total": 60.0})]
    >>> one_score({"student": {"overall": {"a": 6.1}}, "fg": {"total": {"a": 5.0}}}, recs)
    {'student': {'a': 6.1}, 'fg': {'total': {'a': 5.0}}}
    """
    truth = truth_dimensions(records)
    out = {}
    for name, preds in predictions.items():
        nested, _ = split_predictions(name, preds)
        out[name] = next(iter(nested.values())) if len(nested) == 1 and not set(nested) & truth else preds
    return out


def _default_dimensions(records, nested: dict, any_flat: bool, has_ranks: bool) -> list[str]:
    truth = sorted({d for r in records for d in r.scores if not _HISTOGRAM.match(d)})
    predicted = sorted({d for preds in nested.values() for d in preds})
    dims = [d for d in truth if any_flat or d in predicted]
    if has_ranks:
        dims += [d for d in predicted if d not in truth]
        if not dims and any_flat:
            dims = ["rank"]  # series ranks are the only ground truth
    return dims


def evaluate(records: Sequence[ImageRecord], predictions: Mapping[str, Mapping],
             dimensions: Optional[Sequence[str]] = None, categories: Optional[Sequence[str]] = None,
             held_out: Sequence[str] = (), *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
             acc_threshold: Optional[float] = None, ci_metrics: Sequence[str] = DEFAULT_CI,
             unscaled: Sequence[str] = ()) -> EvalResult:
    """Metrics of every scorer in `predictions` against `records`.

    dimensions: default, the ground-truth dimensions some scorer predicts (every one for a
        one-score scorer; AVA's votes_k histogram columns excluded), plus, when records have series
        ranks, predicted dimensions without ground-truth scores (evaluated on ranks only).
    categories: which categories to report (default all); records of other categories are ignored.
    held_out: categories pooled into the "held_out" group (e.g. those not trained on).
    n_bootstrap: resamples for the CIs of `ci_metrics`; 0 disables them.
    unscaled: scorers whose predictions are not on the ground truth's scale: no rmse, mae or acc.
    """
    all_cats = sorted({r.category for r in records})
    cats = list(categories) if categories is not None else all_cats
    unknown = [c for c in [*cats, *held_out] if c not in all_cats]
    if unknown:
        raise DataError(f"categories {unknown} are not in the records (they have {all_cats})")
    records = [r for r in records if r.category in set(cats)]
    split = {name: split_predictions(name, p) for name, p in predictions.items()}
    has_ranks = any(r.series and r.rank is not None for r in records)
    dims = list(dimensions) if dimensions is not None else _default_dimensions(
        records, {n: s[0] for n, s in split.items()}, any(s[1] is not None for s in split.values()), has_ranks)
    if not dims:
        raise DataError("nothing to evaluate: no ground-truth dimension is predicted by any scorer "
                        f"(ground truth has {sorted({d for r in records for d in r.scores})})")
    settings = {"n_records": len(records), "n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed,
                "acc_threshold": acc_threshold, "ci_metrics": list(ci_metrics), "unscaled": list(unscaled)}
    result = EvalResult(list(predictions), dims, cats, [c for c in cats if c in set(held_out)], {}, settings)
    notes: dict[tuple[str, str], list[str]] = {}  # (scorer / dimension, message) -> groups
    options = dict(n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, acc_threshold=acc_threshold,
                   ci_metrics=set(ci_metrics), notes=notes)
    for name, (nested, flat) in split.items():
        result.metrics[name] = {}
        result.points[name] = {}
        for dim in dims:
            preds = nested.get(dim, flat)
            if preds is None:
                continue
            result.metrics[name][dim] = _dimension(records, preds, dim, cats, result.held_out,
                                                   dict(options, scaled=name not in set(unscaled)), f"{name} / {dim}")
            scored = [r for r in records if math.isfinite(preds.get(r.id, math.nan)) and not math.isnan(r.score(dim))]
            result.points[name][dim] = (np.array([preds[r.id] for r in scored], dtype=float),
                                        np.array([r.score(dim) for r in scored]), [r.category for r in scored])
    result.notes = [f"{where}: {message} (in {', '.join(groups)})" for (where, message), groups in notes.items()]
    result.notes += [f"{name}: {', '.join(SCALE_METRICS)} not computed: its predictions' scale is not the ground "
                     "truth's (or is not stated)" for name in unscaled if name in predictions]
    return result


def _dimension(records, preds, dim, cats, held_out, options, label) -> dict:
    samples: dict[str, dict[str, np.ndarray]] = {}  # per category: metric -> bootstrap samples
    out = {"all": _group(records, preds, dim, options, label, "all")[0]}
    if held_out:
        out["held_out"] = _group([r for r in records if r.category in set(held_out)], preds, dim, options,
                                 label, "held-out")[0]
    if len(cats) > 1:
        out["categories"] = {}
        for c in cats:
            out["categories"][c], samples[c] = _group([r for r in records if r.category == c], preds, dim, options,
                                                      label, c)
        out["category_mean"] = _category_mean(out["categories"], samples, options["confidence"])
    return out


def _group(records, preds, dim, options, label, group) -> tuple[dict, dict]:
    """One cell and the bootstrap samples behind its CIs; why a metric is undefined goes to the notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", M.UndefinedMetricWarning)
        cell, samples = _metrics(records, preds, dim, options)
    for w in caught:
        if issubclass(w.category, M.UndefinedMetricWarning):
            groups = options["notes"].setdefault((label, str(w.message)), [])
            if group not in groups:
                groups.append(group)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cell, samples


def _metrics(records, preds, dim, options) -> tuple[dict, dict]:
    cell, samples = {}, {}
    ci = options["ci_metrics"] if options["n_bootstrap"] else set()
    boot = dict(n_resamples=options["n_bootstrap"], seed=options["seed"])
    truth = [r for r in records if not math.isnan(r.score(dim))]
    if truth:
        scored = [r for r in truth if math.isfinite(preds.get(r.id, math.nan))]
        cell.update(n_ground_truth=len(truth), n=len(scored))
        p = np.array([preds[r.id] for r in scored], dtype=float)
        g = np.array([r.score(dim) for r in scored])
        if scored:
            for m, fn in ITEM_METRICS.items():
                if m in SCALE_METRICS and not options["scaled"]:
                    continue
                cell[m] = fn(p, g)
                if m in ci:
                    samples[m] = bootstrap_samples(fn, p, g, **boot)
                    cell[f"{m}_ci"] = list(percentile_ci(samples[m], options["confidence"]))
            if options["acc_threshold"] is not None and options["scaled"]:
                cell["acc"] = M.binary_accuracy(p, g, options["acc_threshold"])
    ranked = [r for r in records if r.series and r.rank is not None]
    if ranked:
        scored = [r for r in ranked if math.isfinite(preds.get(r.id, math.nan))]
        cell["n_series_ground_truth"] = len({(r.category, r.series) for r in ranked})
        cell["n_series"] = len({(r.category, r.series) for r in scored})
        if scored:
            # A pair's "first" image (for pair F1) is the earlier one in a seeded shuffle: a presentation
            # order unrelated to the ground truth, as an annotation tool's would be. Records sorted by
            # rank would otherwise make every pair "first better".
            scored = [scored[k] for k in np.random.default_rng(options["seed"]).permutation(len(scored))]
            p = np.array([preds[r.id] for r in scored], dtype=float)
            g = -np.array([r.rank for r in scored], dtype=float)  # rank 0 = best -> highest
            series = np.array([f"{r.category}\x1f{r.series}" for r in scored])
            values = M.series_metrics(p, g, series, n_resamples=options["n_bootstrap"], seed=options["seed"])
            for m, name in SERIES_METRICS.items():
                cell[m], drawn = values[name]
                if m in ci:
                    samples[m] = drawn
                    cell[f"{m}_ci"] = list(percentile_ci(drawn, options["confidence"]))
    return cell, samples


def _category_mean(per_category: dict, samples: dict, confidence: float) -> dict:
    """Unweighted mean over the categories where a metric is defined (n_categories says how many).

    The CI is a stratified bootstrap: resample b of the mean is the mean of the categories'
    resample b, each category resampled on its own.
    """
    out = {}
    names = [m for m in [*ITEM_METRICS, "acc", *SERIES_METRICS] if any(m in c for c in per_category.values())]
    for m in names:
        defined = {c: cell[m] for c, cell in per_category.items() if m in cell and not math.isnan(cell[m])}
        out[m] = float(np.mean(list(defined.values()))) if defined else float("nan")
        out[f"{m}_n_categories"] = len(defined)
        drawn = [samples[c][m] for c in defined if len(samples.get(c, {}).get(m, [])) > 0]
        if drawn and len(drawn) == len(defined):
            out[f"{m}_ci"] = list(percentile_ci(np.mean(drawn, axis=0), confidence))
    return out


# ---- writing -------------------------------------------------------------------------------------

def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """metrics.json, report.md and plots/*.png under `out_dir` (plots/ emptied first); returns {kind: path}."""
    from psdistill.evaluation.plots import write_plots

    figures = write_plots(result, fresh_dir(Path(out_dir) / "plots"))
    markdown = result.to_markdown() + figures_markdown(figures, out_dir)
    return {**write_json_markdown(out_dir, "metrics", result.to_dict(), markdown, markdown_stem="report"), **figures}
