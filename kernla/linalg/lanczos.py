"""Thick-restart Lanczos with full reorthogonalisation, for a few eigenpairs of a symmetric operator.

The method (Wu & Simon's thick restart, i.e. the symmetric Krylov–Schur method) keeps an
orthonormal basis ``V = [v_0 … v_m]`` and the projected matrix ``H = Vᵀ A V``:

1. expand the basis one product at a time up to ``ncv`` vectors; each new vector is
   orthogonalised twice against the *whole* basis (full reorthogonalisation: no ghost
   eigenvalues, no loss of orthogonality);
2. diagonalise the small projected matrix: Ritz values θ and vectors ``y = V s``; the residual of
   a Ritz pair is ``|β · s_last|`` (β = the norm of the next basis vector), known without a product;
3. stop when each of the k wanted pairs has converged on its own (as in ARPACK):
   ``resid_i ≤ tol · max(|θ_i|, eps · max|θ|)``, or — for an eigenvalue so small that
   ``tol · |θ_i|`` is below the rounding floor ``√n · eps · max|θ|`` of the products — once its
   residual has reached that floor (a :class:`ConvergenceWarning` then says that those
   eigenvalues are below the attainable accuracy); otherwise keep the best ``k + (ncv − k)/2``
   Ritz vectors plus the last basis vector — the kept vectors diagonalise H with an extra
   coupling row — and go to 1.

A test against the largest |θ| alone would accept every tiny Ritz value at once: for
``which="SA"`` on a kernel matrix (whose small eigenvalues cluster near 0) it returned values
10⁶ times too large as "converged".

Every product goes through ``apply`` (for a KernelOperator, one kernla reduction);
:func:`operator_eigsh` is ``KernelOperator.eigsh``, with ARPACK as the other method.

>>> import numpy as np
>>> A = np.diag(np.arange(1.0, 101.0))
>>> w, v = eigsh(lambda V: A @ V, 100, k=3)
>>> np.round(w, 8).tolist()
[98.0, 99.0, 100.0]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import eigsh as arpack_eigsh

from .. import arrays as arr
from ..errors import InputValueError, ShapeError
from . import _compute as compute
from .cg import ConvergenceWarning, user_stacklevel


def _orthogonalise(V: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``w`` minus its projection on the columns of V (two passes of classical Gram–Schmidt)."""
    h = V.T @ w
    w = w - V @ h
    h2 = V.T @ w
    w = w - V @ h2
    return w, h + h2


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of Ritz values, most wanted first."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.argsort(-np.abs(theta), kind="stable")


#: the attainable residual of a Ritz pair is taken as FLOOR_FACTOR · √n · eps · max|θ|
FLOOR_FACTOR = 1.0


def _test(theta, resid, wanted, tol, eps, n):
    """Per-pair convergence test (see :func:`eigsh`)."""
    scale = max(float(np.abs(theta).max()) if theta.size else 0.0, np.finfo(float).tiny)
    th = np.abs(theta[wanted])
    r = resid[wanted]
    converged = r <= tol * np.maximum(th, eps * scale)
    floor = FLOOR_FACTOR * np.sqrt(n) * eps * scale
    tiny = tol * th < floor
    at_floor = ~converged & tiny & (r <= floor)
    return dict(
        converged=converged,
        at_floor=at_floor,
        tiny=tiny,
        floor=floor,
        scale=scale,
        done=bool((converged | at_floor).all()),
    )


