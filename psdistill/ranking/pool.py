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
   Each item has a Gaussian posterior (Laplace approximation) on the same latent logit scale
   (`pool_fit`). Which references an item meets is the pool strategy's choice (``strategy``, a
   name in STRATEGIES), made in rounds from the posteriors so far; each round is one batched
   judge call for all unfinished items.
   - ``fixed`` (`pool_fixed`, as in PSDistill): every item meets every reference.
   - ``adaptive`` (`pool_adaptive`): each unfinished item meets the reference with
     the largest expected Fisher information under its current posterior (a noisy binary search),
     and stops once the next reference would add little to the information it has
     (``stop_information_gain``) and, optionally, once its place between two references is
     settled (``stop_place_error``).
   - ``plugin`` (`pool_plugin`, the default): the rule eval/bench_pool_bound.py bounded, fed by the judge's
     answers alone: ``budget`` x k pairs per item on average, each round to the items whose next
     comparison most lowers their expected rank error; a judge that states one confidence is
     modelled as a step (an exact posterior over the bins between the references, whose order and
     the judge's accuracy are fitted to the answers), any other as graded (rounds placed by the
     logistic posteriors, final scores from a Gaussian model of its answers' logits).
4. Every pool: refit the references and the items jointly, the MAP of every judgment under the
   references' and the items' priors, with the dispersion pooled over every judgment. A reference
   meets hundreds of items but only k - 1 other references: frozen at the round robin, its
   (seed-dependent) error stayed in every item placed against it. Items meet only references, so
   the joint Hessian is an arrowhead and its inverse (the items' variances, the references'
   covariance) costs O(N k^2) by the Schur complement (`pool_fit.joint_posterior`). A strategy
   with its own model of the judge then gives the final scores from every judgment (``refit``:
   the plugin pool's step model).

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
from typing import ClassVar, Literal, Optional

import numpy as np
from scipy.special import expit, ndtr

import psdistill.ranking.pool_adaptive as pool_adaptive
import psdistill.ranking.pool_fixed as pool_fixed
import psdistill.ranking.pool_plugin as pool_plugin
from psdistill.core.errors import ConfigError, DataError
from psdistill.ranking.design import choose_references
from psdistill.ranking.pairwise import fit_bradley_terry
from psdistill.ranking.pool_fit import (Placement, Scale, clipped_logit, deviance, item_posteriors, item_prior,
                                        joint_posterior)
from psdistill.ranking.utils import IndexJudge

__all__ = ["ReferencePoolConfig", "PoolResult", "run_reference_pool", "pair_confidence", "to_rating_scale",
           "STRATEGIES"]

# Pool strategies (`pool.strategy`): name -> the function that picks each round's (item, reference)
# pairs from a `Placement`. A new strategy is one module with such a function plus one entry here. A
# strategy with its own model of the judge may attach ``refit(scale, y, prior_mu, prior_var, fit, cfg)
# -> JointFit`` to the function (as `pool_plugin`): the final scores are then its, from every judgment.
STRATEGIES = {"fixed": pool_fixed.next_references, "adaptive": pool_adaptive.next_references,
              "plugin": pool_plugin.next_references}


# Debiased round-robin logits all below this: the judge states no preference (P within 2.5e-7 of 0.5); its
# references' spread, the items' prior variance, would be 0.
_NO_PREFERENCE = 1e-6


@dataclass
class ReferencePoolConfig:
    """Reference pool settings (`run_reference_pool`).

    The defaults are this project's choices (docs/method.md section 3: the paper gives none).
    """

    # Keys of older configs, refused with what to write instead (psdistill.core.config.from_dict).
    REMOVED_KEYS: ClassVar[dict] = {"adaptive": lambda on: f"strategy={'adaptive' if on else 'fixed'}"}

    k: int = field(default=16, metadata={"help": "number of reference items, calibrated round-robin"})
    strategy: str = field(default="plugin", metadata={
        "help": "how items meet references (a name in psdistill.ranking.pool.STRATEGIES): plugin spends budget x k "
                "pairs per item where they most lower the expected rank error, with a model of the judge fitted to "
                "its answers (eval/results/judge_budget.md: the fixed pool's SRCC at 0.69x its calls at every "
                "simulated judge, within 0.02 or of what any rule can reach); "
                "adaptive picks each item's next reference from its posterior and stops early; fixed: every item "
                "meets every reference"})
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
    budget: float = field(default=0.69, metadata={
        "help": "plugin only: item-reference pairs judged, as a share of the fixed pool's (every item meets all k "
                "references): 0.69 is 11 of 16 per item on average, spent where they most improve the ranking"})
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
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: {self.strategy!r} is not one of {sorted(STRATEGIES)}")
        cap = self.max_comparisons_per_item
        if cap is not None:
            if self.strategy == "fixed" and cap != self.k:
                raise ConfigError(f"max_comparisons_per_item: only the adaptive pool stops early; with "
                                  f"strategy=fixed every item meets all k={self.k} references (leave it empty)")
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
        if isinstance(self.budget, bool) or not (isinstance(self.budget, (int, float)) and 0 < self.budget <= 1):
            raise ConfigError(f"budget: need a share of the fixed pool's pairs in (0, 1], got {self.budget!r}")
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
    ``judge_model``: what the final fit's model says of the judge: ``{"model": "logistic", "dispersion":
    phi}``; the plugin pool's ``{"model": "step", "accuracy": a}`` (right with probability a however far
    apart) or ``{"model": "graded", "noise_sd": sigma, "spread_sd": sd}`` (answer logit = score gap +
    N(0, sigma^2), the items' scores spread with sd on that scale: sd / sigma is its signal to noise).
    """

    mu: np.ndarray
    var: np.ndarray
    reference_ids: np.ndarray
    comparisons: np.ndarray
    n_judge_calls: int
    n_references_met: np.ndarray
    position_bias: float
    dispersion: float
    judge_model: dict


def run_reference_pool(n_items: int, judge: IndexJudge, config: ReferencePoolConfig = ReferencePoolConfig(),
                       prior=None, rng=None) -> PoolResult:
    """Score ``n_items`` items with judgments against a calibrated reference pool.

    The steps of the module docstring, in order: choose the references, calibrate them
    (`_calibrate_references`), give every other item a prior (`item_prior`), judge the items
    against the references in rounds (`_judge_in_rounds`), and refit references and items jointly
    with the dispersion pooled over every judgment (`joint_posterior`).

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
    prior_mu, prior_var = item_prior(others, refs, scale.mu, np.diag(scale.cov), prior)
    observe = _observer(ask, others, refs, scale.bias, cfg.both_orders)
    y, post_mu, _ = _judge_in_rounds(observe, scale, prior_mu, prior_var, cfg)
    fit = joint_posterior(scale, y, prior_mu, prior_var, cfg.alpha, post_mu, scale.phi)
    if cfg.estimate_dispersion:
        phi = fit.deviance / fit.df
        fit = joint_posterior(scale, y, prior_mu, prior_var, cfg.alpha, fit.s, phi)
        scale = replace(scale, phi=phi)
    refit = getattr(STRATEGIES[cfg.strategy], "refit", None)
    if refit is not None:
        fit = refit(scale, y, prior_mu, prior_var, fit, cfg)
    mu, var = np.empty(n_items), np.empty(n_items)
    mu[refs], var[refs] = fit.t, fit.var_t
    mu[others], var[others] = fit.s, fit.var_s
    n_met = np.full(n_items, cfg.k - 1)
    n_met[others] = (~np.isnan(y)).sum(axis=1)
    return PoolResult(mu=mu, var=var, reference_ids=refs, comparisons=np.concatenate(ask.log),
                      n_judge_calls=len(ask.log), n_references_met=n_met, position_bias=scale.bias,
                      dispersion=scale.phi, judge_model=fit.judge_model)


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


def _calibrate_references(ask, refs, cfg) -> Scale:
    """Step 2: all k (k - 1) / 2 reference pairs in both orders in one call; the two orders give the
    position bias and a debiased outcome per pair, and a Bradley-Terry MAP fit of those (reweighted
    by the deviance dispersion) gives the references' scores and covariance."""
    k = cfg.k
    ii, jj = np.triu_indices(k, 1)
    pairs = np.column_stack([refs[ii], refs[jj]])
    p = ask(np.concatenate([pairs, pairs[:, ::-1]]))
    l_ab, l_ba = clipped_logit(p[: len(ii)]), clipped_logit(p[len(ii):])
    bias = float(np.mean(l_ab + l_ba) / 2)  # logit p_ab = d + b, logit p_ba = -d + b
    y = expit((l_ab - l_ba) / 2)
    if np.max(np.abs(l_ab - l_ba)) < _NO_PREFERENCE:
        raise DataError(f"judge: all {len(y)} reference pairs were answered alike in both orders (no preference "
                        "either way): there is nothing to rank; check the judge's prompt and answer tokens")
    fit = fit_bradley_terry(k, np.column_stack([ii, jj]), y, alpha=cfg.alpha, cov=True)
    phi = 1.0
    if cfg.estimate_dispersion:
        phi = deviance(y, expit(fit.params[ii] - fit.params[jj])) / (len(ii) - (k - 1))
        fit = fit_bradley_terry(k, np.column_stack([ii, jj]), y, weights=np.full(len(ii), 1 / phi),
                                alpha=cfg.alpha, initial_params=fit.params, cov=True)
    # Only score differences are identified; the prior's common shift (variance 1 / (alpha k))
    # moves every item with the references and is projected out: C = P cov P, P = I - 11^T / k.
    centre = np.eye(k) - 1 / k
    return Scale(mu=fit.params, cov=centre @ fit.cov @ centre, bias=bias, phi=phi, ii=ii, jj=jj, y=y)


def _observer(ask, others, refs, bias, both_orders):
    """Step 3's judgments: ``observe(rows, cols, round)`` returns the debiased outcomes of items
    ``others[rows]`` against references ``refs[cols]``."""

    def observe(rows, cols, rnd):
        item, ref = others[rows], refs[cols]
        if both_orders:
            p = ask(np.concatenate([np.column_stack([item, ref]), np.column_stack([ref, item])]))
            return expit((clipped_logit(p[: len(rows)]) - clipped_logit(p[len(rows):])) / 2)
        # alternate which side is shown first, and remove the bias measured on the references
        first = (rows + rnd) % 2 == 0
        shown = np.where(first[:, None], np.column_stack([item, ref]), np.column_stack([ref, item]))
        l = clipped_logit(ask(shown)) - bias
        return expit(np.where(first, l, -l))

    return observe


def _judge_in_rounds(observe, scale: Scale, prior_mu, prior_var, cfg):
    """Step 3: judge items against references in the rounds the strategy asks for, until it asks for
    none; return (outcomes (n, k), posterior mean, variance). A pair is never asked twice."""
    choose = STRATEGIES[cfg.strategy]
    n, k = len(prior_mu), len(scale.mu)
    y = np.full((n, k), np.nan)
    state = Placement(round=0, active=np.arange(n), used=np.zeros((n, k), bool), mu=prior_mu.copy(),
                      var=prior_var.copy(), ref_mu=scale.mu, ref_var=np.diag(scale.cov), y=y, scale=scale,
                      prior_mu=prior_mu, prior_var=prior_var)
    while True:
        rows, cols = choose(state, cfg)
        if not len(rows):
            return y, state.mu, state.var
        if state.used[rows, cols].any():
            raise ValueError(f"pool strategy {cfg.strategy!r} asked for a pair judged before")
        y[rows, cols] = observe(rows, cols, state.round)
        state.used[rows, cols] = True
        state.mu, state.var = item_posteriors(y, scale, prior_mu, prior_var, state.mu)
        state.active, state.round = np.unique(rows), state.round + 1


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
