"""The reference pool on simulated judges: accuracy, linear cost, batching, determinism and
calibrated pair confidences; plus pair_confidence and to_rating_scale."""
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # the benchmarks' pair designs
from pair_designs import expected_calibration_error, reference_pool_pairs  # noqa: E402

from psdistill.core.errors import ConfigError, DataError  # noqa: E402
from psdistill.judge.simulated import simulated_judge  # noqa: E402
from psdistill.ranking import ReferencePoolConfig, pair_confidence, run_reference_pool, to_rating_scale  # noqa: E402


def _quality(n, seed=1):
    return np.random.default_rng(seed).normal(size=n)


class Recorder:
    """Wraps a judge and keeps every batch it was asked."""

    def __init__(self, judge):
        self.judge, self.calls = judge, []

    def __call__(self, pairs):
        self.calls.append(np.array(pairs))
        return self.judge(pairs)


def _ece(result, q, seed=0, n=20000):
    ij = np.random.default_rng(seed).integers(0, len(q), (n, 2))
    ij = ij[ij[:, 0] != ij[:, 1]]
    return expected_calibration_error(pair_confidence(result.mu, result.var, ij[:, 0], ij[:, 1]),
                                      q[ij[:, 0]] > q[ij[:, 1]])


@pytest.mark.parametrize("kind", ["constant", "graded"])
def test_pool_ranks_items_from_a_judge_with_accuracy_085(kind):
    q = _quality(500)
    judge = simulated_judge(q, accuracy=0.85, position_bias=0.3, kind=kind, seed=3)
    res = run_reference_pool(500, judge, ReferencePoolConfig(strategy="adaptive", k=32, max_comparisons_per_item=10))
    assert spearmanr(res.mu, q)[0] >= 0.9
    assert res.position_bias == pytest.approx(0.3, abs=0.05)
    assert np.all(res.var > 0) and len(res.comparisons) <= 32 * 31 + 468 * 2 * 10


def test_cost_grows_linearly_with_the_number_of_items():
    per_item = {}
    for n in (200, 800):
        cost = []
        for seed in range(3):  # the stopping point depends on the draw of references: average
            q = _quality(n, seed=n + seed)
            res = run_reference_pool(n, simulated_judge(q, 0.85, kind="graded", seed=seed),
                                     ReferencePoolConfig(strategy="adaptive", k=12, seed=seed))
            cost.append((len(res.comparisons) - 12 * 11) / (n - 12))  # beyond the round-robin
            assert cost[-1] <= 2 * 12  # never more than every reference in both orders
        per_item[n] = np.mean(cost)
    assert 0.8 < per_item[800] / per_item[200] < 1.25, per_item  # all pairs would be 4x per item
    fixed = reference_pool_pairs(800, np.arange(12))
    assert len(fixed) == 12 * 11 + 788 * 12 * 2


def test_adaptive_rounds_are_batched_one_pair_per_unfinished_item():
    q = _quality(300)
    rec = Recorder(simulated_judge(q, 0.85, kind="graded", seed=4))
    res = run_reference_pool(300, rec, ReferencePoolConfig(strategy="adaptive", k=10, max_comparisons_per_item=6,
                                                           stop_information_gain=0.3))
    assert res.n_judge_calls == len(rec.calls) <= 1 + 6
    refs = set(res.reference_ids.tolist())
    calib = rec.calls[0]
    assert len(calib) == 10 * 9 and set(calib.ravel().tolist()) == refs  # both orders of all 45 pairs
    assert {tuple(p) for p in calib} == {(a, b) for a in refs for b in refs if a != b}
    seen = set()
    for batch in rec.calls[1:]:
        half = len(batch) // 2
        np.testing.assert_array_equal(batch[half:], batch[:half, ::-1])  # each pair in both orders
        items = batch[:half, 0]
        assert len(set(items.tolist())) == half and not refs & set(items.tolist())
        assert set(batch[:half, 1].tolist()) <= refs
        pairs = set(map(tuple, batch[:half].tolist()))
        assert not pairs & seen  # a pair is never asked twice
        seen |= pairs
    assert len(rec.calls[-1]) < len(rec.calls[1])  # items finish early


