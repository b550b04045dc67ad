"""The log marginal likelihood of a Gaussian process and its gradient in the log hyper-parameters.

With ``A = K_θ + σ² I`` (σ²: the kernel's white noise plus the fixed jitter ``alpha``) and t
output columns Y:

    log p(Y | X, θ) = −½ Σ_k y_kᵀ A⁻¹ y_k − (t/2) log det A − (t N / 2) log 2π
    ∂/∂θ_p           = ½ Σ_ij (αα ᵀ − t A⁻¹)_ij ∂A_ij/∂θ_p,        α = A⁻¹ Y.

- :func:`exact_evidence`: dense Cholesky — exact, O(N²) memory, O(N³) time; the weighted sums of
  the derivatives are evaluated by NumPy over one triangle (:func:`~kernla.models.gp_kernels.symmetric_gradient`).
- :func:`iterative_evidence`: BBMM (Gardner et al., 2018). A rank-r pivoted Cholesky factor
  ``K ≈ L Lᵀ`` gives the preconditioner ``P = L Lᵀ + σ² I`` (Woodbury; ``log det P`` exact).
  t probes ``z ~ N(0, P)`` and the targets are solved together by one preconditioned block CG
  (:func:`~kernla.linalg.cg_lanczos.pcg_lanczos`: one kernel product per iteration for all
  columns). Its coefficients are the Lanczos tridiagonals of ``P^{-1/2} A P^{-1/2}``, so
  ``log det A = log det P + tr log(P^{-1/2} A P^{-1/2})`` is estimated by stochastic Lanczos
  quadrature from the same run; the trace terms ``tr(A⁻¹ ∂K) = E[(A⁻¹z)ᵀ ∂K (P⁻¹z)]`` are
  Hutchinson estimates, all parameters in **one** kernla reduction
  (:func:`~kernla.models.gp_kernels.pair_gradient`). Deterministic given ``seed``; the value's
  Monte-Carlo standard error is reported (Lanczos/CG truncation not included); memory
  O(N·(t + r)). The estimates of the value and of the gradient are both unbiased up to the
  truncation — the gradient is not the derivative of the value's estimate.

Priors on the hyper-parameters are not included here (training adds ``GPKernel.log_prior``).

>>> import numpy as np
>>> from kernla.models import gp_kernels as gk
>>> X = np.linspace(0, 1, 50)[:, None]
>>> Y = np.sin(6 * X)
>>> k = gk.RBF(0.2) + gk.WhiteKernel(0.01)
>>> exact = exact_evidence(k, X, Y, 0.0)
>>> est = iterative_evidence(k, X, Y, 0.0, num_probes=32, rank=5)
>>> bool(abs(est.value - exact.value) < 4 * est.stderr + 1e-6), exact.stderr
(True, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from ..errors import InputValueError
from ..linalg import _compute as compute
from ..linalg.cg_lanczos import pcg_lanczos
from ..linalg.precond import pivot_block, pivoted_cholesky
from .gp_kernels import GPKernel, pair_gradient, symmetric_gradient


@dataclass
class Evidence:
    """A log marginal likelihood: ``value``, ``gradient`` in ``theta``, ``stderr``
    (0 for the exact method), and ``info`` (method, CG iterations and products, ...)."""

    value: float
    gradient: np.ndarray
    stderr: float = 0.0
    info: dict = field(default_factory=dict)


def _white_gradient(kernel: GPKernel, grad: np.ndarray, fit2: float, trace_inv: float, t: int) -> None:
    """The white-noise entries of the gradient: ``½ σ_w² (Σ α² − t tr A⁻¹)``."""
    mask = kernel.white_mask()
    grad[mask] = 0.5 * np.exp(kernel.theta[mask]) * (fit2 - t * trace_inv)


def _lapack(routine: Any, *args: Any, **kw: Any) -> tuple[np.ndarray, int]:
    """A scipy LAPACK wrapper's ``(result, info)``, a failure (info < 0: a bad argument) raised."""
    out, info = routine(*args, **kw)
    if info < 0:
        raise InputValueError(f"LAPACK {routine.__name__} failed (info={info})")
    return out, info


