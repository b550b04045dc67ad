"""Posterior variances, covariances and samples of a fitted Gaussian process.

``var(x_*) = k(x_*, x_*) − k_*ᵀ A⁻¹ k_*`` with ``A = K + σ² I``, ``k_* = k(X, x_*)``.

- :class:`CholeskyPosterior` (the exact path, N ≤ ``max_exact_size``): the Cholesky factor of A
  is kept from ``fit``; variances and covariances are triangular solves of the dense N×b
  cross-kernel blocks — exact.
- :class:`LowRankVarianceCache` (the iterative path): a subspace S of the training space — the
  pivoted-Cholesky factor L of K (rank r) and one block-Krylov step, ``S = orth([L, K L])`` —
  and the projection ``A⁻¹ ≈ S (Sᵀ A S)⁻¹ Sᵀ = G Gᵀ``, built once (one kernel product with 2r
  columns). The variance at M new points then costs **one** kernel reduction over the M×N pairs,
  ``K(X_new, X) @ G``, instead of one block solve per batch of points (the LOVE idea of Pleiss
  et al., 2018, with a block-Krylov instead of a Lanczos cache). It is an approximation, exact
  for the part of ``k_*`` inside S; the projection is ⪯ A⁻¹, so its error is one-sided: the
  variances come out too large, never too small (conservative), and the tests measure it.

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

from typing import Any

import numpy as np
import scipy.linalg

from .. import arrays as arr
from ..errors import InputValueError
from ..linalg import _compute as compute
from ..linalg.precond import pivoted_cholesky
from .gp_evidence import LocalProducts
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


class LowRankVarianceCache:
    """The projection cache of fast predictive variances (module docstring): built once (one
    kernel product with 2·rank columns), then one reduction per call."""

    def __init__(
        self, kernel: GPKernel, X: Any, noise: float, rank: int = 100, backend: str | None = None, products: Any = None
    ):
        n = int(X.shape[0])
        # products: where the kernel products run (gp_evidence.LocalProducts, or gp_cluster.ClusterProducts)
        self.on = LocalProducts(X, backend) if products is None else products
        op = self.on.operator(kernel)
        L, _ = pivoted_cholesky(op, min(int(rank), n))

        def apply_k(R: np.ndarray) -> np.ndarray:
            return _host(compute.to_host(op.product(compute.to_compute(np.ascontiguousarray(R), op.on_gpu, op.dtype))))

        KL = apply_k(L)
        Q, sv, _ = scipy.linalg.svd(np.hstack([L, KL]), full_matrices=False)
        S = Q[:, sv > 1e-10 * sv[0]] if sv.size else Q
        KS = apply_k(S)
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


__all__ = ["CholeskyPosterior", "LowRankVarianceCache", "sample_gaussian"]