def eigsh(
    apply: Callable[[np.ndarray], np.ndarray],
    n: int,
    k: int = 6,
    which: str = "LA",
    tol: float | None = None,
    maxiter: int | None = None,
    ncv: int | None = None,
    v0: np.ndarray | None = None,
    dtype: Any = np.float64,
    return_eigenvectors: bool = True,
    seed: int = 0,
):
    """k eigenpairs of the symmetric n×n operator ``apply`` (an (n, 1) array in, (n, 1) out).

    ``which``: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
    ``tol``: per-pair residual ``‖A y − θ y‖ ≤ tol · max(|θ|, eps · max|θ|)`` (default 1e-8 for
    float64 operators, 1e-4 for float32; eps is the operator dtype's machine epsilon);
    ``maxiter``: restarts (default 100); ``ncv``: basis size (default ``max(2k+1, 20)``, at most
    n). Returns ``(w, v)`` with w ascending, like ``scipy.sparse.linalg.eigsh``. On
    non-convergence, the current approximations with a :class:`ConvergenceWarning`; the warning
    also comes when a wanted eigenvalue is below the attainable accuracy (``tol · |θ|`` under the
    rounding floor ``√n · eps · max|θ|``): such eigenvalues are known only to about ± that floor,
    and with ``which="SA"`` eigenvalues that small may be missing or out of order.
    """
    if which not in ("LA", "SA", "LM"):
        raise InputValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < n:
        raise InputValueError(f"k must be an integer with 1 <= k < n = {n}, got {k!r}")
    k = int(k)
    if tol is None or tol == 0:
        tol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-8
    if not (tol > 0 and np.isfinite(tol)):
        raise InputValueError(f"tol must be a positive number, got {tol}")
    maxiter = 100 if maxiter is None else int(maxiter)
    if maxiter < 1:
        raise InputValueError(f"maxiter must be >= 1, got {maxiter}")
    m = min(n, max(2 * k + 1, 20) if ncv is None else int(ncv))
    if not k < m <= n:
        raise InputValueError(f"ncv must satisfy k < ncv <= n ({k} < ncv <= {n}), got {ncv}")
    rng = np.random.default_rng(seed)
    eps = float(np.finfo(np.float32 if np.dtype(dtype) == np.float32 else np.float64).eps)

    def product(v: np.ndarray) -> np.ndarray:
        return np.asarray(apply(v.reshape(n, 1)), dtype=np.float64).reshape(n)

    V = np.zeros((n, m + 1))
    H = np.zeros((m + 1, m))
    start = rng.standard_normal(n) if v0 is None else np.asarray(v0, dtype=np.float64).reshape(n).copy()
    norm = np.linalg.norm(start)
    if not np.isfinite(norm) or norm == 0:
        raise InputValueError("v0 must be a finite non-zero vector")
    V[:, 0] = start / norm
    p = 0  # number of locked-in (kept) basis vectors before expansion resumes
    theta = np.zeros(0)
    S = np.zeros((0, 0))
    resid = np.zeros(0)
    converged = False
    size = m
    for _restart in range(maxiter):
        # 1. expansion from column p to m-1
        for j in range(p, m):
            w = product(V[:, j])
            w, h = _orthogonalise(V[:, : j + 1], w)
            H[: j + 1, j] = h
            beta = float(np.linalg.norm(w))
            if beta <= 1e-12 * max(1.0, np.abs(h).max()):
                # invariant subspace: continue with a fresh direction (no coupling)
                beta = 0.0
                if j + 1 >= n:
                    size = j + 1
                    break
                w = rng.standard_normal(n)
                w, _ = _orthogonalise(V[:, : j + 1], w)
                w, _ = _orthogonalise(V[:, : j + 1], w)
                V[:, j + 1] = w / np.linalg.norm(w)
            else:
                V[:, j + 1] = w / beta
            H[j + 1, j] = beta
        else:
            size = m
        # 2. Ritz pairs
        T = H[:size, :size]
        theta, S = scipy.linalg.eigh((T + T.T) / 2)
        coupling = H[size, :size] @ S if size < m + 1 and size == m else np.zeros(size)
        resid = np.abs(coupling)
        order = _order(theta, which)
        wanted = order[:k]
        state = _test(theta, resid, wanted, tol, eps, n)
        if size < m or state["done"]:
            converged = size >= k and state["done"]
            break
        # 3. thick restart: keep the best Ritz vectors and the last basis vector
        keep = order[: min(size - 1, k + (m - k) // 2)]
        p = keep.size
        Vk = V[:, :size] @ S[:, keep]
        V[:, :p] = Vk
        V[:, p] = V[:, size]
        H[:] = 0.0
        H[np.arange(p), np.arange(p)] = theta[keep]
        H[p, :p] = coupling[keep]
        V[:, p + 1 :] = 0.0
    order = _order(theta, which)[:k]
    problems = []
    if not converged:
        bad = ~(state["converged"] | state["at_floor"])
        problems.append(
            f"{int(bad.sum())} of the {k} wanted eigenpairs did not converge to tol={tol:g} within "
            f"maxiter={maxiter} restarts (largest residual "
            f"{resid[order].max() / state['scale']:.3g}·max|λ|)"
        )
    if state["tiny"].any():
        # |θ| below floor/tol: a residual of tol·|θ| is out of reach in this precision
        limit = state["floor"] / tol
        problems.append(
            f"{int(state['tiny'].sum())} of the {k} wanted eigenvalues are below the attainable "
            f"accuracy (|λ| < {limit:.2g}, i.e. tol·|λ| under the rounding floor ≈ √n·eps·max|λ| = "
            f"{state['floor']:.2g}): they are known only to about ±{state['floor']:.2g}"
            + (", and eigenvalues that small may be missing or out of order" if which == "SA" else "")
        )
    if problems:
        warnings.warn(
            "Lanczos: " + "; ".join(problems) + "; returning the current approximations",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    idx = order[np.argsort(theta[order], kind="stable")]
    w = theta[idx]
    if not return_eigenvectors:
        return w
    vecs = V[:, :size] @ S[:, idx]
    return w, vecs


def operator_eigsh(
    op: Any,
    k: int = 6,
    which: str = "LA",
    tol: float | None = None,
    maxiter: int | None = None,
    ncv: int | None = None,
    v0: Any = None,
    return_eigenvectors: bool = True,
    method: str = "lanczos",
):
    """k eigenvalues (ascending) and eigenvectors of this symmetric operator.

    ``which``: ``"LA"`` (largest), ``"SA"`` (smallest) or ``"LM"`` (largest magnitude).
    ``method="lanczos"`` (default) is kernla's thick-restart Lanczos with full
    reorthogonalisation (:func:`kernla.linalg.lanczos.eigsh`); ``method="arpack"`` calls
    ``scipy.sparse.linalg.eigsh`` (ARPACK's implicitly restarted Lanczos) on this operator.
    Returns ``(w, v)`` like scipy (or ``w`` with ``return_eigenvectors=False``), as arrays of the
    data's kind.

    >>> import numpy as np
    >>> from kernla import kernels
    >>> x = np.linspace(0, 1, 40)[:, None]
    >>> K = kernels.gaussian(x, sigma=0.3)
    >>> w = K.eigsh(k=2, return_eigenvectors=False)
    >>> bool(np.allclose(w, np.linalg.eigvalsh(K.to_dense())[-2:]))
    True
    """
    if op.shape[0] != op.shape[1]:
        raise ShapeError(f"eigsh needs a square symmetric operator; this one is {op.shape}")
    if method == "arpack":
        if which not in ("LA", "SA", "LM"):
            raise InputValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
        with compute.blas_single_thread(op.backend, op.on_gpu):
            out = arpack_eigsh(
                op,
                k=k,
                which=which,
                tol=0 if tol is None else tol,
                maxiter=maxiter,
                ncv=ncv,
                v0=None if v0 is None else arr.to_numpy(v0, op.dtype),
                return_eigenvectors=return_eigenvectors,
            )
    elif method == "lanczos":

        def apply(V):
            return compute.to_host(op.product(compute.to_compute(V, op.on_gpu, op.dtype)))

        with compute.blas_single_thread(op.backend, op.on_gpu):
            out = eigsh(
                apply,
                op.shape[0],
                k=k,
                which=which,
                tol=tol,
                maxiter=maxiter,
                ncv=ncv,
                v0=None if v0 is None else arr.to_numpy(v0, np.dtype(np.float64)).reshape(-1),
                dtype=op.dtype,
                return_eigenvectors=return_eigenvectors,
            )
    else:
        raise InputValueError(f"method must be 'lanczos' or 'arpack', got {method!r}")
    if return_eigenvectors:
        w, v = out
        return (
            compute.from_compute(np.asarray(w, dtype=op.dtype), op.kind),
            compute.from_compute(np.asarray(v, dtype=op.dtype), op.kind),
        )
    return compute.from_compute(np.asarray(out, dtype=op.dtype), op.kind)
