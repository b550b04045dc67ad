"""Stochastic Lanczos quadrature: an estimate of ``log det (op + shift·I)`` in memory linear in N.

With a Nyström factor of the operator ``K ≈ L Lᵀ = U Λ Uᵀ`` and ``P = U (Λ + μ) Uᵀ + μ (I − UUᵀ)``
(μ = the shift, or the smallest kept eigenvalue when the shift is 0), ``log det A = log det P +
tr log(P^{-1/2} A P^{-1/2})``: the first term is exact, the second a Hutchinson estimate (Rademacher
probes) whose quadratic forms ``zᵀ log(M) z`` are Gauss quadratures from a few Lanczos steps.

>>> import numpy as np
>>> from kernla import kernels
>>> K = kernels.gaussian(np.linspace(0, 1, 30)[:, None], sigma=0.3)
>>> est, err = slq_logdet(K, 0.1)
>>> exact = np.linalg.slogdet(K.to_dense() + 0.1 * np.eye(30))[1]
>>> bool(abs(est - exact) < max(5 * err, 1e-6 * abs(exact)))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg

from ..errors import InputValueError
from . import _compute as compute
from .precond import default_rank, nystrom_basis


def slq_logdet(
    op: Any, shift: float, rank: int | None = None, num_probes: int = 32, steps: int = 40, seed: int | None = 0
) -> tuple[float, float]:
    """Estimate of ``log det (op + shift·I)`` and its Monte-Carlo standard error (module docstring).

    ``op`` is a symmetric positive semi-definite :class:`~kernla.linalg.KernelOperator`; ``rank``:
    Nyström rank (default :func:`~kernla.linalg.precond.default_rank`, pivoted landmarks);
    ``num_probes`` Rademacher probes (reproducible with ``seed``), ``steps`` Lanczos steps each.
    The Lanczos truncation error is not included in the standard error.
    """
    if isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) or num_probes < 2:
        raise InputValueError(f"num_probes must be an integer >= 2, got {num_probes!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputValueError(f"lanczos_steps must be a positive integer, got {steps!r}")
    n = op.shape[0]
    steps = int(min(steps, n))
    U, lam = nystrom_basis(op, default_rank(n) if rank is None else int(rank))
    mu = shift if shift > 1e-14 * max(lam.max(initial=0.0), 1.0) else (float(lam.min()) if lam.size else 1.0)
    coef = (lam + mu) ** -0.5 - mu**-0.5  # P^{-1/2} = U diag(coef) Uᵀ + μ^{-1/2} I
    logdet_P = float(np.log(lam + mu).sum()) + (n - lam.size) * math.log(mu)

    def p_isqrt(R: np.ndarray) -> np.ndarray:
        return R * mu**-0.5 + U @ (coef[:, None] * (U.T @ R))

    def apply(R: np.ndarray) -> np.ndarray:  # M R = P^{-1/2} A P^{-1/2} R
        S = p_isqrt(R)
        AS = compute.to_host(op.product(compute.to_compute(np.ascontiguousarray(S), op.on_gpu, op.dtype)))
        return p_isqrt(AS.astype(np.float64) + shift * S)

    rng = np.random.default_rng(seed)
    Z = rng.choice([-1.0, 1.0], size=(n, int(num_probes)))
    est = logdet_P + lanczos_log_quadrature(apply, Z, steps)  # zᵀ log(M) z per probe
    return float(est.mean()), float(est.std(ddof=1) / math.sqrt(len(est)))


def lanczos_log_quadrature(apply: Callable[[np.ndarray], np.ndarray], Z: np.ndarray, steps: int) -> np.ndarray:
    """``z_lᵀ log(M) z_l`` for each column of Z by at most ``steps`` Lanczos steps (Gauss quadrature).

    The columns run together (one product with the running columns per step), each with its own
    three-term recurrence. A column stops early when its Krylov space is exhausted (the
    quadrature is then exact) or when two successive quadratures agree to 1e-9·(|value| + n)
    (far below the Monte-Carlo error). No reorthogonalisation: memory O(n·probes).

    >>> import numpy as np
    >>> A = np.diag([1.0, 2.0, 4.0])
    >>> z = np.ones((3, 1))
    >>> bool(np.isclose(lanczos_log_quadrature(lambda R: A @ R, z, 3)[0], np.log([1, 2, 4]).sum()))
    True
    """
    n, p = Z.shape
    norms2 = (Z * Z).sum(axis=0)
    Q = Z / np.sqrt(norms2)
    Q_prev = np.zeros_like(Q)
    alphas = np.zeros((steps, p))
    betas = np.zeros((steps, p))
    value = np.full(p, np.nan)
    active = np.arange(p)

    def quadrature(col: int, m: int) -> float:
        theta, S = scipy.linalg.eigh_tridiagonal(alphas[:m, col], betas[: m - 1, col])
        return norms2[col] * float((S[0] ** 2 * np.log(np.maximum(theta, 1e-300))).sum())

    for j in range(steps):
        Qa = Q[:, active]
        W = apply(Qa)
        a = (Qa * W).sum(axis=0)
        W -= a * Qa + betas[j - 1, active] * Q_prev[:, active] if j else a * Qa
        alphas[j, active] = a
        b = np.linalg.norm(W, axis=0)
        betas[j, active] = b
        keep = np.ones(active.size, dtype=bool)
        for pos, col in enumerate(active):
            q = quadrature(int(col), j + 1)
            if b[pos] <= 1e-12 * max(abs(a[pos]), 1e-300) or abs(q - value[col]) <= 1e-9 * (abs(q) + n):
                keep[pos] = False
            value[col] = q
        Q_prev[:, active] = Qa
        Q[:, active] = W / np.where(b > 0, b, 1.0)
        active = active[keep]
        if active.size == 0:
            break
    return value
