"""Pool strategy "plugin" (psdistill/ranking/pool_plugin.py): its bin posterior and accuracy against
brute force, its choice of likelihood, its reference order from the answers, and decisions that
depend only on the answers received, however a judge groups or orders them."""
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import norm, spearmanr

from psdistill.core.errors import ConfigError
from psdistill.judge.simulated import simulated_judge
from psdistill.ranking import ReferencePoolConfig, run_reference_pool
from psdistill.ranking.pool_fit import Scale
from psdistill.ranking.pool_plugin import bin_log_joint, bin_log_prior, fit_step, judge_shape


class Scrambled:
    """A judge whose every call is split into chunks answered in a shuffled order of arrival, as ranks
    of a distributed judge return them, and reassembled in the caller's order."""

    def __init__(self, judge, seed):
        self.judge, self.rng, self.calls, self.chunks = judge, np.random.default_rng(seed), 0, 0

    def __call__(self, pairs):
        pairs = np.asarray(pairs)
        parts = np.array_split(self.rng.permutation(len(pairs)), self.rng.integers(2, 7))
        out = np.full(len(pairs), np.nan)
        for part in self.rng.permutation(len(parts)):
            out[parts[part]] = self.judge(pairs[parts[part]])
        self.calls, self.chunks = self.calls + 1, self.chunks + len(parts)
        return out


@pytest.mark.parametrize("kind", ["constant", "graded"])
def test_scores_do_not_depend_on_how_the_judge_groups_or_orders_its_answers(kind):
    q = np.random.default_rng(4).normal(size=240)
    judge = simulated_judge(q, 0.7, position_bias=0.3, kind=kind, seed=4)
    cfg = ReferencePoolConfig(k=8, strategy="plugin", seed=4)
    plain = run_reference_pool(240, judge, cfg)
    for seed in (0, 1):
        scrambled = Scrambled(judge, seed)
        res = run_reference_pool(240, scrambled, cfg)
        assert scrambled.chunks > scrambled.calls  # the calls were really split
        np.testing.assert_array_equal(res.comparisons, plain.comparisons)  # the same pairs asked, in the same rounds
        np.testing.assert_array_equal(res.mu, plain.mu)
        np.testing.assert_array_equal(res.var, plain.var)


def _scale(k, y_rr):
    ii, jj = np.triu_indices(k, 1)
    return Scale(mu=np.arange(k, dtype=float), cov=np.eye(k) * 0.01, bias=0.0, phi=1.0, ii=ii, jj=jj,
                 y=np.asarray(y_rr, float))


def test_bin_posterior_is_the_binary_channel_posterior_by_brute_force():
    """Three references in the order (2, 0, 1), an item prior N(0.3, 0.8) on their scale and answers
    with a gap and a tie: each bin's prior mass times the product of the channel's probabilities."""
    edges = np.array([-1.0, 0.2, 1.5])
    rank = np.array([1, 2, 0])  # reference 0 is the middle one, 1 the highest, 2 the lowest
    y = np.array([[0.8, np.nan, 0.3], [0.2, 0.2, 0.5], [np.nan, np.nan, np.nan]])
    a, m0, v0 = 0.7, 0.3, 0.8
    log_prior = bin_log_prior(np.full(3, m0), np.full(3, v0), edges)
    got = np.exp(bin_log_joint(y, rank, a, log_prior))
    bounds = [-np.inf, *edges, np.inf]
    for n in range(3):
        want = []
        for b in range(4):
            p = norm.cdf(bounds[b + 1], m0, np.sqrt(v0)) - norm.cdf(bounds[b], m0, np.sqrt(v0))
            for r in range(3):
                if np.isnan(y[n, r]) or y[n, r] == 0.5:
                    continue  # not asked, or no side taken
                p *= a if (b > rank[r]) == (y[n, r] > 0.5) else 1 - a
            want.append(p)
        np.testing.assert_allclose(got[n], want, rtol=1e-10)


