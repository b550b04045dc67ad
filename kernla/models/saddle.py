"""The interpolation system ``[[K + S, P], [Pᵀ, 0]] [c; d] = [y; 0]``, solved iteratively with kernla products.

K (N×N) is a kernel operator (never stored), S = diag(smoothing) and P (N×m) the polynomial
tail. Method: **projected preconditioned conjugate gradients** on the complement of the
polynomials. With ``P = Q R`` (thin QR, m small) and ``Π = I − Q Qᵀ``, the constraint
``Pᵀ c = 0`` says ``c = Π c``; the first block row projected by Π is

    Π (K + S) Π c = Π y,

a system that is symmetric positive definite on range(Π) whenever the kernel is (conditionally)
positive definite of an order the tail covers — the case of every kernel at scipy's default
degree and above. Block CG (:func:`kernla.linalg.cg.block_cg`, all columns of y at once, one
kernel reduction per iteration) solves it with iterates kept in range(Π); then
``d = R⁻¹ Qᵀ (y − (K + S) c)`` (one more product). CG rather than MINRES on the full indefinite
system: the projected system is definite, so CG's error decreases monotonically in the energy
norm, the preconditioner only has to be positive definite on range(Π), and the block solver's
shared products and true-residual checks are reused as they are. When the degree is below the
kernel's minimum (scipy warns there too) the projected system may be indefinite, and the full
system is solved by scipy's MINRES instead (one column at a time, unpreconditioned).

Preconditioners. ``precond="auto"`` with the host points (what :class:`KernelInterpolation`
passes): the two-level method of :mod:`kernla.models.schwarz` for every kernel — overlapping
local blocks as the preconditioner and the interpolation problem on spread landmarks as a
coarse level, by **deflation** (CG then runs on ``(I − A Z Zᵀ) A``, A the projected system,
and the coarse component of the solution is added at the end). Without the points, and for
``precond="nystrom"`` with conditionally positive definite kernels: a **projected Nyström**
approximation, r random landmark columns of ``Π K Π`` (an N×r dense block of K, one product
K Q), a rank-r eigendecomposition ``U Λ Uᵀ``, and ``M⁻¹ = Π (U diag(1/(λ+μ) − 1/ν) Uᵀ + I/ν) Π``
(ν = μ, or the smallest kept eigenvalue when μ ≈ 0) — Nyström preconditioning applied to the
matrix that CG actually sees. Any other choice (``"nystrom"`` and ``"jacobi"`` for positive
definite kernels, a callable, ...) is kernla's :func:`~kernla.linalg.precond.make_preconditioner`
for ``K + μI`` (μ the mean smoothing), applied between two projections. The solve runs with host
BLAS on one thread (:func:`kernla.linalg._compute.blas_single_thread`): on a loaded 2-core box,
multithreaded OpenBLAS made the blocks' eigendecompositions 10-20× slower.

>>> import numpy as np
>>> from kernla.models.rbf import rbf_operator
>>> x = np.random.default_rng(0).uniform(size=(40, 2))
>>> P = np.column_stack([np.ones(40), x])
>>> y = np.sin(3 * x[:, :1])
>>> K = rbf_operator("thin_plate_spline", x, x, 1.0)
>>> c, d, info = solve_saddle(K, np.zeros(40), P, y, tol=1e-12, conditionally_pd=True)
>>> bool(info.converged), bool(np.abs(P.T @ c).max() < 1e-10), bool(info.residual_norms.max() < 1e-10)
(True, True, True)
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

from ..errors import InputValueError
from ..linalg import KernelOperator
from ..linalg._compute import blas_single_thread
from ..linalg.cg import ConvergenceWarning, SolveInfo, block_cg, default_maxiter
from ..linalg.precond import default_rank, make_preconditioner
from ._common import host
from .schwarz import (
    BLOCK,
    OVERLAP,
    CoarseDeflation,
    block_inverses,
    coarse_size,
    landmarks,
    local_blocks,
    overlapping,
    spatial_blocks,
)


@dataclass
class SaddleSolveInfo:
    """What the interpolation solve did.

    ``iterations``: CG (or MINRES) iterations; ``residual_norms``: per column, the relative
    residual of the whole system ``‖y − (K + S) c − P d‖ / ‖y‖`` of the returned solution (one
    more product); ``constraint_norms``: ``‖Pᵀ c‖ / ‖c‖``; ``converged``: the solver met ``tol``
    (relative to the projected right-hand side); ``method``: ``"projected-cg"`` or ``"minres"``;
    ``precond``: the preconditioner's description; ``cg``: block CG's own
    :class:`~kernla.linalg.cg.SolveInfo` (None for MINRES); ``time``: seconds.
    """

    iterations: int
    residual_norms: np.ndarray
    constraint_norms: np.ndarray
    converged: bool
    method: str
    precond: str | None
    cg: SolveInfo | None
    time: float


class _Projection:
    """``Π = I − Q Qᵀ`` for the thin QR ``P = Q R`` (identity when there is no tail)."""

    def __init__(self, P: np.ndarray):
        self.m = P.shape[1]
        if self.m == 0:
            self.P, self.Q, self.R = P, P, np.zeros((0, 0))
            return
        self.P = P
        self.Q, self.R = np.linalg.qr(P)
        diag = np.abs(np.diag(self.R))
        if diag.min() <= 1e-10 * diag.max():
            raise InputValueError(
                "the polynomial matrix is rank-deficient: the points do not determine a polynomial "
                "of this degree (e.g. all on a line for degree 1 in 2-D); lower the degree"
            )

    def __call__(self, V: np.ndarray) -> np.ndarray:
        return V if self.m == 0 else V - self.Q @ (self.Q.T @ V)

    def tail(self, resid: np.ndarray) -> np.ndarray:
        """The polynomial coefficients d with ``P d`` the best fit to ``resid``: ``R⁻¹ Qᵀ resid``."""
        return scipy.linalg.solve_triangular(self.R, self.Q.T @ resid) if self.m else np.zeros((0, resid.shape[1]))


def projected_nystrom_basis(
    K: KernelOperator, columns: Callable[..., np.ndarray], proj: _Projection, rank: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(U, λ)``: a rank-r Nyström approximation ``U diag(λ) Uᵀ`` of ``Π K Π`` from random landmarks.

    ``columns(idx)`` returns the dense host block ``K[:, idx]``; the columns of ``Π K Π`` are
    ``Π (K[:, L] − (K Q) Q[L]ᵀ)`` (one product K Q). U (N×r') is orthonormal, in range(Π).
    """
    n = K.shape[0]
    rank = int(min(rank, n))
    L = np.sort(np.random.default_rng(seed).choice(n, size=rank, replace=False))
    C = columns(L)
    if proj.m:
        KQ = np.asarray(K.matmat(proj.Q), dtype=np.float64)
        C = proj(C - KQ @ proj.Q[L].T)
    theta, V = scipy.linalg.eigh((C[L] + C[L].T) / 2)
    keep = theta > 1e-12 * max(theta.max(initial=0.0), 0.0)
    F = C @ (V[:, keep] / np.sqrt(theta[keep]))
    lam, W = scipy.linalg.eigh(F.T @ F)
    keep = lam > 1e-12 * max(lam.max(initial=0.0), 0.0)
    lam = lam[keep]
    return F @ (W[:, keep] / np.sqrt(lam)), lam