def test_the_stop_is_relative_to_what_the_judge_can_tell():
    """An absolute posterior sd of 0.3 stopped every item after one reference with a constant judge of
    accuracy 0.70 (its references spread sd ~0.25; SRCC 0.30). Relative information: with a weak
    judge every reference is about as informative, so an item meets about 1 / 0.09 = 11 of the 16 (0.7x the
    fixed pool's calls); with a strong graded judge the distant ones carry little and items stop well before."""
    q = _quality(600, seed=5)
    weak_judge = simulated_judge(q, 0.70, 0.3, kind="constant", seed=1)
    weak = run_reference_pool(600, weak_judge, ReferencePoolConfig(strategy="adaptive", k=16))
    strong = run_reference_pool(600, simulated_judge(q, 0.95, 0.3, kind="graded", seed=1),
                                ReferencePoolConfig(strategy="adaptive", k=16))
    fixed = run_reference_pool(600, weak_judge, ReferencePoolConfig(k=16, strategy="fixed"))
    met_weak = np.delete(weak.n_references_met, weak.reference_ids)
    met_strong = np.delete(strong.n_references_met, strong.reference_ids)
    assert met_weak.min() >= 8 and 10 <= met_weak.mean() <= 11.5
    assert met_strong.mean() < 0.7 * met_weak.mean()
    assert spearmanr(weak.mu, q)[0] > spearmanr(fixed.mu, q)[0] - 0.06  # 11 of 16 references, chosen
    assert spearmanr(strong.mu, q)[0] > 0.98


def test_same_seed_and_answers_replay_the_same_pairs():
    q = _quality(200)
    judge = simulated_judge(q, 0.8, 0.2, kind="constant", seed=5)
    cfg = ReferencePoolConfig(strategy="adaptive", k=8, max_comparisons_per_item=5, seed=7)
    a, b = run_reference_pool(200, judge, cfg), run_reference_pool(200, judge, cfg)
    np.testing.assert_array_equal(a.comparisons, b.comparisons)
    np.testing.assert_array_equal(a.mu, b.mu)
    other = run_reference_pool(200, judge, ReferencePoolConfig(strategy="adaptive", k=8, max_comparisons_per_item=5, seed=8))
    assert set(other.reference_ids.tolist()) != set(a.reference_ids.tolist())


def test_pair_confidences_are_calibrated_on_simulation():
    q = _quality(600, seed=2)
    graded = run_reference_pool(600, simulated_judge(q, 0.85, 0.3, kind="graded", seed=6),
                                ReferencePoolConfig(strategy="adaptive", k=16, max_comparisons_per_item=8))
    fixed = run_reference_pool(600, simulated_judge(q, 0.85, 0.3, kind="constant", seed=6),
                               ReferencePoolConfig(k=16, strategy="fixed"))
    assert _ece(graded, q) <= 0.03
    assert _ece(fixed, q) <= 0.03


def test_single_order_placement_removes_the_measured_position_bias():
    q = _quality(400, seed=3)
    judge = simulated_judge(q, 0.85, position_bias=0.8, kind="graded", seed=8)
    one = run_reference_pool(400, judge, ReferencePoolConfig(k=10, strategy="fixed", both_orders=False))
    two = run_reference_pool(400, judge, ReferencePoolConfig(k=10, strategy="fixed"))
    assert len(one.comparisons) == 90 + 390 * 10 and len(two.comparisons) == 90 + 390 * 20
    assert spearmanr(one.mu, q)[0] > 0.9
    assert np.abs(one.mu - two.mu).max() < 0.05 * np.ptp(two.mu)


def test_prior_scores_choose_references_across_the_range():
    q = _quality(400, seed=4)
    noisy_prior = q + np.random.default_rng(0).normal(scale=0.5, size=400)
    res = run_reference_pool(400, simulated_judge(q, 0.85, kind="graded"), ReferencePoolConfig(strategy="adaptive", k=10),
                             prior=noisy_prior)
    ranks = np.argsort(np.argsort(noisy_prior))[res.reference_ids]
    assert np.all(np.diff(np.sort(ranks)) <= 2 * 40)  # one per stratum of 40 items
    assert spearmanr(res.mu, q)[0] > 0.9


