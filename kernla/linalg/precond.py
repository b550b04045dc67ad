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
from typing import Any, Callable, Optional

import numpy as np
import scipy.linalg

from ..errors import InputValueError


class Preconditioner:
    """Base class: ``build(op, alpha)`` returns a callable ``R -> M⁻¹ R`` on (n, k) compute arrays."""

    name = "preconditioner"

    def build(self, op: Any, alpha: float) -> "Callable[[Any], Any]":  # pragma: no cover - interface
        raise NotImplementedError


class _Applied:
    """A built preconditioner: callable, with a description and set-up time."""

    def __init__(self, fn: Callable[[Any], Any], name: str, setup_time: float, rank: int = 0):
        self._fn = fn
        self.name = name
        self.setup_time = setup_time
        self.rank = rank

    def __call__(self, R: Any) -> Any:
        return self._fn(R)

    def __repr__(self) -> str:
        return f"<preconditioner {self.name}, set up in {self.setup_time:.3g} s>"


class Jacobi(Preconditioner):
    """Diagonal (Jacobi) preconditioning: ``M = diag(c·K_ii + μ)``.

    >>> import numpy as np
    >>> from kernla import kernels
    >>> M = Jacobi().build(kernels.gaussian(np.zeros((3, 1))), 1.0)
    >>> M(np.ones((3, 1))).ravel()
    array([0.5, 0.5, 0.5])
    """

    name = "jacobi"

    def build(self, op: Any, alpha: float) -> _Applied:
        t0 = time.perf_counter()
        d = op._diag_host().astype(np.float64) + alpha
        if not (np.isfinite(d).all() and (d > 0).all()):
            raise InputValueError("the Jacobi preconditioner needs a positive diagonal (c·K_ii + alpha > 0); "
                                  "is the operator positive definite?")
        inv = op._ns.asarray((1.0 / d)[:, None])
        return _Applied(lambda R: R * inv, "jacobi", time.perf_counter() - t0)


def default_rank(n: int) -> int:
    """Nyström rank used when none is given: about 3.5·√n, between 100 and 500 (at most n)."""
    return int(min(n, max(100, min(500, round(3.5 * np.sqrt(n))))))


