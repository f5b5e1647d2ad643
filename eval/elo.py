"""Online Elo ratings (Elo, 1978), averaged over shuffled comparison orders: the baseline
eval/bench_judge_budget.py compares the reference pool with (the pipeline fits Bradley-Terry).

After each comparison of ``a`` (shown first) with ``b`` with outcome ``y`` = P(a preferred),

    E = 1 / (1 + 10 ** ((R_b - R_a) / scale)),   R_a += K w (y - E),   R_b -= K w (y - E).

The result depends on the order in which comparisons are processed (late ones count more), which
is meaningless for a batch of judgments; averaging the final ratings over random orders removes
that dependence. Ratings convert to Bradley-Terry logits as ``(R - initial) * ln(10) / scale``.
"""
from __future__ import annotations

import numpy as np

from psdistill.core.errors import DataError
from psdistill.ranking.utils import check_comparisons, check_connected


def fit_elo(n_items, pairs, outcomes=None, *, weights=None, k: float = 32.0, initial: float = 1500.0,
            scale: float = 400.0, shuffles: int = 0, seed=0) -> np.ndarray:
    """Online Elo ratings.

    Parameters
    ----------
    n_items : int
        Number of items; they are 0..n_items-1.
    pairs : array_like, shape (m, 2)
        Item indices in presentation order.
    outcomes : array_like, shape (m,), optional
        P(first preferred): 1 win, 0 loss, 0.5 tie or a soft judgment. Default: the first won.
    weights : array_like, shape (m,), optional
        Multiplies the K-factor of each comparison. Default 1.
    k : float
        K-factor: the most a single comparison can move a rating.
    initial : float
        Starting rating of every item.
    scale : float
        Rating difference at which the expected score is 1/(1 + 10^-1), i.e. 10:1 odds.
    shuffles : int
        0: process the comparisons once in the given order. n > 0: average the final ratings over
        n random orders drawn from ``seed``.
    seed : int or numpy.random.Generator
        Seeds the shuffles.

    Returns
    -------
    ratings : numpy.ndarray, shape (n_items,)

    Raises
    ------
    DataError
        On malformed data (see `check_comparisons`) or a disconnected comparison graph, on which
        ratings of different components cannot be compared.
    """
    a, b, y, w = check_comparisons(n_items, pairs, outcomes, weights)
    check_connected(n_items, a, b, y, w)
    if not (k > 0 and scale > 0):
        raise DataError(f"k and scale: must be > 0, got k={k}, scale={scale}")
    if shuffles < 0:
        raise DataError(f"shuffles: must be >= 0, got {shuffles}")
    m = len(y)
    if shuffles == 0:
        order = np.arange(m)[None, :]
    else:
        rng = np.random.default_rng(seed)
        order = np.stack([rng.permutation(m) for _ in range(shuffles)])
    # One rating vector per order, all updated in lockstep: step t applies comparison order[s, t]
    # to rating vector s, so the Python loop runs m times whatever the number of shuffles.
    ratings = np.full((len(order), n_items), float(initial))
    rows = np.arange(len(order))
    step = k * w
    for t in range(m):
        c = order[:, t]
        ia, ib = a[c], b[c]
        expected = 1 / (1 + 10 ** ((ratings[rows, ib] - ratings[rows, ia]) / scale))
        delta = step[c] * (y[c] - expected)
        ratings[rows, ia] += delta
        ratings[rows, ib] -= delta
    return ratings.mean(axis=0)
