"""Rating-anchored fusion, annotator quality and pair plans."""
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import norm, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # the benchmarks' pair designs
from pair_designs import band_pair_count, locally_dense_pairs, random_pairs, simulate_comparisons  # noqa: E402

from psdistill.core.errors import DataError  # noqa: E402
from psdistill.ranking import (anchor_to_ratings, annotator_quality, choose_references, fuse_anchored,  # noqa: E402
                               fuse_unified, fusion_agreement, mean_ratings)


def _panel(n=40, annotators=5, seed=0):
    """Known quality q; Thurstone comparisons; ratings 5.5 + 1.5 q + N(0, 0.8) on a 1-10 scale,
    each annotator rating 70% of the items (PPaint-like: every item has both signals)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=n)
    pairs = random_pairs(n, min(600, n * (n - 1) // 2), seed=seed)
    y = simulate_comparisons(q, pairs, "thurstone", seed=seed + 1)
    ratings = np.clip(np.round(5.5 + 1.5 * q + rng.normal(scale=0.8, size=(annotators, n))), 1, 10)
    ratings[rng.random((annotators, n)) > 0.7] = np.nan
    return q, pairs, y, ratings


def test_two_independent_constructions_agree_and_recover_the_truth():
    q, pairs, y, ratings = _panel()
    # hard outcomes of 600 pairs leave some item unbeaten (no ML estimate): a weak prior for BT;
    # in the unified fit the ratings keep every score finite
    anchored = fuse_anchored(40, pairs, y, ratings, alpha=0.1)
    unified = fuse_unified(40, pairs, y, ratings)
    for fused in (anchored, unified):
        assert spearmanr(fused.scores, q)[0] > 0.9
        assert abs(np.nanmean(ratings) - fused.scores.mean()) < 0.3  # on the rating scale
    agree = fusion_agreement(anchored.scores, unified.scores)
    assert agree.srcc > 0.95 and agree.plcc > 0.95 and agree.mad < 0.35
    # ratings are 1.5 per unit of q, and Thurstone's unit is q itself
    assert unified.slope == pytest.approx(1.5, rel=0.25)
    assert 0.5 < unified.rating_sd < 1.2


def test_unified_fit_maximises_the_joint_likelihood():
    _, pairs, y, ratings = _panel(n=15, seed=3)
    fused = fuse_unified(15, pairs, y, ratings)
    rater, item = np.nonzero(~np.isnan(ratings))

    def loglik(q, a, b, sd):  # written independently of the library
        d = q[pairs[:, 0]] - q[pairs[:, 1]]
        comp = np.sum(y * norm.logcdf(d) + (1 - y) * norm.logcdf(-d))
        return comp + np.sum(norm.logpdf(ratings[rater, item], a * q[item] + b, sd))

    x = (fused.latent, fused.slope, fused.intercept, fused.rating_sd)
    best = loglik(*x)
    rng = np.random.default_rng(0)
    for _ in range(20):
        step = 1e-3 * rng.normal(size=18)
        assert loglik(x[0] + step[:15], x[1] + step[15], x[2] + step[16], x[3] * np.exp(step[17])) <= best + 1e-9


def test_anchoring_recovers_an_exact_affine_map_and_checks_direction():
    latent = np.array([-1.0, 0.0, 0.5, 2.0])
    ratings = np.array([[1.0, 3.0, np.nan, 7.0], [1.0, np.nan, 4.0, 7.0]])  # = 3 + 2 * latent
    scores, slope, intercept = anchor_to_ratings(latent, ratings)
    assert (slope, intercept) == pytest.approx((2.0, 3.0))
    np.testing.assert_allclose(scores, 3 + 2 * latent)
    mean, count = mean_ratings(ratings, 4)
    np.testing.assert_allclose(mean, [1, 3, 4, 7])
    np.testing.assert_array_equal(count, [2, 1, 1, 2])
    with pytest.raises(DataError, match="decrease"):
        anchor_to_ratings(latent, -ratings)
    with pytest.raises(DataError, match="shape"):
        anchor_to_ratings(latent, np.ones(3))


def test_annotator_quality_on_a_hand_checked_example():
    pairs = np.array([[0, 1], [1, 2], [2, 0],    # annotator 0: a cycle 0 > 1 > 2 > 0
                      [0, 1], [1, 2], [0, 2],    # annotator 1: 0 > 1 > 2, transitive
                      [3, 0]])                   # annotator 1: 3 > 0, a soft 0.75
    y = np.array([1, 1, 1, 1, 1, 1, 0.75])
    who = np.array([0, 0, 0, 1, 1, 1, 1])
    consensus = np.array([3.0, 2.0, 1.0, 0.0])  # 0 > 1 > 2 > 3
    ratings = np.array([[9, 5, 5, np.nan],      # annotator 0 rates 1 and 2 equally
                        [9, 8, 7, 1]])
    qa = annotator_quality(4, pairs, y, who, consensus, ratings)
    np.testing.assert_array_equal(qa.n_comparisons, [3, 4])
    # annotator 0 agrees on (0,1), (1,2), not on 2 > 0: 2/3; annotator 1: 1, 1, 1 and 1 - 0.75
    np.testing.assert_allclose(qa.consensus_agreement, [2 / 3, 3.25 / 4])
    np.testing.assert_array_equal(qa.circular_triads, [1, 0])
    np.testing.assert_array_equal(qa.complete_triads, [1, 1])  # {0,1,2}; {0,1,3} lacks the pair (1,3)
    np.testing.assert_allclose(qa.intransitivity, [1.0, 0.0])
    # own ratings: annotator 0 has (0,1) agreeing and (2,0) disagreeing, (1,2) tied -> 1/2;
    # annotator 1 agrees on its three transitive pairs and rates 3 below 0 -> (3 + 0.25) / 4
    np.testing.assert_allclose(qa.rating_consistency, [0.5, 3.25 / 4])
    np.testing.assert_array_equal(qa.n_rating_pairs, [2, 4])


def test_locally_dense_design_meets_the_ppaint_budget():
    groups = np.repeat([0, 1, 2], 50)
    order = np.random.default_rng(0).random(150)
    pairs = locally_dense_pairs(groups, 612, cross_group_pairs=40, order=order, seed=1)
    assert band_pair_count(50, 14) == 595 and band_pair_count(50, 15) == 630
    key = {tuple(sorted(p)) for p in pairs.tolist()}
    assert len(pairs) == len(key) == 3 * 612 + 40
    within = groups[pairs[:, 0]] == groups[pairs[:, 1]]
    assert within.sum() == 3 * 612
    rank = np.empty(150, int)
    for g in range(3):
        members = np.flatnonzero(groups == g)
        rank[members[np.argsort(order[members])]] = np.arange(50)
    dist = np.abs(rank[pairs[within, 0]] - rank[pairs[within, 1]])
    assert dist.max() == 15 and np.sum(dist == 15) == 3 * 17  # the full band h = 14, then 17 at distance 15
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(150, 150))
    assert connected_components(graph, directed=False)[0] == 1
    first_shown = pairs[:, 0] < pairs[:, 1]
    assert 0.4 < first_shown.mean() < 0.6  # presentation order is balanced


def test_random_pairs_and_references():
    pairs = random_pairs(30, 100, seed=2)
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 100
    graph = coo_matrix((np.ones(100), (pairs[:, 0], pairs[:, 1])), shape=(30, 30))
    assert connected_components(graph, directed=False)[0] == 1
    refs = choose_references(100, 5, prior=np.arange(100.0)[::-1], seed=0)
    assert sorted((99 - refs) // 20) == [0, 1, 2, 3, 4]  # one reference per quintile of the prior
    with pytest.raises(DataError, match="k: need 2 <= k"):
        choose_references(10, 11)
