"""Posterior variances, covariances and samples of a fitted Gaussian process.

``var(x_*) = k(x_*, x_*) − k_*ᵀ A⁻¹ k_*`` with ``A = K + σ² I``, ``k_* = k(X, x_*)``.

- :class:`CholeskyPosterior` (the exact path, N ≤ ``max_exact_size``): the Cholesky factor of A
  is kept from ``fit``; variances and covariances are triangular solves of the dense N×b
  cross-kernel blocks — exact.
- :class:`NystromVariance` (the iterative path's fast variances): the pivoted-Cholesky (Nyström)
  factor ``K ≈ L Lᵀ`` (rank r, residual ``R = K − L Lᵀ``) replaces K inside A only; the prior
  ``k_**`` and the cross-covariances ``k_*`` stay exact, and the variance is computed without
  the cancellation of "prior minus quadratic form", which loses everything when the prior is
  10⁸ times the posterior variance (learned amplitudes at their bounds). Its error is one-sided
  and bounded by ``‖R‖₂/σ²`` (class docstring); ``cross=False`` is the cheaper DTC form.
- :class:`LowRankVarianceCache`: the earlier projection cache — a subspace S of the training
  space — the pivoted-Cholesky factor L of K (rank r) and one block-Krylov step,
  ``S = orth([L, K L])`` — and the projection ``A⁻¹ ≈ S (Sᵀ A S)⁻¹ Sᵀ = G Gᵀ``, built once (one
  kernel product with 2r columns); the variance at M new points then costs **one** kernel
  reduction over the M×N pairs, ``K(X_new, X) @ G`` (the LOVE idea of Pleiss et al., 2018, with
  a block-Krylov instead of a Lanczos cache). The projection is ⪯ A⁻¹, so its variances are
  never too small, but its error is relative to the prior: with a learned amplitude of 10⁵ and
  a posterior variance 10⁻⁸ of it, they come out 8–12× too large (Friedman #1, N = 10⁴).

>>> import numpy as np
>>> from kernla.models import gp_kernels as gk
>>> X = np.random.default_rng(0).uniform(size=(200, 2))
>>> k = gk.RBF(0.3)
>>> cache = LowRankVarianceCache(k, X, 0.01, rank=60)
>>> exact = CholeskyPosterior(k, X, 0.01)
>>> Xn = np.random.default_rng(1).uniform(size=(5, 2))
>>> bool(np.allclose(cache.variance(Xn), exact.variance(Xn), atol=1e-6))
True
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import scipy.linalg

from .. import arrays as arr
from ..errors import InputValueError
from ..linalg import _compute as compute
from ..linalg.precond import pivot_block, pivoted_cholesky
from .gp_evidence import LocalProducts, _Woodbury
from .gp_kernels import GPKernel

#: target number of entries of one dense N×b cross-kernel block (exact path)
BATCH_ENTRIES = 1 << 22


def _host(a: Any) -> np.ndarray:
    return arr.to_numpy(a, np.dtype(np.float64))


class CholeskyPosterior:
    """The dense Cholesky factor of ``A = K + σ² I`` and what the exact predictions need from it."""

    def __init__(self, kernel: GPKernel, X: Any, noise: float, backend: str | None = None, L: np.ndarray | None = None):
        """``L``: the lower Cholesky factor of A if already computed (by the evidence at these values)."""
        if L is not None:
            self.L = L
        else:
            n = int(X.shape[0])
            A = kernel.dense(X)
            A[np.diag_indices(n)] += noise
            try:
                self.L = scipy.linalg.cholesky(A, lower=True, overwrite_a=True, check_finite=False)
            except np.linalg.LinAlgError:
                raise InputValueError(
                    "the training covariance K + noise·I is not positive definite to machine precision; "
                    "increase alpha or add a WhiteKernel"
                ) from None
        self.kernel, self.X, self.backend = kernel, X, backend

    def solve(self, B: np.ndarray) -> np.ndarray:
        return scipy.linalg.cho_solve((self.L, True), B, check_finite=False)

    def _whitened(self, X_new: Any) -> np.ndarray:
        """``L⁻¹ K(X, X_new)`` (N×M)."""
        C = self.kernel.dense(self.X, X_new)
        return scipy.linalg.solve_triangular(self.L, C, lower=True, check_finite=False)

    def variance(self, X_new: Any) -> np.ndarray:
        """Latent variances at X_new, in batches of the dense N×b block."""
        m, n = int(X_new.shape[0]), self.L.shape[0]
        b = max(1, min(m, BATCH_ENTRIES // n))
        out = np.empty(m)
        for s in range(0, m, b):
            batch = X_new[s : s + b]
            out[s : s + b] = self.kernel.diag(batch) - (self._whitened(batch) ** 2).sum(axis=0)
        return np.maximum(out, 0.0)

    def covariance(self, X_new: Any) -> np.ndarray:
        V = self._whitened(X_new)
        prior = self.kernel.dense(X_new)
        return prior - V.T @ V


def _apply(op: Any, R: np.ndarray) -> np.ndarray:
    """``op @ R`` for a host block R, by the operator's engine (on its device), back as host float64."""
    return _host(compute.to_host(op.product(compute.to_compute(np.ascontiguousarray(R), op.on_gpu, op.dtype))))


