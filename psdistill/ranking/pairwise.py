"""Maximum-likelihood pairwise-comparison models: Bradley-Terry and Thurstone Case V.

Both models score items on a latent scale and give, for a comparison with item ``a`` shown
before item ``b``,

    P(a preferred over b) = F(theta_a - theta_b + beta),

with F the logistic function (Bradley & Terry, 1952) or the standard normal CDF (Thurstone's
Case V, 1927, with the variance of the difference fixed to 1) and ``beta`` an optional position
bias toward the first-shown item. Outcomes may be soft: an outcome ``y`` in [0, 1] enters the
likelihood as ``y`` wins and ``1 - y`` losses, so a tie (``y = 0.5``) is half a win for each side,
and a judge's probability is used as is. Each comparison's log-likelihood is multiplied by its
weight. The estimate maximises

    sum_r w_r [y_r log F(d_r) + (1 - y_r) log F(-d_r)] - alpha/2 * (|theta|^2 + beta^2),

i.e. ``alpha`` is the precision of an isotropic Gaussian prior N(0, 1/alpha) on every parameter.
choix (`choix.opt_pairwise`) writes the penalty as ``alpha_choix * |theta|^2``, so
``alpha = 2 * alpha_choix`` gives the same estimate. With ``alpha = 0`` (plain maximum likelihood)
the scores are defined up to a shift and are returned with mean zero; with ``alpha > 0`` the
optimum has mean zero anyway (each comparison's gradient sums to zero over the items).

The optimiser is a truncated Newton method (conjugate gradients on Hessian-vector products,
preconditioned by the Hessian's diagonal); gaps, gradients and Hessian products go through the
sparse signed incidence matrix of the comparisons, so each costs O(m). Standard errors
come from the inverse Hessian at the optimum (the Laplace approximation): its diagonal, computed from
the sparse Hessian (`psdistill.ranking.laplace`); the full covariance only on request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import csr_matrix
from scipy.special import expit, log_ndtr

from psdistill.core.errors import DataError
from psdistill.ranking.laplace import dense_covariance, hessian, laplace_variances
from psdistill.ranking.utils import ConvergenceError, check_comparisons, check_connected

__all__ = ["PairwiseFit", "fit_bradley_terry", "fit_thurstone"]

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


@dataclass(frozen=True)
class PairwiseFit:
    """A fitted pairwise model.

    ``params`` are the latent scores (n_items,); ``se`` their standard errors (None when not
    requested); ``position_bias`` the fitted logit (BT) or probit (Thurstone) shift toward the
    first-shown item (0.0 and ``position_bias_se=None`` when not fitted); ``cov`` the covariance of
    all fitted parameters, scores then bias (None unless ``cov=True``).
    """

    params: np.ndarray
    se: Optional[np.ndarray]
    position_bias: float
    position_bias_se: Optional[float]
    cov: Optional[np.ndarray]
    log_likelihood: float
    n_iter: int
    model: str


def _logistic(d, y, w):
    """Weighted negative log-likelihood of soft outcomes y at logits d, and its gradient in d."""
    # -[y log F(d) + (1 - y) log F(-d)] = log(1 + e^d) - y d = max(d, 0) + log(1 + e^-|d|) - y d,
    # finite for any d; log(1 + tiny) rounding to 0 costs < 1e-16 per term. Sums are taken as
    # (u * v).sum() rather than BLAS dots, which were slower here on a busy 2-core machine.
    e = np.exp(-np.abs(d))
    one_e = 1 + e
    loss = ((np.maximum(d, 0) + np.log(one_e) - y * d) * w).sum()
    r = np.where(d >= 0, 1.0, e)
    r /= one_e  # F(d)
    r -= y
    r *= w
    return float(loss), r


def _logistic_curvature(d, y):
    p = expit(d)
    return p * (1 - p)


def _probit(d, y, w):
    lp, lq = log_ndtr(d), log_ndtr(-d)
    log_pdf = -0.5 * d * d - _LOG_SQRT_2PI
    # inverse Mills ratios phi(d)/Phi(d) and phi(d)/Phi(-d), in logs to stay finite in the tails
    r = w * (-y * np.exp(log_pdf - lp) + (1 - y) * np.exp(log_pdf - lq))
    return -float((w * (y * lp + (1 - y) * lq)).sum()), r


def _probit_curvature(d, y):
    log_pdf = -0.5 * d * d - _LOG_SQRT_2PI
    lam_p, lam_q = np.exp(log_pdf - log_ndtr(d)), np.exp(log_pdf - log_ndtr(-d))
    return y * lam_p * (d + lam_p) + (1 - y) * lam_q * (lam_q - d)


_LINKS = {"bradley-terry": (_logistic, _logistic_curvature), "thurstone": (_probit, _probit_curvature)}


def _fit(model, n_items, pairs, outcomes, weights, ties, alpha, position_bias, se, cov, initial_params,
         max_iter, tol) -> PairwiseFit:
    a, b, y, w = check_comparisons(n_items, pairs, outcomes, weights, ties)
    if not (np.isfinite(alpha) and alpha >= 0):
        raise DataError(f"alpha: must be a finite number >= 0, got {alpha}")
    check_connected(n_items, a, b, y, w)
    if alpha == 0:
        check_connected(n_items, a, b, y, w, strong=True)
    link, curvature = _LINKS[model]
    n_par = n_items + int(position_bias)

    incidence, incidence_t = _incidence(a, b, n_items)

    def objective(x):
        d = incidence @ x[:n_items]
        if position_bias:
            d += x[n_items]
        loss, r = link(d, y, w)
        grad = alpha * x
        grad[:n_items] += incidence_t @ r
        if position_bias:
            grad[n_items] += r.sum()
        return loss + 0.5 * alpha * float((x * x).sum()), grad, d

    def curvature_at(d):
        """(H v for any v, diag H) at gaps d: H = D^T diag(c) D + alpha I, bordered by the bias."""
        c = w * curvature(d, y)
        diag = np.bincount(a, c, n_par) + np.bincount(b, c, n_par) + alpha
        if position_bias:
            diag[n_items] = c.sum() + alpha
        diag = np.maximum(diag, 1e-12 * scale)  # curvature underflows for a far-out item without a prior

        def hess_vec(v):
            u = incidence @ v[:n_items]
            if position_bias:
                u += v[n_items]
            u *= c
            out = alpha * v
            out[:n_items] += incidence_t @ u
            if position_bias:
                out[n_items] += u.sum()
            return out

        return hess_vec, diag

    # Convergence is judged per parameter relative to the weight of its comparisons: the error of
    # a score is then about tol / (its mean curvature F'), a few tol, however many comparisons.
    scale = 1.0 + np.bincount(a, w, n_par) + np.bincount(b, w, n_par)
    if position_bias:
        scale[n_items] = 1.0 + w.sum()
    x0 = np.zeros(n_par)
    if initial_params is not None:
        x0[:n_items] = np.asarray(initial_params, dtype=float)
    x, n_iter = _newton_cg(objective, curvature_at, x0, scale, max_iter, tol)

    theta = x[:n_items]
    if alpha == 0:
        theta -= theta.mean()
    beta = float(x[n_items]) if position_bias else 0.0
    d = theta[a] - theta[b] + beta
    loglik = -link(d, y, w)[0]
    sd, full = None, None
    if se or cov:
        h = hessian(n_items, a, b, w * curvature(d, y), alpha, position_bias)
        full = dense_covariance(h, n_items, alpha) if cov else None
        sd = np.sqrt(np.diag(full) if cov else laplace_variances(h, n_items, alpha))
    return PairwiseFit(
        params=theta, se=None if sd is None else sd[:n_items], position_bias=beta,
        position_bias_se=float(sd[n_items]) if sd is not None and position_bias else None, cov=full,
        log_likelihood=loglik, n_iter=n_iter, model=model)


def _incidence(a, b, n_items):
    """Signed incidence matrix D (m, n_items) and its transpose, both CSR: D x gives every
    comparison's gap x_a - x_b and D^T r sums per-comparison gradients onto the items, each in O(m)."""
    m = len(a)
    d = csr_matrix((np.concatenate([np.ones(m), -np.ones(m)]), (np.tile(np.arange(m), 2), np.concatenate([a, b]))),
                   shape=(m, n_items))
    return d, d.T.tocsr()


