"""Preconditioned block conjugate gradients that also return each column's Lanczos tridiagonal.

``pcg_lanczos(apply, B, precond)`` solves ``A X = B`` (A symmetric positive definite) for all
columns at once — one call to ``apply`` per iteration with the columns still running — and
records each column's CG step sizes α_k and β_k. They are the Lanczos coefficients of the
preconditioned matrix ``M = P^{-1/2} A P^{-1/2}`` started from ``P^{-1/2} b`` (Saad, *Iterative
methods*, §6.7.3):

    T_kk = 1/α_k + β_{k-1}/α_{k-1},     T_{k,k+1} = √β_k / α_k,

so one CG run gives both ``A⁻¹ b`` and the Gauss quadrature ``(bᵀP⁻¹b) · e₁ᵀ f(T) e₁ ≈
(P^{-1/2}b)ᵀ f(M) (P^{-1/2}b)`` — with f = log this is stochastic Lanczos quadrature of
``log det M`` from the very probes whose solves the gradient needs (the BBMM recipe of Gardner et
al., 2018). There are no restarts (they would break the recurrence): use
:func:`kernla.linalg.cg.block_cg` for solves that must be certified to a tight tolerance.

>>> import numpy as np
>>> A = np.diag([1.0, 2.0, 4.0])
>>> X, run = pcg_lanczos(lambda V: A @ V, np.ones((3, 1)), tol=1e-12)
>>> bool(np.allclose(A @ X, 1.0)), run.iterations.tolist()
(True, [3])
>>> bool(np.isclose(run.quadrature(np.log)[0], np.log([1, 2, 4]).sum()))
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..errors import InputValueError


@dataclass
class LanczosRun:
    """What :func:`pcg_lanczos` recorded: per column, its CG coefficients and ``r₀ᵀ P⁻¹ r₀``.

    ``alphas[c]`` / ``betas[c]``: the step sizes of column c (``iterations[c]`` of them);
    ``rz0[c]``: ``bᵀ P⁻¹ b``; ``residuals``: final relative residuals (recursive); ``products``:
    calls to ``apply``.
    """

    alphas: list
    betas: list
    rz0: np.ndarray
    iterations: np.ndarray
    residuals: np.ndarray
    products: int

    def tridiagonal(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """The diagonal and off-diagonal of column c's Lanczos matrix T."""
        a = np.asarray(self.alphas[c])
        b = np.asarray(self.betas[c][: max(a.size - 1, 0)])
        diag = 1.0 / a
        diag[1:] += b / a[:-1]
        return diag, np.sqrt(b) / a[:-1]

    def quadrature(self, f: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``rz0[c] · e₁ᵀ f(T_c) e₁`` for every column c (0 for a zero column)."""
        out = np.zeros(len(self.alphas))
        for c in range(len(self.alphas)):
            if not len(self.alphas[c]):
                continue
            d, e = self.tridiagonal(c)
            theta, S = scipy.linalg.eigh_tridiagonal(d, e)
            out[c] = self.rz0[c] * float((S[0] ** 2 * f(np.maximum(theta, 1e-300))).sum())
        return out


def pcg_lanczos(
    apply: Callable[[np.ndarray], np.ndarray],
    B: np.ndarray,
    precond: Callable[[np.ndarray], np.ndarray] | None = None,
    tol: float | np.ndarray = 1e-6,
    maxiter: int | np.ndarray = 1000,
) -> tuple[np.ndarray, LanczosRun]:
    """Solve ``A X = B`` (host float64, (n, k)) by preconditioned CG; returns ``(X, LanczosRun)``.

    ``apply(V) = A V`` and ``precond(R) = P⁻¹ R`` on (n, j) arrays; ``tol`` (relative residual)
    and ``maxiter`` may be given per column. A column stops when it meets its tolerance, reaches
    its iteration limit or meets a breakdown (non-positive curvature, only in rounding).
    """
    if B.ndim != 2:
        raise InputValueError(f"pcg_lanczos needs a 2-D right-hand side (n, k), got shape {B.shape}")
    n, k = B.shape
    tols = np.broadcast_to(np.asarray(tol, dtype=np.float64), (k,))
    limits = np.broadcast_to(np.asarray(maxiter, dtype=np.int64), (k,))
    X = np.zeros_like(B)
    R = B.copy()
    Z = R if precond is None else precond(R)
    P = Z.copy()
    rz = (R * Z).sum(axis=0)
    rz0 = rz.copy()
    bnorm = np.sqrt((B * B).sum(axis=0))
    alphas: list = [[] for _ in range(k)]
    betas: list = [[] for _ in range(k)]
    rel = np.where(bnorm > 0, 1.0, 0.0)
    active = np.flatnonzero((bnorm > 0) & (limits > 0))
    products = 0
    it = 0
    while active.size:
        AP = apply(P[:, active])
        products += 1
        it += 1
        pap = (P[:, active] * AP).sum(axis=0)
        ok = np.isfinite(pap) & (pap > 0)
        step = np.where(ok, rz[active] / np.where(ok, pap, 1.0), 0.0)
        X[:, active] += step * P[:, active]
        R[:, active] -= step * AP
        Zn = R[:, active] if precond is None else precond(R[:, active])
        rz_new = (R[:, active] * Zn).sum(axis=0)
        beta = rz_new / np.where(rz[active] != 0, rz[active], 1.0)
        P[:, active] = Zn + beta * P[:, active]
        rz[active] = rz_new
        rel[active] = np.sqrt((R[:, active] ** 2).sum(axis=0)) / bnorm[active]
        for pos, c in enumerate(active):
            if ok[pos]:
                alphas[c].append(float(step[pos]))
                betas[c].append(float(beta[pos]))
        keep = ok & (rel[active] > tols[active]) & (it < limits[active])
        active = active[keep]
    iterations = np.array([len(a) for a in alphas], dtype=np.int64)
    return X, LanczosRun(alphas, betas, rz0, iterations, rel, products)


__all__ = ["LanczosRun", "pcg_lanczos"]
