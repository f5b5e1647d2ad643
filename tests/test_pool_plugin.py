"""Pool strategy "plugin" (psdistill/ranking/pool_plugin.py): its bin posterior and accuracy against
brute force, its choice of likelihood, its reference order from the answers, and decisions that
depend only on the answers received, however a judge groups or orders them."""
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import xlogy
from scipy.stats import norm, spearmanr

from psdistill.core.errors import ConfigError, DataError
from psdistill.judge.simulated import simulated_judge
from psdistill.ranking import ReferencePoolConfig, run_reference_pool
from psdistill.ranking.pool_fit import Scale, logit_gaussian_posterior
from psdistill.ranking import pair_confidence
from psdistill.ranking.pool_plugin import (bin_log_joint, bin_log_prior, bin_likelihood, fit_step, summary_variances,
                                          judge_shape, pair_probability)


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
    for kind, shape in (("constant", "step"), ("graded", "graded")):
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


def test_pair_probability_by_brute_force():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5), size=(2, 7))
    want = [sum(p[0, n, a] * p[1, n, b] * (1.0 if a > b else 0.5 if a == b else 0.0)
                for a in range(5) for b in range(5)) for n in range(7)]
    np.testing.assert_allclose(pair_probability(p[0], p[1]), want, rtol=1e-12)


def _step_posteriors(n, k, acc, seed):
    """Bin posteriors of n items answered by a channel of accuracy ``acc`` about every one of k references."""
    rng = np.random.default_rng(seed)
    bins = rng.integers(0, k + 1, n)
    truth = bins[:, None] > np.arange(k)[None, :]
    said = np.where(rng.random((n, k)) < acc, truth, ~truth)
    lik = bin_likelihood(k, acc)
    log_post = np.log(np.where(said[:, :, None], lik[1][None], lik[0][None])).sum(axis=1)
    post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
    return post / post.sum(axis=1, keepdims=True)


def test_summary_variances_reproduce_the_exact_pair_probabilities():
    """On pairs they were not fitted on, the confidences with the fitted variances are nearer the exact
    posterior's (cross-entropy) than with the bins' variance; items surely in adjacent bins are surely
    ordered."""
    k, n = 12, 300
    post = _step_posteriors(n, k, 0.75, seed=5)
    centre = np.arange(k + 1, dtype=float)
    mean = post @ centre
    var = np.sum(post * (centre[None, :] - mean[:, None]) ** 2, axis=1) + 1 / 12
    v = summary_variances(post, mean, var)
    ij = np.random.default_rng(99).integers(0, n, (5000, 2))
    ij = ij[ij[:, 0] != ij[:, 1]]
    exact = pair_probability(post[ij[:, 0]], post[ij[:, 1]])

    def cross_entropy(variances):
        c = np.clip(pair_confidence(mean, variances, ij[:, 0], ij[:, 1]), 1e-12, 1 - 1e-12)
        return -np.mean(exact * np.log(c) + (1 - exact) * np.log1p(-c))

    entropy = -np.mean(xlogy(exact, exact) + xlogy(1 - exact, 1 - exact))  # the least cross-entropy can be
    assert cross_entropy(v) - entropy < 0.9 * (cross_entropy(var) - entropy)  # 0.79 here

    sure = np.repeat(np.eye(k + 1), 2, axis=0)  # two items surely in each bin
    v = summary_variances(sure, np.repeat(centre, 2), np.full(2 * (k + 1), 1 / 12))
    across = pair_confidence(np.repeat(centre, 2), v, np.arange(2, 2 * (k + 1), 2), np.arange(0, 2 * k, 2))
    assert across.min() > 0.999  # each bin's item above the one below
    assert pair_confidence(centre, np.full(k + 1, 1 / 12), 1, 0) < 0.995  # the bins' own variance says less


def _logit_answers(n, k, sigma, tau, seed, share=0.6):
    """Items and references of true logit scores N(0, tau^2), answers expit(gap + N(0, sigma^2)): the
    model `logit_gaussian_posterior` assumes, with a share of the item-reference pairs asked."""
    rng = np.random.default_rng(seed)
    t_true, s_true = rng.normal(0, tau, k), rng.normal(0, tau, n)
    ii, jj = np.triu_indices(k, 1)
    y_rr = 1 / (1 + np.exp(-(t_true[ii] - t_true[jj] + sigma * rng.normal(size=len(ii)))))
    gap = s_true[:, None] - t_true[None, :] + sigma * rng.normal(size=(n, k))
    y = np.where(rng.random((n, k)) < share, 1 / (1 + np.exp(-gap)), np.nan)
    scale = Scale(mu=t_true.copy(), cov=np.eye(k), bias=0.0, phi=1.0, ii=ii, jj=jj, y=y_rr)
    return scale, y, s_true, t_true