def exact_evidence(
    kernel: GPKernel, X: Any, Y: np.ndarray, jitter: float, eval_gradient: bool = True, backend: str | None = None
) -> Evidence:
    """The exact log marginal likelihood (dense Cholesky) and its gradient; Y host float64 (N, t).

    A covariance that is not positive definite to machine precision gives ``value = -inf``
    (scikit-learn's convention, so that an optimiser backs off). ``info["cholesky"]``: the lower
    factor of A (Fortran order, zeros above the diagonal; for a fit to keep instead of factorising again).

    Only the triangle LAPACK reads is computed: the upper one of K (:meth:`GPKernel.dense_upper`), whose
    Fortran-ordered transpose potrf factorises in place; ``A⁻¹`` comes from potri (N³ flops, a third of
    ``cho_solve(L, I)``'s) on a copy of the factor, and the gradient's sums run over its upper triangle
    (:func:`~kernla.models.gp_kernels.symmetric_gradient`): no symmetrised N×N copy is made.
    """
    n, t = Y.shape
    U = kernel.dense_upper(X)
    U[np.diag_indices(n)] += kernel.white_noise() + jitter
    L, info = _lapack(scipy.linalg.lapack.dpotrf, U.T, lower=1, clean=0, overwrite_a=1)
    if info:
        return Evidence(-np.inf, np.zeros(kernel.n_dims), info={"method": "exact", "failed": True})
    alpha = _lapack(scipy.linalg.lapack.dpotrs, L, Y, lower=1)[0]
    value = -0.5 * float((Y * alpha).sum()) - t * float(np.log(np.diag(L)).sum()) - 0.5 * t * n * math.log(2 * math.pi)
    grad = np.zeros(kernel.n_dims)
    if eval_gradient and kernel.n_dims:
        inverse = _lapack(scipy.linalg.lapack.dpotri, L, lower=1)[0].T  # C order: A⁻¹ on and above the diagonal
        grad = 0.5 * symmetric_gradient(kernel, X, lambda i0, i1: alpha[i0:i1] @ alpha[i0:].T - t * inverse[i0:i1, i0:])
        _white_gradient(kernel, grad, float((alpha * alpha).sum()), float(np.trace(inverse)), t)
    return Evidence(value, grad, 0.0, {"method": "exact", "alpha": alpha, "cholesky": L})


