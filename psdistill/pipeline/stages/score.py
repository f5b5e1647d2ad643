"""The score stage: every image scored in one pass by the student (and zero-shot by the base model),
the images split over the ranks."""
from __future__ import annotations

import numpy as np

from psdistill.data.predictions import write_predictions
from psdistill.data.run_files import read_pseudo_scores
from psdistill.pipeline.context import RunContext
from psdistill.pipeline.runner import Stage


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
        mine = scorer.score([r.path for r in run.records[rank::world]], batch_size=batch).reshape(-1, len(scorer.dimensions))
        columns = by_dimension(scorer, _gathered(run, mine))
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
    return {"predictions": paths}


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


STAGE = Stage("score", ("teacher_pointwise",), run, "scoring every image in one pass", all_ranks=True,
              replaces=("predictions",))
