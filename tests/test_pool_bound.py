"""eval/bench_pool_bound.py's exact pieces against independent computations: hand-worked mutual
information, a brute force over every adaptive rule, Monte Carlo SRCC and the simulated judge."""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logit, ndtr
from scipy.stats import entropy, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
import bench_pool_bound as pb  # noqa: E402

from psdistill.judge.simulated import simulated_judge  # noqa: E402


@pytest.mark.parametrize("acc", [0.6, 0.8, 0.95])
def test_bits_of_one_and_two_references_match_the_hand_worked_channel(acc):
    # one reference: a binary symmetric channel with a uniform input, capacity 1 - H2(acc)
    assert pb.exact_rule(np.arange(1), 1, 1, acc)[1] == pytest.approx(1 - entropy([acc, 1 - acc], base=2))
    # two references, bins (0, 0), (1, 0), (1, 1) for "above ref 0, above ref 1": P(answers) by hand
    a, e = acc, 1 - acc
    p = np.array([a * a + e * a + e * e, a * e + a * a + a * e, e * a + e * e + e * a, e * e + a * e + a * a]) / 3
    assert p.sum() == pytest.approx(1)
    hand = entropy(p, base=2) - 2 * entropy([a, e], base=2)
    assert pb.exact_rule(np.arange(2), 2, 2, acc)[1] == pytest.approx(hand)


def _risk_by_loops(k, acc, first, second):
    """Expected squared rank error of the rule "ask `first`, then second[answer]", bin by bin and
    answer by answer in plain Python, with the idealised pool's bins (equal shares, midpoints)."""
    centre = [(b + 0.5) / (k + 1) for b in range(k + 1)]
    paths = {}
    for b in range(k + 1):
        for y1, y2 in itertools.product((0, 1), repeat=2):
            j2 = second[y1]
            p = 1 / (k + 1)
            for j, y in ((first, y1), (j2, y2)):
                p *= acc if y == (b > j) else 1 - acc
            paths.setdefault((y1, y2), []).append((p, centre[b]))
    risk = 1 / (12 * (k + 1) ** 2)  # the item's spread within its bin
    for points in paths.values():
        mass = sum(p for p, _ in points)
        mean = sum(p * c for p, c in points) / mass
        risk += sum(p * (c - mean) ** 2 for p, c in points)
    return risk


@pytest.mark.parametrize("acc", [0.6, 0.75, 0.9])
def test_bayes_optimal_rule_is_the_best_of_every_adaptive_rule(acc):
    k = 3
    risks = {(first, s0, s1): _risk_by_loops(k, acc, first, (s0, s1))
             for first in range(k) for s0 in range(k) for s1 in range(k) if first not in (s0, s1)}
    assert pb.bayes_optimal_risk(k, 2, acc) == pytest.approx(min(risks.values()))
    # a fixed order is the rule that asks the same second reference whatever the first answer
    assert pb.exact_rule(np.array([0, 2]), k, 2, acc)[0] == pytest.approx(risks[(0, 2, 2)])
    assert pb.exact_rule("lookahead", k, 2, acc)[0] >= min(risks.values()) - 1e-12


@pytest.mark.parametrize("m, s", [(16, 0.23), (11, 0.23), (11, 0.7)])
def test_gaussian_srcc_matches_monte_carlo_spearman(m, s):
    rng = np.random.default_rng(0)
    q = rng.normal(size=200_000)
    estimate = q + rng.normal(size=q.size) / np.sqrt(m * s ** 2)  # the mean of m observations
    assert pb.gaussian_srcc(m, s) == pytest.approx(spearmanr(q, estimate)[0], abs=0.005)


@pytest.mark.parametrize("acc", [0.6, 0.8])
def test_graded_scale_is_the_simulated_judges_scale(acc):
    rng = np.random.default_rng(1)
    q = rng.normal(size=3000)
    pairs = rng.integers(0, len(q), (100_000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    z = logit(simulated_judge(q, acc, 0.0, kind="graded", seed=2)(pairs))  # s (q_a - q_b) + e
    d = q[pairs[:, 0]] - q[pairs[:, 1]]
    assert pb.graded_scale(acc) == pytest.approx(np.sum(z * d) / np.sum(d ** 2), rel=0.03)
    assert np.mean((z > 0) == (d > 0)) == pytest.approx(acc, abs=0.005)


def test_gaussian_posterior_is_the_conjugate_update():
    post = pb.GaussianPosterior(1, np.array([-1.0, 0.5]), s=0.8)
    post.observe(np.array([0]), np.array([0]), np.array([0.3]))
    post.observe(np.array([0]), np.array([1]), np.array([-0.2]))
    s2 = 0.64  # prior N(0, 1), two observations of variance 1 / s^2
    assert post.mean[0] == pytest.approx(s2 * 0.1 / (1 + 2 * s2))
    # E[Phi(q)] for q ~ N(mean, var) is Phi(mean / sqrt(1 + var))
    assert post.estimate()[0] == pytest.approx(ndtr(post.mean[0] / np.sqrt(1 + 1 / (1 + 2 * s2))))


def test_allocation_spends_the_budget_and_meets_each_reference_once():
    rng = np.random.default_rng(3)
    answers = rng.integers(0, 2, (50, 16))
    post = pb.BinPosterior(50, pb.bin_likelihood(16, 0.7), *pb.ideal_bins(16))
    pb.allocate(post, 11, answers)
    met = post.used.sum(1)
    assert met.sum() == 11 * 50 and met.max() <= 16
    assert met.min() < met.max()  # it spends unevenly: that is what a stopping rule may do
