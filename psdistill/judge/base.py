"""The judge interface: P(first image preferred) for pairs shown in a given order.

Every judge (the VLM, the simulated oracle) answers for pairs in presentation order; combining the
two orders to cancel position bias is done once, here, for all of them.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
from scipy.special import expit, logit

from psdistill.data.records import ImageRecord

Pair = tuple[ImageRecord, ImageRecord]


class Judge(Protocol):
    """Answers P(first shown image is preferred on `dimension`) for each pair, in the order shown."""

    #: identifies the judge in caches and reports (model id + revision, or the simulation settings)
    judge_id: str
    #: True for judges that read ground truth; every output of theirs is labelled as simulated
    simulated: bool

    def prefer(self, pairs: Sequence[Pair], dimension: str) -> np.ndarray: ...


def combine_orders(p_ab: np.ndarray, p_ba: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Debiased P(a preferred over b) from both presentation orders, averaged in logit space.

    With a position bias b added to the logit of whichever image is shown first,
    logit p_ab = d + b and logit p_ba = -d + b, so (logit p_ab - logit p_ba) / 2 = d recovers the
    unbiased preference exactly.
    """
    p_ab = np.clip(np.asarray(p_ab, dtype=float), eps, 1 - eps)
    p_ba = np.clip(np.asarray(p_ba, dtype=float), eps, 1 - eps)
    return expit((logit(p_ab) - logit(p_ba)) / 2)


def position_bias(p_ab: np.ndarray, p_ba: np.ndarray, eps: float = 1e-6) -> float:
    """Mean logit shift toward the first-shown image: (logit p_ab + logit p_ba) / 2 (0 = unbiased)."""
    p_ab = np.clip(np.asarray(p_ab, dtype=float), eps, 1 - eps)
    p_ba = np.clip(np.asarray(p_ba, dtype=float), eps, 1 - eps)
    return float(np.mean((logit(p_ab) + logit(p_ba)) / 2)) if len(p_ab) else 0.0


def prefer_both_orders(judge: Judge, pairs: Sequence[Pair], dimension: str):
    """(debiased P(a over b), raw P in order ab, raw P in order ba), judging both orders in one call."""
    pairs = list(pairs)
    raw = np.asarray(judge.prefer(pairs + [(b, a) for a, b in pairs], dimension), dtype=float)
    p_ab, p_ba = raw[: len(pairs)], raw[len(pairs):]
    return combine_orders(p_ab, p_ba), p_ab, p_ba
