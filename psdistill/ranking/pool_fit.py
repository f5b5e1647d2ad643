"""The reference pool's posteriors on the references' logit scale (steps 2-4 of `psdistill.ranking.pool`).

`Scale` is the calibrated references; `item_posteriors` places items against them while the pool
judges in rounds (`Placement` is what a pool strategy sees between rounds); `joint_posterior` refits
references and items together once every judgment is in. All are Laplace (Gaussian) posteriors of
a soft-outcome Bradley-Terry quasi-likelihood whose dispersion phi scales every variance.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit, logit, xlogy

from psdistill.ranking.utils import ConvergenceError

_EPS = 1e-6  # judge probabilities are clipped to [eps, 1 - eps] before taking logits
_VARIANCE_FLOOR = 1e-8  # logit^2: far below what answers clipped at _EPS can tell apart
# The logit-Gaussian fit's origin: the references' mean, held at 0 by a N(0, _ORIGIN_SD^2) prior on it.
# Only differences are identified and the prior's line is free, so a looser origin would add its
# variance to every score's, twice to every pair's.
_ORIGIN_SD = 1e-4


@dataclass(frozen=True)
class Scale:
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


@dataclass
class Placement:
    """Step 3's state before each round, what a pool strategy chooses the round's pairs from.

    Items are positions 0..n-1 in the list of non-references, references positions 0..k-1.
    ``active``: the items asked in the previous round (all of them before the first); the adaptive
    strategy treats an item it once leaves out as done, others may ask any item. ``used`` (n, k):
    the pairs judged so far, never asked again. ``mu``, ``var``: each item's posterior (prior before
    the first round); ``ref_mu``, ``ref_var``: the references' scores and variances. ``y`` (n, k):
    the debiased outcomes so far (NaN where not judged), ``scale`` the calibrated references and
    ``prior_mu``, ``prior_var`` the items' priors, for a strategy that fits its own model.
    """

    round: int
    active: np.ndarray
    used: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    ref_mu: np.ndarray
    ref_var: np.ndarray
    y: np.ndarray | None = None
    scale: Scale | None = None
    prior_mu: np.ndarray | None = None
    prior_var: np.ndarray | None = None


def item_prior(others, refs, mu_ref, var_ref, prior):
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


def item_posteriors(y, scale: Scale, prior_mu, prior_var, start, max_iter=100, tol=1e-10):
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


@dataclass(frozen=True)
class JointFit:
    """`joint_posterior`'s result: reference scores ``t`` and variances ``var_t``, item scores ``s``
    and variances ``var_s``, and the deviance of every judgment with its residual df. ``judge_model``:
    what the fit's model says of the judge (`PoolResult.judge_model`), set by the model that made it."""

    t: np.ndarray
    var_t: np.ndarray
    s: np.ndarray
    var_s: np.ndarray
    deviance: float
    df: float
    judge_model: dict = field(default_factory=dict)


def joint_posterior(scale: Scale, y, prior_mu, prior_var, alpha, start, phi, max_iter=100, tol=1e-10) -> JointFit:
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
    dev = deviance(scale.y, expit(t[ii] - t[jj])) + deviance(y[seen], expit(s[:, None] - t[None, :])[seen])
    df = len(ii) + seen.sum() - (k - 1) - np.sum(1 - 1 / (prior_var * d))
    return JointFit(t=t, var_t=np.diag(cov_t), s=s, var_s=var_s, deviance=dev, df=float(df),
                    judge_model={"model": "logistic", "dispersion": float(phi)})


