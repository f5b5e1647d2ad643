"""The preference engine: pairwise-comparison models, rating fusion and the Elo reference pool.

Pure numpy/scipy; items are indices 0..n-1 and comparisons (m, 2) index arrays in presentation
order with P(first preferred) outcomes (see `psdistill.ranking.utils`); a judge is an `IndexJudge`,
a plain callable on such index pairs (simulated ones: `psdistill.judge.simulated.simulated_judge`).

- `pairwise`: Bradley-Terry and Thurstone Case V maximum likelihood, Laplace standard errors
  (`laplace`: from the sparse Hessian).
- `fusion`: preferences anchored to ratings (two constructions), their agreement, annotator quality.
- `pool`: the Elo reference pool (a Bradley-Terry fit against k references) that turns O(N k)
  judge calls into calibrated pseudo-scores.
- `design`: the choice of the pool's references.

Pair designs, simulated outcomes, online Elo and the calibration error that only the benchmarks
use live next to them in eval/ (pair_designs.py, elo.py).
"""
from psdistill.ranking.design import choose_references
from psdistill.ranking.fusion import (Agreement, AnnotatorQuality, FusedScores, anchor_to_ratings, annotator_quality,
                                      fuse_anchored, fuse_unified, fusion_agreement, mean_ratings)
from psdistill.ranking.pairwise import PairwiseFit, fit_bradley_terry, fit_thurstone
from psdistill.ranking.pool import PoolResult, ReferencePoolConfig, pair_confidence, run_reference_pool, to_rating_scale
from psdistill.ranking.utils import ConvergenceError, IndexJudge, check_comparisons, check_connected

__all__ = [
    # pairwise models
    "PairwiseFit", "fit_bradley_terry", "fit_thurstone",
    # fusion
    "FusedScores", "Agreement", "AnnotatorQuality", "mean_ratings", "anchor_to_ratings", "fuse_anchored",
    "fuse_unified", "fusion_agreement", "annotator_quality",
    # reference pool
    "ReferencePoolConfig", "PoolResult", "run_reference_pool", "pair_confidence", "to_rating_scale",
    "choose_references",
    # helpers
    "ConvergenceError", "IndexJudge", "check_comparisons", "check_connected",
]