class LocalProducts:
    """A Gaussian process's kernel products in this process: kernla reductions on the training points X.

    The interface the training and the predictions ask for (:class:`kernla.models.gp_cluster.ClusterProducts`
    gives the same on a Dask cluster): ``operator(kernel)`` (K on X), ``cross(kernel, X_new)``
    (K(X_new, X)) and ``pair_gradient(kernel, U, V)`` (:func:`~kernla.models.gp_kernels.pair_gradient`).
    """

    def __init__(self, X: Any, backend: str | None = None):
        self.X, self.backend = X, backend

    def operator(self, kernel: GPKernel) -> Any:
        return kernel.operator(self.X, backend=self.backend)

    def cross(self, kernel: GPKernel, X_new: Any) -> Any:
        return kernel.operator(X_new, self.X, backend=self.backend)

    def pair_gradient(self, kernel: GPKernel, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        return pair_gradient(kernel, self.X, U, V, self.backend)


class _Woodbury:
    """``P = L Lᵀ + σ² I`` from a pivoted-Cholesky factor L: solves, log det and samples ``N(0, P)``."""

    def __init__(self, L: np.ndarray, noise: float):
        self.L, self.noise = L, noise
        r = L.shape[1]
        self.C = scipy.linalg.cholesky(L.T @ L + noise * np.eye(r), lower=True) if r else np.zeros((0, 0))
        n = L.shape[0]
        self.logdet = 2.0 * float(np.log(np.diag(self.C)).sum()) + (n - r) * math.log(noise)

    def solve(self, R: np.ndarray) -> np.ndarray:
        if not self.L.shape[1]:
            return R / self.noise
        inner = scipy.linalg.cho_solve((self.C, True), self.L.T @ R)
        return (R - self.L @ inner) / self.noise

    def sample(self, rng: np.random.Generator, t: int) -> np.ndarray:
        n, r = self.L.shape
        return self.L @ rng.standard_normal((r, t)) + math.sqrt(self.noise) * rng.standard_normal((n, t))


def iterative_evidence(
    kernel: GPKernel,
    X: Any,
    Y: np.ndarray,
    jitter: float,
    *,
    num_probes: int = 16,
    rank: int = 100,
    seed: int | None = 0,
    tol: float = 1e-6,
    probe_tol: float | None = None,
    maxiter: int = 1000,
    eval_gradient: bool = True,
    backend: str | None = None,
    products: Any = None,
) -> Evidence:
    """The BBMM estimate of the log marginal likelihood and of its gradient (module docstring).

    ``tol``: CG tolerance of the target columns (``probe_tol``, default ``tol``: of the probes);
    ``info["alpha"]`` holds ``A⁻¹ Y``. ``products``: where the kernel products run (default
    :class:`LocalProducts` on X; :class:`~kernla.models.gp_cluster.ClusterProducts`: on a cluster).
    """
    if isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) or num_probes < 2:
        raise InputValueError(f"num_probes must be an integer >= 2, got {num_probes!r}")
    n, t = Y.shape
    noise = kernel.white_noise() + jitter
    if not noise > 0:
        raise InputValueError("the iterative method needs a positive noise (a WhiteKernel or alpha > 0)")
    products = LocalProducts(X, backend) if products is None else products
    op = products.operator(kernel)
    rank = min(int(rank), n)
    pre = _Woodbury(pivoted_cholesky(op, rank, block=pivot_block(n, rank))[0], noise)
    Z = pre.sample(np.random.default_rng(seed), int(num_probes))

    def apply(V: np.ndarray) -> np.ndarray:
        KV = compute.to_host(op.product(compute.to_compute(np.ascontiguousarray(V), op.on_gpu, op.dtype)))
        return KV.astype(np.float64) + noise * V

    tols = np.r_[np.full(t, tol), np.full(Z.shape[1], tol if probe_tol is None else probe_tol)]
    S, run = pcg_lanczos(apply, np.hstack([Y, Z]), pre.solve, tols, maxiter)
    alpha, U = S[:, :t], S[:, t:]
    quad = run.quadrature(np.log)[t:]  # (P^{-1/2} z)ᵀ log(P^{-1/2} A P^{-1/2}) (P^{-1/2} z) per probe
    logdet = pre.logdet + float(quad.mean())
    stderr = 0.5 * t * float(quad.std(ddof=1) / math.sqrt(quad.size))
    value = -0.5 * float((Y * alpha).sum()) - 0.5 * t * logdet - 0.5 * t * n * math.log(2 * math.pi)
    info: dict[str, Any] = {
        "method": "iterative",
        "cg_iterations": int(run.iterations.max()),
        "kernel_products": run.products,
        "residual": float(run.residuals.max()),
        "precond_rank": int(pre.L.shape[1]),
        "alpha": alpha,
    }
    grad = np.zeros(kernel.n_dims)
    if eval_gradient and kernel.n_dims:
        PZ = pre.solve(Z)
        m = Z.shape[1]
        grad = 0.5 * products.pair_gradient(kernel, np.hstack([alpha, U]), np.hstack([alpha, (-t / m) * PZ]))
        info["kernel_products"] += 1
        _white_gradient(kernel, grad, float((alpha * alpha).sum()), float((U * PZ).sum()) / m, t)
    return Evidence(value, grad, stderr, info)


__all__ = ["Evidence", "LocalProducts", "exact_evidence", "iterative_evidence"]
