"""Laplace standard errors from the sparse Hessian: equal to the inverse of a Hessian that torch's
autograd computes from the log-posterior written out independently, on designs that exercise
the border (references, the bias), the banded rest and the grounding of an unregularised fit."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # the benchmarks' pair designs
from pair_designs import locally_dense_pairs, reference_pool_pairs  # noqa: E402

from psdistill.core.errors import DataError  # noqa: E402
from psdistill.ranking import fit_bradley_terry, fit_thurstone  # noqa: E402
from psdistill.ranking import laplace  # noqa: E402


def _designs(rng):
    n = 90
    random = rng.integers(0, n, (1500, 2))
    random = random[random[:, 0] != random[:, 1]]
    pool = reference_pool_pairs(n, [3, 20, 41, 77])  # four hubs, the rest meets only them
    band = locally_dense_pairs(np.arange(n) // 30, 120, seed=1)  # three bands of 30 and two hubs
    band = np.concatenate([band, np.column_stack([np.arange(n), np.full(n, 5)]),
                           np.column_stack([np.full(n, 60), np.arange(n)])])
    band = band[band[:, 0] != band[:, 1]]
    return {"random": random, "pool": pool, "bands + hubs": band}


def _autograd_covariance(model, n, pairs, y, theta, beta, alpha, position_bias):
    """Inverse negative log-posterior Hessian by torch autograd (pseudo-inverse when alpha = 0)."""
    a, b = torch.tensor(pairs[:, 0]), torch.tensor(pairs[:, 1])
    yt = torch.tensor(y)
    dist = torch.distributions.Normal(0.0, 1.0)

    def neg_log_post(x):
        d = x[:n][a] - x[:n][b] + (x[n] if position_bias else 0.0)
        if model == "bt":
            ll = yt * torch.nn.functional.logsigmoid(d) + (1 - yt) * torch.nn.functional.logsigmoid(-d)
        else:
            ll = yt * torch.log(dist.cdf(d)) + (1 - yt) * torch.log(dist.cdf(-d))
        return -ll.sum() + 0.5 * alpha * (x * x).sum()

    x = torch.tensor(np.concatenate([theta, [beta]] if position_bias else [theta]))
    h = torch.autograd.functional.hessian(neg_log_post, x).numpy()
    return np.linalg.inv(h) if alpha > 0 else np.linalg.pinv(h)  # pinv: the mean-zero scores' covariance


@pytest.mark.parametrize("design", ["random", "pool", "bands + hubs"])
@pytest.mark.parametrize("alpha, position_bias", [(0.0, False), (0.0, True), (0.5, True)])
def test_standard_errors_equal_the_inverse_of_an_autograd_hessian(design, alpha, position_bias):
    rng = np.random.default_rng(0)
    pairs = _designs(rng)[design]
    n = 90
    theta = rng.normal(size=n)
    # soft outcomes: the maximum-likelihood estimate exists for every design
    y = 1 / (1 + np.exp(-(theta[pairs[:, 0]] - theta[pairs[:, 1]] + 0.3 + rng.normal(size=len(pairs)))))
    for model, fit in (("bt", fit_bradley_terry), ("thurstone", fit_thurstone)):
        res = fit(n, pairs, y, alpha=alpha, position_bias=position_bias)
        cov = _autograd_covariance(model, n, pairs, y, res.params, res.position_bias, alpha, position_bias)
        sd = np.sqrt(np.diag(cov))
        np.testing.assert_allclose(res.se, sd[:n], rtol=1e-9, atol=1e-12)
        if position_bias:
            assert res.position_bias_se == pytest.approx(sd[n], rel=1e-9)
        full = fit(n, pairs, y, alpha=alpha, position_bias=position_bias, cov=True)  # the dense path
        np.testing.assert_array_equal(full.params, res.params)
        np.testing.assert_allclose(full.cov, cov, rtol=1e-9, atol=1e-12)


def test_the_hubs_form_the_border_and_the_rest_is_a_narrow_band():
    pairs = _designs(np.random.default_rng(0))["bands + hubs"]
    c = np.ones(len(pairs))
    inv = laplace._BorderedInverse(laplace.hessian(90, pairs[:, 0], pairs[:, 1], c, 0.1, True))
    assert set(inv.hubs.tolist()) == {5, 60, 90}  # the two hubs and the bias
    assert len(inv.starts) > 2  # more than one block: the bands were not treated as dense


def test_a_design_too_large_for_memory_asks_for_se_false(monkeypatch):
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, 400, (8000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    y = rng.random(len(pairs))
    monkeypatch.setattr(laplace, "_MAX_BYTES", 100_000)  # a 400-item random design needs ~2.5 MB
    with pytest.raises(DataError, match="^se: the standard errors of this comparison graph need about .* se=False"):
        fit_bradley_terry(400, pairs, y)
    assert fit_bradley_terry(400, pairs, y, se=False).se is None
