"""Distillation losses against hand-worked values (arithmetic in the comments)."""
import math

import numpy as np
import pytest
import torch

from psdistill.distill.losses import (
    calibration_loss, confidence_matrix, distill_loss, listmle_loss, listnet_loss, pair_confidence,
    pair_weights, pairwise_ranking_loss,
)

SP1 = math.log(1 + math.exp(-1))  # softplus(-1) = -log sigmoid(1) = 0.313262
SP1N = math.log(1 + math.e)  # softplus(1) = -log sigmoid(-1) = 1.313262


def test_pair_confidence_is_the_gaussian_probability_of_the_order():
    # mu = (1, 0), var = (0.5, 0.5): Phi((1 - 0) / sqrt(1)) = Phi(1) = 0.841345
    assert pair_confidence([1.0, 0.0], [0.5, 0.5], 0, 1) == pytest.approx(0.841345, abs=1e-6)
    assert pair_confidence([1.0, 0.0], [0.5, 0.5], 1, 0) == pytest.approx(1 - 0.841345, abs=1e-6)
    # equal exact scores: no order, 0.5 (not 0/0)
    assert pair_confidence([2.0, 2.0], [0.0, 0.0], 0, 1) == 0.5
    c = confidence_matrix(np.array([3.0, 1.0, 2.0]), np.array([0.1, 0.4, 0.2]))
    np.testing.assert_allclose(c + c.T, 1.0)
    np.testing.assert_allclose(np.diag(c), 0.5)
    assert c[0, 1] > c[0, 2] > 0.5 > c[1, 2]


def test_margin_weight_is_zero_at_half_and_one_at_certainty():
    np.testing.assert_allclose(pair_weights(torch.tensor([0.5, 0.9, 0.2, 1.0, 0.0])).numpy(), [0, 0.8, 0.6, 1, 1],
                               atol=1e-7)


def test_pairwise_margin_hand_worked():
    # f = (2, 1, 0), T = 1; c01 = 0.9, c02 = 0.5, c12 = 0.2
    #   (0,1): y = +1, w = 0.8, d = 1: 0.8 * softplus(-1) = 0.8 * 0.313262 = 0.250610
    #   (0,2): c = 0.5, w = 0:                             0
    #   (1,2): y = -1, w = 0.6, d = 1: 0.6 * softplus(+1) = 0.6 * 1.313262 = 0.787957
    #   mean over the 3 pairs: (0.250610 + 0 + 0.787957) / 3 = 0.346189
    f = torch.tensor([2.0, 1.0, 0.0])
    c = torch.tensor([[0.5, 0.9, 0.5], [0.1, 0.5, 0.2], [0.5, 0.8, 0.5]])
    expected = (0.8 * SP1 + 0.6 * SP1N) / 3
    assert pairwise_ranking_loss(f, c).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.346189, abs=1e-6)
    # temperature T = 2 halves every gap: (0.8 softplus(-0.5) + 0.6 softplus(0.5)) / 3
    t2 = (0.8 * math.log(1 + math.exp(-0.5)) + 0.6 * math.log(1 + math.exp(0.5))) / 3
    assert pairwise_ranking_loss(f, c, temperature=2.0).item() == pytest.approx(t2, abs=1e-6)


def test_zero_weight_pairs_give_no_gradient():
    # Image 2 is only in pairs with c = 0.5 (weight 0): its score gets exactly zero gradient,
    # while the informative pair (0, 1) moves images 0 and 1.
    f = torch.tensor([0.3, -0.2, 1.7], requires_grad=True)
    c = torch.tensor([[0.5, 0.7, 0.5], [0.3, 0.5, 0.5], [0.5, 0.5, 0.5]])
    pairwise_ranking_loss(f, c).backward()
    assert f.grad[2].item() == 0.0
    assert f.grad[0].item() < 0 < f.grad[1].item()  # descent raises the winner, lowers the loser
    # a batch with no information at all: zero loss, zero gradient
    g = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = pairwise_ranking_loss(g, torch.full((3, 3), 0.5))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(g.grad == 0)


