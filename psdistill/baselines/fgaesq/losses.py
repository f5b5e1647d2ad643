"""FGAesQ's losses (Sec. 4.2-4.4): EMD for coarse scores, CTAlign and RankReg for series.

    L = delta * (lambda * L_F_align + L_F_RR) + (1 - delta) * L_C_EMD        (eq. 6)

delta alternates between coarse (0) and fine (1) batches; lambda = 10.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

NUM_BINS = 10  # AVA's 1..10 vote histogram; the score is the expectation over bins 1..10


# ---- coarse: EMD on score distributions (NIMA) -------------------------------------------------

def emd_loss(pred: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Earth Mover's Distance of NIMA (Talebi & Milanfar 2018, eq. 1), mean over the batch.

    EMD(p, q) = ( 1/N * sum_k |CDF_p(k) - CDF_q(k)|^r )^(1/r), with N bins and r = 2.
    `pred`, `target`: [B, N] probability vectors.
    """
    cdf_diff = torch.cumsum(pred, dim=-1) - torch.cumsum(target, dim=-1)
    per_item = cdf_diff.abs().pow(r).mean(dim=-1)
    # The small constant keeps the gradient of the root finite when a prediction is exact.
    return (per_item + 1e-12).pow(1.0 / r).mean()


def gaussian_target(scores: Sequence[float], sigma: float = 1.0, num_bins: int = NUM_BINS) -> np.ndarray:
    """Discretised Gaussian on bins 1..N whose expectation equals each score, shape [B, N].

    Used as the EMD target when a record has no vote histogram. A Gaussian centred on the score
    and truncated to 1..N would pull the expectation towards the middle (a 9.5 would come back as
    about 8.9); the centre is therefore solved by bisection so that the expectation is the score
    (scores at the ends of the scale are reached only in the limit and are clipped to 1.001..N-0.001).
    """
    s = np.clip(np.asarray(scores, dtype=np.float64), 1.001, num_bins - 0.001)
    bins = np.arange(1, num_bins + 1, dtype=np.float64)

    def dist(centre):
        logits = -((bins[None, :] - centre[:, None]) ** 2) / (2.0 * sigma ** 2)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        return w / w.sum(axis=1, keepdims=True)

    lo = np.full_like(s, 1.0 - 20.0 * sigma)
    hi = np.full_like(s, num_bins + 20.0 * sigma)
    for _ in range(80):  # the expectation is monotone in the centre
        mid = (lo + hi) / 2
        too_high = dist(mid) @ bins > s
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return dist((lo + hi) / 2)


def histogram_target(votes: Sequence[Sequence[float]]) -> np.ndarray:
    """Normalise vote counts per bin (AVA style) into probability vectors."""
    v = np.asarray(votes, dtype=np.float64)
    total = v.sum(axis=1, keepdims=True)
    if (total <= 0).any() or (v < 0).any():
        raise ValueError("histogram_target: vote counts must be >= 0 with a positive total")
    return v / total


def expected_score(probs: torch.Tensor) -> torch.Tensor:
    """sum_k k * p_k over bins 1..N."""
    bins = torch.arange(1, probs.shape[-1] + 1, dtype=torch.float32, device=probs.device)
    return (probs.float() * bins).sum(dim=-1)  # not a matmul: autocast would round it to bf16


# ---- fine: CTAlign (eq. 3) -------------------------------------------------------------------

