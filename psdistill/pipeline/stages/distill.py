"""The distill stage: the student trained on the pseudo-scores (resumes from its last checkpoint)."""
from __future__ import annotations

import numpy as np

from psdistill.data.run_files import read_pool, read_pseudo_scores
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Stage


def run(run: RunContext) -> dict:
    """Train the student on the pseudo-scores (resumes from its last checkpoint)."""
    from psdistill.distill import train_student
    from psdistill.distill.card import LabelSource

    pseudo = read_pseudo_scores(run.path("pseudo_scores.csv"))
    kept = {r.id for r in pool_holdout(run, pseudo)}
    train = [r for r in pool_records(run, pseudo) if r.id not in kept]
    val = validation_records(run) or None
    pool = next(iter(read_pool(run.path("pool.json")).values()))  # which judge made the pseudo-scores, for the model card
    out = train_student(train, pseudo, run.cfg.model, run.cfg.distill, run.path("student"),
                        val_records=val, rating_scale=run.cfg.data.rating_scale,
                        labels=LabelSource(pool.judge_id, pool.simulated))
    held = {"calibration_images": len(kept)} if kept else {}
    return {"student": str(out), "train_images": len(train), "validation_images": len(val or []), **held}


def pool_records(run: RunContext, pseudo: dict) -> list:
    """The training categories' images that have a pseudo-score in every dimension."""
    return [r for r in run.train_records if all(r.id in scores for scores in pseudo.values())]


def pool_holdout(run: RunContext, pseudo: dict) -> list:
    """The pool images kept out of training to calibrate intervals on (`calibration.pool_holdout` of them,
    drawn with distill.seed), in record order."""
    pool = pool_records(run, pseudo)
    n = round(run.cfg.calibration.pool_holdout * len(pool))
    drawn = set(np.random.default_rng(run.cfg.distill.seed).permutation(len(pool))[:n].tolist())
    return [r for i, r in enumerate(pool) if i in drawn]


def validation_records(run: RunContext) -> list:
    """`validation_images` of the held-out categories' images, spread over them in record order: scored
    during training, and the calibration split of calibration.target=ratings."""
    held_out = [r for r in run.records if r.category not in run.train_categories]
    n_val = run.cfg.validation_images
    return [held_out[i] for i in np.linspace(0, len(held_out) - 1, n_val).astype(int)] if n_val and held_out else []


STAGE = Stage("distill", ("model", "distill", "validation_images"), run, "distilling the single-pass scorer",
              all_ranks=True, replaces=("student",), added=(("calibration.pool_holdout", 0.0),))
