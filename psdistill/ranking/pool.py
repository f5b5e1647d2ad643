"""The Elo reference pool: calibrated pseudo-scores from O(N k) judgments instead of O(N^2).

"Elo reference pool" is PSDistill's name. What is fitted is a Bradley-Terry model, the model
online Elo approximates, by maximum likelihood (MAP with a weak prior) in batch: the scores do not
depend on the order in which judgments arrive, and every item gets a posterior variance, which
the pair confidences need. Online Elo (eval/elo.py) is there for comparison.

1. Choose k references spanning the quality range (`choose_references`: stratified on a prior
   score when one is given, else at random).
2. Calibrate them among themselves: all k (k - 1) / 2 pairs, in both presentation orders, in one
   judge call. The two orders give the judge's position bias and one debiased outcome per pair;
   a Bradley-Terry fit of those gives the references' scores and covariance.
3. Place every other item by judgments against the references only, whose scores stay fixed
   until step 4.
   Each item has a Gaussian posterior (Laplace approximation) on the same latent logit scale.
   - fixed pool (``adaptive=False``, as in PSDistill): every item meets every reference.
   - adaptive pool: in rounds, each unfinished item meets the reference with the largest expected
     Fisher information under its current posterior (the one nearest its current estimate, so
     the sequence is a noisy binary search, cf. Waeber, Frazier & Henderson 2013), and stops once
     the next reference would add little to the information it has (``stop_information_gain``)
     and, optionally, once its place between two references is settled (``stop_place_error``).
     Each round is one batched judge call for all unfinished items.
4. Both pools: refit the references and the items jointly, the MAP of every judgment under the
   references' and the items' priors, with the dispersion pooled over every judgment. A reference
   meets hundreds of items but only k - 1 other references: frozen at the round robin, its
   (seed-dependent) error stayed in every item placed against it. Items meet only references, so
   the joint Hessian is an arrowhead and its inverse (the items' variances, the references'
   covariance) costs O(N k^2) by the Schur complement (`_joint_posterior`).

The judge's answers are soft, correlated across the two orders of a pair and not Bernoulli
draws, so the likelihood is a quasi-likelihood (McCullagh & Nelder 1989, ch. 9): its dispersion
phi, the deviance per degree of freedom (steadier than Pearson's X^2 when some fitted
probabilities are extreme), scales every variance. The round robin's phi weighs the judgments
while items are placed; the final one is pooled over every judgment of the joint fit. The
confidence of a training pair is then the posterior probability P(s_i > s_j) (`pair_confidence`).

On the simulated judges of eval/bench_judge_budget.py (N = 600, k = 16, seeds 5-14, held out from
the seeds used to design it; stop_information_gain 0.1 then), the joint refit lowered the adaptive
pool's pair-confidence ECE at 15 of 16 judges (0.0228 vs 0.0231 at constant 0.90) and changed its
SRCC by -0.0001 to +0.014 (weak judges gain most), at unchanged calls; the fixed pool gains as
much SRCC, its ECE moves by -0.001 to +0.003. A constant-accuracy judge's adaptive pool stays
under-confident (ECE 0.020-0.026 at accuracy 0.75-0.95, fixed pool 0.012-0.019): that judge's
answer is a step in the score gap, not the logistic curve, so in both pools items with no
reference between them are ordered over-confidently and items farther apart under-confidently; the
fixed pool's confidences, taking few distinct values, mix the two in the same bins.

Everything after the choice of references is a deterministic function of the judge's answers,
so rerunning with the same seed against a judge that caches its answers replays the same pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Optional

import numpy as np
from scipy.special import expit, logit, ndtr, xlogy

from psdistill.core.errors import ConfigError, DataError
from psdistill.ranking.design import choose_references
from psdistill.ranking.pairwise import fit_bradley_terry
from psdistill.ranking.utils import ConvergenceError, IndexJudge

__all__ = ["ReferencePoolConfig", "PoolResult", "run_reference_pool", "pair_confidence", "to_rating_scale"]

_EPS = 1e-6  # judge probabilities are clipped to [eps, 1 - eps] before taking logits
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(16)
_GH_W = _GH_W / _GH_W.sum()  # E[f(Z)], Z ~ N(0, 1), as sum(w * f(x))


@dataclass
class ReferencePoolConfig:
    """Reference pool settings (`run_reference_pool`).

    The defaults are this project's choices (docs/method.md section 3: the paper gives none).
    """

    k: int = field(default=16, metadata={"help": "number of reference items, calibrated round-robin"})
    adaptive: bool = field(default=True, metadata={
        "help": "pick each item's next reference from its posterior and stop early; "
                "false: every item meets every reference"})
    max_comparisons_per_item: Optional[int] = field(default=None, metadata={
        "help": "adaptive only: most references an item meets (one pair each, judged in both orders "
                "if both_orders); empty: k"})
    stop_information_gain: float = field(default=0.09, metadata={
        "help": "adaptive only: stop placing an item once its most informative unused reference would add at "
                "most this fraction of the information its judgments so far carry (0: never stop early)"})
    stop_place_error: Optional[float] = field(default=None, metadata={
        "help": "adaptive only: also keep placing an item until P(it lies outside the interval between the two "
                "references nearest its estimate) is at most this (e.g. 0.5): with a weak judge items then meet "
                "(nearly) every reference, losing no SRCC to the fixed pool; empty: stop_information_gain alone"})
    stop_sd: Optional[float] = field(default=None, repr=False, metadata={
        "help": "removed: an absolute sd stopped every item after one reference with a weak judge, whose "
                "scores span a narrow range; use stop_information_gain"})
    both_orders: bool = field(default=True, metadata={
        "help": "judge each item-reference pair in both orders (the references always are)"})
    alpha: float = field(default=0.01, metadata={
        "help": "precision of the N(0, 1/alpha) prior on reference scores; "
                "keeps them finite when the judge is certain"})
    estimate_dispersion: bool = field(default=True, metadata={
        "help": "scale variances by the quasi-likelihood dispersion: the references' while items are "
                "placed, pooled over every judgment for the final scores"})
    seed: int = field(default=0, metadata={"help": "seeds the choice of references"})

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 3:
            raise ConfigError(f"k: need an integer >= 3 (the dispersion needs k - 1 < k (k - 1) / 2), got {self.k!r}")
        cap = self.max_comparisons_per_item
        if cap is not None:
            if not self.adaptive and cap != self.k:
                raise ConfigError(f"max_comparisons_per_item: only the adaptive pool stops early; with "
                                  f"adaptive=false every item meets all k={self.k} references (leave it empty)")
            if not 1 <= cap <= self.k:
                raise ConfigError(f"max_comparisons_per_item: need 1 <= value <= k={self.k} (pairs are not "
                                  f"repeated), got {cap}")
        if self.stop_sd is not None:
            raise ConfigError("stop_sd: removed; use stop_information_gain (e.g. 0.1), a criterion relative to the "
                              "information an item has gathered: an absolute sd on the latent scale means less "
                              "the weaker the judge")
        if not (np.isfinite(self.stop_information_gain) and self.stop_information_gain >= 0):
            raise ConfigError(f"stop_information_gain: need a finite value >= 0, got {self.stop_information_gain}")
        place = self.stop_place_error
        if place is not None and not (isinstance(place, (int, float)) and 0 < place <= 1):
            raise ConfigError(f"stop_place_error: need a probability in (0, 1] or empty, got {place!r}")
        if not (np.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"alpha: need a finite value > 0, got {self.alpha}")


@dataclass(frozen=True)
class PoolResult:
    """Output of `run_reference_pool`.

    ``mu``, ``var``: posterior mean and variance of every item on the latent logit scale.
    ``comparisons``: every judgment in the order asked, an (m, 3) float array of (first index,
    second index, P(first preferred) as the judge answered). ``n_judge_calls``: number of
    (batched) judge calls. ``n_references_met``: how many references each item was compared with
    (k - 1 for a reference). ``position_bias``: the judge's logit shift toward the first-shown
    item, measured on the references. ``dispersion``: the quasi-likelihood dispersion phi.
    """

    mu: np.ndarray
    var: np.ndarray
    reference_ids: np.ndarray
    comparisons: np.ndarray
    n_judge_calls: int
    n_references_met: np.ndarray
    position_bias: float
    dispersion: float


def run_reference_pool(n_items: int, judge: IndexJudge, config: ReferencePoolConfig = ReferencePoolConfig(),
                       prior=None, rng=None) -> PoolResult:
    """Score ``n_items`` items with judgments against a calibrated reference pool.

    The steps of the module docstring, in order: choose the references, calibrate them
    (`_calibrate_references`), give every other item a prior (`_item_prior`), judge the items
    against the references in rounds (`_judge_in_rounds`), and refit references and items jointly
    with the dispersion pooled over every judgment (`_joint_posterior`).

    Parameters
    ----------
    n_items : int
        Number of items, 0..n_items-1 (the judge sees only these indices).
    judge : IndexJudge
        ``judge(pairs)`` with ``pairs`` an (m, 2) int array in presentation order returns an (m,)
        array of P(first item preferred). Called once per round with every pair of the round.
    config : ReferencePoolConfig
    prior : array_like, shape (n_items,), optional
        A cheap prior score per item (e.g. the judge's zero-shot pointwise score). Used to choose
        the references (stratified) and, through its regression on the reference scores, as each
        item's prior mean. Without it the prior is the references' mean and variance.
    rng : int or numpy.random.Generator, optional
        Seeds the choice of references; default ``config.seed``.

    Returns
    -------
    PoolResult

    Raises
    ------
    DataError
        If ``n_items <= k``, the prior is malformed, or the judge returns a wrong shape or values
        outside [0, 1].
    ConvergenceError
        If a fit fails to converge.
    """
    cfg = config
    if n_items <= cfg.k:
        raise DataError(f"n_items: the pool needs more items than references (k={cfg.k}), got {n_items}")
    refs = choose_references(n_items, cfg.k, prior, cfg.seed if rng is None else rng)
    ask = _CheckedJudge(judge)
    scale = _calibrate_references(ask, refs, cfg)
    others = np.setdiff1d(np.arange(n_items), refs)
    prior_mu, prior_var = _item_prior(others, refs, scale.mu, np.diag(scale.cov), prior)
    observe = _observer(ask, others, refs, scale.bias, cfg.both_orders)
    y, post_mu, _ = _judge_in_rounds(observe, scale, prior_mu, prior_var, cfg)
    fit = _joint_posterior(scale, y, prior_mu, prior_var, cfg.alpha, post_mu, scale.phi)
    if cfg.estimate_dispersion:
        phi = fit.deviance / fit.df
        fit = _joint_posterior(scale, y, prior_mu, prior_var, cfg.alpha, fit.s, phi)
        scale = replace(scale, phi=phi)
    mu, var = np.empty(n_items), np.empty(n_items)
    mu[refs], var[refs] = fit.t, fit.var_t
    mu[others], var[others] = fit.s, fit.var_s
    n_met = np.full(n_items, cfg.k - 1)
    n_met[others] = (~np.isnan(y)).sum(axis=1)
    return PoolResult(mu=mu, var=var, reference_ids=refs, comparisons=np.concatenate(ask.log),
                      n_judge_calls=len(ask.log), n_references_met=n_met, position_bias=scale.bias,
                      dispersion=scale.phi)


class _CheckedJudge:
    """The judge with its answers checked, keeping every judgment in the order asked."""

    def __init__(self, judge: IndexJudge):
        self.judge, self.log = judge, []

    def __call__(self, pairs: np.ndarray) -> np.ndarray:
        p = np.asarray(self.judge(pairs), dtype=float)
        if p.shape != (len(pairs),) or not np.all((p >= 0) & (p <= 1)):
            bad = " with values outside [0, 1] or NaN" if p.shape == (len(pairs),) else ""
            raise DataError(f"judge: must return one probability in [0, 1] per pair, shape ({len(pairs)},); "
                            f"got shape {p.shape}{bad}")
        self.log.append(np.column_stack([pairs, p]))
        return p


@dataclass(frozen=True)
class _Scale:
    """The references' calibrated scale: scores, their covariance (common shift projected out),
    the judge's position bias, the dispersion phi, and the round robin's debiased outcomes
    ``y[r]`` of reference pairs ``(ii[r], jj[r])`` (positions in the reference list)."""

    mu: np.ndarray
    cov: np.ndarray
    bias: float
    phi: float
    ii: np.ndarray
    jj: np.ndarray
    y: np.ndarray


def _calibrate_references(ask, refs, cfg) -> _Scale:
    """Step 2: all k (k - 1) / 2 reference pairs in both orders in one call; the two orders give the
    position bias and a debiased outcome per pair, and a Bradley-Terry MAP fit of those (reweighted
    by the deviance dispersion) gives the references' scores and covariance."""
    k = cfg.k
    ii, jj = np.triu_indices(k, 1)
    pairs = np.column_stack([refs[ii], refs[jj]])
    p = ask(np.concatenate([pairs, pairs[:, ::-1]]))
    l_ab, l_ba = _logit(p[: len(ii)]), _logit(p[len(ii):])
    bias = float(np.mean(l_ab + l_ba) / 2)  # logit p_ab = d + b, logit p_ba = -d + b
    y = expit((l_ab - l_ba) / 2)
    fit = fit_bradley_terry(k, np.column_stack([ii, jj]), y, alpha=cfg.alpha, cov=True)
    phi = 1.0
    if cfg.estimate_dispersion:
        phi = _deviance(y, expit(fit.params[ii] - fit.params[jj])) / (len(ii) - (k - 1))
        fit = fit_bradley_terry(k, np.column_stack([ii, jj]), y, weights=np.full(len(ii), 1 / phi),
                                alpha=cfg.alpha, initial_params=fit.params, cov=True)
    # Only score differences are identified; the prior's common shift (variance 1 / (alpha k))
    # moves every item with the references and is projected out: C = P cov P, P = I - 11^T / k.
    centre = np.eye(k) - 1 / k
    return _Scale(mu=fit.params, cov=centre @ fit.cov @ centre, bias=bias, phi=phi, ii=ii, jj=jj, y=y)


def _observer(ask, others, refs, bias, both_orders):
    """Step 3's judgments: ``observe(rows, cols, round)`` returns the debiased outcomes of items
    ``others[rows]`` against references ``refs[cols]``."""

    def observe(rows, cols, rnd):
        item, ref = others[rows], refs[cols]
        if both_orders:
            p = ask(np.concatenate([np.column_stack([item, ref]), np.column_stack([ref, item])]))
            return expit((_logit(p[: len(rows)]) - _logit(p[len(rows):])) / 2)
        # alternate which side is shown first, and remove the bias measured on the references
        first = (rows + rnd) % 2 == 0
        shown = np.where(first[:, None], np.column_stack([item, ref]), np.column_stack([ref, item]))
        l = _logit(ask(shown)) - bias
        return expit(np.where(first, l, -l))

    return observe


def _judge_in_rounds(observe, scale: _Scale, prior_mu, prior_var, cfg):
    """Step 3: judge items against references in rounds; return (outcomes (n, k), posterior mean, variance).

    A fixed pool asks every pair in one round. An adaptive one asks each unfinished item's most
    informative unused reference per round (a pair is never asked twice), and lets an item go once
    that reference's expected Fisher information is at most ``stop_information_gain`` times the
    information its judgments so far carry (the likelihood's share of its posterior precision,
    sum of F'(s - mu_r) over the references met), or once it has met ``max_comparisons_per_item``.

    Why relative information: it does not depend on the latent scale, which a weak judge
    compresses (an absolute posterior sd of 0.3 stopped every item after one reference with a judge
    of accuracy 0.70, whose references spread sd 0.25). Where every reference is about as
    informative, as with a weak judge whose references all lie close on the logit scale, an item
    meets about 1 / stop_information_gain of them (the default 0.09: 11 of 16, 0.7x the fixed pool's
    calls, where no rule can keep a weak graded judge's SRCC, eval/results/pool_bound.md); where the
    references span a wide range, the distant ones carry little and the item stops as soon as the
    near ones are used.

    With ``stop_place_error`` an item also has to have a settled place on the scale the references
    span (`_place_error`): a weak judge's items stay unsettled and meet (nearly) every reference,
    so the adaptive pool loses no SRCC to the fixed one there but saves calls only where the judge
    is strong (eval/results/judge_budget.md: no stopping rule can save 30% of a weak judge's calls
    for free, as a fixed pool with 30% fewer references shows).
    """
    n, k = len(prior_mu), len(scale.mu)
    cap = k if not cfg.adaptive or cfg.max_comparisons_per_item is None else cfg.max_comparisons_per_item
    var_ref = np.diag(scale.cov)
    used = np.zeros((n, k), bool)
    y = np.full((n, k), np.nan)
    post_mu, post_var = prior_mu.copy(), prior_var.copy()
    active = np.arange(n)
    for rnd in range(cap if cfg.adaptive else 1):
        if cfg.adaptive:
            cols, info = _most_informative(post_mu[active], post_var[active], scale.mu, var_ref, used[active])
            f = expit(post_mu[active, None] - scale.mu[None, :])
            gathered = np.sum(np.where(used[active], f * (1 - f), 0.0), axis=1)
            going = info > cfg.stop_information_gain * gathered
            if cfg.stop_place_error is not None:
                going |= _place_error(post_mu[active], post_var[active], scale.mu) > cfg.stop_place_error
            rows, cols = active[going], cols[going]
            active = rows
            if not len(rows):
                break
        else:
            rows, cols = np.nonzero(~used)
        y[rows, cols] = observe(rows, cols, rnd)
        used[rows, cols] = True
        post_mu, post_var = _item_posteriors(y, scale, prior_mu, prior_var, post_mu)
    return y, post_mu, post_var


@dataclass(frozen=True)
class _JointFit:
    """`_joint_posterior`'s result: reference scores ``t`` and variances ``var_t``, item scores ``s``
    and variances ``var_s``, and the deviance of every judgment with its residual df."""

    t: np.ndarray
    var_t: np.ndarray
    s: np.ndarray
    var_s: np.ndarray
    deviance: float
    df: float


def _joint_posterior(scale: _Scale, y, prior_mu, prior_var, alpha, start, phi, max_iter=100, tol=1e-10) -> _JointFit:
    """Step 4: the MAP of reference scores t and item scores s given every judgment, and its Laplace variances.

    Maximises [sum over the round robin of l(y, t_a - t_b) + sum over item judgments of
    l(y, s_i - t_r)] / phi - alpha |t|^2 / 2 - sum_i (s_i - m0_i)^2 / (2 v0_i), l the soft-outcome
    log-likelihood, by Newton's method from the round-robin scores and ``start``. Items meet only
    references, so the negative Hessian is [[A, B], [B^T, D]] with D diagonal (one entry per item);
    each step and the inverse go through the k x k Schur complement S = A - B D^-1 B^T:
    cov(t) = S^-1, var(s_i) = 1 / D_i + (D^-1 B^T S^-1 B D^-1)_ii. The residual df subtracts the
    effective parameters: k - 1 for the references (the shift is the priors'), and per item
    1 - 1 / (v0 D_i), the share of its precision the data carry.
    """
    ii, jj, k = scale.ii, scale.jj, len(scale.mu)
    seen = ~np.isnan(y)
    mask = seen / phi  # each judgment's weight in the log-posterior
    y0 = np.where(seen, y, 0.0) * mask
    t, s = scale.mu.copy(), start.copy()
    for _ in range(max_iter):
        f_rr, f = expit(t[ii] - t[jj]), expit(s[:, None] - t[None, :])
        fm = f * mask
        r_rr, r = (scale.y - f_rr) / phi, y0 - fm
        grad_t = np.bincount(ii, r_rr, k) - np.bincount(jj, r_rr, k) - r.sum(axis=0) - alpha * t
        grad_s = r.sum(axis=1) - (s - prior_mu) / prior_var
        c_rr, c = f_rr * (1 - f_rr) / phi, fm * (1 - f)
        a = np.zeros((k, k))
        np.add.at(a, (ii, jj), -c_rr)
        a += a.T
        a[np.diag_indices(k)] = np.bincount(ii, c_rr, k) + np.bincount(jj, c_rr, k) + c.sum(axis=0) + alpha
        d = c.sum(axis=1) + 1 / prior_var
        g = c.T / d  # -B D^-1, (k, n): B = -c^T
        schur = a - g @ c
        step_t = np.linalg.solve(schur, grad_t + g @ grad_s)
        step_s = (grad_s + c @ step_t) / d
        # the log-posterior is concave: the clip only guards the first steps against overshoot
        step_t, step_s = np.clip(step_t, -2.0, 2.0), np.clip(step_s, -2.0, 2.0)
        t += step_t
        s += step_s
        if max(np.max(np.abs(step_t)), np.max(np.abs(step_s))) < tol:
            break
    else:
        raise ConvergenceError(f"joint refit: Newton did not converge in {max_iter} iterations")
    cov_t = np.linalg.inv(schur)
    var_s = 1 / d + np.sum(g * (cov_t @ g), axis=0)
    deviance = _deviance(scale.y, expit(t[ii] - t[jj])) + _deviance(y[seen], expit(s[:, None] - t[None, :])[seen])
    df = len(ii) + seen.sum() - (k - 1) - np.sum(1 - 1 / (prior_var * d))
    return _JointFit(t=t, var_t=np.diag(cov_t), s=s, var_s=var_s, deviance=deviance, df=float(df))


def _logit(p):
    return logit(np.clip(p, _EPS, 1 - _EPS))


def _deviance(y, fitted) -> float:
    """Binomial deviance of soft outcomes y about fitted means p:
    2 sum [y log(y / p) + (1 - y) log((1 - y) / (1 - p))]."""
    return float(2 * np.sum(xlogy(y, y / fitted) + xlogy(1 - y, (1 - y) / (1 - fitted))))


def _item_prior(others, refs, mu_ref, var_ref, prior):
    """Empirical-Bayes prior N(m0, v0) for each non-reference item on the references' scale.

    With a prior score, the least-squares line of reference score on prior score predicts each
    item's mean, with the residual variance (plus the mean reference variance) as its variance;
    without one, every item starts at the references' mean and variance.
    """
    if prior is None:
        return np.full(len(others), mu_ref.mean()), np.full(len(others), np.var(mu_ref, ddof=1))
    x = np.asarray(prior, dtype=float)
    slope, intercept = np.polyfit(x[refs], mu_ref, 1)
    resid = mu_ref - (slope * x[refs] + intercept)
    v0 = np.sum(resid ** 2) / (len(refs) - 2) + var_ref.mean()
    return slope * x[others] + intercept, np.full(len(others), v0)


def _place_error(m, v, mu_ref):
    """P(s < lower or s > upper) for s ~ N(m, v), lower and upper the references adjacent to m on the
    scale they span (one side only beyond the lowest or highest): how unsettled the item's place is."""
    order = np.sort(mu_ref)
    pos = np.searchsorted(order, m)
    sd = np.sqrt(v)
    below = np.where(pos > 0, ndtr((order[np.maximum(pos - 1, 0)] - m) / sd), 0.0)
    above = np.where(pos < len(order), ndtr((m - order[np.minimum(pos, len(order) - 1)]) / sd), 0.0)
    return below + above


def _most_informative(m, v, mu_ref, var_ref, used):
    """Per item, the unused reference maximising E[F'(s - mu_r)] with s - mu_r ~ N(m - mu_r, v + var_r), and that maximum:
    the expected Fisher information of one more comparison, which for a Gaussian posterior is the
    comparison that most shrinks its variance. Gauss-Hermite quadrature, (items, k, nodes)."""
    d = (m[:, None] - mu_ref[None, :])[..., None] + np.sqrt(v[:, None] + var_ref[None, :])[..., None] * _GH_X
    f = expit(d)
    info = np.sum(f * (1 - f) * _GH_W, axis=-1)
    info[used] = -np.inf
    best = np.argmax(info, axis=1)
    return best, info[np.arange(len(best)), best]


def _item_posteriors(y, scale: _Scale, prior_mu, prior_var, start, max_iter=100, tol=1e-10):
    """Laplace posterior of each item's score against the fixed references, vectorised over items.

    Maximises sum_r [y_r log F(s - mu_r) + (1 - y_r) log F(mu_r - s)] / phi - (s - m0)^2 / (2 v0)
    by Newton's method (the log-posterior is concave, so the step is damped only against overshoot).
    The variance adds the references' own uncertainty by the delta method: s moves with mu_r by
    g_r = c_r / (sum(c) + 1 / v0), c_r being comparison r's curvature, adding g^T C_ref g.
    """
    mu_ref, phi = scale.mu, scale.phi
    seen = ~np.isnan(y)
    y0 = np.where(seen, y, 0.0)
    s = start.copy()
    for _ in range(max_iter):
        f = expit(s[:, None] - mu_ref[None, :])
        grad = np.sum(np.where(seen, y0 - f, 0.0), axis=1) / phi - (s - prior_mu) / prior_var
        curv = np.sum(np.where(seen, f * (1 - f), 0.0), axis=1) / phi + 1 / prior_var
        step = np.clip(grad / curv, -2.0, 2.0)
        s += step
        if np.max(np.abs(step)) < tol:
            break
    else:
        raise ConvergenceError(f"item placement: Newton did not converge in {max_iter} iterations "
                               f"(largest step {np.max(np.abs(step)):.2e})")
    f = expit(s[:, None] - mu_ref[None, :])
    c = np.where(seen, f * (1 - f), 0.0) / phi
    total = c.sum(axis=1) + 1 / prior_var
    g = c / total[:, None]
    return s, 1 / total + np.einsum("nk,kl,nl->n", g, scale.cov, g)


def pair_confidence(mu, var, i, j) -> np.ndarray:
    """P(s_i > s_j) = Phi((mu_i - mu_j) / sqrt(var_i + var_j)) for independent Gaussian posteriors.

    ``i`` and ``j`` are index arrays (or scalars) of the same shape. It is the posterior
    probability that i is better, not a sigmoid of the score gap: the same gap is near-certain
    between two well-placed items and a coin flip between two barely judged ones. Two exact,
    equal scores (zero variance) give 0.5.
    """
    mu, var = np.asarray(mu, dtype=float), np.asarray(var, dtype=float)
    sd = np.sqrt(np.maximum(var[i] + var[j], 1e-24))
    return ndtr((mu[i] - mu[j]) / sd)


def to_rating_scale(mu, var, lo: float, hi: float, anchors=None,
                    match: Literal["least_squares", "mean_sd"] = "least_squares"):
    """Map latent scores and variances affinely to the rating scale: (a mu + b, a^2 var).

    With ``anchors`` (one rating per item, NaN where unrated; at least two distinct rated items)
    ``a, b`` are, over the rated items, the least-squares line of rating on score
    (``match="least_squares"``) or the map that gives the scores the ratings' mean and standard
    deviation (``"mean_sd"``: a = sd(r) / sd(mu), not shrunk by the ratings' noise as the
    least-squares slope is). Anchored items land near their ratings and the rest follow; scores are
    not clipped, an item better than every anchor may land above ``hi``. Without anchors the lowest
    score maps to ``lo`` and the highest to ``hi``.

    Raises
    ------
    DataError
        If ``lo >= hi``, the anchors are malformed or too few, all scores are equal, or the
        ratings decrease with the scores (a negative slope: check the rating direction).
    """
    mu, var = np.asarray(mu, dtype=float), np.asarray(var, dtype=float)
    if not lo < hi:
        raise DataError(f"rating scale: need lo < hi, got [{lo}, {hi}]")
    if anchors is None:
        spread = mu.max() - mu.min()
        if not spread > 0:
            raise DataError("mu: all scores are equal; there is no range to map onto the rating scale")
        slope = (hi - lo) / spread
        return lo + slope * (mu - mu.min()), slope ** 2 * var
    r = np.asarray(anchors, dtype=float)
    if r.shape != mu.shape:
        raise DataError(f"anchors: need one rating (or NaN) per item, shape {mu.shape}, got {r.shape}")
    rated = np.isfinite(r)
    if rated.sum() < 2 or np.ptp(mu[rated]) == 0:
        raise DataError(f"anchors: need at least two rated items with different scores, got {int(rated.sum())} rated")
    if match == "least_squares":
        slope, intercept = np.polyfit(mu[rated], r[rated], 1)
    elif match == "mean_sd":
        # the sign of the correlation: a mean/sd map would otherwise hide ratings that run backwards
        slope = np.sign(np.cov(mu[rated], r[rated])[0, 1]) * r[rated].std() / mu[rated].std()
        intercept = r[rated].mean() - slope * mu[rated].mean()
    else:
        raise ValueError(f"match: use 'least_squares' or 'mean_sd', got {match!r}")
    if slope <= 0:
        raise DataError(f"anchors: ratings decrease as scores increase (slope {slope:.3g}); "
                        "check that a higher rating means better")
    return slope * mu + intercept, slope ** 2 * var
