"""Losses that turn calibrated pseudo-scores into a single-pass scorer.

Inputs are one batch: the student's scores `f` (B,) on the rating scale, the pseudo-scores
`mu`, `var` (B,) from the Elo reference pool, and the pair confidences
`C[i, j] = P(s_i > s_j) = Phi((mu_i - mu_j) / sqrt(var_i + var_j))` (B, B).

    L = L_rank(f, C or mu) + calibration_weight * L_cal(f, mu, var)

The ranking term carries the order (the more reliable signal, as expert preferences are the more
consistent one in PPaint); the calibration term pins the output to the rating scale, which a
ranking loss alone leaves free (any monotone shift of f has the same ranking loss).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from psdistill.ranking import pair_confidence


def confidence_matrix(mu, var) -> np.ndarray:
    """C (B, B) with C[i, j] = pair_confidence(mu, var, i, j); C + C.T = 1, diagonal 0.5."""
    n = len(mu)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return pair_confidence(mu, var, i.ravel(), j.ravel()).reshape(n, n)


def pair_weights(confidence: torch.Tensor, weighting: str = "margin") -> torch.Tensor:
    """Per-pair weight for the `margin` form: w_ij = |2 c_ij - 1| = 2 |c_ij - 0.5|.

    A pair the pseudo-scores cannot order (c = 0.5) carries no information and gets w = 0; a pair
    they order with certainty (c = 0 or 1) gets w = 1. (`soft` has no separate weight: the
    confidence is the target itself, see `pairwise_ranking_loss`.)
    """
    if weighting != "margin":
        raise ValueError(f"pair_weights is for weighting='margin', got {weighting!r}")
    return (2 * confidence - 1).abs()


def pairwise_ranking_loss(scores: torch.Tensor, confidence: torch.Tensor, temperature: float = 1.0,
                          weighting: str = "margin") -> torch.Tensor:
    """Confidence-weighted Bradley-Terry loss over all B(B-1)/2 pairs i < j of the batch.

    With d_ij = (f_i - f_j) / T (T = `temperature`, in rating-scale units) and c_ij = C[i, j]:

    - `margin` (default): each pair is ordered by pseudo-score, y_ij = sign(c_ij - 0.5), and
      weighted by w_ij = |2 c_ij - 1|:

          L = 1/P * sum_{i<j} w_ij * -log sigmoid(y_ij d_ij)

      So a pair with c = 0.5 (or any pair with weight 0) contributes neither loss nor gradient.
    - `soft`: binary cross-entropy against the confidence (RankNet with soft targets,
      Burges et al. 2005, https://doi.org/10.1145/1102351.1102363):

          L = 1/P * sum_{i<j} -(c_ij log sigmoid(d_ij) + (1 - c_ij) log sigmoid(-d_ij))

      Its minimum is at d_ij = T logit(c_ij): score gaps reproduce the pseudo-score confidence,
      and a c = 0.5 pair pulls the two scores together (a tie is information here).

    P = B(B-1)/2, so the loss is a mean over pairs and does not grow with the batch.
    """
    n = scores.shape[0]
    if n < 2:
        return scores.sum() * 0.0  # no pair in the batch; keeps the graph for DDP
    i, j = torch.triu_indices(n, n, offset=1, device=scores.device)
    d = (scores[i] - scores[j]) / temperature
    c = confidence[i, j].to(d.dtype)
    if weighting == "margin":
        y = torch.sign(c - 0.5)
        return (pair_weights(c) * F.softplus(-y * d)).mean()  # softplus(-x) = -log sigmoid(x)
    if weighting == "soft":
        return F.binary_cross_entropy_with_logits(d, c)
    raise ValueError(f"unknown pair weighting {weighting!r} (use 'margin' or 'soft')")


def listnet_loss(scores: torch.Tensor, mu: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """ListNet top-one cross-entropy (Cao et al. 2007, https://doi.org/10.1145/1273496.1273513):

        L = -sum_i softmax(mu / T)_i * log softmax(f / T)_i

    The target distribution uses the pseudo-score means only; their confidence enters through T
    (a larger T flattens the target where gaps are small).
    """
    target = torch.softmax(mu.to(scores.dtype) / temperature, dim=0)
    return -(target * torch.log_softmax(scores / temperature, dim=0)).sum()


def listmle_loss(scores: torch.Tensor, mu: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """ListMLE (Xia et al. 2008, https://doi.org/10.1145/1390156.1390306): the Plackett-Luce
    negative log-likelihood of the order given by the pseudo-scores, averaged over positions:

        L = 1/B * sum_k [ logsumexp_{l >= k} f_pi(l) / T - f_pi(k) / T ],  pi = argsort(-mu)
    """
    s = scores[torch.argsort(mu, descending=True)] / temperature
    # logsumexp over each suffix: flip, cumulative logsumexp, flip back.
    suffix = torch.logcumsumexp(s.flip(0), dim=0).flip(0)
    return (suffix - s).mean()


def calibration_loss(scores: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Pulls the scores onto the rating scale of the pseudo-scores.

    - `mse`: mean (f_i - mu_i)^2.
    - `gaussian_nll`: mean 0.5 * (log var_i + (f_i - mu_i)^2 / var_i), the Gaussian negative
      log-likelihood of the pseudo-score (variance clamped at 1e-6): confident pseudo-scores pull hard,
      uncertain ones barely.
    - `none`: 0.
    """
    mu = mu.to(scores.dtype)
    if kind == "mse":
        return F.mse_loss(scores, mu)
    if kind == "gaussian_nll":
        return F.gaussian_nll_loss(scores, mu, var.to(scores.dtype), eps=1e-6)
    if kind == "none":
        return scores.sum() * 0.0
    raise ValueError(f"unknown calibration {kind!r} (use 'mse', 'gaussian_nll' or 'none')")


def distill_loss(scores: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, confidence: torch.Tensor, *,
                 ranking: str = "pairwise", weighting: str = "margin", temperature: float = 1.0,
                 calibration: str = "mse", calibration_weight: float = 0.1) -> dict[str, torch.Tensor]:
    """{"loss": total, "rank": ranking term, "cal": calibration term} for one batch (see module doc)."""
    scores = scores.float()
    if ranking == "pairwise":
        rank = pairwise_ranking_loss(scores, confidence, temperature, weighting)
    elif ranking == "listnet":
        rank = listnet_loss(scores, mu, temperature)
    elif ranking == "listmle":
        rank = listmle_loss(scores, mu, temperature)
    else:
        raise ValueError(f"unknown ranking loss {ranking!r} (use 'pairwise', 'listnet' or 'listmle')")
    cal = calibration_loss(scores, mu, var, calibration)
    return {"loss": rank + calibration_weight * cal, "rank": rank.detach(), "cal": cal.detach()}