def nystrom_preconditioner(
    U: np.ndarray, lam: np.ndarray, proj: _Projection, mu: float
) -> Callable[[np.ndarray], np.ndarray]:
    """``R -> Π (U diag(1/(λ+μ) − 1/ν) Uᵀ + I/ν) Π R`` (ν = μ, or the smallest λ when μ ≈ 0)."""
    if lam.size == 0:
        return proj
    nu = mu if mu > 1e-14 * lam.max() else float(lam.min()) + max(mu, 0.0)
    coef = (1.0 / (lam + mu) - 1.0 / nu)[:, None]

    def apply(R: np.ndarray) -> np.ndarray:
        return proj(R / nu + U @ (coef * (U.T @ R)))

    return apply


def _kernel_preconditioner(K: KernelOperator, proj: _Projection, precond: Any, mu: float, rank: int | None):
    """kernla's preconditioner of ``K + μI`` between two projections (positive definite kernels)."""
    M = make_preconditioner(precond, K, mu, rank=rank)
    if M is None:
        return None, None
    return (lambda R: proj(np.asarray(M.matmat(proj(R)), dtype=np.float64))), getattr(M, "name", str(precond))


def _dense(submatrix: Callable[..., KernelOperator], rows: np.ndarray | None, cols: np.ndarray | None) -> np.ndarray:
    """The dense host block ``K[rows][:, cols]`` (None: all)."""
    return host(submatrix(rows, cols).to_dense(force=True), np.float64)


