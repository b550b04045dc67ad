"""Preconditioners for ``(c·K + μ·I) a = b`` with a :class:`~kernla.linalg.KernelOperator` K.

- :class:`Jacobi`: divide by the diagonal ``c·K_ii + μ`` (evaluated on the pairs i = j).
- :class:`Nystrom`: a rank-m approximation ``K ≈ L Lᵀ`` from m landmark columns, chosen by a
  greedy pivoted partial Cholesky (default) or at random, inverted with the Woodbury identity.
- ``"auto"``: Nyström (pivoted) for systems with more than a few hundred unknowns, else Jacobi.

Nyström details. With ``L Lᵀ = U Λ Uᵀ`` (U: n×r orthonormal, from an eigendecomposition of the
small r×r matrix ``LᵀL``), the preconditioner is ``P = U (Λ + μ) Uᵀ + ν (I − U Uᵀ)`` and

    P⁻¹ r = U (Λ + μ)⁻¹ Uᵀ r + (r − U Uᵀ r) / ν.

With ``ν = μ`` this is ``(L Lᵀ + μ I)⁻¹`` written by Woodbury; when μ = 0 (no regularisation)
``ν = λ_r`` (the smallest kept eigenvalue) keeps P invertible and of the right scale.
Landmark columns are small dense N×m blocks evaluated from the formula (never the N×N matrix).

A built preconditioner is a :class:`PreconditionerOperator`: a ``scipy.sparse.linalg.LinearOperator``
applying ``M⁻¹`` (so ``scipy.sparse.linalg.cg(K + alpha * eye(n), b, M=P)`` works), and a
callable on (n, k) arrays of the operator's namespace (NumPy or CuPy), which is what kernla's
block CG calls. Preconditioners see the operator only through its public surface:
``host_diagonal()``, ``columns(idx)``, ``xp``, ``on_gpu``, ``backend``, ``scale``, ``shift``.

>>> import numpy as np
>>> from kernla import kernels
>>> x = np.random.default_rng(0).uniform(size=(300, 2))
>>> K = kernels.gaussian(x, sigma=0.2)
>>> M = Nystrom(rank=40).build(K, 1e-2)
>>> M.rank <= 40, M(np.ones((300, 1))).shape
(True, (300, 1))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from ..errors import InputValueError
from ._compute import blas_single_thread, to_host


class PreconditionerOperator(LinearOperator):
    """A built preconditioner: the symmetric n×n LinearOperator ``M⁻¹`` (float64).

    ``P(R)`` applies ``fn`` to an (n, k) array of the namespace ``xp`` (kernla's block CG);
    ``P @ x``, ``P.matvec``, ``P.matmat`` take host NumPy arrays (scipy's solvers), moved to
    ``xp`` and back. ``name``, ``setup_time`` (seconds) and ``rank`` (Nyström) describe it.

    >>> import numpy as np
    >>> P = PreconditionerOperator(lambda R: R / 2, 3, np, "halve")
    >>> P @ np.ones(3), P(np.ones((3, 1))).ravel()
    (array([0.5, 0.5, 0.5]), array([0.5, 0.5, 0.5]))
    """

    def __init__(self, fn: Callable[[Any], Any], n: int, xp: Any, name: str, setup_time: float = 0.0, rank: int = 0):
        super().__init__(np.dtype(np.float64), (int(n), int(n)))
        self._fn = fn
        self._namespace = xp
        self.name = name
        self.setup_time = setup_time
        self.rank = rank

    def __call__(self, R: Any) -> Any:
        return self._fn(R)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        return to_host(self._fn(self._namespace.asarray(X, dtype=np.float64)))

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).reshape(-1)

    def _adjoint(self) -> PreconditionerOperator:
        return self

    def __repr__(self) -> str:
        return f"<preconditioner {self.name}, set up in {self.setup_time:.3g} s>"


class Preconditioner:
    """Base class: ``build(op, alpha)`` returns the :class:`PreconditionerOperator` ``M⁻¹ ≈ (op + alpha·I)⁻¹``."""

    name = "preconditioner"

    def build(self, op: Any, alpha: float) -> PreconditionerOperator:  # pragma: no cover - interface
        raise NotImplementedError


class Jacobi(Preconditioner):
    """Diagonal (Jacobi) preconditioning: ``M = diag(c·K_ii + μ)``.

    >>> import numpy as np
    >>> from kernla import kernels
    >>> M = Jacobi().build(kernels.gaussian(np.zeros((3, 1))), 1.0)
    >>> M(np.ones((3, 1))).ravel()
    array([0.5, 0.5, 0.5])
    """

    name = "jacobi"

    def build(self, op: Any, alpha: float) -> PreconditionerOperator:
        t0 = time.perf_counter()
        d = op.host_diagonal().astype(np.float64) + alpha
        if not (np.isfinite(d).all() and (d > 0).all()):
            raise InputValueError(
                "the Jacobi preconditioner needs a positive diagonal (c·K_ii + alpha > 0); "
                "is the operator positive definite?"
            )
        inv = op.xp.asarray((1.0 / d)[:, None])
        return PreconditionerOperator(lambda R: R * inv, op.shape[0], op.xp, "jacobi", time.perf_counter() - t0)


def default_rank(n: int) -> int:
    """Nyström rank used when none is given: about 3.5·√n, between 100 and 500 (at most n)."""
    return int(min(n, max(100, min(500, round(3.5 * np.sqrt(n))))))


def pivoted_cholesky(
    op: Any, rank: int, rtol: float = 1e-12, block: int = 1, accept: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy pivoted partial Cholesky of a symmetric PSD operator: ``(L, pivots)`` with ``K ≈ L Lᵀ``.

    Each step takes the largest remaining diagonal entry as pivot, computes that column of the
    operator through its engine (:meth:`KernelOperator.columns`: a kernel product over the one
    pivot point) and removes its projection. Stops after ``rank`` columns or when the remaining
    diagonal falls below ``rtol`` times the initial largest one. ``L Lᵀ`` is the Nyström
    approximation on the chosen pivots. Cost: N·rank² flops + rank columns, memory-bound: each
    step reads the whole factor so far (at N = 1e5, rank 1200: ~70 CPU s on a Zen 4 core pair).

    ``block > 1`` finds the pivots in blocks, for large N·rank: the ``block`` largest remaining
    diagonal entries are the candidates, their columns come in one engine call and one
    matrix-product update (the factor read once per block), and greedy steps on the small
    candidate block accept pivots while each one's remaining diagonal is ≥ ``accept`` times the
    largest one outside the block (an upper bound of what plain greedy would pick, as remaining
    diagonals only decrease). So every pivot is within a factor ``accept`` of the greedy choice;
    ``accept=1`` gives the greedy pivots (up to the order of ties). Measured at N = 1e5, rank 1200, a 10-D Matérn
    5/2 kernel: block 128 took 29 CPU s instead of 70, and the residual trace ``tr(K − L Lᵀ)``
    came out 2 % above greedy's.

    >>> import numpy as np
    >>> from kernla import kernels
    >>> x = np.linspace(0, 1, 30)[:, None]
    >>> K = kernels.gaussian(x, sigma=0.5)
    >>> L, piv = pivoted_cholesky(K, 30)
    >>> bool(np.allclose(L @ L.T, K.to_dense(), atol=1e-9))
    True
    >>> Lb, pb = pivoted_cholesky(K, 30, block=8)
    >>> bool(np.allclose(Lb @ Lb.T, K.to_dense(), atol=1e-9)), len(pb) <= 30
    (True, True)
    """
    n = op.shape[0]
    rank = int(min(rank, n))
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise InputValueError(f"block must be a positive integer, got {block!r}")
    if not 0.0 < accept <= 1.0:
        raise InputValueError(f"accept must lie in (0, 1], got {accept!r}")
    d = op.host_diagonal().astype(np.float64) - op.shift
    top = float(d.max()) if n else 0.0
    Lt = np.zeros((rank, n))  # Lᵀ: each new column is a contiguous row
    pivots: list[int] = []
    if top <= 0:
        return Lt[:0].T, np.array(pivots, dtype=np.int64)
    while len(pivots) < rank:
        k, floor = len(pivots), rtol * top
        if block == 1:
            found = _greedy_step(op, d, Lt, k, floor)
        else:
            found = _block_step(op, d, Lt, k, min(int(block), rank - k), floor, accept)
        if not found:
            break
        pivots += found
    return Lt[: len(pivots)].T, np.array(pivots, dtype=np.int64)


#: N·rank from which :func:`pivot_block` finds the pivots in blocks of ``PIVOT_BLOCK`` candidates
BLOCK_PIVOTS_FROM = 20_000_000
PIVOT_BLOCK = 128


def pivot_block(n: int, rank: int) -> int:
    """The ``block`` of :func:`pivoted_cholesky` for an N×N operator and a rank, for callers content with
    pivots within a factor 0.5 of greedy's (preconditioners, variance caches): 1 (greedy) while
    ``N·rank`` ≤ 2·10⁷, where the greedy steps are cheap, else blocks of 128 candidates.

    >>> pivot_block(10_000, 500), pivot_block(100_000, 500)
    (1, 128)
    """
    return PIVOT_BLOCK if int(n) * int(rank) > BLOCK_PIVOTS_FROM else 1


def _greedy_step(op: Any, d: np.ndarray, Lt: np.ndarray, k: int, floor: float) -> list[int]:
    """One greedy pivot (row ``k`` of ``Lt``), or none when the remaining diagonal is ≤ ``floor``."""
    p = int(np.argmax(d))
    if d[p] <= floor:
        return []
    col = op.columns([p])[:, 0]
    col -= Lt[:k, p] @ Lt[:k]
    col /= np.sqrt(d[p])
    Lt[k] = col
    d -= col * col
    d[p] = 0.0
    np.maximum(d, 0.0, out=d)
    return [p]


def _block_step(op: Any, d: np.ndarray, Lt: np.ndarray, k: int, b: int, floor: float, accept: float) -> list[int]:
    """Up to ``b`` pivots from the ``b`` largest remaining diagonal entries (rows ``k…`` of ``Lt``)."""
    n = d.size
    S = np.argpartition(-d, b - 1)[:b] if b < n else np.arange(n)
    S = S[d[S] > floor]
    if not S.size:
        return []
    S = S[np.argsort(-d[S], kind="stable")]
    outside = d.copy()
    outside[S] = 0.0
    bound = accept * float(outside.max())
    C = op.columns(S)
    if k:
        C -= Lt[:k].T @ Lt[:k, S]
    G = C[S]
    g = d[S].copy()  # remaining diagonal of the candidates, updated by each accepted one
    F = np.zeros((S.size, S.size))  # the candidate block's factor, column by column
    order: list[int] = []
    taken = np.zeros(S.size, dtype=bool)
    for s in range(S.size):
        j = int(np.argmax(np.where(taken, -np.inf, g)))
        if g[j] <= floor or g[j] < bound:
            break
        v = (G[:, j] - F[:, :s] @ F[j, :s]) / np.sqrt(g[j])
        F[:, s] = v
        g -= v * v
        g[j] = 0.0
        taken[j] = True
        order.append(j)
    a = len(order)
    new = scipy.linalg.solve_triangular(F[order, :a], C[:, order].T, lower=True, check_finite=False)
    Lt[k : k + a] = new
    d -= (new * new).sum(axis=0)
    d[S[order]] = 0.0
    np.maximum(d, 0.0, out=d)
    return [int(p) for p in S[order]]


def random_landmarks(op: Any, rank: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nyström factor from ``rank`` landmarks drawn uniformly: ``(L, landmarks)`` with ``K ≈ L Lᵀ``.

    ``L = C Q Θ^{-1/2}`` where ``C = K[:, S]`` and ``K[S, S] = Q Θ Qᵀ`` (eigenvalues below a
    relative 1e-12 dropped, so near-duplicate landmarks do no harm).
    """
    n = op.shape[0]
    rank = int(min(rank, n))
    rng = np.random.default_rng(seed)
    S = np.sort(rng.choice(n, size=rank, replace=False))
    C = op.columns(S)
    W = C[S]
    theta, Q = scipy.linalg.eigh((W + W.T) / 2)
    keep = theta > 1e-12 * max(theta.max(initial=0.0), 0.0)
    if not keep.any():
        return np.zeros((n, 0)), S
    L = C @ (Q[:, keep] / np.sqrt(theta[keep]))
    return L, S


class Nystrom(Preconditioner):
    """Rank-m Nyström preconditioner with Woodbury inversion (see the module docstring).

    ``rank``: number of landmarks (default :func:`default_rank`); ``landmarks``: ``"pivoted"``
    (greedy pivoted Cholesky, adaptive: stops early once the matrix is exhausted) or
    ``"random"``; ``seed`` for the random choice.
    """

    name = "nystrom"

    def __init__(self, rank: int | None = None, landmarks: str = "pivoted", seed: int | None = None):
        if landmarks not in ("pivoted", "random"):
            raise InputValueError(f"landmarks must be 'pivoted' or 'random', got {landmarks!r}")
        if rank is not None and (not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank < 1):
            raise InputValueError(f"rank must be a positive integer, got {rank!r}")
        self.rank = rank
        self.landmarks = landmarks
        self.seed = seed

    def build(self, op: Any, alpha: float) -> PreconditionerOperator:
        with blas_single_thread(op.backend, op.on_gpu):
            return self._build(op, alpha)

    def _build(self, op: Any, alpha: float) -> PreconditionerOperator:
        t0 = time.perf_counter()
        n = op.shape[0]
        mu = float(op.shift + alpha)
        if op.scale < 0:
            raise InputValueError(
                f"the Nyström preconditioner needs a positive semi-definite operator (its scale is {op.scale:g} < 0)"
            )
        U, lam = nystrom_basis(op, default_rank(n) if self.rank is None else int(self.rank), self.landmarks, self.seed)
        r = int(lam.size)
        if r == 0:
            if mu <= 0:
                raise InputValueError("the Nyström approximation is empty and alpha = 0: nothing to precondition with")
            return PreconditionerOperator(
                lambda R: R / mu, n, op.xp, f"nystrom(rank 0, {self.landmarks})", time.perf_counter() - t0, 0
            )
        nu = mu if mu > 1e-14 * lam.max() else float(lam.min()) + max(mu, 0.0)
        coef = 1.0 / (lam + mu) - 1.0 / nu  # P⁻¹ = U diag(coef) Uᵀ + I/ν
        xp = op.xp
        Ux = xp.asarray(U)
        cx = xp.asarray(coef[:, None])
        inv_nu = 1.0 / nu

        def apply(R):
            return R * inv_nu + Ux @ (cx * (Ux.T @ R))

        return PreconditionerOperator(apply, n, xp, f"nystrom(rank {r}, {self.landmarks})", time.perf_counter() - t0, r)


def nystrom_basis(
    op: Any, rank: int, landmarks: str = "pivoted", seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(U, λ)`` with ``L Lᵀ = U diag(λ) Uᵀ`` for a Nyström factor L of the operator's kernel part.

    ``L`` comes from ``rank`` landmarks (:func:`pivoted_cholesky` or :func:`random_landmarks`);
    U (n×r) has orthonormal columns and λ > 1e-12·max λ (r = 0 when the factor is empty).

    >>> import numpy as np
    >>> from kernla import kernels
    >>> U, lam = nystrom_basis(kernels.gaussian(np.linspace(0, 1, 20)[:, None], sigma=0.5), 5)
    >>> U.shape, bool(np.allclose(U.T @ U, np.eye(lam.size)))
    ((20, 5), True)
    """
    if landmarks == "pivoted":
        L, _ = pivoted_cholesky(op, rank, block=pivot_block(op.shape[0], min(int(rank), op.shape[0])))
    else:
        L, _ = random_landmarks(op, rank, seed)
    G = L.T @ L
    lam, V = scipy.linalg.eigh((G + G.T) / 2)
    keep = lam > 1e-12 * max(lam.max(initial=0.0), 0.0)
    lam, V = lam[keep], V[:, keep]
    U = L @ (V / np.sqrt(lam)) if lam.size else np.zeros((op.shape[0], 0))
    return U, lam


def make_preconditioner(precond: Any, op: Any, alpha: float, rank: int | None = None):
    """Turn ``precond`` (None, "none", "jacobi", "nystrom", "auto", a :class:`Preconditioner`, a built
    :class:`PreconditionerOperator`, a callable ``R -> M⁻¹R`` or a scipy LinearOperator M⁻¹) into the
    :class:`PreconditionerOperator` (or None) that :func:`~kernla.linalg.cg.block_cg` calls, built for
    ``op + alpha·I``; ``rank`` sets Nyström's rank."""
    if precond is None or (isinstance(precond, str) and precond == "none"):
        if rank is not None:
            raise InputValueError("rank is the Nyström preconditioner's rank: pass precond='nystrom' with it")
        return None
    if isinstance(precond, str):
        if precond == "jacobi":
            precond = Jacobi()
        elif precond == "nystrom":
            precond = Nystrom(rank=rank)
        elif precond == "auto":
            n = op.shape[0]
            precond = Nystrom(rank=rank) if n > 300 and op.scale >= 0 else Jacobi()
        else:
            raise InputValueError(
                f"unknown preconditioner {precond!r}; choose None, 'jacobi', 'nystrom', 'auto', "
                "a kernla.linalg.precond.Preconditioner or a callable"
            )
    if isinstance(precond, Preconditioner):
        return precond.build(op, alpha)
    if isinstance(precond, LinearOperator):
        if precond.shape != op.shape:
            raise InputValueError(f"the preconditioner's shape {precond.shape} differs from the operator's {op.shape}")
        if isinstance(precond, PreconditionerOperator):  # already built: block CG calls it in its namespace
            return precond
        M, xp = precond, op.xp
        return PreconditionerOperator(
            lambda R: xp.asarray(M.matmat(to_host(R))), op.shape[0], xp, "user LinearOperator"
        )
    if callable(precond):
        return PreconditionerOperator(precond, op.shape[0], op.xp, getattr(precond, "__name__", "user callable"))
    raise InputValueError(f"precond must be None, a name, a Preconditioner or a callable; got {type(precond).__name__}")
