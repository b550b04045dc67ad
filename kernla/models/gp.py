"""Gaussian-process regression with fixed hyperparameters, in memory linear in N.

Model: ``y = f(x) + ε`` with ``f ~ GP(0, a·k(x, x'))`` (``a``: ``amplitude``, k a unit kernel of
length scale ``sigma``) and ``ε ~ N(0, noise)``. With ``A = a·K + noise·I`` on the N training
points, ``k_* = a·k(X, x_*)``:

    mean(x_*) = k_*ᵀ A⁻¹ y              var(x_*) = a·k(x_*, x_*) − k_*ᵀ A⁻¹ k_*   (+ noise)

What is exact and what is iterative:

- every kernel product and the prior variance ``a·k(x_*, x_*)`` are exact (up to rounding);
- ``A⁻¹ y`` (the mean) is **one** preconditioned block conjugate-gradient solve for all columns
  of y, to the relative residual ``tol`` (default 1e-10 in float64, 1e-6 in float32);
- ``A⁻¹ k_*`` (the variance) is solved by the same block CG for the new points in batches of
  columns — the N×b cross-kernel block of a batch is the only dense array, so memory is
  O(N·b); the Nyström preconditioner is built once at ``fit`` and shared by every solve. The
  cost is one N×N reduction with b columns per iteration and batch: standard deviations at many
  points cost far more than means (ask for them on a subset);
- ``log_marginal_likelihood(method="exact")`` builds the dense N×N matrix and factors it
  (Cholesky): exact, for N up to ``max_exact_size`` only; ``method="slq"`` is a **stochastic
  estimate** (Nyström-preconditioned stochastic Lanczos quadrature for log det A, plus the exact
  CG data-fit term), with a standard error.

These are the formulas of scikit-learn's ``GaussianProcessRegressor`` with kernel
``ConstantKernel(a) * RBF(sigma) + WhiteKernel(noise)`` and ``optimizer=None``; its predictive
std includes the white noise (``include_noise=True`` here).

>>> import numpy as np
>>> x = np.linspace(0, 1, 40)[:, None]
>>> gp = GaussianProcessRegressor(sigma=0.2, noise=1e-2).fit(x, np.sin(6 * x[:, 0]))
>>> mean, std = gp.predict(np.array([[0.5], [3.0]]), return_std=True)
>>> bool(abs(mean[0] - np.sin(3.0)) < 0.05), bool(std[0] < 0.1), bool(abs(std[1] - 1.0) < 1e-6)
(True, True, True)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from .. import arrays as arr
from ..errors import InputValueError
from ..linalg import KernelOperator
from ..linalg.precond import make_preconditioner
from ..linalg.slq import slq_logdet
from ._common import KernelSpec, as_points, as_targets, check_kernel, host, kind, make_kernel, positive, same_kind
from ._sklearn import BaseEstimator, RegressorMixin, check_fitted
from .knn_predictors import RegressionScore

#: largest N for which log_marginal_likelihood(method="exact") builds the dense matrix
MAX_EXACT_SIZE = 5000

#: target number of entries of the dense cross-kernel block of one variance batch (N·b)
_BATCH_ENTRIES = 1 << 22


class GaussianProcessRegressor(RegressionScore, RegressorMixin, BaseEstimator):
    """GP regression with fixed hyperparameters (see the module docstring), a scikit-learn regressor.

    Parameters
    ----------
    kernel : ``"gaussian"`` (``"rbf"``), ``"matern"`` (with ``nu``), ``"laplacian"``,
        ``"cauchy"``, ``"inverse_multiquadric"``, or a callable ``(x, y, sigma=...) ->
        KernelOperator`` of a positive definite kernel (``y=None`` meaning y = x).
    sigma : length scale.
    amplitude : signal variance ``a`` (the kernel is ``a·k``).
    noise : noise variance, added to the diagonal of the training covariance (> 0 keeps the
        system well conditioned; 0 is allowed for noise-free interpolation).
    nu : Matérn smoothness, 0.5, 1.5 or 2.5.
    normalize_y : subtract the mean of y and divide by its standard deviation before fitting
        (undone in predictions), as scikit-learn's option of the same name.
    precond, rank : preconditioner of every solve (``"auto"``: Nyström above 300 points, else
        Jacobi; ``rank``: Nyström rank), built once at ``fit``.
    tol, maxiter : conjugate-gradient tolerance and iteration limit of every solve.
    batch_size : most new points per variance solve (fewer when N is large, so that the N×b
        cross-kernel block stays around 4 M entries).
    backend : engine of every reduction (``None``: automatic).

    The parameters are stored as given and checked by ``fit``. After ``fit``: ``X_train_``,
    ``alpha_`` (the coefficients ``A⁻¹ y``), ``solve_info_``, ``n_features_in_``.

    Data may be NumPy, torch or CuPy (X and y of one kind); results come back in the kind of
    ``X_new``. Hyperparameters are not optimised and no gradients flow through the model.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(300, 2))
    >>> y = np.sin(4 * X[:, 0]) * X[:, 1] + 0.05 * rng.normal(size=300)
    >>> gp = GaussianProcessRegressor(kernel="matern", nu=2.5, sigma=0.3, amplitude=0.5, noise=0.05 ** 2)
    >>> mean = gp.fit(X, y).predict(X)
    >>> bool(np.sqrt(np.mean((mean - y) ** 2)) < 0.06)
    True
    """

    def __init__(
        self,
        kernel: KernelSpec = "gaussian",
        sigma: float = 1.0,
        amplitude: float = 1.0,
        noise: float = 1e-2,
        nu: float = 1.5,
        normalize_y: bool = False,
        precond: Any = "auto",
        rank: int | None = None,
        tol: float | None = None,
        maxiter: int | None = None,
        batch_size: int = 256,
        backend: str | None = None,
    ):
        self.kernel = kernel
        self.sigma = sigma
        self.amplitude = amplitude
        self.noise = noise
        self.nu = nu
        self.normalize_y = normalize_y
        self.precond = precond
        self.rank = rank
        self.tol = tol
        self.maxiter = maxiter
        self.batch_size = batch_size
        self.backend = backend

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_precond", None)  # a closure over the operator's namespace: rebuilt when needed
        return state

    def _check_params(self) -> None:
        check_kernel(self.kernel)
        self._sigma = positive(self.sigma, "sigma")
        self._amplitude = positive(self.amplitude, "amplitude")
        self._noise = positive(self.noise, "noise", allow_zero=True)
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise InputValueError(f"batch_size must be a positive integer, got {b!r}")

    # -- the covariance --------------------------------------------------------------------------
    def _kernel(self, x: Any, y: Any = None) -> KernelOperator:
        """``a·k(x, y)`` as an operator (``y=None``: y = x)."""
        K = make_kernel(self.kernel, x, y, self._sigma, self.nu, self.backend)
        return K if self._amplitude == 1.0 else K * self._amplitude

    def _preconditioner(self, K: KernelOperator) -> Any:
        """The preconditioner of ``a·K + noise·I``, built once (at ``fit``, or after unpickling)."""
        if getattr(self, "_precond", None) is None:
            self._precond = make_preconditioner(self.precond, K, self._noise, rank=self.rank)
        return self._precond

    def _solve(self, K: KernelOperator, B: Any, return_info: bool = False):
        return K.solve(
            B,
            alpha=self._noise,
            tol=self.tol,
            maxiter=self.maxiter,
            precond=self._preconditioner(K),
            return_info=return_info,
        )

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> GaussianProcessRegressor:
        """Condition on training points X (N, D) and targets y (N,) or (N, k). Returns self.

        Builds the preconditioner once and solves ``A α = y`` (one block CG for all columns).
        """
        self._check_params()
        X = as_points(X, "X")
        y = as_targets(y, int(X.shape[0]))
        same_kind(X=X, y=y)
        y_host = host(y, np.float64)
        if self.normalize_y:
            mean = y_host.mean(axis=0)
            std = y_host.std(axis=0)
            std = np.where(std > 0, std, 1.0)
        else:
            mean = np.zeros(y_host.shape[1:])
            std = np.ones(y_host.shape[1:])
        self._y_mean, self._y_std = mean, std
        y_norm = (y_host - mean) / std
        K = self._kernel(X)
        self._precond = None
        self._precond = self._preconditioner(K)
        self.X_train_ = X
        self._y_norm = y_norm  # host float64, (N,) or (N, k)
        alpha, info = self._solve(K, arr.wrap(np.ascontiguousarray(y_norm), kind(X)), return_info=True)
        self.alpha_ = alpha
        self.solve_info_ = info
        self.n_features_in_ = int(X.shape[1])
        return self

    # -- prediction --------------------------------------------------------------------------------
    def _new_points(self, X_new: Any) -> Any:
        X_new = as_points(
            X_new, "X_new", dim=self.n_features_in_, dtype=arr.dtype_of(self.X_train_), model=type(self).__name__
        )
        same_kind(X_new=X_new, X_train=self.X_train_)
        return X_new

    def predict(self, X_new: Any, return_std: bool = False, include_noise: bool = False):
        """Posterior mean at X_new (M, D), and with ``return_std=True`` the posterior std.

        The mean is one reduction ``k(X_new, X) α``. The std solves ``A v = k_*`` for every new
        point (batched block CG, see the module docstring) — M columns of work; ``include_noise``
        adds the noise variance (the std of a new noisy observation, as scikit-learn reports
        with a ``WhiteKernel``). Shapes: mean and std (M,) for targets y of shape (N,), (M, k)
        for y of shape (N, k) (the std columns differ only through ``normalize_y``).

        >>> import numpy as np
        >>> gp = GaussianProcessRegressor(noise=0.0).fit(np.zeros((1, 1)), np.array([2.0]))
        >>> gp.predict(np.array([[0.0]]), return_std=True)
        (array([2.]), array([0.]))
        """
        check_fitted(self, "alpha_")
        X_new = self._new_points(X_new)
        Ks = self._kernel(X_new, self.X_train_)
        mean = host(Ks @ self.alpha_, np.float64) * self._y_std + self._y_mean
        dtype = arr.dtype_of(self.X_train_)
        out_kind = kind(X_new)
        mean_out = arr.wrap(np.ascontiguousarray(mean), out_kind, dtype)
        if not return_std:
            return mean_out
        var = self._latent_variance(X_new)
        if include_noise:
            var = var + self._noise
        std = np.sqrt(var)
        std = std * float(self._y_std) if np.ndim(self._y_std) == 0 else std[:, None] * self._y_std
        return mean_out, arr.wrap(np.ascontiguousarray(std), out_kind, dtype)

    def _latent_variance(self, X_new: Any) -> np.ndarray:
        """``a·k(x, x) − k_*ᵀ A⁻¹ k_*`` at each new point (host float64), batched over the points."""
        K = self._kernel(self.X_train_)
        n = K.shape[0]
        m = int(X_new.shape[0])
        b = int(max(1, min(self.batch_size, _BATCH_ENTRIES // n, m)))
        var = np.empty(m)
        for s in range(0, m, b):
            batch = X_new[s : s + b]
            prior = host(self._kernel(batch).diag(), np.float64)
            C = self._kernel(self.X_train_, batch).to_dense()  # N×b, the only dense block
            V = self._solve(K, C)
            var[s : s + b] = prior - (host(C, np.float64) * host(V, np.float64)).sum(axis=0)
        return np.maximum(var, 0.0)  # rounding can go below 0

    # -- evidence ----------------------------------------------------------------------------------
    def log_marginal_likelihood(
        self,
        method: str = "exact",
        max_exact_size: int = MAX_EXACT_SIZE,
        num_probes: int = 32,
        lanczos_steps: int = 40,
        seed: int | None = 0,
        return_error: bool = False,
    ):
        """log p(y | X) of the fitted data (of the normalised targets with ``normalize_y``).

        ``log p = −½ Σ_k y_kᵀ A⁻¹ y_k − (t/2) log det A − (t N / 2) log 2π`` for t output columns.

        - ``method="exact"``: builds the dense N×N matrix and its Cholesky factor — exact, O(N²)
          memory and O(N³) time, refused above ``max_exact_size`` points.
        - ``method="slq"``: an **estimate**. ``log det A`` by stochastic Lanczos quadrature on
          the Nyström-preconditioned matrix (``num_probes`` Rademacher probes, ``lanczos_steps``
          steps, reproducible with ``seed``; log det of the preconditioner exact; see
          :mod:`kernla.linalg.slq`); the data term
          ``yᵀ A⁻¹ y`` from the CG solution of ``fit`` (iterative, to ``tol``). Memory O(N·probes).

        ``return_error=True`` returns ``(value, standard_error)``: the estimate's Monte-Carlo
        standard error for ``"slq"`` (Lanczos truncation error not included), 0.0 for ``"exact"``.

        >>> import numpy as np
        >>> x = np.linspace(0, 1, 30)[:, None]
        >>> gp = GaussianProcessRegressor(sigma=0.3, noise=0.1).fit(x, np.cos(3 * x[:, 0]))
        >>> exact = gp.log_marginal_likelihood()
        >>> est, err = gp.log_marginal_likelihood(method="slq", return_error=True)
        >>> bool(abs(est - exact) < max(5 * err, 1e-6 * abs(exact)))
        True
        """
        check_fitted(self, "alpha_")
        K = self._kernel(self.X_train_)
        n = K.shape[0]
        y = self._y_norm.reshape(n, -1)
        t = y.shape[1]
        if method == "exact":
            if n > max_exact_size:
                raise InputValueError(
                    f"method='exact' builds the dense {n}x{n} matrix and is limited to max_exact_size="
                    f"{max_exact_size} points; pass a larger max_exact_size if you have the memory, or "
                    "method='slq' for a stochastic estimate in linear memory"
                )
            A = host(K.to_dense(force=True), np.float64)
            A[np.diag_indices(n)] += self._noise
            try:
                L = scipy.linalg.cholesky(A, lower=True)
            except np.linalg.LinAlgError:
                raise InputValueError(
                    "the training covariance a·K + noise·I is not positive definite to "
                    "machine precision; increase noise"
                ) from None
            a = scipy.linalg.cho_solve((L, True), y)
            value = (
                -0.5 * float((y * a).sum()) - t * float(np.log(np.diag(L)).sum()) - 0.5 * t * n * math.log(2 * math.pi)
            )
            return (value, 0.0) if return_error else value
        if method != "slq":
            raise InputValueError(f"method must be 'exact' or 'slq', got {method!r}")
        logdet, err = slq_logdet(K, self._noise, self.rank, num_probes, lanczos_steps, seed)
        fit = float((y * host(self.alpha_, np.float64).reshape(n, -1)).sum())
        value = -0.5 * fit - 0.5 * t * logdet - 0.5 * t * n * math.log(2 * math.pi)
        return (value, 0.5 * t * err) if return_error else value


__all__ = ["GaussianProcessRegressor", "MAX_EXACT_SIZE"]