def _newton_cg(objective, curvature_at, x0, scale, max_iter, tol):
    """(x, Newton iterations) of a truncated Newton method (Nash 2000) on the convex `objective`
    (value, gradient, gaps); raises `ConvergenceError` unless max |gradient_k| / scale_k <= tol.

    Each step solves H p = -g by conjugate gradients preconditioned by diag H (Hessian-vector
    products through the incidence matrix: two sparse products, no Hessian formed), to a
    residual that shrinks with the gradient (forcing term min(0.5, sqrt(gradient))), so the
    outer convergence is superlinear; an Armijo backtracking line search guards the step. On a
    reference pool of 100,000 items and 10^7 comparisons: 9 steps, 11 evaluations and 18 Hessian
    products (each costs about one evaluation), where L-BFGS-B took 63 evaluations plus its
    (n x memory) updates; on long chains, where L-BFGS-B stalls, a few dozen steps.
    """
    x = x0.copy()
    f, g, d = objective(x)
    for it in range(max_iter + 1):
        rel = float(np.max(np.abs(g) / scale))
        if not (np.isfinite(f) and np.isfinite(rel)):
            break
        if rel <= tol:
            return x, it
        if it == max_iter:
            break
        hess_vec, diag = curvature_at(d)
        p = _pcg(hess_vec, diag, -g, scale, min(0.5, np.sqrt(rel)) * rel)
        slope = float((g * p).sum())
        if not slope < 0:  # rounding at the last digits: fall back to the preconditioned gradient
            p = -g / diag
            slope = float((g * p).sum())
        t = 1.0
        while True:
            f_new, g_new, d_new = objective(x + t * p)
            # the slack admits steps whose decrease is below the rounding of f (near the optimum)
            if f_new <= f + 1e-4 * t * slope + 1e-12 * abs(f):
                break
            t /= 2
            if t < 1e-10:
                raise ConvergenceError(f"Newton line search failed at iteration {it} (relative gradient {rel:.2e}); "
                                       "pass alpha > 0 if scores diverge")
        x, f, g, d = x + t * p, f_new, g_new, d_new
    raise ConvergenceError(
        f"Newton-CG stopped after {it} iterations with a relative gradient of {rel:.2e} > tol={tol:g}; "
        "raise max_iter, loosen tol, or pass alpha > 0 if scores diverge")


