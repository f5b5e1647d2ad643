"""The score stage: every image scored in one pass by the student (and zero-shot by the base model),
the images split over the ranks; the student's intervals calibrated (psdistill/scoring/conformal.py) on
the validation images' expert ratings or the teacher's pseudo-scores of the pool images kept out of
training, into `student/calibration.json`, with its spread per image in `predictions/spread/student.csv`."""
from __future__ import annotations

import math

import numpy as np

from psdistill.core.errors import ConfigError
from psdistill.data.predictions import write_predictions
from psdistill.data.run_files import read_pseudo_scores
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Stage
from psdistill.pipeline.stages.distill import pool_holdout, validation_records

SPREAD_FILE = "predictions/spread/student.csv"  # the student's own spread per image and dimension (conformal.py)


def run(run: RunContext) -> dict:
    """Score every image in one pass with the student (and zero-shot with the base model), the images
    split over the ranks."""
    from psdistill.scoring.student import StudentScorer
    from psdistill.scoring.api import by_dimension
    from psdistill.scoring.teacher import teacher_pointwise

    dims = run.cfg.data.dimensions
    scorers = {"student": lambda: StudentScorer.from_pretrained(run.path("student"))}
    if run.cfg.teacher_pointwise:
        scorers["teacher-pointwise"] = lambda: teacher_pointwise(
            run.cfg.model, rating_scale=run.cfg.data.rating_scale, readout=run.cfg.distill.readout_config(dims))
    rank, world = (0, 1) if run.state is None else (run.state.process_index, run.state.num_processes)
    batch = run.cfg.distill.per_device_eval_batch_size
    paths = {}
    if run.is_main:  # the evaluation reads every predictions file: none from another config may stay
        keep = {f"{name}.csv" for name in [*scorers, "pseudo-scores"]}
        for stale in run.path("predictions").glob("*.csv"):
            if stale.name not in keep:
                stale.unlink()
    for name, make in scorers.items():
        scorer = make()
        mine = [r.path for r in run.records[rank::world]]
        if name == "student":  # the levels head's spread from the same pass, for the intervals
            mine = np.concatenate(scorer.score_with_spread(mine, batch_size=batch), 1)
        else:
            mine = scorer.score(mine, batch_size=batch).reshape(-1, len(scorer.dimensions))
        mine = _gathered(run, mine)
        columns = by_dimension(scorer, mine[:, :len(scorer.dimensions)])
        if name == "student":
            student = (scorer, columns, by_dimension(scorer, mine[:, len(scorer.dimensions):]))
        if run.is_main:
            paths[name] = str(write_predictions(run.path(f"predictions/{name}.csv"), run.records, columns))
    if not run.is_main:
        return {}
    # The teacher's pairwise pseudo-scores exist only for the training images: a reference, not a scorer.
    pseudo = read_pseudo_scores(run.path("pseudo_scores.csv"))
    trained = [r for r in run.records if all(r.id in scores for scores in pseudo.values())]
    paths["pseudo-scores"] = str(write_predictions(
        run.path("predictions/pseudo-scores.csv"), trained,
        {d: [scores[r.id][0] for r in trained] for d, scores in pseudo.items()}))
    write_predictions(run.path(SPREAD_FILE), run.records, student[2])
    return {"predictions": paths, "calibration": _calibrate(run, *student, pseudo)}


def _calibrate(run: RunContext, scorer, scores: dict, spreads: dict, pseudo: dict) -> dict:
    """Fit the student's intervals (psdistill/scoring/conformal.py) from its `scores` and `spreads` ({dimension:
    one per record}) on `calibration.target`'s images and save them in its folder; without a target, remove
    an earlier calibration."""
    from psdistill.scoring.conformal import CALIBRATION_FILE, Calibration

    dims, target = run.cfg.data.dimensions, run.cfg.calibration.target
    val = list({r.id: r for r in validation_records(run)}.values())
    if target == "auto":
        has_ratings = val and all(any(not math.isnan(r.score(d)) for r in val) for d in dims)
        target = "teacher" if run.cfg.calibration.pool_holdout else "ratings" if has_ratings else "none"
    if target == "none":
        run.path("student").joinpath(CALIBRATION_FILE).unlink(missing_ok=True)
        return {"target": "none"}
    if target == "ratings":
        truth = {d: {r.id: r.score(d) for r in val if not math.isnan(r.score(d))} for d in dims}
    else:
        truth = {d: {r.id: pseudo[d][r.id][0] for r in pool_holdout(run, pseudo)} for d in dims}
    if not all(truth.values()):
        raise ConfigError(f"calibration.target={target}: no calibration image has a target for "
                          f"{[d for d in dims if not truth[d]]}")
    row = {r.id: n for n, r in enumerate(run.records)}
    cal = Calibration.fit(scorer.spec.head, target, run.cfg.data.rating_scale,
                          {d: [scores[d][row[i]] for i in truth[d]] for d in dims},
                          {d: [spreads[d][row[i]] for i in truth[d]] for d in dims},
                          {d: list(truth[d].values()) for d in dims}, {d: list(truth[d]) for d in dims})
    path = cal.save(run.path("student"))
    return {"target": cal.target, "file": str(path), "n": {d: len(r) for d, r in cal.scores.items()}}


def _gathered(run: RunContext, mine: np.ndarray) -> np.ndarray:
    """Every rank's strided share (`records[rank::world]`, (n, D) scores) put back in record order."""
    if run.state is None:
        return mine
    from accelerate.utils import gather_object

    world = run.state.num_processes
    out = np.full((len(run.records), mine.shape[1]), np.nan)
    for rank, scores in gather_object([(run.state.process_index, mine)]):
        out[rank::world] = scores
    return out


STAGE = Stage("score", ("teacher_pointwise", "calibration.target"), run, "scoring every image in one pass", all_ranks=True,
              replaces=("predictions",))