def _two_level(
    smoothing: np.ndarray,
    proj: _Projection,
    submatrix: Callable[[np.ndarray | None, np.ndarray | None], KernelOperator],
    points: np.ndarray,
    block: int,
) -> tuple[Callable[[np.ndarray], np.ndarray], CoarseDeflation, str]:
    """Overlapping local blocks (the preconditioner) and the landmarks' coarse level (:mod:`kernla.models.schwarz`)."""
    boxes = overlapping(points, spatial_blocks(points, block), OVERLAP)
    M = local_blocks(proj, boxes, block_inverses(boxes, lambda idx: _dense(submatrix, idx, idx), smoothing))
    L = landmarks(points, coarse_size(points.shape[0]))
    K_LL = _dense(submatrix, L, L)
    coarse = CoarseDeflation(L, proj.P[L], K_LL, submatrix(None, L), submatrix(L, None), proj, smoothing)
    name = (
        f"two-level: {len(boxes)} overlapping blocks of <= {max(map(len, boxes))} points + deflation by "
        f"{L.size} landmarks (coarse dimension {coarse.size})"
    )
    return M, coarse, name


def _preconditioner(
    K: KernelOperator,
    smoothing: np.ndarray,
    proj: _Projection,
    precond: Any,
    rank: int | None,
    conditionally_pd: bool,
    submatrix: Callable[[np.ndarray | None, np.ndarray | None], KernelOperator] | None,
    points: np.ndarray | None,
    block: int,
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, CoarseDeflation | None, str | None]:
    """``(M, deflation, description)`` for :func:`solve_saddle`'s ``precond`` (its docstring)."""
    mu = float(smoothing.mean())
    if precond == "auto" and points is not None and submatrix is not None:
        return _two_level(smoothing, proj, submatrix, points, block)
    if precond == "auto" or (conditionally_pd and precond == "nystrom"):
        columns = K.columns if submatrix is None else (lambda idx: _dense(submatrix, None, idx))
        U, lam = projected_nystrom_basis(K, columns, proj, default_rank(K.shape[0]) if rank is None else rank)
        return nystrom_preconditioner(U, lam, proj, mu), None, f"projected nystrom(rank {lam.size})"
    if conditionally_pd and precond == "jacobi":
        raise InputValueError(
            "precond='jacobi' needs a positive diagonal; this kernel's is not (φ(0) <= 0): "
            "use precond='auto' (the two-level method), 'nystrom' or None"
        )
    if precond is None:
        return None, None, None
    M, name = _kernel_preconditioner(K, proj, precond, mu, rank)
    return M, None, name


def _projected_tol(tol: float, Y: np.ndarray, B: np.ndarray) -> float:
    """The CG tolerance (relative to ‖Π y_j‖) that gives ``‖Π(y_j − (K + S) c_j)‖ ≤ tol · ‖y_j‖`` for every column.

    Columns that are (almost) polynomials have ‖Π y_j‖ ≪ ‖y_j‖; those below ``tol · ‖y_j‖`` are
    already solved by c_j = 0 and do not tighten the tolerance of the others.
    """
    yn, bn = np.linalg.norm(Y, axis=0), np.linalg.norm(B, axis=0)
    ratios = yn[bn > tol * yn] / bn[bn > tol * yn]
    return float(tol * min(ratios.min(initial=np.inf), 1.0 / tol)) if ratios.size else tol