def pivoted_cholesky(op: Any, rank: int, rtol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Greedy pivoted partial Cholesky of a symmetric PSD operator: ``(L, pivots)`` with ``K ≈ L Lᵀ``.

    Each step takes the largest remaining diagonal entry as pivot, computes that column of the
    operator through its engine (:meth:`KernelOperator._columns`: a kernel product over the one
    pivot point) and removes its projection. Stops after ``rank`` columns or when the remaining
    diagonal falls below ``rtol`` times the initial largest one. ``L Lᵀ`` is the Nyström
    approximation on the chosen pivots. Cost: N·rank² flops + rank columns.

    (Finding the pivots in blocks — greedy steps on a small block of candidate columns, certified
    against the largest diagonal entry outside it, then the accepted columns in one engine call
    and one matrix-product update — gave the same pivots but saved nothing measurable at
    N = 2000–50000, rank 250: about 3–8 pivots per block, and the update stays memory-bound.)

    >>> import numpy as np
    >>> from kernla import kernels
    >>> x = np.linspace(0, 1, 30)[:, None]
    >>> K = kernels.gaussian(x, sigma=0.5)
    >>> L, piv = pivoted_cholesky(K, 30)
    >>> bool(np.allclose(L @ L.T, K.to_dense(), atol=1e-9))
    True
    """
    n = op.shape[0]
    rank = int(min(rank, n))
    d = op._diag_host().astype(np.float64) - op.shift
    top = float(d.max()) if n else 0.0
    Lt = np.zeros((rank, n))  # Lᵀ: each new column is a contiguous row
    pivots = []
    if top <= 0:
        return Lt[:0].T, np.array(pivots, dtype=np.int64)
    for k in range(rank):
        p = int(np.argmax(d))
        if d[p] <= rtol * top:
            break
        col = op._columns([p])[:, 0]
        col -= Lt[:k, p] @ Lt[:k]
        col /= np.sqrt(d[p])
        Lt[k] = col
        d -= col * col
        d[p] = 0.0
        np.maximum(d, 0.0, out=d)
        pivots.append(p)
    return Lt[:len(pivots)].T, np.array(pivots, dtype=np.int64)


def random_landmarks(op: Any, rank: int, seed: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Nyström factor from ``rank`` landmarks drawn uniformly: ``(L, landmarks)`` with ``K ≈ L Lᵀ``.

    ``L = C Q Θ^{-1/2}`` where ``C = K[:, S]`` and ``K[S, S] = Q Θ Qᵀ`` (eigenvalues below a
    relative 1e-12 dropped, so near-duplicate landmarks do no harm).
    """
    n = op.shape[0]
    rank = int(min(rank, n))
    rng = np.random.default_rng(seed)
    S = np.sort(rng.choice(n, size=rank, replace=False))
    C = op._columns(S)
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

    def __init__(self, rank: Optional[int] = None, landmarks: str = "pivoted", seed: Optional[int] = None):
        if landmarks not in ("pivoted", "random"):
            raise InputValueError(f"landmarks must be 'pivoted' or 'random', got {landmarks!r}")
        if rank is not None and (not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank < 1):
            raise InputValueError(f"rank must be a positive integer, got {rank!r}")
        self.rank = rank
        self.landmarks = landmarks
        self.seed = seed

    def build(self, op: Any, alpha: float) -> _Applied:
        from ._compute import blas_single_thread

        with blas_single_thread(op.backend, op._on_gpu):
            return self._build(op, alpha)

    def _build(self, op: Any, alpha: float) -> _Applied:
        t0 = time.perf_counter()
        n = op.shape[0]
        mu = float(op.shift + alpha)
        rank = default_rank(n) if self.rank is None else int(self.rank)
        if op.scale < 0:
            raise InputValueError("the Nyström preconditioner needs a positive semi-definite operator "
                                  f"(its scale is {op.scale:g} < 0)")
        if self.landmarks == "pivoted":
            L, _ = pivoted_cholesky(op, rank)
        else:
            L, _ = random_landmarks(op, rank, self.seed)
        G = L.T @ L
        lam, V = scipy.linalg.eigh((G + G.T) / 2)
        keep = lam > 1e-12 * max(lam.max(initial=0.0), 0.0)
        lam, V = lam[keep], V[:, keep]
        r = int(lam.size)
        if r == 0:
            if mu <= 0:
                raise InputValueError("the Nyström approximation is empty and alpha = 0: nothing to precondition with")
            return _Applied(lambda R: R / mu, f"nystrom(rank 0, {self.landmarks})", time.perf_counter() - t0, 0)
        U = L @ (V / np.sqrt(lam))           # n×r, orthonormal columns
        nu = mu if mu > 1e-14 * lam.max() else float(lam.min()) + max(mu, 0.0)
        coef = 1.0 / (lam + mu) - 1.0 / nu   # P⁻¹ = U diag(coef) Uᵀ + I/ν
        xp = op._ns
        Ux = xp.asarray(U)
        cx = xp.asarray(coef[:, None])
        inv_nu = 1.0 / nu

        def apply(R):
            return R * inv_nu + Ux @ (cx * (Ux.T @ R))

        return _Applied(apply, f"nystrom(rank {r}, {self.landmarks})", time.perf_counter() - t0, r)


def make_preconditioner(precond: Any, op: Any, alpha: float, rank: Optional[int] = None):
    """Turn ``precond`` (None, "none", "jacobi", "nystrom", "auto", a :class:`Preconditioner`, a
    callable ``R -> M⁻¹R`` or a scipy LinearOperator M⁻¹) into a callable for
    :func:`~kernla.linalg.cg.block_cg`, built for ``op + alpha·I``; ``rank`` sets Nyström's rank."""
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
            raise InputValueError(f"unknown preconditioner {precond!r}; choose None, 'jacobi', 'nystrom', 'auto', "
                                  "a kernla.linalg.precond.Preconditioner or a callable")
    if isinstance(precond, Preconditioner):
        return precond.build(op, alpha)
    from scipy.sparse.linalg import LinearOperator

    if isinstance(precond, LinearOperator):
        if precond.shape != op.shape:
            raise InputValueError(f"the preconditioner's shape {precond.shape} differs from the operator's {op.shape}")
        M = precond
        return _Applied(lambda R: _as_namespace(M.matmat(_host(R)), op._ns), "user LinearOperator", 0.0)
    if callable(precond):
        return _Applied(precond, getattr(precond, "__name__", "user callable"), 0.0)
    raise InputValueError(f"precond must be None, a name, a Preconditioner or a callable; got {type(precond).__name__}")


def _host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()


def _as_namespace(a: Any, xp: Any) -> Any:
    return a if xp is np else xp.asarray(a)