class LowRankVarianceCache:
    """The projection cache of fast predictive variances (module docstring): built once (one
    kernel product with 2·rank columns), then one reduction per call. ``L``: a pivoted-Cholesky
    factor of K already computed (its rank is used instead of ``rank``)."""

    def __init__(
        self,
        kernel: GPKernel,
        X: Any,
        noise: float,
        rank: int = 100,
        backend: str | None = None,
        products: Any = None,
        L: np.ndarray | None = None,
    ):
        n = int(X.shape[0])
        # products: where the kernel products run (gp_evidence.LocalProducts, or gp_cluster.ClusterProducts)
        self.on = LocalProducts(X, backend) if products is None else products
        op = self.on.operator(kernel)
        if L is None:
            L, _ = pivoted_cholesky(op, min(int(rank), n))
        KL = _apply(op, L)
        Q, sv, _ = scipy.linalg.svd(np.hstack([L, KL]), full_matrices=False)
        S = Q[:, sv > 1e-10 * sv[0]] if sv.size else Q
        KS = _apply(op, S)
        w, V = scipy.linalg.eigh((S.T @ KS + KS.T @ S) / 2 + noise * np.eye(S.shape[1]))
        keep = w > 1e-12 * max(float(w.max(initial=0.0)), 1e-300)
        self.G = S @ (V[:, keep] / np.sqrt(w[keep]))
        self.kernel, self.X, self.backend = kernel, X, backend
        self.products = 2

    def variance(self, X_new: Any) -> np.ndarray:
        """Latent variances at X_new: one kernel reduction over the new × training pairs."""
        cross = self.on.cross(self.kernel, X_new)
        C = _host(cross @ arr.wrap(np.ascontiguousarray(self.G), arr.common_kind({"x": X_new}), arr.dtype_of(X_new)))
        return np.maximum(self.kernel.diag(X_new) - (C * C).sum(axis=1), 0.0)