def solve_saddle(
    K: KernelOperator,
    smoothing: np.ndarray,
    P: np.ndarray,
    Y: np.ndarray,
    *,
    tol: float = 1e-10,
    maxiter: int | None = None,
    precond: Any = "auto",
    rank: int | None = None,
    conditionally_pd: bool = False,
    definite: bool = True,
    submatrix: Callable[[np.ndarray | None, np.ndarray | None], KernelOperator] | None = None,
    points: np.ndarray | None = None,
    block: int = BLOCK,
) -> tuple[np.ndarray, np.ndarray, SaddleSolveInfo]:
    """Solve ``[[K + S, P], [Pᵀ, 0]] [c; d] = [Y; 0]``; returns ``(c (N, t), d (m, t), info)`` on the host.

    ``smoothing`` (N,) is S's diagonal; ``conditionally_pd``: K is only conditionally positive
    definite — ``precond="auto"``: the two-level preconditioner of :mod:`kernla.models.schwarz`
    (needs the host ``points`` and ``submatrix(rows, cols)``, the operator ``K[rows][:, cols]``,
    None for all; ``block`` points per box), ``"nystrom"``: the projected Nyström
    alone, Jacobi refused. ``definite=False`` (degree below the kernel's minimum): MINRES on
    the full system.
    """
    start = time.perf_counter()
    proj = _Projection(P)
    s = smoothing[:, None]

    def system(C: np.ndarray) -> np.ndarray:
        return np.asarray(K.matmat(C), dtype=np.float64) + s * C

    with blas_single_thread(getattr(K, "backend", None), bool(getattr(K, "on_gpu", False))):
        if not definite:
            C, D, iterations, converged = _minres(system, P, Y, tol, maxiter)
            name, cg_info = None, None
        else:
            M, deflation, name = _preconditioner(
                K, smoothing, proj, precond, rank, conditionally_pd, submatrix, points, block
            )
            B = proj(Y)
            B[:, np.linalg.norm(B, axis=0) <= tol * np.linalg.norm(Y, axis=0)] = 0.0  # polynomial columns: c = 0
            if deflation is None:
                C, cg_info = block_cg(
                    lambda V: proj(system(V)), B, tol=_projected_tol(tol, Y, B), maxiter=maxiter, precond=M
                )
            else:
                Bd = deflation.deflate(B)
                Bd[:, np.linalg.norm(Bd, axis=0) <= tol * np.linalg.norm(Y, axis=0)] = 0.0  # solved on the coarse level
                C, cg_info = block_cg(
                    lambda V: deflation.deflate(proj(system(V))),
                    Bd,
                    tol=_projected_tol(tol, Y, Bd),
                    maxiter=maxiter,
                    precond=M,
                )
                C = deflation.solution(C, B)
            C = proj(C)
            iterations, converged = cg_info.iterations, cg_info.converged
        KC = system(C)  # one product for the tail and the residual
        if cg_info is not None:
            D = proj.tail(Y - KC)
    resid = Y - KC - P @ D
    ynorm = np.linalg.norm(Y, axis=0)
    cnorm = np.linalg.norm(C, axis=0)
    info = SaddleSolveInfo(
        iterations,
        np.linalg.norm(resid, axis=0) / np.where(ynorm > 0, ynorm, 1.0),
        np.linalg.norm(P.T @ C, axis=0) / np.where(cnorm > 0, cnorm, 1.0),
        converged,
        "minres" if not definite else "projected-cg",
        name,
        cg_info,
        time.perf_counter() - start,
    )
    return C, D, info


def _minres(
    system: Callable[[np.ndarray], np.ndarray], P: np.ndarray, Y: np.ndarray, tol: float, maxiter: int | None
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """MINRES on the full symmetric indefinite system, one column of Y at a time."""
    n, m = P.shape

    def matvec(v: np.ndarray) -> np.ndarray:
        c, d = v[:n, None], v[n:, None]
        return np.concatenate([system(c)[:, 0] + (P @ d)[:, 0], (P.T @ c)[:, 0]])

    A = scipy.sparse.linalg.LinearOperator((n + m, n + m), matvec=matvec, dtype=np.float64)
    C, D = np.zeros_like(Y), np.zeros((m, Y.shape[1]))
    iterations, converged = 0, True
    for j in range(Y.shape[1]):
        count = [0]

        def tick(_):
            count[0] += 1

        sol, flag = scipy.sparse.linalg.minres(
            A,
            np.concatenate([Y[:, j], np.zeros(m)]),
            rtol=tol,
            maxiter=maxiter or default_maxiter(n + m),
            callback=tick,
        )
        C[:, j], D[:, j] = sol[:n], sol[n:]
        iterations, converged = max(iterations, count[0]), converged and flag == 0
    if not converged:
        warnings.warn(f"MINRES did not reach tol={tol:g} in {iterations} iterations", ConvergenceWarning, stacklevel=3)
    return C, D, iterations, converged


__all__ = ["SaddleSolveInfo", "solve_saddle", "projected_nystrom_basis", "nystrom_preconditioner"]