def test_pair_confidence_is_the_posterior_probability():
    mu, var = np.array([0.0, 1.0, 1.0, 3.0]), np.array([1.0, 3.0, 0.0, 0.0])
    i, j = np.array([1, 0, 2, 2]), np.array([0, 1, 2, 3])
    c = pair_confidence(mu, var, i, j)
    np.testing.assert_allclose(c, [ndtr(1 / 2), ndtr(-1 / 2), 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(pair_confidence(mu, var, j, i) + c, 1.0)
    # the same gap is surer between tight posteriors than loose ones
    assert pair_confidence([1, 0], [0.01, 0.01], 0, 1) > pair_confidence([1, 0], [1, 1], 0, 1) > 0.5


def test_to_rating_scale_with_and_without_anchors():
    mu, var = np.array([-2.0, 0.0, 1.0, 2.0]), np.array([0.1, 0.2, 0.3, 0.4])
    s, v = to_rating_scale(mu, var, 1, 9)
    np.testing.assert_allclose(s, [1, 5, 7, 9])
    np.testing.assert_allclose(v, var * 4)
    anchors = np.array([np.nan, 5.0, 6.5, np.nan])  # rating = 5 + 1.5 mu on the anchored items
    s, v = to_rating_scale(mu, var, 1, 10, anchors=anchors)
    np.testing.assert_allclose(s, 5 + 1.5 * mu)
    np.testing.assert_allclose(v, 2.25 * var)
    with pytest.raises(DataError, match="ratings decrease"):
        to_rating_scale(mu, var, 1, 10, anchors=np.array([np.nan, 6.5, 5.0, np.nan]))
    with pytest.raises(DataError, match="at least two rated"):
        to_rating_scale(mu, var, 1, 10, anchors=np.array([np.nan, 6.5, np.nan, np.nan]))


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 2}, "^k: need an integer >= 3"),
    ({"k": 8, "max_comparisons_per_item": 9}, "^max_comparisons_per_item: need 1 <= value <= k=8"),
    ({"strategy": "fixed", "max_comparisons_per_item": 4}, "^max_comparisons_per_item: only the adaptive"),
    ({"strategy": "greedy"}, r"^strategy: 'greedy' is not one of \['adaptive', 'fixed', 'plugin'\]"),
    ({"stop_information_gain": -0.1}, "^stop_information_gain"),
    ({"stop_sd": 0.3}, "^stop_sd: removed; use stop_information_gain"),
    ({"stop_place_error": 0.0}, r"^stop_place_error: need a probability in \(0, 1\]"),
    ({"alpha": 0.0}, "^alpha"),
])
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ReferencePoolConfig(**kwargs)


def test_a_strategy_is_one_function_in_the_table(monkeypatch):
    """A new strategy, registered by one table entry: every item meets only its nearest reference by
    prior mean, in one round; the pool then asks exactly those pairs. One asking a pair twice is refused."""
    from psdistill.ranking.pool import STRATEGIES

    def nearest(state, cfg):
        if state.round:
            return state.active[:0], state.active[:0]
        return state.active, np.argmin(np.abs(state.mu[:, None] - state.ref_mu[None, :]), axis=1)

    monkeypatch.setitem(STRATEGIES, "nearest", nearest)
    q = _quality(60)
    res = run_reference_pool(60, simulated_judge(q, 0.85), ReferencePoolConfig(k=5, strategy="nearest"))
    others = np.setdiff1d(np.arange(60), res.reference_ids)
    assert res.n_judge_calls == 2 and len(res.comparisons) == 5 * 4 + 2 * 55  # round robin + both orders
    np.testing.assert_array_equal(res.n_references_met[others], 1)
    monkeypatch.setitem(STRATEGIES, "again", lambda state, cfg: (state.active, np.zeros_like(state.active)))
    with pytest.raises(ValueError, match="'again' asked for a pair judged before"):
        run_reference_pool(60, simulated_judge(q, 0.85), ReferencePoolConfig(k=5, strategy="again"))


def test_bad_judge_output_and_too_few_items_raise():
    with pytest.raises(DataError, match="judge: must return one probability"):
        run_reference_pool(50, lambda pairs: np.full(len(pairs) - 1, 0.5), ReferencePoolConfig(k=4))
    with pytest.raises(DataError, match="judge: must return one probability"):
        run_reference_pool(50, lambda pairs: np.full(len(pairs), np.nan), ReferencePoolConfig(k=4))
    with pytest.raises(DataError, match="more items than references"):
        run_reference_pool(4, lambda pairs: np.full(len(pairs), 0.5), ReferencePoolConfig(k=4))


def test_place_error_is_the_posterior_mass_outside_the_neighbouring_references():
    from psdistill.ranking.pool_adaptive import place_error
    refs = np.array([1.0, -1.0, 0.0])  # unsorted, as the pool holds them
    m, v = np.array([0.3, -2.0, 0.5]), np.array([0.04, 0.25, 1.0])
    expected = [ndtr((0.0 - 0.3) / 0.2) + ndtr((0.3 - 1.0) / 0.2),  # between 0 and 1
                ndtr((-2.0 + 1.0) / 0.5),  # below the lowest: only its upper side
                ndtr((0.0 - 0.5) / 1.0) + ndtr((0.5 - 1.0) / 1.0)]
    np.testing.assert_allclose(place_error(m, v, refs), expected, rtol=1e-12)


