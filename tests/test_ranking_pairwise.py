"""Bradley-Terry, Thurstone and Elo fits: against choix, an independent scipy probit fit,
simulation with known parameters, and a hand-worked Elo example."""
import sys
from pathlib import Path

import choix
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # the benchmarks' Elo and simulator
from elo import fit_elo  # noqa: E402
from pair_designs import simulate_comparisons  # noqa: E402

from psdistill.core.errors import DataError  # noqa: E402
from psdistill.ranking import ConvergenceError, fit_bradley_terry, fit_thurstone  # noqa: E402


def _data(n=12, m=400, seed=0, model="bt", bias=0.0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=n)
    theta -= theta.mean()
    i, j = np.triu_indices(n, 1)
    pick = rng.integers(0, len(i), m)  # pairs drawn with replacement, in a random order
    flip = rng.random(m) < 0.5
    pairs = np.column_stack([np.where(flip, j[pick], i[pick]), np.where(flip, i[pick], j[pick])])
    return theta, pairs, simulate_comparisons(theta, pairs, model, bias, seed=seed + 2)


@pytest.mark.parametrize("alpha_choix", [0.01, 0.1, 1.0])
def test_bradley_terry_matches_choix(alpha_choix):
    _, pairs, y = _data(n=10, m=45, seed=3)
    winner_first = [(a, b) if w else (b, a) for (a, b), w in zip(pairs, y)]
    ref = choix.opt_pairwise(10, winner_first, alpha=alpha_choix, tol=1e-12)
    # choix penalises alpha_choix * |theta|^2, ours alpha/2 * |theta|^2 (prior precision alpha)
    ours = fit_bradley_terry(10, pairs, y, alpha=2 * alpha_choix, tol=1e-9).params
    np.testing.assert_allclose(ours, ref - ref.mean(), atol=1e-4)
    assert abs(ours.mean()) < 1e-6  # the optimum of a penalised fit is centred


def test_maximum_likelihood_is_centred_and_matches_choix_without_hard_prior():
    theta = np.linspace(-1, 1, 8)
    pairs = np.tile(np.column_stack(np.triu_indices(8, 1)), (4, 1))
    y = simulate_comparisons(theta, pairs, seed=5)
    winner_first = [(a, b) if w else (b, a) for (a, b), w in zip(pairs, y)]
    ref = choix.opt_pairwise(8, winner_first, alpha=1e-9, tol=1e-12)
    ours = fit_bradley_terry(8, pairs, y, tol=1e-9).params
    np.testing.assert_allclose(ours, ref - ref.mean(), atol=1e-4)


def test_laplace_standard_errors_cover_true_parameters():
    z = []
    for rep in range(20):
        theta, pairs, y = _data(n=15, m=600, seed=100 + rep)
        fit = fit_bradley_terry(15, pairs, y)
        z.append((fit.params - theta) / fit.se)
    coverage = np.mean(np.abs(np.concatenate(z)) < 1.96)
    assert 0.88 <= coverage <= 0.99, coverage


def test_thurstone_matches_a_direct_scipy_probit_fit():
    _, pairs, y = _data(n=8, m=300, seed=7, model="thurstone", bias=0.3)

    def nll(x):  # item 0 pinned at 0, then bias; written independently of the library
        theta = np.concatenate([[0.0], x[:-1]])
        d = theta[pairs[:, 0]] - theta[pairs[:, 1]] + x[-1]
        return -np.sum(y * norm.logcdf(d) + (1 - y) * norm.logcdf(-d))

    res = minimize(nll, np.zeros(8), method="BFGS", options={"gtol": 1e-9})
    theta = np.concatenate([[0.0], res.x[:-1]])
    fit = fit_thurstone(8, pairs, y, position_bias=True, tol=1e-9)
    np.testing.assert_allclose(fit.params, theta - theta.mean(), atol=1e-4)
    assert fit.position_bias == pytest.approx(res.x[-1], abs=1e-4)
    assert fit.log_likelihood == pytest.approx(-res.fun, abs=1e-6)


def test_soft_outcome_one_half_is_a_tie_and_half_a_win_each_way():
    _, pairs, y = _data(n=6, m=60, seed=9)
    soft = y.copy()
    soft[:10] = 0.5
    tie = np.zeros(len(y), bool)
    tie[:10] = True
    by_soft = fit_bradley_terry(6, pairs, soft).params
    by_tie = fit_bradley_terry(6, pairs, y, ties=tie).params
    # a tie = a win and a loss at weight 1/2 each
    split_pairs = np.concatenate([pairs[10:], pairs[:10], pairs[:10]])
    split_y = np.concatenate([y[10:], np.ones(10), np.zeros(10)])
    split_w = np.concatenate([np.ones(len(y) - 10), np.full(20, 0.5)])
    by_split = fit_bradley_terry(6, split_pairs, split_y, weights=split_w).params
    np.testing.assert_allclose(by_soft, by_tie, atol=1e-10)
    np.testing.assert_allclose(by_soft, by_split, atol=1e-5)


def test_weight_two_equals_a_repeated_comparison():
    _, pairs, y = _data(n=6, m=40, seed=11)
    w = np.ones(len(y))
    w[:5] = 2
    a = fit_bradley_terry(6, pairs, y, weights=w).params
    b = fit_bradley_terry(6, np.concatenate([pairs, pairs[:5]]), np.concatenate([y, y[:5]])).params
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("fit", [fit_bradley_terry, fit_thurstone])
def test_position_bias_is_recovered(fit):
    model = "bt" if fit is fit_bradley_terry else "thurstone"
    theta, pairs, y = _data(n=20, m=4000, seed=13, model=model, bias=0.5)
    res = fit(20, pairs, y, position_bias=True)
    assert abs(res.position_bias - 0.5) < 3 * res.position_bias_se
    assert res.position_bias_se < 0.1
    assert np.corrcoef(res.params, theta)[0, 1] > 0.95