def _pcg(hess_vec, diag, rhs, scale, atol, max_iter=250):
    """Approximate solution of H x = rhs by Jacobi-preconditioned conjugate gradients, stopped
    once max |residual_k| / scale_k <= atol (or after max_iter products: the Newton step is then
    truncated, which the outer iteration tolerates)."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = r / diag
    p = z.copy()
    rz = float((r * z).sum())
    for _ in range(max_iter):
        if np.max(np.abs(r) / scale) <= atol:
            break
        q = hess_vec(p)
        pq = float((p * q).sum())
        if not pq > 0:
            break
        step = rz / pq
        x += step * p
        r -= step * q
        z = r / diag
        rz, rz_old = float((r * z).sum()), rz
        p = z + (rz / rz_old) * p
    return x


def _lbfgs(objective, x0, scale, max_iter, tol):
    """(x, iterations) of L-BFGS-B on `objective` (value, gradient), for objectives without Hessian
    products (`psdistill.ranking.fusion`); raises `ConvergenceError` unless max |gradient_k| /
    scale_k <= tol at the end.

    It runs in z = sqrt(scale) * x, which makes the Hessian's diagonal about constant (each
    parameter's curvature grows with the weight of its comparisons, and the position bias sees
    all of them); unscaled, L-BFGS needs several times more iterations.
    """
    root = np.sqrt(scale)

    def scaled(z):
        f, g = objective(z / root)
        return f, g / root

    res = minimize(scaled, x0 * root, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol * root.min(), "ftol": 0.0, "maxcor": 20})
    g = np.abs(res.jac) / root
    if not np.all(np.isfinite(res.x)) or g.max() > tol:
        raise ConvergenceError(
            f"L-BFGS-B stopped after {res.nit} iterations ({res.message}) with a relative gradient of "
            f"{g.max():.2e} > tol={tol:g}; raise max_iter, loosen tol, or pass alpha > 0 if scores diverge")
    return res.x / root, int(res.nit)


def fit_bradley_terry(n_items, pairs, outcomes=None, *, weights=None, ties=None, alpha=0.0,
                      position_bias=False, se=True, cov=False, initial_params=None, max_iter=2000,
                      tol=1e-6) -> PairwiseFit:
    """Bradley-Terry (1952) maximum-likelihood / MAP scores, logistic link.

        P(a over b) = 1 / (1 + exp(-(theta_a - theta_b + beta))).

    Parameters
    ----------
    n_items : int
        Number of items; they are 0..n_items-1.
    pairs : array_like, shape (m, 2)
        Item indices in presentation order (first shown, second shown).
    outcomes : array_like, shape (m,), optional
        P(first preferred) per comparison: 1 win, 0 loss, 0.5 tie, or a soft judgment.
        Default: the first item of each row won (choix's convention).
    weights : array_like, shape (m,), optional
        Non-negative weight of each comparison's log-likelihood. Default 1.
    ties : array_like of bool, shape (m,), optional
        Marks ties; their outcome becomes 0.5.
    alpha : float, optional
        Precision of the N(0, 1/alpha) prior on each parameter (0: maximum likelihood).
        choix's ``alpha`` is half of it.
    position_bias : bool, optional
        Also fit a shift ``beta`` toward the first-shown item.
    se : bool, optional
        Compute Laplace standard errors: the diagonal of the inverse Hessian, from the sparse
        Hessian without a dense inverse (`psdistill.ranking.laplace`; linear in the items for a
        reference pool or a locally dense design, a dense inverse for a uniformly random one).
    cov : bool, optional
        Also return the full Laplace covariance, a dense (n_items + bias)^2 matrix.
    initial_params : array_like, shape (n_items,), optional
        Starting scores.
    max_iter : int, optional
        Maximum Newton iterations.
    tol : float, optional
        Stop when every parameter's gradient is below ``tol`` times (1 + the total weight of its
        comparisons); the error of each score is then a few ``tol``.

    Returns
    -------
    PairwiseFit

    Raises
    ------
    DataError
        On malformed data (unknown index, self-comparison, NaN outcome: see
        `check_comparisons`), a disconnected comparison graph, or, with ``alpha = 0``, data for
        which the maximum-likelihood estimate does not exist (an item that never loses); with
        ``se=True``, a design whose standard errors would need more than 4 GiB.
    ConvergenceError
        If the Newton iterations stop before meeting ``tol``.
    """
    return _fit("bradley-terry", n_items, pairs, outcomes, weights, ties, alpha, position_bias, se, cov,
                initial_params, max_iter, tol)


def fit_thurstone(n_items, pairs, outcomes=None, *, weights=None, ties=None, alpha=0.0,
                  position_bias=False, se=True, cov=False, initial_params=None, max_iter=2000,
                  tol=1e-6) -> PairwiseFit:
    """Thurstone (1927) Case V maximum-likelihood / MAP scores, probit link.

        P(a over b) = Phi(theta_a - theta_b + beta), i.e. item qualities with
        independent normal noise of variance 1/2 each.

    Parameters, return value and errors: as `fit_bradley_terry`, with the probit link.
    """
    return _fit("thurstone", n_items, pairs, outcomes, weights, ties, alpha, position_bias, se, cov,
                initial_params, max_iter, tol)