def test_pairwise_soft_hand_worked_and_minimum_at_logit_c():
    # f = (1, 0), c = 0.75: -(0.75 log sigmoid(1) + 0.25 log sigmoid(-1)) = 0.75 * 0.313262 + 0.25 * 1.313262
    c = torch.tensor([[0.5, 0.75], [0.25, 0.5]])
    loss = pairwise_ranking_loss(torch.tensor([1.0, 0.0]), c, weighting="soft")
    assert loss.item() == pytest.approx(0.75 * SP1 + 0.25 * SP1N, abs=1e-6)  # 0.563262
    # the gradient vanishes where the gap equals logit(0.75) = ln 3
    f = torch.tensor([math.log(3), 0.0], requires_grad=True)
    pairwise_ranking_loss(f, c, weighting="soft").backward()
    assert f.grad.abs().max().item() < 1e-6


def test_listnet_hand_worked():
    # target softmax(ln3, 0) = (0.75, 0.25); prediction softmax(0, 0) = (0.5, 0.5)
    # cross-entropy = -(0.75 ln 0.5 + 0.25 ln 0.5) = ln 2
    loss = listnet_loss(torch.tensor([0.0, 0.0]), torch.tensor([math.log(3), 0.0]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_listmle_hand_worked():
    # f = (1, 0, 0), order by mu = (3, 2, 1) is 0, 1, 2:
    #   k=0: logsumexp(1, 0, 0) - 1 = ln(e + 2) - 1 = 0.551445
    #   k=1: logsumexp(0, 0) - 0 = ln 2 = 0.693147
    #   k=2: 0
    #   mean = 1.244592 / 3 = 0.414864
    loss = listmle_loss(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([3.0, 2.0, 1.0]))
    assert loss.item() == pytest.approx((math.log(math.e + 2) - 1 + math.log(2)) / 3, abs=1e-6)
    # the order comes from mu, not from the input order: permuting both changes nothing
    perm = torch.tensor([2, 0, 1])
    assert listmle_loss(torch.tensor([1.0, 0.0, 0.0])[perm], torch.tensor([3.0, 2.0, 1.0])[perm]).item() == \
        pytest.approx(loss.item(), abs=1e-6)


def test_calibration_hand_worked():
    # mse: ((1-2)^2 + (3-2)^2) / 2 = 1
    assert calibration_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]), torch.ones(2)).item() == 1.0
    # gaussian_nll: 0.5 (ln 0.25 + (1-2)^2 / 0.25) = 0.5 (-1.386294 + 4) = 1.306853
    nll = calibration_loss(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.25]), "gaussian_nll")
    assert nll.item() == pytest.approx(0.5 * (math.log(0.25) + 4), abs=1e-6)
    assert calibration_loss(torch.tensor([1.0]), torch.tensor([2.0]), torch.ones(1), "none").item() == 0.0


def test_distill_loss_adds_the_weighted_calibration_term():
    f = torch.tensor([2.0, 1.0, 0.0])
    mu, var = torch.tensor([2.5, 1.0, 0.5]), torch.full((3,), 0.2)
    c = torch.tensor(confidence_matrix(mu.numpy(), var.numpy()), dtype=torch.float32)
    parts = distill_loss(f, mu, var, c, calibration="mse", calibration_weight=0.5)
    # mse = (0.25 + 0 + 0.25) / 3 = 1/6
    assert parts["cal"].item() == pytest.approx(1 / 6, abs=1e-6)
    assert parts["loss"].item() == pytest.approx(pairwise_ranking_loss(f, c).item() + 0.5 / 6, abs=1e-6)
    with pytest.raises(ValueError, match="ranking"):
        distill_loss(f, mu, var, c, ranking="pointwise")