def test_logit_gaussian_posterior_is_the_map_at_its_em_fixed_point():
    """Against a dense solve of the linear mixed model (reference scores t, the prior's line beta with a
    flat prior, items s ~ N(x beta, v0)): at the returned noise and the prior variance that reproduces the
    scores, the scores are the exact posterior mean, the variances its exact marginals, and both
    hyperparameters equal their EM updates computed from that dense posterior."""
    n, k, alpha = 40, 5, 0.01
    scale, y, _, _ = _logit_answers(n, k, sigma=0.8, tau=1.0, seed=7)
    prior_mu = np.linspace(-1, 1, n)  # an informative prior score: the prior's line is fitted too
    fit = logit_gaussian_posterior(scale, y, prior_mu, alpha)
    seen = ~np.isnan(y)
    size = k + 2 + n  # t, beta, s
    rows, logits = [], []
    for a, b, v in zip(scale.ii, scale.jj, scale.y):
        rows.append(np.eye(size)[a] - np.eye(size)[b])
        logits.append(np.log(v / (1 - v)))
    for i, r in zip(*np.nonzero(seen)):
        rows.append(np.eye(size)[k + 2 + i] - np.eye(size)[r])
        logits.append(np.log(y[i, r] / (1 - y[i, r])))
    A, logits = np.array(rows), np.array(logits)
    x = np.column_stack([np.ones(n), prior_mu])
    prior = np.zeros((size, size))  # (s - x beta)^T (s - x beta) per v0, and the ridge on t
    block = np.hstack([-x, np.eye(n)])
    prior[k:, k:] = block.T @ block
    theta = np.concatenate([fit.t, fit.s])
    rss = np.sum((logits - A[:, np.r_[0:k, k + 2:size]] @ theta) ** 2)
    sigma2 = rss / fit.deviance  # the deviance is rss / sigma^2

    def dense(v0):
        prec = A.T @ A / sigma2 + prior / v0
        prec[:k, :k] += alpha * np.eye(k) + 1 / (k * 1e-4) ** 2  # the references' mean held at 0
        cov = np.linalg.inv(prec)
        return cov @ (A.T @ logits / sigma2), cov

    v0 = np.exp(minimize_scalar(lambda lv: np.sum((dense(np.exp(lv))[0][k + 2:] - fit.s) ** 2),
                                bounds=(-8, 4), method="bounded", options={"xatol": 1e-10}).x)
    mean, cov = dense(v0)
    np.testing.assert_allclose(mean[np.r_[0:k, k + 2:size]], theta, atol=1e-5)
    np.testing.assert_allclose(np.diag(cov)[np.r_[0:k, k + 2:size]], np.r_[fit.var_t, fit.var_s], rtol=1e-4)
    dev = block @ mean[k:]
    assert np.mean(dev ** 2 + np.diag(block @ cov[k:, k:] @ block.T)) == pytest.approx(v0, rel=1e-4)
    resid = logits - A @ mean
    assert (resid @ resid + np.trace(A @ cov @ A.T)) / len(logits) == pytest.approx(sigma2, rel=1e-4)


def test_logit_gaussian_posterior_recovers_the_noise_and_is_calibrated():
    """On answers drawn from its model the fitted noise and prior spread are the true ones and the scores'
    errors are as large as their variances say (z-scores of sd 1), with a constant prior."""
    n, k, sigma, tau = 3000, 12, 1.3, 0.8
    scale, y, s_true, t_true = _logit_answers(n, k, sigma, tau, seed=3)
    fit = logit_gaussian_posterior(scale, y, np.zeros(n), 0.01)
    shift = np.mean(t_true)  # the fit's origin is the references' mean
    rss = np.sum((np.log(scale.y / (1 - scale.y)) - (fit.t[scale.ii] - fit.t[scale.jj])) ** 2)
    seen = ~np.isnan(y)
    rss += np.sum(((np.log(y / (1 - y)) - (fit.s[:, None] - fit.t[None, :]))[seen]) ** 2)
    assert np.sqrt(rss / fit.deviance) == pytest.approx(sigma, rel=0.05)
    z = (s_true - fit.s - shift) / np.sqrt(fit.var_s)
    assert np.std(z) == pytest.approx(1.0, abs=0.05) and abs(np.mean(z)) < 0.1
    assert np.std(fit.s) ** 2 + np.mean(fit.var_s) == pytest.approx(tau ** 2, rel=0.1)