def ctalign_loss(emb_target: torch.Tensor, emb_reference: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """1 - cos(E_v(x) - E_v(y), E_t(T)), mean over pairs. Shapes [B, E].

    Eq. 3 writes L = cos(...) "minimized", which would push the image difference *away* from its
    description; the evident intent (Sec. 4.2: "align it with the visual embedding difference") is to
    maximise the cosine, so we minimise 1 - cos (same gradient as -cos, non-negative).
    """
    return (1.0 - F.cosine_similarity(emb_target - emb_reference, text_emb, dim=-1)).mean()


BETTER = "the first image is more aesthetically pleasing than the second: sharper, cleaner, better exposed and better composed"
WORSE = "the first image is less aesthetically pleasing than the second: blurrier, noisier, worse exposed and worse composed"
SIMILAR = "the two images are equally aesthetically pleasing"


def describe_pair(rank_target: Optional[int], rank_reference: Optional[int], comment_target: str = "",
                  comment_reference: str = "") -> str:
    """Comparative text T: x <- y (the target relative to the reference).

    From the data when the records carry comments (`ImageRecord.comment`, a description of each
    image, e.g. the demo's "blur+noise severity 0.4" or an APDD critique): "<target's> compared with
    <reference's>", so the text changes with the pair and its direction [our choice: the paper's
    MLLM descriptions are written per pair; per-image comments are combined into one]. Otherwise a
    template from the ground-truth order (rank 0 = best): better / worse / equally pleasing.
    """
    if comment_target and comment_reference:
        return f"{comment_target} compared with {comment_reference}"
    if comment_target:
        return comment_target
    if rank_target is None or rank_reference is None or rank_target == rank_reference:
        return SIMILAR
    return BETTER if rank_target < rank_reference else WORSE


# ---- fine: RankReg (eq. 4-5) -----------------------------------------------------------------

def listmle(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """ListMLE (Xia et al. 2008): -sum_i log( exp(v[r_i]) / sum_{j >= i} exp(v[r_j]) ).

    `order` lists indices of `values` from the first (should be largest) to the last.
    """
    v = values[order]
    # log sum_{j >= i} exp(v_j) for every i: a reversed cumulative logsumexp
    tail = torch.flip(torch.logcumsumexp(torch.flip(v, dims=[0]), dim=0), dims=[0])
    return (tail - v).sum()


def pair_probabilities(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bradley-Terry P(i > j) = e^{s_i} / (e^{s_i} + e^{s_j}) = sigmoid(s_i - s_j) (eq. 4) for all ordered pairs.

    Returns (probabilities [n(n-1)], i [n(n-1)], j [n(n-1)]).
    """
    n = scores.shape[0]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    off = i != j
    i, j = i[off].to(scores.device), j[off].to(scores.device)
    return torch.sigmoid(scores[i] - scores[j]), i, j


def rankreg_loss(scores: torch.Tensor, ranks: Sequence[int], generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Rank-aware Regression for one series (eq. 4-5).

    Predicted P' = {P(x_i > x_j)} over all ordered pairs of the series (eq. 4). The ground-truth
    order r sorts the pairs by the ground-truth probability P(x_i > x_j); with rank labels only
    (0 = best) that probability grows with the rank advantage rank_j - rank_i, so pairs are ordered
    by it, largest first; pairs with equal advantage are tied and put in random order (`generator`),
    or index order when None. ListMLE of P' in that order (eq. 5), divided by the number of pairs so
    series of different lengths weigh alike per pair.

    Why all ordered pairs: with the pairs of one target only, a 2-image series (most of
    FGAesthetics) gives a one-element list whose ListMLE is identically 0; with both orientations
    the winner-first pair must outrank its mirror, and clear pairs must outrank close ones (the
    "calibration of probability estimates between pairs" of Sec. 4.3).
    """
    probs, i, j = pair_probabilities(scores)
    r = torch.as_tensor(list(ranks), dtype=torch.float64)
    advantage = (r[j.cpu()] - r[i.cpu()])  # > 0: i is better than j
    if generator is not None:
        tiebreak = torch.rand(len(advantage), generator=generator, dtype=torch.float64)
    else:
        tiebreak = -torch.arange(len(advantage), dtype=torch.float64)  # stable: index order among ties
    # Sort by advantage (descending), ties broken by `tiebreak` (descending): a lexicographic key.
    key = torch.stack([advantage, tiebreak], dim=1)
    order = sorted(range(len(advantage)), key=lambda k: (-key[k, 0].item(), -key[k, 1].item()))
    order = torch.tensor(order, dtype=torch.long, device=scores.device)
    return listmle(probs, order) / len(order)


def direct_rank_loss(scores: torch.Tensor, ranks: Sequence[int], generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The ablation "w/o RankReg: direct ranking training": ListMLE on the scores, best first, per item."""
    r = torch.as_tensor(list(ranks), dtype=torch.float64)
    tiebreak = (torch.rand(len(r), generator=generator, dtype=torch.float64) if generator is not None
                else torch.arange(len(r), dtype=torch.float64))
    order = sorted(range(len(r)), key=lambda k: (r[k].item(), tiebreak[k].item()))
    return listmle(scores, torch.tensor(order, dtype=torch.long, device=scores.device)) / len(order)
