"""The fit stage: each training image's posterior mean and variance per dimension, on the rating scale.

Preferences give the order (the pool's posterior); `fit.anchor` says what gives the scale: min-max,
a few human labels, or the teacher's own zero-shot ratings.
"""
from __future__ import annotations

import numpy as np

from psdistill.core.errors import ConfigError, DataError
from psdistill.data.run_files import read_pool, write_pseudo_scores
from psdistill.judge.registry import judge_entry, judge_section
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Stage


def run(run: RunContext) -> dict:
    """Posterior mean/variance of every training image per dimension, mapped to the rating scale (`fit.anchor`)."""
    from psdistill.ranking import to_rating_scale

    pools = read_pool(run.path("pool.json"))
    lo, hi = run.cfg.data.rating_scale
    rate = _teacher_rater(run) if run.cfg.fit.anchor == "teacher" else None
    scores, per = {}, {}
    for dim, pool in pools.items():
        mu = np.asarray(pool.mu)
        anchors, summary = _fit_anchors(run, dim, pool.ids, mu, pool.reference_ids, rate)
        try:
            score, var = to_rating_scale(mu, np.asarray(pool.var), lo, hi, anchors=anchors, match=run.cfg.fit.match)
        except DataError as e:
            if run.cfg.fit.anchor != "teacher":
                raise
            # a few noisy zero-shot ratings can run against the pool's order by chance
            raise ConfigError(f"fit.anchor=teacher: the teacher's {summary['teacher_ratings']} {dim!r} ratings cannot "
                              f"anchor the pool's scores ({e}); rate more images (fit.teacher_rates=all) or use "
                              "fit.anchor=labels or none") from None
        scores[dim] = (score, var)
        per[dim] = {"score_range": [float(score.min()), float(score.max())], "mean_sd": float(np.sqrt(var).mean()),
                    **summary}
    ids = next(iter(pools.values())).ids
    write_pseudo_scores(run.path("pseudo_scores.csv"), ids, scores, {d: p.reference_ids for d, p in pools.items()})
    # The anchor's kind is the run's; its counts add up over the dimensions.
    overall = {k: v for k, v in next(iter(per.values())).items() if k not in ("score_range", "mean_sd")}
    overall.update({k: sum(p[k] for p in per.values()) for k in ("labels_used", "teacher_ratings") if k in overall})
    return {"images": len(ids), **overall, "dimensions": per}


def _teacher_rater(run: RunContext):
    """rate(records, dimension): the teacher's zero-shot ratings: the judge's own where its entry has a
    rater (the simulated judge's noisy ones); else the base VLM's, loaded once on first use and scoring every dimension of
    an image in one pass (each image once)."""
    entry = judge_entry(run.cfg.judge)
    if entry.rater is not None:
        return entry.rater(judge_section(run.cfg.judge))
    from psdistill.scoring.api import by_dimension
    from psdistill.scoring.teacher import teacher_pointwise

    rated: dict[str, dict[str, np.ndarray]] = {}  # path -> {dimension: rating}
    scorer = []

    def rate(records, dim):
        todo = list(dict.fromkeys(r.path for r in records if r.path not in rated))
        if todo:
            if not scorer:
                scorer.append(teacher_pointwise(run.cfg.model, rating_scale=run.cfg.data.rating_scale,
                                                readout=run.cfg.distill.readout_config(run.cfg.data.dimensions)))
            columns = by_dimension(scorer[0], scorer[0].score(todo))
            rated.update({path: {d: c[n] for d, c in columns.items()} for n, path in enumerate(todo)})
        return np.array([rated[r.path][dim] for r in records])

    return rate


def _fit_anchors(run: RunContext, dim: str, ids, mu, reference_ids, rate):
    """The ratings (NaN where unrated) of dimension `dim` that anchor its scale, or None for min-max; and
    what they were. `rate`: the teacher's ratings (`_teacher_rater`) for anchor=teacher."""
    cfg = run.cfg.fit
    if cfg.anchor == "none":
        return None, {"anchor": "none"}
    by_id = {r.id: r for r in run.records}
    anchors = np.full(len(ids), np.nan)
    if cfg.anchor == "labels":
        for category in run.train_categories:
            # every n-th labelled image by pool score: the anchors span the scale the pool found
            rows = sorted((i for i, x in enumerate(ids) if by_id[x].category == category
                           and not np.isnan(by_id[x].score(dim))), key=lambda i: mu[i])
            for k in np.unique(np.linspace(0, len(rows) - 1, min(cfg.labels_per_category, len(rows))).astype(int)):
                anchors[rows[k]] = by_id[ids[rows[k]]].score(dim)
        if np.isfinite(anchors).sum() < 2:
            raise ConfigError(f"fit.anchor=labels: the manifest gives ground truth {dim!r} to "
                              f"{int(np.isfinite(anchors).sum())} training image(s); need at least 2 "
                              "(or use fit.anchor=teacher or none)")
        return anchors, {"anchor": "labels", "labels_used": int(np.isfinite(anchors).sum()), "semi_supervised": True}
    row = {x: i for i, x in enumerate(ids)}
    refs = [row[x] for x in reference_ids] if cfg.teacher_rates == "references" else list(range(len(ids)))
    anchors[refs] = rate([by_id[ids[i]] for i in refs], dim)
    return anchors, {"anchor": "teacher", "teacher_ratings": len(refs), "labels_used": 0,
                     "simulated": judge_entry(run.cfg.judge).simulated}


STAGE = Stage("fit", ("data.rating_scale", "fit"), run, "fitting pseudo-scores")