def test_graded_judges_items_are_calibrated_on_its_latent_scale():
    """The plugin pool against a simulated graded judge: each item's error on the judge's latent scale
    (its perceived gap per unit of quality, origin at the references' mean) is as large as its variance
    says, z-scores of sd 1, and the fitted spread of the items is the true one."""
    z, spread = [], []
    for seed in range(3):
        q = np.random.default_rng(seed).normal(size=600)
        judge = simulated_judge(q, 0.65, 0.3, kind="graded", seed=seed)
        res = run_reference_pool(600, judge, ReferencePoolConfig(strategy="plugin", seed=seed))
        truth = judge.scale * q
        others = np.setdiff1d(np.arange(600), res.reference_ids)
        z.append((truth[others] - truth[res.reference_ids].mean() - res.mu[others]) / np.sqrt(res.var[others]))
        spread.append((np.var(res.mu[others]) + np.mean(res.var[others])) / np.var(truth))
    z = np.concatenate(z)
    assert abs(np.mean(z)) < 0.08 and np.std(z) == pytest.approx(1.0, abs=0.06)
    assert np.mean(spread) == pytest.approx(1.0, abs=0.15)


def test_a_graded_judges_comparisons_are_spread_over_the_references():
    """A weak graded judge: every reference meets about as many items (the logistic choice put them on a
    few central references and left others unmet)."""
    q = np.random.default_rng(2).normal(size=400)
    k = 12
    res = run_reference_pool(400, simulated_judge(q, 0.65, 0.3, kind="graded", seed=2),
                             ReferencePoolConfig(k=k, strategy="plugin", seed=2))
    asked = res.comparisons[k * (k - 1):, :2]  # after the round robin (both orders of k (k - 1) / 2 pairs)
    load = np.array([np.sum(asked == r) for r in res.reference_ids]) / 2  # each pair in both orders
    assert load.sum() == pytest.approx(0.69 * 12 * (400 - k), abs=1)
    assert load.min() >= 0.9 * load.mean() and load.max() <= 1.1 * load.mean()


def test_the_pool_says_what_it_learned_of_the_judge():
    """The fitted judge model against the simulated judges' truth: a constant judge's accuracy; a graded
    judge's logit noise (sd 1 by construction) and its items' spread (quality sd 1 times its scale)."""
    q = np.random.default_rng(6).normal(size=500)
    step = run_reference_pool(500, simulated_judge(q, 0.8, 0.3, kind="constant", seed=6),
                              ReferencePoolConfig(strategy="plugin", seed=6)).judge_model
    assert step["model"] == "step" and step["accuracy"] == pytest.approx(0.8, abs=0.02)
    judge = simulated_judge(q, 0.8, 0.3, kind="graded", seed=6)
    graded = run_reference_pool(500, judge, ReferencePoolConfig(strategy="plugin", seed=6)).judge_model
    assert graded["model"] == "graded" and graded["noise_sd"] == pytest.approx(1.0, abs=0.05)
    assert graded["spread_sd"] == pytest.approx(judge.scale * q.std(), rel=0.1)
    fixed = run_reference_pool(500, judge, ReferencePoolConfig(strategy="fixed", seed=6))
    assert fixed.judge_model == {"model": "logistic", "dispersion": fixed.dispersion}


@pytest.mark.parametrize("strategy", ["plugin", "fixed"])
def test_a_judge_without_preferences_is_refused(strategy):
    """Exactly 0.5, or 0.5 give or take rounding: refused; a judge that barely prefers (1e-5) is ranked."""
    cfg = ReferencePoolConfig(k=5, strategy=strategy)
    for flat in (lambda p: np.full(len(p), 0.5), lambda p: 0.5 + 1e-9 * (p[:, 0] - p[:, 1])):
        with pytest.raises(DataError, match="no preference"):
            run_reference_pool(60, flat, cfg)
    q = np.random.default_rng(0).normal(size=60)
    res = run_reference_pool(60, lambda p: 0.5 + 1e-5 * np.tanh(q[p[:, 0]] - q[p[:, 1]]), cfg)
    assert spearmanr(res.mu, q)[0] > 0.9


@pytest.mark.parametrize("budget", [0, 1.5, True, "half"])
def test_budget_must_be_a_share(budget):
    with pytest.raises(ConfigError, match=r"^budget: need a share of the fixed pool's pairs in \(0, 1\]"):
        ReferencePoolConfig(strategy="plugin", budget=budget)