def test_accuracy_is_the_maximum_likelihood_one_and_the_order_is_found_from_the_answers():
    """Items answered by a channel of accuracy 0.75 about four references whose true order is
    (0, 1, 2, 3): started from scores that swap references 1 and 2, the fit restores the order, and its
    accuracy maximises the marginal likelihood computed bin by bin in plain Python."""
    k, n, acc = 4, 200, 0.75
    rng = np.random.default_rng(0)
    start = np.array([-1.0, 0.5, -0.2, 1.2])  # references 1 and 2 swapped
    mass = np.diff(norm.cdf([-np.inf, *np.sort(start), np.inf]))  # the items' N(0, 1) prior between them
    bins = rng.choice(k + 1, n, p=mass)
    truth = bins[:, None] > np.arange(k)[None, :]
    said = np.where(rng.random((n, k)) < acc, truth, ~truth)
    y = np.where(said, 0.75, 0.25)
    y[rng.random((n, k)) < 0.3] = np.nan  # not every pair asked
    ii, jj = np.triu_indices(k, 1)
    scale = _scale(k, np.where(rng.random(len(ii)) < acc, 0.25, 0.75))  # ii < jj: jj is better
    prior_mu, prior_var = np.zeros(n), np.full(n, 1.0)
    model = fit_step(y, scale, start, prior_mu, prior_var)
    np.testing.assert_array_equal(model.rank, np.arange(k))

    def log_lik(a):
        total = 0.0
        for row in y:
            total += np.log(sum(mass[b] * np.prod([a if (b > r) == (row[r] > 0.5) else 1 - a
                                                   for r in range(k) if not np.isnan(row[r])])
                                for b in range(k + 1)))
        for i, j, v in zip(ii, jj, scale.y):
            total += np.log(a if (v > 0.5) == (i > j) else 1 - a)
        return total

    best = minimize_scalar(lambda a: -log_lik(a), bounds=(0.55, 0.95), method="bounded").x
    assert model.accuracy == pytest.approx(best, abs=1e-3)
    assert abs(model.accuracy - acc) < 0.05


def test_the_likelihood_is_chosen_from_the_answers():
    q = np.random.default_rng(1).normal(size=100)
    for kind, shape in (("constant", "step"), ("graded", "logistic")):
        res = run_reference_pool(100, simulated_judge(q, 0.8, 0.3, kind=kind, seed=1),
                                 ReferencePoolConfig(k=8, strategy="fixed"))
        ii, jj = np.triu_indices(8, 1)
        p = res.comparisons[: len(ii) * 2, 2]  # the round robin, both orders
        l_ab, l_ba = np.log(p[: len(ii)] / (1 - p[: len(ii)])), np.log(p[len(ii):] / (1 - p[len(ii):]))
        assert judge_shape(_scale(8, 1 / (1 + np.exp(-(l_ab - l_ba) / 2)))) == shape


@pytest.mark.parametrize("kind, acc", [("constant", 0.65), ("graded", 0.8)])
def test_plugin_keeps_the_fixed_pools_srcc_at_07x_its_calls(kind, acc):
    q = np.random.default_rng(2).normal(size=400)
    judge = simulated_judge(q, acc, 0.3, kind=kind, seed=2)
    fixed = run_reference_pool(400, judge, ReferencePoolConfig(k=12, strategy="fixed", seed=2))
    plug = run_reference_pool(400, judge, ReferencePoolConfig(k=12, strategy="plugin", seed=2))
    assert len(plug.comparisons) <= 0.7 * len(fixed.comparisons)
    assert spearmanr(plug.mu, q)[0] >= spearmanr(fixed.mu, q)[0] - 0.02
    others = np.setdiff1d(np.arange(400), plug.reference_ids)
    met = plug.n_references_met[others]
    assert met.min() >= 1 and met.max() <= 12 and met.mean() == pytest.approx(0.69 * 12, abs=0.01)


@pytest.mark.parametrize("budget", [0, 1.5, True, "half"])
def test_budget_must_be_a_share(budget):
    with pytest.raises(ConfigError, match=r"^budget: need a share of the fixed pool's pairs in \(0, 1\]"):
        ReferencePoolConfig(strategy="plugin", budget=budget)

