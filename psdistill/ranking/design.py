"""The reference pool's first step: which k items become references (deterministic given the seed,
so a judge that caches its answers replays the same pairs)."""
from __future__ import annotations

import numpy as np

from psdistill.core.errors import DataError

__all__ = ["choose_references"]


def choose_references(n_items: int, k: int, prior=None, seed=0) -> np.ndarray:
    """k reference items that span the quality range, sorted by index.

    With a ``prior`` score per item (e.g. the VLM's zero-shot pointwise score), the items are
    ranked by it, the ranking is cut into k equal strata and one item is drawn from each
    (stratified sampling, so the references cover the range even where the prior is only roughly
    right). Without one, k items are drawn uniformly.
    """
    if not 2 <= k <= n_items:
        raise DataError(f"k: need 2 <= k <= n_items={n_items}, got {k}")
    rng = np.random.default_rng(seed)
    if prior is None:
        return np.sort(rng.choice(n_items, k, replace=False))
    prior = np.asarray(prior, dtype=float)
    if prior.shape != (n_items,) or not np.all(np.isfinite(prior)):
        raise DataError(f"prior: need one finite score per item, shape ({n_items},), got shape {prior.shape}"
                        + ("" if prior.shape != (n_items,) else f" with {int(np.sum(~np.isfinite(prior)))} non-finite"))
    ranked = np.argsort(prior, kind="stable")
    edges = np.linspace(0, n_items, k + 1).round().astype(int)
    return np.sort(ranked[edges[:-1] + (rng.random(k) * np.diff(edges)).astype(int)])


