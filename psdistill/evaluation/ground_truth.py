"""Fused expert ground truth: the two constructions of `psdistill.ranking.fusion` per category and
dimension, how far they agree, how far the experts agree, and how good each expert is.

    data = load_expert_files(records, "ratings.csv", "preferences.csv")   # or load_ppaint(root)
    gt = fuse_ground_truth(data, FuseOptions())
    gt.write("runs/ppaint_gt")

Per category and dimension, on the images of that category:
- the comparisons are every expert's preferences of that dimension between two of its images,
  pooled (a pair across categories is counted and left out: each category gets its own scale);
  the ratings are an (experts, images) array, NaN where an expert did not rate an image;
- `anchored`: Bradley-Terry scores on the rating scale by a line fitted on the rated images
  (`fuse_anchored`); `unified`: Thurstone scores and every rating in one likelihood (`fuse_unified`);
  `agreement`: SRCC, PLCC and absolute differences between the two;
- Kendall's W (`psdistill.ranking.concordance`) of the experts' ratings, and of their preferences:
  each expert's own Bradley-Terry scores (prior `expert_alpha`: one expert's pairs alone often leave
  an image unbeaten) over the images they compared; images some expert did not score are left out
  of W, and `w_pairwise` (from the experts' pairwise SRCCs on co-scored images) uses them all;
- per expert: `rating_srcc_loo`, the SRCC of their ratings with the anchored construction refitted
  without any of their judgments; `majority_agreement`, the mean share of each of their preferences
  that agrees with the other experts' mean outcome of the same pair (either presentation order; pairs
  no one else judged, or judged evenly, are left out); and `annotator_quality`'s agreement with the
  anchored consensus, intransitive triads and consistency with their own ratings.

An image is placed by its comparisons: one without any (only rated, or neither) gets no fused score
there, a blank in the CSV, counted in the report as unplaced. An image without ratings is placed by
its preferences and put on the scale by the line of the rated ones.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from psdistill.data.loaders.ppaint import PPaintData
from psdistill.data.manifest import write_manifest
from psdistill.data.records import ImageRecord
from psdistill.core.errors import ConfigError, DataError
from psdistill.evaluation.files import write_json_markdown
from psdistill.evaluation.report import format_number
from psdistill.ranking import (Agreement, FusedScores, annotator_quality, fit_bradley_terry, fuse_anchored,
                               fuse_unified, fusion_agreement, mean_ratings)
from psdistill.ranking.utils import ConvergenceError, check_connected
from psdistill.ranking.concordance import Concordance, kendall_w

CONSTRUCTIONS = ("anchored", "unified")
ANCHORS = ("least_squares", "moments")
EXPERT_COLUMNS = ("n_ratings", "n_comparisons", "rating_srcc_loo", "majority_agreement", "majority_pairs",
                  "consensus_agreement", "intransitivity", "rating_consistency")


@dataclass(frozen=True)
class FuseOptions:
    """anchor: `anchor_to_ratings`'s method for the anchored construction; alpha: the prior precision of
    both pooled fits (0: maximum likelihood); expert_alpha: that of each expert's own fit (for W)."""

    anchor: str = "least_squares"
    alpha: float = 0.0
    expert_alpha: float = 0.1

    def __post_init__(self):
        if self.anchor not in ANCHORS:
            raise ConfigError(f"anchor: use one of {list(ANCHORS)}, got {self.anchor!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"alpha: must be a finite number >= 0, got {self.alpha}")
        if not (math.isfinite(self.expert_alpha) and self.expert_alpha > 0):
            raise ConfigError(f"expert_alpha: must be a finite number > 0, got {self.expert_alpha}")


@dataclass
class GroupResult:
    """One category and dimension; per-image arrays follow `image_ids` (the placed images)."""

    category: str
    dimension: str
    image_ids: list[str]
    n_unplaced: int
    anchored: FusedScores
    unified: FusedScores
    agreement: Agreement
    mean_rating: np.ndarray
    n_ratings: np.ndarray
    n_comparisons: np.ndarray
    w_ratings: Concordance
    w_preferences: Concordance
    experts: list[str]
    expert_quality: dict[str, np.ndarray]  # EXPERT_COLUMNS -> one value per expert

    def summary(self) -> dict:
        return {"category": self.category, "dimension": self.dimension, "n_images": len(self.image_ids),
                "n_unplaced": self.n_unplaced, "n_rated": int(np.sum(self.n_ratings > 0)),
                "n_ratings": int(self.n_ratings.sum()), "n_comparisons": int(self.n_comparisons.sum() // 2),
                "n_experts": len(self.experts), "agreement": vars(self.agreement),
                "anchored_line": {"slope": self.anchored.slope, "intercept": self.anchored.intercept},
                "unified_line": {"slope": self.unified.slope, "intercept": self.unified.intercept,
                                 "rating_sd": self.unified.rating_sd},
                "kendall_w_ratings": self.w_ratings.to_dict(), "kendall_w_preferences": self.w_preferences.to_dict(),
                "experts": {e: {c: self.expert_quality[c][k] for c in EXPERT_COLUMNS}
                            for k, e in enumerate(self.experts)}}


@dataclass
class FusedGroundTruth:
    records: list[ImageRecord]
    groups: list[GroupResult]
    options: FuseOptions
    n_cross_category: int = 0  # preferences between two categories, left out
    rated_only: list[str] = field(default_factory=list)  # "category/dimension" with ratings and no preferences

    def ground_truth(self, construction: str) -> list[ImageRecord]:
        """The records with `scores` = that construction's fused score per dimension (where placed)."""
        scores: dict[str, dict[str, float]] = {}
        for g in self.groups:
            for image_id, value in zip(g.image_ids, getattr(g, construction).scores):
                scores.setdefault(image_id, {})[g.dimension] = float(value)
        return [replace(r, scores=scores.get(r.id, {})) for r in self.records]

    def to_dict(self) -> dict:
        return {"options": vars(self.options), "n_cross_category_preferences": self.n_cross_category,
                "rated_only": self.rated_only, "groups": [g.summary() for g in self.groups]}

    def to_markdown(self) -> str:
        lines = ["# Fused expert ground truth", "",
                 f"Per category and dimension: the anchored (Bradley-Terry + {self.options.anchor} line) and "
                 "unified (Thurstone + ratings, one likelihood) constructions, their agreement, and Kendall's W "
                 "of the experts' ratings and of their own preference scores (n: the images every expert scored; "
                 "pairwise: from the mean SRCC of each two experts on the images both scored).", "",
                 "| category | dimension | images | unplaced | rated | comparisons | SRCC | PLCC | MAD | "
                 "W ratings (n) | W ratings pairwise | W preferences (n) |", "|---|---|" + "---:|" * 10]
        for g in self.groups:
            s = g.summary()
            lines.append(f"| {g.category} | {g.dimension} | {s['n_images']} | {g.n_unplaced} | {s['n_rated']} | "
                         f"{s['n_comparisons']} | {format_number(g.agreement.srcc)} | {format_number(g.agreement.plcc)} "
                         f"| {format_number(g.agreement.mad)} | {format_number(g.w_ratings.w)} ({g.w_ratings.n_items}) "
                         f"| {format_number(g.w_ratings.w_pairwise)} "
                         f"| {format_number(g.w_preferences.w)} ({g.w_preferences.n_items}) |")
        lines += ["", f"Preferences across categories left out: {self.n_cross_category}."]
        if self.rated_only:
            lines.append(f"Rated but without preferences (no fused score): {', '.join(self.rated_only)}.")
        lines += ["", "## Experts", "",
                  "rating SRCC (LOO): with the anchored scores refitted without the expert; majority: share of the "
                  "expert's preferences agreeing with the other experts' mean on the same pair (pairs); consensus: "
                  "with the anchored scores; intransitive: share of the expert's complete triads that are cycles.", "",
                  "| category | dimension | expert | ratings | comparisons | rating SRCC (LOO) | majority (pairs) | "
                  "consensus | intransitive | own-rating consistency |", "|---|---|---|" + "---:|" * 7]
        for g in self.groups:
            q = g.expert_quality
            for k, e in enumerate(g.experts):
                lines.append(f"| {g.category} | {g.dimension} | {e} | {int(q['n_ratings'][k])} | "
                             f"{int(q['n_comparisons'][k])} | {format_number(q['rating_srcc_loo'][k])} | "
                             f"{format_number(q['majority_agreement'][k])} ({int(q['majority_pairs'][k])}) | "
                             f"{format_number(q['consensus_agreement'][k])} | {format_number(q['intransitivity'][k])} | "
                             f"{format_number(q['rating_consistency'][k])} |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """ground_truth_<construction>.csv (manifests: `eval/protocol.py ppaint-cross --manifest` reads
        them), fused_scores.csv (one row per category, dimension and placed image), fuse_report.json/.md."""
        out_dir = Path(out_dir)
        paths = {f"ground_truth_{c}": write_manifest(self.ground_truth(c), out_dir / f"ground_truth_{c}.csv")
                 for c in CONSTRUCTIONS}
        paths["fused_scores"] = out_dir / "fused_scores.csv"
        with open(paths["fused_scores"], "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")  # LF, as every other text file we write
            writer.writerow(["category", "dimension", "image_id", *CONSTRUCTIONS, "mean_rating", "n_ratings",
                             "n_comparisons"])
            for g in self.groups:
                for k, image_id in enumerate(g.image_ids):
                    mean = "" if np.isnan(g.mean_rating[k]) else repr(float(g.mean_rating[k]))
                    writer.writerow([g.category, g.dimension, image_id, repr(float(g.anchored.scores[k])),
                                     repr(float(g.unified.scores[k])), mean, int(g.n_ratings[k]),
                                     int(g.n_comparisons[k])])
        paths.update({f"report_{k}": p for k, p in
                      write_json_markdown(out_dir, "fuse_report", self.to_dict(), self.to_markdown()).items()})
        return paths


def fuse_ground_truth(data: PPaintData, options: FuseOptions = FuseOptions()) -> FusedGroundTruth:
    """Both constructions, agreement, concordance and expert quality per category and dimension.

    Raises `DataError` (naming the category and dimension) when a group's comparisons cannot be fitted:
    a disconnected comparison graph, no maximum-likelihood estimate at alpha = 0, ratings that fall as
    preferences rise, or fewer than two rated images.
    """
    category = np.array([r.category for r in data.records])
    pairs, ratings = data.pairs, data.ratings
    cross = category[pairs.pairs[:, 0]] != category[pairs.pairs[:, 1]] if len(pairs.outcome) else np.zeros(0, bool)
    result = FusedGroundTruth(list(data.records), [], options, int(cross.sum()))
    for cat in sorted({r.category for r in data.records}):
        for d, dim in enumerate(data.dimensions):
            mine = (~cross) & (pairs.dimension == d) & (category[pairs.pairs[:, 0]] == cat)
            rated = (ratings.dimension == d) & (category[ratings.image] == cat)
            if not mine.any():
                if rated.any():
                    result.rated_only.append(f"{cat}/{dim}")
                continue
            try:
                result.groups.append(_group(data, cat, dim, mine, rated, int(np.sum(category == cat)), options))
            except (DataError, ConvergenceError) as e:  # a fit that does not converge is these judgments' too
                raise DataError(f"category {cat!r}, dimension {dim!r}: {e} (--alpha sets alpha)") from None
    return result


def _group(data: PPaintData, cat: str, dim: str, mine: np.ndarray, rated: np.ndarray, n_in_category: int,
           options: FuseOptions) -> GroupResult:
    placed = np.unique(data.pairs.pairs[mine])
    local = np.full(len(data.records), -1)
    local[placed] = np.arange(len(placed))
    n = len(placed)
    pairs, y = local[data.pairs.pairs[mine]], data.pairs.outcome[mine]
    who_global = np.concatenate([data.pairs.expert[mine], data.ratings.expert[rated]])
    expert_ids = np.unique(who_global)
    who = np.searchsorted(expert_ids, data.pairs.expert[mine])
    r_image, r_expert = local[data.ratings.image[rated]], np.searchsorted(expert_ids, data.ratings.expert[rated])
    keep = r_image >= 0  # ratings of unplaced images cannot anchor anything
    r = np.full((len(expert_ids), n), np.nan)
    r[r_expert[keep], r_image[keep]] = data.ratings.score[rated][keep]
    image_ids = [data.records[k].id for k in placed]
    # checked here as the fits check them, so that the message names images, not indices
    for strong in (False, True) if options.alpha == 0 else (False,):
        check_connected(n, pairs[:, 0], pairs[:, 1], y, strong=strong, names=image_ids)
    anchored = fuse_anchored(n, pairs, y, r, alpha=options.alpha, method=options.anchor)
    unified = fuse_unified(n, pairs, y, r, alpha=options.alpha)
    mean, count = mean_ratings(r, n)
    quality = _expert_quality(n, pairs, y, who, r, anchored.scores, options)
    return GroupResult(cat, dim, image_ids, n_in_category - n, anchored, unified,
                       fusion_agreement(anchored.scores, unified.scores), mean, count,
                       np.bincount(pairs.ravel(), minlength=n), kendall_w(r),
                       kendall_w(_expert_scores(n, pairs, y, who, len(expert_ids), options.expert_alpha)),
                       [data.experts[e] for e in expert_ids], quality)


def _expert_scores(n, pairs, y, who, n_experts, alpha) -> np.ndarray:
    """(experts, images): each expert's own Bradley-Terry scores, NaN on images they did not compare
    (a whole row when their comparisons do not link their images)."""
    out = np.full((n_experts, n), np.nan)
    for u in range(n_experts):
        mine = who == u
        if not mine.any():
            continue
        items, idx = np.unique(pairs[mine], return_inverse=True)
        try:
            out[u, items] = fit_bradley_terry(len(items), idx.reshape(-1, 2), y[mine], alpha=alpha, se=False).params
        except DataError:
            continue
    return out


def _expert_quality(n, pairs, y, who, r, consensus, options: FuseOptions) -> dict[str, np.ndarray]:
    n_experts = r.shape[0]
    base = annotator_quality(n, pairs, y, who, consensus, r)
    loo = np.full(n_experts, np.nan)
    for u in range(n_experts):
        own = ~np.isnan(r[u])
        if own.sum() < 2:
            continue
        others = who != u
        try:  # without the expert the rest may not fit (disconnected, too few ratings): undefined, not an error
            refit = fuse_anchored(n, pairs[others], y[others], np.delete(r, u, axis=0), alpha=options.alpha,
                                  method=options.anchor).scores
        except DataError:
            continue
        if np.ptp(r[u][own]) > 0 and np.ptp(refit[own]) > 0:
            loo[u] = spearmanr(r[u][own], refit[own])[0]
    majority, majority_pairs = _majority_agreement(pairs, y, who, n_experts)
    return {"n_ratings": np.sum(~np.isnan(r), axis=1).astype(float), "n_comparisons": base.n_comparisons,
            "rating_srcc_loo": loo, "majority_agreement": majority, "majority_pairs": majority_pairs,
            "consensus_agreement": base.consensus_agreement, "intransitivity": base.intransitivity,
            "rating_consistency": base.rating_consistency}


def _majority_agreement(pairs, y, who, n_experts):
    """Per expert: mean share of each judgment agreeing with the other experts' mean outcome of that
    pair, and how many judgments had such a majority."""
    low = pairs.min(axis=1)
    key = np.unique(np.column_stack([low, pairs.max(axis=1)]), axis=0, return_inverse=True)[1].ravel()
    toward_low = np.where(pairs[:, 0] == low, y, 1 - y)  # P(the lower index preferred)
    k = key.max() + 1
    total, count = np.bincount(key, toward_low, k), np.bincount(key, minlength=k).astype(float)
    cell = key * n_experts + who
    own_total = np.bincount(cell, toward_low, k * n_experts)[cell]
    own_count = np.bincount(cell, minlength=k * n_experts)[cell]
    rest = count[key] - own_count
    with np.errstate(invalid="ignore", divide="ignore"):
        others = np.where(rest > 0, (total[key] - own_total) / rest, 0.5)
    decided = others != 0.5
    agree = np.where(others > 0.5, toward_low, 1 - toward_low)
    n_decided = np.bincount(who[decided], minlength=n_experts).astype(float)
    share = np.bincount(who[decided], agree[decided], n_experts)
    return np.divide(share, n_decided, out=np.full(n_experts, np.nan), where=n_decided > 0), n_decided
