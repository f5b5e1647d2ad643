"""Pair designs, simulated outcomes and a calibration error: what the ranking benchmarks (bench_fit,
bench_fuse, bench_judge, bench_judge_budget) and the ranking tests build their problems with.

Pairs are (m, 2) index arrays in presentation order (`psdistill.ranking.utils`). The designs are
deterministic given their seed. The pipeline itself plans no pairs: its reference pool
(`psdistill.ranking.pool`) chooses each round's pairs from the judge's answers.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit, ndtr

from psdistill.core.errors import DataError


def band_pair_count(n: int, bandwidth: int) -> int:
    """Number of pairs within rank distance ``bandwidth`` among ``n`` ordered items:
    sum_{d=1..h} (n - d) = h n - h (h + 1) / 2 with h = min(bandwidth, n - 1)."""
    h = min(bandwidth, n - 1)
    return h * n - h * (h + 1) // 2


def locally_dense_pairs(groups, pairs_per_group: int, *, cross_group_pairs: int = 0, order=None,
                        seed=0) -> np.ndarray:
    """PPaint's "locally dense" design: dense within each group, sparse across groups.

    Within a group the items are put in order (by ``order``, e.g. a prior or mean rating, so that
    neighbours are similar and their comparisons informative; else at random) and every pair at
    rank distance 1, 2, ..., h is compared, a band around the diagonal of the comparison matrix.
    The bandwidth h is the largest whose pair count fits ``pairs_per_group``; the remaining budget
    goes to pairs at distance h + 1, spread evenly along the order. Example: 50 items and 612
    pairs (the PPaint figure per expert and dimension, see docs/method.md) give the full band h = 14
    (595 pairs, `band_pair_count`) plus 17 pairs at distance 15. The paper's exact rule is not
    published; this is one design that meets the figure.

    ``cross_group_pairs`` random pairs between different groups link the groups on one scale
    (without them the comparison graph is disconnected and the groups' scores are not comparable).
    Each pair is shown in a random order.

    Parameters
    ----------
    groups : array_like, shape (n_items,)
        Group label (category) of each item.
    pairs_per_group : int
        Budget of distinct within-group pairs per group (capped at all pairs of the group).
    cross_group_pairs : int
        Number of distinct across-group pairs.
    order : array_like, shape (n_items,), optional
        Sort key within groups. Default: a random order.
    seed : int or numpy.random.Generator

    Returns
    -------
    pairs : numpy.ndarray of int, shape (m, 2)
    """
    groups = np.asarray(groups)
    n = len(groups)
    rng = np.random.default_rng(seed)
    if pairs_per_group < 0 or cross_group_pairs < 0:
        raise DataError("pairs_per_group and cross_group_pairs: must be >= 0")
    key = rng.random(n) if order is None else np.asarray(order, dtype=float)
    if key.shape != (n,) or not np.all(np.isfinite(key)):
        raise DataError(f"order: need one finite value per item, shape ({n},)")
    out = []
    labels = np.unique(groups)
    for g in labels:
        members = np.flatnonzero(groups == g)
        members = members[np.argsort(key[members], kind="stable")]
        size = len(members)
        budget = min(pairs_per_group, size * (size - 1) // 2)
        h = 0
        while h < size - 1 and band_pair_count(size, h + 1) <= budget:
            h += 1
        for d in range(1, h + 1):
            out.append(np.column_stack([members[:-d], members[d:]]))
        extra = budget - band_pair_count(size, h)
        if extra:  # evenly spaced pairs at the next distance
            start = np.linspace(0, size - h - 2, extra).round().astype(int)
            out.append(np.column_stack([members[start], members[start + h + 1]]))
    if cross_group_pairs:
        if len(labels) < 2:
            raise DataError("cross_group_pairs: needs at least two groups")
        n_cross = (n * n - np.sum(np.unique(groups, return_counts=True)[1] ** 2)) // 2
        if cross_group_pairs > n_cross:
            raise DataError(f"cross_group_pairs: at most {n_cross} distinct pairs exist, asked for {cross_group_pairs}")
        seen: set[tuple[int, int]] = set()
        while len(seen) < cross_group_pairs:
            i, j = rng.integers(0, n, 2)
            if groups[i] != groups[j]:
                seen.add((min(i, j), max(i, j)))
        out.append(np.array(sorted(seen), dtype=int))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), int)
    flip = rng.random(len(pairs)) < 0.5  # random presentation order balances position bias
    pairs[flip] = pairs[flip, ::-1]
    return pairs


def random_pairs(n_items: int, n_pairs: int, seed=0) -> np.ndarray:
    """``n_pairs`` distinct random pairs whose comparison graph is connected.

    A random cycle through all items comes first (n_items pairs, so every item is compared at
    least twice and the graph is connected), then distinct pairs drawn uniformly. Each pair is
    shown in a random order.
    """
    if n_pairs < n_items or n_pairs > n_items * (n_items - 1) // 2:
        raise DataError(f"n_pairs: need n_items <= n_pairs <= n_items (n_items - 1) / 2, got {n_pairs} "
                        f"for {n_items} items")
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    first = np.column_stack([cycle, np.roll(cycle, -1)])
    code = set((np.minimum(first[:, 0], first[:, 1]) * n_items + np.maximum(first[:, 0], first[:, 1])).tolist())
    rows = [first]
    while len(code) < n_pairs:
        cand = rng.integers(0, n_items, (2 * (n_pairs - len(code)), 2))
        cand = cand[cand[:, 0] != cand[:, 1]]
        new = []
        for i, j in cand:
            c = min(i, j) * n_items + max(i, j)
            if c not in code and len(code) < n_pairs:
                code.add(c)
                new.append((i, j))
        if new:
            rows.append(np.array(new, dtype=int))
    pairs = np.concatenate(rows)
    flip = rng.random(len(pairs)) < 0.5
    pairs[flip] = pairs[flip, ::-1]
    return pairs


def reference_pool_pairs(n_items: int, reference_ids, both_orders: bool = True) -> np.ndarray:
    """The fixed (non-adaptive) reference-pool schedule: the references round-robin in both
    orders, then every other item against every reference (in both orders if ``both_orders``).

    Its length is k (k - 1) + (n_items - k) k (x2 with both orders): linear in n_items.
    """
    refs = np.asarray(reference_ids, dtype=int)
    k = len(refs)
    i, j = np.triu_indices(k, 1)
    calib = np.column_stack([refs[i], refs[j]])
    others = np.setdiff1d(np.arange(n_items), refs)
    place = np.column_stack([np.repeat(others, k), np.tile(refs, len(others))])
    parts = [calib, calib[:, ::-1], place] + ([place[:, ::-1]] if both_orders else [])
    return np.concatenate(parts)


def simulate_comparisons(params, pairs, model: str = "bt", position_bias: float = 0.0, seed=0):
    """Draw hard outcomes (1 = first preferred) for ``pairs`` under a known model.

    P(first preferred) = F(params[a] - params[b] + position_bias), with F the logistic function
    (``model="bt"``) or the standard normal CDF (``model="thurstone"``).
    """
    params = np.asarray(params, dtype=float)
    pairs = np.asarray(pairs)
    d = params[pairs[:, 0]] - params[pairs[:, 1]] + position_bias
    prob = expit(d) if model == "bt" else ndtr(d)
    return (np.random.default_rng(seed).random(len(d)) < prob).astype(float)


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """Expected calibration error (Naeini et al. 2015) of binary probabilities.

    ``confidence`` is P(event) and ``correct`` whether the event happened. The probabilities are
    folded to the predicted side (max(c, 1 - c)), binned into ``n_bins`` equal-width bins on
    [0.5, 1], and the bin-size-weighted mean |accuracy - mean confidence| is returned.
    """
    c = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=bool)
    conf = np.maximum(c, 1 - c)
    acc = np.where(c >= 0.5, hit, ~hit)
    bins = np.minimum(((conf - 0.5) * 2 * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, acc, n_bins) - np.bincount(bins, conf, n_bins))
    return float(gap.sum() / max(count.sum(), 1))