def test_a_settled_place_keeps_a_weak_judges_items_placing_and_saves_a_strong_judges_calls():
    fixed_cfg = dict(k=12, strategy="fixed")
    out = {}
    for acc in (0.65, 0.95):
        q = _quality(400, seed=7)
        judge = simulated_judge(q, acc, position_bias=0.3, kind="graded", seed=7)
        fixed, gain, place = (run_reference_pool(400, judge, ReferencePoolConfig(**c)) for c in (
            fixed_cfg, {"k": 12, "strategy": "adaptive", "stop_information_gain": 0.2},
            {"k": 12, "strategy": "adaptive", "stop_place_error": 0.5}))
        out[acc] = [(len(r.comparisons), spearmanr(r.mu, q)[0]) for r in (fixed, gain, place)]
    (f_calls, f_srcc), (g_calls, g_srcc), (p_calls, p_srcc) = out[0.65]
    # a cheap gain rule alone (about 5 of 12 references) gives up SRCC; the settled place does not
    assert g_srcc < f_srcc - 0.02 and p_srcc > f_srcc - 0.01
    assert g_calls < p_calls <= f_calls
    (f_calls, f_srcc), _, (p_calls, p_srcc) = out[0.95]
    assert p_calls < 0.7 * f_calls and p_srcc > f_srcc - 0.01  # a strong judge's items settle early


@pytest.mark.parametrize("kind, accuracy, bound", [("constant", 0.95, 0.021), ("graded", 0.90, 0.008)])
def test_the_joint_refit_calibrates_the_adaptive_pools_pair_confidences(kind, accuracy, bound):
    """Reference scores frozen at the round robin (each from k - 1 judgments) left their error in every item's
    place: mean ECE over these six seeds 0.025 (constant) and 0.011 (graded); refit on every judgment, 0.018 and 0.005."""
    eces = []
    for seed in range(6):
        q = np.random.default_rng(1000 + seed).normal(size=600)
        res = run_reference_pool(600, simulated_judge(q, accuracy, 0.3, kind=kind, seed=seed),
                                 ReferencePoolConfig(strategy="adaptive", k=16, seed=seed))
        eces.append(_ece(res, q, seed))
    assert np.mean(eces) <= bound, np.round(eces, 3)


def test_joint_posterior_is_the_map_and_its_inverse_hessian():
    """`joint_posterior` against scipy's optimiser on the same log-posterior and a dense inverse of its Hessian,
    built term by term."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    from psdistill.ranking.pool_fit import Scale, joint_posterior
    rng = np.random.default_rng(0)
    k, n, phi, alpha = 4, 6, 0.7, 0.01
    ii, jj = np.triu_indices(k, 1)
    y_rr = rng.uniform(0.1, 0.9, len(ii))
    y = rng.uniform(0.05, 0.95, (n, k))
    y[rng.uniform(size=(n, k)) < 0.4] = np.nan
    y[:, 0] = rng.uniform(0.05, 0.95, n)  # every item meets a reference
    m0, v0 = rng.normal(size=n), rng.uniform(0.3, 2.0, n)
    rows, cols = np.nonzero(~np.isnan(y))
    pairs = np.concatenate([np.column_stack([ii, jj]), np.column_stack([k + rows, cols])])  # (winner-side, other)
    outcome = np.concatenate([y_rr, y[rows, cols]])

    def neg_log_post(theta):
        d = theta[pairs[:, 0]] - theta[pairs[:, 1]]
        ll = np.sum(outcome * log_expit(d) + (1 - outcome) * log_expit(-d)) / phi
        return -ll + alpha * np.sum(theta[:k] ** 2) / 2 + np.sum((theta[k:] - m0) ** 2 / (2 * v0))

    opt = minimize(neg_log_post, np.zeros(k + n), method="BFGS", options={"gtol": 1e-10})
    scale = Scale(mu=np.zeros(k), cov=np.eye(k), bias=0.0, phi=phi, ii=ii, jj=jj, y=y_rr)
    fit = joint_posterior(scale, y, m0, v0, alpha, np.zeros(n), phi)
    np.testing.assert_allclose(np.concatenate([fit.t, fit.s]), opt.x, atol=1e-5)
    hess = np.diag(np.concatenate([np.full(k, alpha), 1 / v0]))
    for (a, b), d in zip(pairs, opt.x[pairs[:, 0]] - opt.x[pairs[:, 1]]):
        w = expit(d) * expit(-d) / phi
        hess[a, a] += w
        hess[b, b] += w
        hess[a, b] -= w
        hess[b, a] -= w
    np.testing.assert_allclose(np.concatenate([fit.var_t, fit.var_s]), np.diag(np.linalg.inv(hess)), rtol=1e-4)
