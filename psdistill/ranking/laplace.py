"""Laplace covariance of a pairwise fit from its sparse Hessian, and its diagonal without a dense inverse.

The negative log-posterior Hessian of a Bradley-Terry or Thurstone fit is the comparison graph's
Laplacian weighted by each comparison's curvature, plus ``alpha`` on the diagonal, bordered by the
position bias (a parameter in every comparison). Standard errors need only the diagonal of its
inverse. How that diagonal is computed, and why:

- A uniformly random comparison graph is an expander: any sparse Cholesky factor of its
  Laplacian fills in completely, and conjugate gradients need one solve per item (n solves of
  O(m) each), so neither beats the dense inverse there. Graphs from this project's designs are
  not random: a reference pool is a few hubs (the references) that meet every item, and locally
  dense designs compare items within a category or with their neighbours in a prior order.
- So the hubs (and the bias) form a border, eliminated through a Schur complement, and the rest is
  reordered by reverse Cuthill-McKee, which makes it block tridiagonal with blocks of about its
  bandwidth b. The diagonal blocks of its inverse come from one forward sweep of Schur
  complements and one backward sweep (the block-tridiagonal case of Takahashi, Fagan & Chin's
  1973 recursion for a sparse inverse subset): O(n b^2 + n h^2) time and O(n (b + h)) memory for
  h hubs. It is exact up to rounding, equal to the dense inverse; for a random graph b ~ n and it
  is the dense inverse in one block, so nothing is lost there. (The Hessian is positive definite:
  the fit has checked that the comparison graph is connected, and alpha > 0 or one item is grounded.) scipy has no sparse Cholesky or
  selected inversion, and this needs no further dependency.
- Without a prior (``alpha = 0``) the Hessian is singular along the common shift of the scores.
  One item is grounded (its score fixed at 0, its row and column dropped), which leaves a
  nonsingular sparse matrix with inverse S; the covariance of the mean-zero scores is P S P with
  P = I - 11^T / n, whose diagonal needs only diag(S) and one solve S 1.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import reverse_cuthill_mckee

from psdistill.core.errors import DataError

__all__ = ["hessian", "dense_covariance", "laplace_variances"]

_MIN_BLOCK = 64          # fewer, larger blocks: a Python loop per block costs more than the flops below this
_MAX_HUBS = 1024         # the border is dense: n x hubs
_HUB_DEGREE = 8          # a hub meets this many times more distinct items than the median item
_MAX_BYTES = 4 * 2**30   # working memory allowed for the standard errors


def hessian(n_items: int, a, b, c, alpha: float, position_bias: bool) -> csr_matrix:
    """The negative log-posterior Hessian, sparse: scores, then the bias when fitted.

    Comparison r of items a_r, b_r with curvature c_r adds c_r at (a, a) and (b, b), -c_r at (a, b)
    and (b, a), and, with a bias, c_r at (bias, bias) and +-c_r between the bias and a_r, b_r.
    """
    n_par = n_items + int(position_bias)
    deg = np.bincount(a, c, n_par) + np.bincount(b, c, n_par)
    rows, cols, vals = [a, b, np.arange(n_par)], [b, a, np.arange(n_par)], [-c, -c, deg + alpha]
    if position_bias:
        col = np.bincount(a, c, n_items) - np.bincount(b, c, n_items)
        idx = np.arange(n_items)
        rows += [idx, np.full(n_items, n_items)]
        cols += [np.full(n_items, n_items), idx]
        vals += [col, col]
        vals[2][n_items] = c.sum() + alpha
    h = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_par, n_par))
    return h.tocsr()  # duplicates (repeated pairs) are summed


def dense_covariance(h: csr_matrix, n_items: int, alpha: float) -> np.ndarray:
    """The full Laplace covariance, dense: H^-1, or with ``alpha = 0`` the covariance of the
    mean-zero scores, the pseudo-inverse (H + u u^T)^-1 - u u^T with u = (1, ..., 1, 0) / sqrt(n)."""
    h = h.toarray()
    if alpha > 0:
        return np.linalg.inv(h)
    u = np.zeros(len(h))
    u[:n_items] = 1 / np.sqrt(n_items)
    return np.linalg.inv(h + np.outer(u, u)) - np.outer(u, u)


def laplace_variances(h: csr_matrix, n_items: int, alpha: float) -> np.ndarray:
    """diag of `dense_covariance(h, n_items, alpha)`, without forming it (see the module docstring).

    Raises `DataError` if the comparison graph has no structure that keeps the working memory
    under 4 GiB (a large, uniformly random design): fit with ``se=False`` then.
    """
    n_par = h.shape[0]
    if alpha > 0:
        return _BorderedInverse(h).diagonal()
    # ground the best-determined item: the others' covariance is then best conditioned
    ground = int(np.argmax(h.diagonal()[:n_items]))
    keep = np.delete(np.arange(n_par), ground)
    inv = _BorderedInverse(h[keep][:, keep])
    var = np.zeros(n_par)
    var[keep] = inv.diagonal()
    ones = np.zeros(n_par - 1)
    ones[: n_items - 1] = 1.0  # the kept items come first, then the bias
    z = np.zeros(n_par)
    z[keep] = inv.solve(ones)
    # Var(theta_i - mean theta) = S_ii - 2 (S 1)_i / n + 1^T S 1 / n^2, S zero on the grounded item
    t = z[:n_items]
    var[:n_items] += -2 * t / n_items + t.sum() / n_items ** 2
    return var


class _BorderedInverse:
    """Diagonal of, and solves with, the inverse of a sparse SPD matrix K = [[A, E], [E^T, F]]:
    F the hubs, A the rest in reverse Cuthill-McKee order, block tridiagonal."""

    def __init__(self, k: csr_matrix):
        n = k.shape[0]
        distinct = np.diff(k.indptr) - 1  # off-diagonal neighbours per row
        hubs = np.flatnonzero(distinct > _HUB_DEGREE * max(np.median(distinct), 1.0))
        if len(hubs) > _MAX_HUBS:
            hubs = hubs[np.argsort(distinct[hubs])[-_MAX_HUBS:]]
        rest = np.setdiff1d(np.arange(n), hubs)
        a = k[rest][:, rest]
        rest = rest[reverse_cuthill_mckee(a, symmetric_mode=True)]
        a = k[rest][:, rest].tocoo()
        band = int(np.abs(a.row - a.col).max()) if a.nnz else 0
        size = min(max(band, _MIN_BLOCK), max(len(rest), 1))
        need = 8 * (2 * len(rest) * size + 3 * len(rest) * len(hubs) + 2 * len(hubs) ** 2)
        if need > _MAX_BYTES:
            raise DataError(
                f"se: the standard errors of this comparison graph need about {need / 2**30:.1f} GiB "
                f"(after reordering, its {len(rest)} non-hub parameters have bandwidth {band}; a large, "
                "uniformly random design has no narrow band); fit with se=False")
        self.rest, self.hubs = rest, hubs
        self.starts = list(range(0, len(rest), size)) + [len(rest)]
        a = a.tocsr()
        self._sinv, self._upper = [], []  # S_i^-1 and B_i = A[block i, block i + 1]
        s_prev, b_prev = None, None
        for lo, hi, nxt in zip(self.starts, self.starts[1:], self.starts[2:] + [len(rest)]):
            rows = a[lo:hi]
            s = rows[:, lo:hi].toarray()
            if b_prev is not None:  # S_i = A_i - B_{i-1}^T S_{i-1}^-1 B_{i-1}
                s -= b_prev.T @ s_prev @ b_prev
            s_prev = _spd_inverse(s)
            b_prev = rows[:, hi:nxt].toarray()
            self._sinv.append(s_prev)
            self._upper.append(b_prev)
        if len(hubs):
            e = k[rest][:, hubs].toarray()
            self._x = self._solve_a(e)  # A^-1 E
            self._tinv = _spd_inverse(k[hubs][:, hubs].toarray() - e.T @ self._x)  # (F - E^T A^-1 E)^-1
            self._e = e

    def _solve_a(self, r: np.ndarray) -> np.ndarray:
        """A^-1 r by block LDL^T: L y = r forward, then D L^T x = y backward."""
        y = [r[lo:hi].copy() for lo, hi in zip(self.starts, self.starts[1:])]
        for i in range(1, len(y)):
            y[i] -= self._upper[i - 1].T @ (self._sinv[i - 1] @ y[i - 1])
        x = [None] * len(y)
        for i in reversed(range(len(y))):
            rhs = y[i] if i == len(y) - 1 else y[i] - self._upper[i] @ x[i + 1]
            x[i] = self._sinv[i] @ rhs
        return np.concatenate(x) if x else r[:0]

    def _diag_a(self) -> np.ndarray:
        """diag(A^-1): G_N = S_N^-1, G_i = S_i^-1 + (S_i^-1 B_i) G_{i+1} (S_i^-1 B_i)^T."""
        out, g = [], None
        for i in reversed(range(len(self._sinv))):
            if g is None:
                g = self._sinv[i]
            else:
                u = self._sinv[i] @ self._upper[i]
                g = self._sinv[i] + u @ g @ u.T
            out.append(np.diag(g).copy())
        return np.concatenate(out[::-1]) if out else np.zeros(0)

    def diagonal(self) -> np.ndarray:
        d = np.empty(len(self.rest) + len(self.hubs))
        d_rest = self._diag_a()
        if len(self.hubs):  # K^-1 on the rest = A^-1 + X T^-1 X^T; on the hubs, T^-1
            d_rest = d_rest + np.einsum("ij,ij->i", self._x @ self._tinv, self._x)
            d[self.hubs] = np.diag(self._tinv)
        d[self.rest] = d_rest
        return d

    def solve(self, r: np.ndarray) -> np.ndarray:
        out = np.empty(len(r))
        w = self._solve_a(r[self.rest])
        if len(self.hubs):
            zh = self._tinv @ (r[self.hubs] - self._e.T @ w)
            w = w - self._x @ zh
            out[self.hubs] = zh
        out[self.rest] = w
        return out


def _spd_inverse(s: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive-definite block, symmetrised. (LAPACK's Cholesky-based
    dpotri would need a third of the flops but ran 10-100x slower than numpy's inv here.)"""
    inv = np.linalg.inv(s) if len(s) else s
    return (inv + inv.T) / 2
