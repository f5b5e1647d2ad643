"""Pool strategy "adaptive": each round, every unfinished item meets its most
informative unused reference, and an item stops once more references would tell little.

The reference chosen has the largest expected Fisher information under the item's current
posterior (the one nearest its current estimate, so the sequence is a noisy binary search, cf.
Waeber, Frazier & Henderson 2013). An item goes once that reference's expected information is at
most ``stop_information_gain`` times the information its judgments so far carry (the likelihood's
share of its posterior precision, sum of F'(s - mu_r) over the references met), or once it has met
``max_comparisons_per_item``.

Why relative information: it does not depend on the latent scale, which a weak judge compresses
(an absolute posterior sd of 0.3 stopped every item after one reference with a judge of accuracy
0.70, whose references spread sd 0.25). Where every reference is about as informative, as with a
weak judge whose references all lie close on the logit scale, an item meets about
1 / stop_information_gain of them (the default 0.09: 11 of 16, 0.7x the fixed pool's calls, where
no rule can keep a weak graded judge's SRCC, eval/results/pool_bound.md); where the references span
a wide range, the distant ones carry little and the item stops as soon as the near ones are used.

With ``stop_place_error`` an item also has to have a settled place on the scale the references
span (`place_error`): a weak judge's items stay unsettled and meet (nearly) every reference, so
the adaptive pool loses no SRCC to the fixed one there but saves calls only where the judge is
strong (eval/results/judge_budget.md: no stopping rule can save 30% of a weak judge's calls for
free, as a fixed pool with 30% fewer references shows).
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit, ndtr

from psdistill.ranking.pool_fit import Placement

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(16)
_GH_W = _GH_W / _GH_W.sum()  # E[f(Z)], Z ~ N(0, 1), as sum(w * f(x))


def next_references(state: Placement, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(items, references) of this round: one pair per item still going, none once all have stopped."""
    cap = len(state.ref_mu) if cfg.max_comparisons_per_item is None else cfg.max_comparisons_per_item
    active = state.active
    if state.round >= cap:  # every active item has met `cap` references, one per round
        return active[:0], active[:0]
    m, v, used = state.mu[active], state.var[active], state.used[active]
    cols, info = most_informative(m, v, state.ref_mu, state.ref_var, used)
    f = expit(m[:, None] - state.ref_mu[None, :])
    gathered = np.sum(np.where(used, f * (1 - f), 0.0), axis=1)
    going = info > cfg.stop_information_gain * gathered
    if cfg.stop_place_error is not None:
        going |= place_error(m, v, state.ref_mu) > cfg.stop_place_error
    return active[going], cols[going]


def place_error(m, v, mu_ref):
    """P(s < lower or s > upper) for s ~ N(m, v), lower and upper the references adjacent to m on the
    scale they span (one side only beyond the lowest or highest): how unsettled the item's place is."""
    order = np.sort(mu_ref)
    pos = np.searchsorted(order, m)
    sd = np.sqrt(v)
    below = np.where(pos > 0, ndtr((order[np.maximum(pos - 1, 0)] - m) / sd), 0.0)
    above = np.where(pos < len(order), ndtr((m - order[np.minimum(pos, len(order) - 1)]) / sd), 0.0)
    return below + above


def most_informative(m, v, mu_ref, var_ref, used):
    """Per item, the unused reference maximising E[F'(s - mu_r)] with s - mu_r ~ N(m - mu_r, v + var_r), and that maximum:
    the expected Fisher information of one more comparison, which for a Gaussian posterior is the
    comparison that most shrinks its variance. Gauss-Hermite quadrature, (items, k, nodes)."""
    d = (m[:, None] - mu_ref[None, :])[..., None] + np.sqrt(v[:, None] + var_ref[None, :])[..., None] * _GH_X
    f = expit(d)
    info = np.sum(f * (1 - f) * _GH_W, axis=-1)
    info[used] = -np.inf
    best = np.argmax(info, axis=1)
    return best, info[np.arange(len(best)), best]