class NystromVariance:
    """Fast predictive variances from the pivoted-Cholesky (Nyström) factor of K, cancellation-free.

    Built once: ``K ≈ L Lᵀ`` by greedy pivoted Cholesky (:func:`~kernla.linalg.precond.pivoted_cholesky`,
    r kernel columns and N·r² flops, memory N·r; pivots found in blocks above ``N·r = 2·10⁷``), stopped at
    ``rank`` columns or once the largest residual diagonal entry is ``≤ tol·σ²``; and the Cholesky factor
    of ``LᵀL + σ² I`` (r×r).
    A new point's row ``l_*`` continues the same recursion on the pivots P (``l_* = L_P⁻¹ k(X_P, x_*)``,
    r kernel values) and ``r_** = k_** − ‖l_*‖²`` is its exact Nyström residual, ``e_* = k_* − L l_*``
    its residual cross-covariance. With ``A' = L Lᵀ + σ² I`` (K replaced by its Nyström part in A
    only) the variance is

        var' = k_** − k_*ᵀ A'⁻¹ k_* = r_** − ‖e_*‖²/σ² + σ² ṽᵀ (LᵀL + σ² I)⁻¹ ṽ,   ṽ = l_* − Lᵀ e_*/σ²,

    an exact identity whose terms are all small (no "prior minus quadratic form" cancellation).
    **Bound** (τ = ‖R‖₂/σ², ``R = K − L Lᵀ`` on the training points; ``τ ≤ tr R/σ²``,
    ``residual_trace``): ``(1 − τ(1 + τ)) var ≤ var' ≤ var`` — never too large, too small by at most
    the relative τ(1+τ). (A' ⪯ A gives var' ≤ var; with ``a = A⁻¹ k_*``, ``a' = A'⁻¹ k_*``:
    ``var − var' = a'ᵀ R a ≤ ‖R^½ a'‖ ‖R^½ a‖ ≤ (1 + τ) aᵀ R a`` and ``σ² ‖a‖² ≤ var``.) ``‖R‖₂`` is
    usually far below ``tr R`` (N = 10⁴, Friedman #1: ``tr R/σ² = 0.8``, ``‖R‖₂/σ² = 0.008``).
    Per new point: the N residual cross-covariances (N kernel values and 4·N·r flops).

    ``cross=False``: the DTC form ``r_** + σ² l_*ᵀ (LᵀL + σ² I)⁻¹ l_*`` (``e_*`` dropped: r kernel
    values and r² flops per point, no pass over the training points); it is two-sided, within the
    factors ``[1/((1 + τ)(1 + √τ)), 1/(1 − √τ)]`` of var (looser; in practice a higher rank reaches
    the same accuracy).

    >>> import numpy as np
    >>> from kernla.models import gp_kernels as gk
    >>> rng = np.random.default_rng(0)
    >>> X, Xn = rng.uniform(size=(301, 2)), rng.uniform(size=(7, 2))
    >>> k = gk.ConstantKernel(1e5) * gk.Matern([3.0, 5.0], nu=2.5)
    >>> exact = CholeskyPosterior(k, X, 0.01).variance(Xn)
    >>> fast = NystromVariance(k, X, 0.01, rank=200).variance(Xn)
    >>> bool(np.all(fast <= exact * (1 + 1e-6))), bool(np.allclose(fast, exact, rtol=1e-2))
    (True, True)
    """

    def __init__(
        self,
        kernel: GPKernel,
        X: Any,
        noise: float,
        rank: int = 1000,
        tol: float = 1e-5,
        cross: bool = True,
        backend: str | None = None,
        products: Any = None,
    ):
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise InputValueError(f"the variance rank must be a positive integer, got {rank!r}")
        if not noise > 0:
            raise InputValueError(f"the Nyström variances need a positive noise variance, got {noise!r}")
        self.X = _host(X)
        n = self.X.shape[0]
        # products: where the kernel columns are computed (gp_evidence.LocalProducts, or gp_cluster.ClusterProducts)
        op = (LocalProducts(self.X, backend) if products is None else products).operator(kernel)
        prior = kernel.diag(self.X)
        top = float(prior.max(initial=0.0))
        rank = min(int(rank), n)
        rtol = tol * noise / top if top > 0 else 0.0
        self.L, self.pivots = pivoted_cholesky(op, rank, rtol=rtol, block=pivot_block(n, rank))
        self.residual_trace = float(np.maximum(prior - np.einsum("ij,ij->i", self.L, self.L), 0.0).sum())
        self.inner = _Woodbury(self.L, noise).C  # lower Cholesky factor of LᵀL + σ² I
        self.kernel, self.noise, self.cross = kernel, float(noise), bool(cross)

    def residual_norm(self, sample: int = 2000, seed: int = 0) -> float:
        """``‖R‖₂`` (``R = K − L Lᵀ`` on the training points), dense, when N ≤ ``sample``; above, an
        estimate: ``N/m`` times the largest eigenvalue of R on a seeded random subset of m = ``sample``
        points (m² kernel values, no pass over all N; the residual's leading eigenvectors are spread
        over the data). At most ``tr R``."""
        n = self.L.shape[0]
        rows = np.arange(n) if n <= sample else np.random.default_rng(seed).choice(n, sample, replace=False)
        Ls = self.L[rows]
        top = float(
            scipy.linalg.eigvalsh(self.kernel.dense(self.X[rows]) - Ls @ Ls.T, subset_by_index=[len(rows) - 1] * 2)[0]
        )
        return float(min(max(top * n / len(rows), 0.0), self.residual_trace))

    @property
    def rank(self) -> int:
        return int(self.L.shape[1])

    def truncated(self, rank: int) -> NystromVariance:
        """The Nyström variances of the first ``rank`` pivots (greedy pivoting: what a build stopped at
        that rank gives), sharing this factor's memory."""
        out = copy.copy(self)
        out.L, out.pivots = self.L[:, :rank], self.pivots[:rank]
        out.residual_trace = float(
            np.maximum(self.kernel.diag(self.X) - np.einsum("ij,ij->i", out.L, out.L), 0.0).sum()
        )
        out.inner = _Woodbury(out.L, self.noise).C
        return out

    def variance(self, X_new: Any) -> np.ndarray:
        """Latent variances at X_new (host float64), in batches of the dense N×b residual block."""
        Xn = _host(X_new)
        m, (n, r) = Xn.shape[0], self.L.shape
        b = max(1, min(m, BATCH_ENTRIES // (n if self.cross else max(r, 1))))
        out = np.empty(m)
        for s in range(0, m, b):
            out[s : s + b] = self._batch(Xn[s : s + b])
        return np.maximum(out, 0.0)

    def _batch(self, Xb: np.ndarray) -> np.ndarray:
        lower = self.L[self.pivots]  # L_P: lower triangular in pivot order
        ls = scipy.linalg.solve_triangular(lower, self.kernel.dense(self.X[self.pivots], Xb), lower=True)
        var = self.kernel.diag(Xb) - (ls * ls).sum(axis=0)  # r_**
        v = ls
        if self.cross:
            E = self.kernel.dense(self.X, Xb)
            E -= self.L @ ls  # e_* per column
            var -= (E * E).sum(axis=0) / self.noise
            v = ls - (self.L.T @ E) / self.noise
        z = scipy.linalg.solve_triangular(self.inner, v, lower=True) if self.rank else v[:0]
        return var + self.noise * (z * z).sum(axis=0)


#: the largest error bound ``τ(1 + τ)`` at which :func:`variance_cache` takes the Nyström variances
NYSTROM_BOUND = 0.1
#: the default largest rank of the Nyström variances (it stops earlier once the residual is below ``tol·σ²``)
NYSTROM_RANK = 1000
#: largest N·rank at which :func:`variance_cache` takes the exact-cross form (4·N·rank flops per new point);
#: above, the DTC form (rank² flops per point: N = 1e5, rank 1000 would cost ~10 CPU minutes per 1e4 points)
CROSS_BUDGET = 20_000_000


def variance_cache(
    kernel: GPKernel,
    X: Any,
    noise: float,
    rank: int | None = None,
    projection_rank: int = 100,
    backend: str | None = None,
    products: Any = None,
) -> NystromVariance | LowRankVarianceCache:
    """The fast-variance cache of a fitted model: :class:`NystromVariance` (of rank at most ``rank``,
    default :data:`NYSTROM_RANK`) where its error bound ``τ(1 + τ)`` is at most :data:`NYSTROM_BOUND`
    — τ from ``tr R/σ²`` (certified) or, failing that, from :meth:`NystromVariance.residual_norm`
    (exact up to 2000 points, a subset estimate above; the errors measured were 5–10× below the
    bound) — else the projection cache :class:`LowRankVarianceCache` on the first ``rank`` (default
    ``projection_rank``) pivots of the same factor: for a kernel that is not low-rank to within σ²
    (short length scales, rough kernels, little noise), where the prior is seldom many orders above
    the posterior variance. The Nyström variances use the exact-cross form up to ``N·rank =``
    :data:`CROSS_BUDGET`, the DTC form above.

    >>> import numpy as np
    >>> from kernla.models import gp_kernels as gk
    >>> X = np.random.default_rng(0).uniform(size=(200, 2))
    >>> type(variance_cache(gk.ConstantKernel(1e4) * gk.RBF(3.0), X, 0.01)).__name__
    'NystromVariance'
    >>> type(variance_cache(gk.Matern(0.05, nu=0.5), X, 0.01, rank=50)).__name__
    'LowRankVarianceCache'
    """
    if not noise > 0:  # no σ² to measure the residual against: the projection
        return LowRankVarianceCache(kernel, X, noise, projection_rank if rank is None else rank, backend, products)
    nystrom = NystromVariance(
        kernel, X, noise, NYSTROM_RANK if rank is None else rank, backend=backend, products=products
    )
    for tau in (nystrom.residual_trace / noise, nystrom.residual_norm() / noise):
        if tau * (1 + tau) <= NYSTROM_BOUND:
            nystrom.cross = int(X.shape[0]) * nystrom.rank <= CROSS_BUDGET
            return nystrom
    L = nystrom.L[:, : projection_rank if rank is None else rank]
    return LowRankVarianceCache(kernel, X, noise, L.shape[1], backend, products, L=L)


def sample_gaussian(mean: np.ndarray, cov: np.ndarray, n_samples: int, random_state: Any) -> np.ndarray:
    """``n_samples`` draws of N(mean, cov) (mean (M,) or (M, t), one cov for every column), by the
    symmetric square root of cov (negative rounding eigenvalues clipped): shape (M, n_samples) or
    (M, t, n_samples) as scikit-learn's ``sample_y``."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise InputValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    w, Q = np.linalg.eigh((cov + cov.T) / 2)
    root = Q * np.sqrt(np.maximum(w, 0.0))
    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    if mean.ndim == 1:
        return mean[:, None] + root @ rng.standard_normal((cov.shape[0], int(n_samples)))
    draws = rng.standard_normal((cov.shape[0], mean.shape[1], int(n_samples)))
    return mean[:, :, None] + np.einsum("ij,jkl->ikl", root, draws)


__all__ = ["CholeskyPosterior", "LowRankVarianceCache", "NystromVariance", "sample_gaussian", "variance_cache"]
