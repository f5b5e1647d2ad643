"""The preference engine: pairwise-comparison models, rating fusion and the Elo reference pool.

Pure numpy/scipy; items are indices 0..n-1 and comparisons (m, 2) index arrays in presentation
order with P(first preferred) outcomes (see `psdistill.ranking.utils`); a judge is an `IndexJudge`,
a plain callable on such index pairs (simulated ones: `psdistill.judge.simulated.simulated_judge`).

- `pairwise`: Bradley-Terry and Thurstone Case V maximum likelihood, Laplace standard errors
  (`laplace`: from the sparse Hessian), bootstrap intervals.
- `elo`: online Elo, averaged over shuffled orders.
- `fusion`: preferences anchored to ratings (two constructions), their agreement, annotator quality.
- `pool`: the Elo reference pool (a Bradley-Terry fit against k references) that turns O(N k)
  judge calls into calibrated pseudo-scores.
- `design`: pair plans (locally dense, random, reference pool).
"""
from psdistill.ranking.design import (band_pair_count, choose_references, locally_dense_pairs, random_pairs,
                                      reference_pool_pairs)
from psdistill.ranking.elo import fit_elo
from psdistill.ranking.fusion import (Agreement, AnnotatorQuality, FusedScores, anchor_to_ratings, annotator_quality,
                                      fuse_anchored, fuse_unified, fusion_agreement, mean_ratings)
from psdistill.ranking.pairwise import PairwiseFit, bootstrap_fit_ci, fit_bradley_terry, fit_thurstone
from psdistill.ranking.pool import PoolResult, ReferencePoolConfig, pair_confidence, run_reference_pool, to_rating_scale
from psdistill.ranking.utils import (ConvergenceError, IndexJudge, check_comparisons, check_connected,
                                     expected_calibration_error, simulate_comparisons)

__all__ = [
    # pairwise models
    "PairwiseFit", "fit_bradley_terry", "fit_thurstone", "bootstrap_fit_ci", "fit_elo",
    # fusion
    "FusedScores", "Agreement", "AnnotatorQuality", "mean_ratings", "anchor_to_ratings", "fuse_anchored",
    "fuse_unified", "fusion_agreement", "annotator_quality",
    # reference pool
    "ReferencePoolConfig", "PoolResult", "run_reference_pool", "pair_confidence", "to_rating_scale",
    # pair plans
    "band_pair_count", "locally_dense_pairs", "random_pairs", "choose_references", "reference_pool_pairs",
    # helpers
    "ConvergenceError", "IndexJudge", "check_comparisons", "check_connected", "simulate_comparisons",
    "expected_calibration_error",
]