@pytest.mark.parametrize("pairs, outcomes, match", [
    ([[0, 1], [2, 3]], None, "disconnected: 2 components"),
    ([[0, 1], [1, 1], [1, 2], [2, 3]], None, r"self-comparison in row\(s\) 1 .*item 1 with itself"),
    ([[0, 1], [1, 2], [2, 3]], [1, np.nan, 0], r"outcomes: NaN in row\(s\) 1"),
    ([[0, 1], [1, 7], [2, 3]], None, r"unknown item index in row\(s\) 1 .*0\.\.3"),
    ([[0, 1], [1, 2], [2, 3]], [1, 1.5, 0], r"must be in \[0, 1\]"),
    ([[0, 1], [1, 2], [2, 3]], None, "maximum-likelihood estimate does not exist"),
])
def test_bad_data_raises_with_a_message(pairs, outcomes, match):
    with pytest.raises(DataError, match=match):
        fit_bradley_terry(4, pairs, outcomes)


def test_regularised_fit_accepts_a_never_losing_item_and_iteration_cap_raises():
    pairs = [[0, 1], [1, 2], [2, 3]]  # a chain of wins: no maximum-likelihood estimate
    fit = fit_bradley_terry(4, pairs, alpha=0.5)
    assert np.all(np.diff(fit.params) < 0)
    _, pairs, y = _data(n=30, m=300, seed=17)
    with pytest.raises(ConvergenceError, match="raise max_iter"):
        fit_bradley_terry(30, pairs, y, max_iter=2)


def test_elo_matches_a_hand_worked_example():
    # K = 32, scale 400, everyone starts at 1500; E_a = 1 / (1 + 10^((R_b - R_a) / 400)).
    # 1) 0 beats 1: E = 0.5, change 32 * 0.5 = 16           -> R = (1516, 1484, 1500)
    # 2) 1 beats 2: E = 1 / (1 + 10^(16/400)) = 1 / 2.096478 = 0.476990,
    #    change 32 * 0.523010 = 16.7363                     -> R = (1516, 1500.7363, 1483.2637)
    # 3) 2 beats 0: gap 1516 - 1483.2637 = 32.7363, 10^(32.7363/400) = 1.207385,
    #    E = 0.453028, change 32 * 0.546972 = 17.5031       -> R = (1498.4969, 1500.7363, 1500.7668)
    # 4) 0 ties 2:  gap 1500.7668 - 1498.4969 = 2.2699, E = 1 / (1 + 10^0.0056748) = 0.496733,
    #    change 32 * (0.5 - 0.496733) = 0.1045              -> R = (1498.6014, 1500.7363, 1500.6623)
    pairs = [[0, 1], [1, 2], [2, 0], [0, 2]]
    r = fit_elo(3, pairs, [1, 1, 1, 0.5])
    np.testing.assert_allclose(r, [1498.6014, 1500.7363, 1500.6623], atol=1e-3)


def test_elo_shuffles_remove_order_dependence_and_track_bradley_terry():
    theta, pairs, y = _data(n=10, m=600, seed=19)
    rev = slice(None, None, -1)
    once, once_rev = fit_elo(10, pairs, y), fit_elo(10, pairs[rev], y[rev])
    avg, avg_rev = fit_elo(10, pairs, y, shuffles=200, seed=0), fit_elo(10, pairs[rev], y[rev], shuffles=200, seed=1)
    assert np.abs(avg - avg_rev).max() < 0.3 * np.abs(once - once_rev).max()
    assert np.corrcoef(avg, fit_bradley_terry(10, pairs, y).params)[0, 1] > 0.97
    with pytest.raises(DataError, match="disconnected"):
        fit_elo(4, [[0, 1], [2, 3]])


@pytest.mark.parametrize("weights", [False, True])
def test_newton_fit_equals_an_independent_scipy_fit_on_an_ill_conditioned_cycle(weights):
    # a long cycle (a Laplacian with condition number ~ n^2) with a position bias and no prior,
    # on which L-BFGS-B stalls short of tol=1e-10
    rng = np.random.default_rng(23)
    n = 120
    ring = np.column_stack([np.arange(n), (np.arange(n) + 1) % n])
    pairs = np.concatenate([ring, ring[:, ::-1]])
    theta = np.sin(np.linspace(0, 2 * np.pi, n, endpoint=False)) * 2
    d = theta[pairs[:, 0]] - theta[pairs[:, 1]] + 0.4
    y = 1 / (1 + np.exp(-(d + rng.normal(size=len(d)))))
    w = rng.uniform(0.5, 2.0, len(d)) if weights else np.ones(len(d))

    def nll(x):  # item 0 pinned at 0, then the bias; written independently of the library
        t = np.concatenate([[0.0], x[:-1]])
        gap = t[pairs[:, 0]] - t[pairs[:, 1]] + x[-1]
        p = 1 / (1 + np.exp(-gap))
        r = w * (p - y)
        g = np.bincount(pairs[:, 0], r, n) - np.bincount(pairs[:, 1], r, n)
        return np.sum(w * (np.logaddexp(0, gap) - y * gap)), np.append(g[1:], r.sum())

    res = minimize(nll, np.zeros(n), jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 20_000})
    ref = np.concatenate([[0.0], res.x[:-1]])
    fit = fit_bradley_terry(n, pairs, y, weights=w, position_bias=True, tol=1e-10)
    np.testing.assert_allclose(fit.params, ref - ref.mean(), atol=1e-6)
    assert fit.position_bias == pytest.approx(res.x[-1], abs=1e-6)
