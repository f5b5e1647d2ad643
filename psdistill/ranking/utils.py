"""Input checks and graph helpers shared by the ranking modules.

Data conventions (as in choix): items are integers 0..n_items-1. A comparison is a row
``(a, b)`` of an ``(m, 2)`` integer array in presentation order (``a`` shown first) and an outcome
``p`` = P(a preferred over b): 1 if ``a`` won, 0 if ``b`` won, 0.5 for a tie, anything in between
for a soft judgment (a VLM's answer probability). Without outcomes, the first item of each row won.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from psdistill.core.errors import DataError

__all__ = [
    "ConvergenceError",
    "IndexJudge",
    "check_comparisons",
    "check_connected",
]

#: The ranking code's judge: (m, 2) item indices in presentation order -> (m,) P(first preferred).
#: A plain callable, so that ranking needs nothing from `psdistill.judge` (whose `Judge` protocol
#: answers for image records; the pipeline adapts one to the other in a closure).
IndexJudge = Callable[[np.ndarray], np.ndarray]


class ConvergenceError(RuntimeError):
    """An optimiser stopped before meeting its tolerance; the estimate is not returned."""


def _rows(rows: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(rows)
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


def check_comparisons(n_items, pairs, outcomes=None, weights=None, ties=None):
    """Validate comparison data and return ``(a, b, y, w)`` as flat arrays.

    Parameters
    ----------
    n_items : int
        Number of items; indices must lie in ``0..n_items-1``.
    pairs : array_like, shape (m, 2)
        Integer item indices in presentation order.
    outcomes : array_like, shape (m,), optional
        P(first item preferred) in [0, 1]. Default: the first item won every comparison.
    weights : array_like, shape (m,), optional
        Non-negative weight of each comparison in the likelihood. Default 1.
    ties : array_like of bool, shape (m,), optional
        Rows that are ties; their outcome is set to 0.5 (half a win for each side).

    Returns
    -------
    a, b : numpy.ndarray of int, shape (m,)
    y, w : numpy.ndarray of float, shape (m,)

    Raises
    ------
    DataError
        On a malformed shape, an index outside ``0..n_items-1``, a self-comparison, a NaN or
        out-of-range outcome, or a negative or non-finite weight. The message names the rows.
    """
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 2:
        raise DataError(f"n_items: need an integer >= 2, got {n_items!r}")
    raw = np.asarray(pairs)
    if raw.ndim != 2 or raw.shape[1] != 2 or raw.shape[0] == 0:
        raise DataError(f"pairs: need a non-empty (m, 2) array of item indices, got shape {raw.shape}")
    if not np.issubdtype(raw.dtype, np.integer):
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise DataError("pairs: item indices must be integers (rows " + _rows(
                ~np.all(np.isfinite(raw) & (raw == np.round(raw)), axis=1)) + ")")
    raw = raw.astype(np.int64)
    bad = np.any((raw < 0) | (raw >= n_items), axis=1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"pairs: unknown item index in row(s) {_rows(bad)} (row {r} is {raw[r].tolist()}); "
                        f"indices must be 0..{n_items - 1}")
    same = raw[:, 0] == raw[:, 1]
    if same.any():
        r = int(np.flatnonzero(same)[0])
        raise DataError(f"pairs: self-comparison in row(s) {_rows(same)} (row {r} compares item {raw[r, 0]} "
                        "with itself); drop those rows")
    m = raw.shape[0]
    y = np.ones(m) if outcomes is None else _vector(outcomes, m, "outcomes")
    if np.isnan(y).any():
        raise DataError(f"outcomes: NaN in row(s) {_rows(np.isnan(y))}; drop those comparisons "
                        "(an unanswered judgment carries no information) or mark real ties with 0.5")
    if np.any((y < 0) | (y > 1)):
        raise DataError(f"outcomes: P(first preferred) must be in [0, 1]; row(s) {_rows((y < 0) | (y > 1))}")
    if ties is not None:
        t = np.asarray(ties, dtype=bool)
        if t.shape != (m,):
            raise DataError(f"ties: need shape ({m},), got {t.shape}")
        y = np.where(t, 0.5, y)
    w = np.ones(m) if weights is None else _vector(weights, m, "weights")
    if np.any(~np.isfinite(w) | (w < 0)):
        raise DataError(f"weights: must be finite and >= 0; row(s) {_rows(~np.isfinite(w) | (w < 0))}")
    return raw[:, 0].copy(), raw[:, 1].copy(), y, w


def _vector(x, m: int, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=float)
    if v.shape != (m,):
        raise DataError(f"{name}: need one value per comparison, shape ({m},), got {v.shape}")
    return v


def check_connected(n_items: int, a, b, y=None, w=None, strong: bool = False,
                    names: Optional[Sequence[str]] = None) -> None:
    """Raise `DataError` unless the comparison graph links every item to every other.

    Only comparisons with positive weight count. Scores in different components have no common
    scale, so a fit across them would report differences that no data supports.

    With ``strong=True`` (needed for an unregularised maximum-likelihood fit) the test is Ford's
    (1957) condition: the directed graph with an edge a -> b whenever a won some share of a
    comparison with b must be strongly connected, else an item that never loses to the rest of the
    data has an infinite maximum-likelihood score.

    ``names`` (one per item) name the items in the message instead of their indices.
    """
    a, b = np.asarray(a), np.asarray(b)
    keep = np.ones(len(a), bool) if w is None else np.asarray(w) > 0
    if strong:
        y = np.asarray(y, dtype=float)
        win, lose = keep & (y > 0), keep & (y < 1)
        src = np.concatenate([a[win], b[lose]])
        dst = np.concatenate([b[win], a[lose]])
    else:
        src, dst = a[keep], b[keep]
    graph = coo_matrix((np.ones(len(src)), (src, dst)), shape=(n_items, n_items))
    n_comp, label = connected_components(graph, directed=strong, connection="strong" if strong else "weak")
    if n_comp == 1:
        return
    sizes = np.bincount(label)
    small = np.flatnonzero(label != np.argmax(sizes))
    example = ", ".join(str(k) if names is None else names[k] for k in small[:8]) + (" ..." if len(small) > 8 else "")
    if strong:
        raise DataError(
            f"the maximum-likelihood estimate does not exist: the win graph splits into {n_comp} strongly "
            f"connected parts (e.g. items {example} never lose to, or never beat, the rest); "
            "pass alpha > 0 for a regularised fit")
    raise DataError(
        f"comparison graph is disconnected: {n_comp} components of sizes {sorted(sizes.tolist(), reverse=True)[:8]}; "
        f"items {example} are not linked to the largest one (add comparisons across the components "
        "or fit each component separately)")