def logit_gaussian_posterior(scale: Scale, y, prior_mu, alpha, max_iter=10_000, tol=1e-7) -> JointFit:
    """References and items refitted jointly under a Gaussian model of the judge's debiased logits:
    logit y = (score of the first) - (score of the second) + N(0, sigma^2), Thurstone's case V read on
    the judge's own logit (the graded judge of `psdistill.judge.simulated` answers exactly so).

    The logistic quasi-likelihood reads a graded answer as a soft vote whose information falls with
    the gap; here a distant reference informs as much as a near one, and sigma^2 (how graded the
    answers are) comes from the residuals. Items have the prior N(x_i beta, v0), x_i = (1, prior_mu_i)
    when ``prior_mu`` (the items' prior on the logistic scale, which carries the prior score when there
    is one) varies and (1,) otherwise; references N(0, 1 / alpha), their mean held at 0. Given sigma^2 and v0 the model is
    linear: t, beta (flat prior) and s are one solve through the Schur complement of the dense block
    (t, beta), as in `joint_posterior`; sigma^2 and v0 are fitted by EM (a linear mixed model's
    updates, from the posterior's expected squared residuals). Returned on the logit scale; the
    deviance is the residual sum of squares over sigma^2, with the df `joint_posterior` counts.
    """
    ii, jj, k = scale.ii, scale.jj, len(scale.mu)
    seen = ~np.isnan(y)
    counts = seen.astype(float)
    ly = np.where(seen, clipped_logit(np.where(seen, y, 0.5)), 0.0)
    l_rr = clipped_logit(scale.y)
    m = len(ii) + int(seen.sum())
    x = np.column_stack([np.ones(len(prior_mu)), prior_mu]) if np.ptp(prior_mu) > 0 else np.ones((len(prior_mu), 1))
    big = k + x.shape[1]  # the dense block: reference scores, then the prior's line
    graph = np.zeros((k, k))  # the round robin's and the items' precision on t, per 1 / sigma^2
    np.add.at(graph, (ii, jj), -1.0)
    graph += graph.T
    graph[np.diag_indices(k)] = np.bincount(ii, None, k) + np.bincount(jj, None, k) + counts.sum(axis=0)
    lin_t = np.bincount(ii, l_rr, k) - np.bincount(jj, l_rr, k) - ly.sum(axis=0)
    sigma2, v0 = max(np.var(l_rr), _VARIANCE_FLOOR), max(np.var(ly[seen]), _VARIANCE_FLOOR)
    for _ in range(max_iter):
        d = counts.sum(axis=1) / sigma2 + 1 / v0
        g = np.vstack([counts.T / sigma2, x.T / v0]) / d  # (big, n): -B D^-1, how each item moves with the block
        a = np.zeros((big, big))
        a[:k, :k] = graph / sigma2 + alpha * np.eye(k) + 1 / (k * _ORIGIN_SD) ** 2
        a[k:, k:] = x.T @ x / v0
        schur = a - g @ (g.T * d[:, None])
        b_s = ly.sum(axis=1) / sigma2
        cov = np.linalg.inv(schur)  # needed for the variances anyway: one factorisation, not a solve as well
        block = cov @ (np.r_[lin_t / sigma2, np.zeros(big - k)] + g @ b_s)
        s = b_s / d + g.T @ block
        spread = cov @ g  # (big, n): cov(block, s_i)
        var_s = 1 / d + np.sum(g * spread, axis=0)
        t, beta, cov_t = block[:k], block[k:], cov[:k, :k]
        # EM: expected squared prior deviations and residuals under the posterior
        dev = s - x @ beta
        var_dev = var_s + np.einsum("np,pq,nq->n", x, cov[k:, k:], x) - 2 * np.sum(x * spread[k:].T, axis=1)
        new_v0 = np.mean(dev ** 2 + var_dev)
        var_t = np.diag(cov_t)
        res_rr, res = l_rr - (t[ii] - t[jj]), np.where(seen, ly - (s[:, None] - t[None, :]), 0.0)
        expected = (np.sum(res_rr ** 2) + np.sum(var_t[ii] + var_t[jj] - 2 * cov_t[ii, jj]) + np.sum(res ** 2)
                    + np.sum(counts * (var_s[:, None] + var_t[None, :] - 2 * spread[:k].T)))
        # floored: a judge whose answers never vary has sigma^2 and v0 -> 0, one step at a time
        new_v0, new_sigma2 = max(new_v0, _VARIANCE_FLOOR), max(expected / m, _VARIANCE_FLOOR)
        done = abs(new_v0 - v0) <= tol * v0 and abs(new_sigma2 - sigma2) <= tol * sigma2
        v0, sigma2 = new_v0, new_sigma2
        if done:
            break
    else:
        raise ConvergenceError(f"logit-Gaussian refit: EM did not converge in {max_iter} iterations")
    rss = np.sum(res_rr ** 2) + np.sum(res ** 2)
    df = m - (k - 1) - np.sum(1 - 1 / (v0 * d))
    return JointFit(t=t, var_t=var_t, s=s, var_s=var_s, deviance=float(rss / sigma2), df=float(df),
                    judge_model={"model": "graded", "noise_sd": float(np.sqrt(sigma2)), "spread_sd": float(np.sqrt(v0))})


def clipped_logit(p):
    return logit(np.clip(p, _EPS, 1 - _EPS))


def deviance(y, fitted) -> float:
    """Binomial deviance of soft outcomes y about fitted means p:
    2 sum [y log(y / p) + (1 - y) log((1 - y) / (1 - p))]."""
    return float(2 * np.sum(xlogy(y, y / fitted) + xlogy(1 - y, (1 - y) / (1 - fitted))))
