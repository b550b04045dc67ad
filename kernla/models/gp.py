"""Gaussian-process regression that learns its hyper-parameters, in memory linear in N when N is large.

Model: ``y = f(x) + ε``, ``f ~ GP(0, k_θ)``, ``ε ~ N(0, σ²)``; with ``A = K_θ + σ² I`` on the N
training points and ``k_* = k_θ(X, x_*)``:

    mean(x_*) = k_*ᵀ A⁻¹ y              var(x_*) = k_θ(x_*, x_*) − k_*ᵀ A⁻¹ k_*   (+ σ²)

The kernel is a :mod:`kernla.models.gp_kernels` kernel (RBF, Matérn, rational quadratic,
periodic, linear, constant, white noise; ARD length scales; sums and products; bounds and
priors), a scikit-learn kernel object (translated), or — the fixed-hyper-parameter interface of
earlier versions — a kernel name with ``sigma``, ``amplitude`` and ``noise``. Training maximises
the log marginal likelihood over the logs of the free hyper-parameters (plus their log priors).

What is exact and what is estimated:

- ``method="exact"`` (default up to ``max_exact_size`` points): the dense N×N matrix and its
  Cholesky factor. The marginal likelihood, its gradient (each ``∂K/∂log θ`` a kernla formula,
  summed against ``αα ᵀ − A⁻¹`` by NumPy), the mean, variances, covariances and samples are
  exact up to rounding. L-BFGS-B (scipy), with ``n_restarts_optimizer`` as scikit-learn.
- ``method="iterative"`` (above ``max_exact_size``): BBMM — one pivoted-Cholesky-preconditioned
  block CG on ``[y, z₁…z_t]`` per step gives ``A⁻¹ y``, a stochastic-Lanczos-quadrature
  **estimate** of ``log det A`` and Hutchinson **estimates** of the gradient's traces, every
  product a kernla reduction, memory O(N·(probes + rank)) (:mod:`kernla.models.gp_evidence`);
  Adam on these estimates (a fresh probe seed per step, reproducible from ``random_state``).
  The final ``A⁻¹ y`` is solved to ``tol``; ``log_marginal_likelihood_value_`` is an estimate
  whose standard error is ``log_marginal_likelihood_stderr_``. The predictive variances come
  from a cache built once (:func:`~kernla.models.gp_predict.variance_cache`: pivoted-Cholesky
  Nyström variances, too small by at most a bounded relative error, or a projection cache, too
  large; an approximation) or, with ``fast_variance=False``, from block-CG solves (exact to
  ``tol``; one solve per batch).

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

from .. import arrays as arr
from ..errors import InputValueError
from ..linalg import KernelOperator
from ..linalg._compute import blas_single_thread
from ..linalg.precond import default_rank, make_preconditioner
from . import gp_kernels as gk
from ._client import ClientParameter
from ._common import as_points, as_targets, check_kernel, host, kind, make_kernel, positive, same_kind
from ._sklearn import BaseEstimator, RegressorMixin, check_fitted
from .gp_evidence import Evidence, LocalProducts, exact_evidence, iterative_evidence
from .gp_optimize import optimize
from .gp_predict import CholeskyPosterior, LowRankVarianceCache, NystromVariance, sample_gaussian, variance_cache
from .knn_predictors import RegressionScore

#: largest N for which the exact (dense Cholesky) method is used by default
MAX_EXACT_SIZE = 5000

#: target number of entries of the dense cross-kernel block of one CG variance batch (N·b)
_BATCH_ENTRIES = 1 << 22

#: from this N on the exact method's training runs BLAS on all its threads (large factorisations, no
#: kernla products to compete with); below, on one (small LAPACK calls spin more than they gain)
_THREADED_EXACT_SIZE = 2000

#: the jitter added to the diagonal with a kernel object when ``alpha`` is None (scikit-learn's default)
_DEFAULT_ALPHA = 1e-10


class _CallableKernel(gk.GPKernel):
    """A user callable ``(x, y, sigma=...) -> KernelOperator``: fixed, no hyper-parameters to learn."""

    def __init__(self, fn: Any, sigma: float, nu: float):
        self.fn, self.sigma, self.nu = fn, sigma, nu

    @property
    def hyperparameters(self) -> list[gk.Hyperparameter]:
        return []

    def _values(self) -> list[np.ndarray]:
        return []

    def _with_values(self, values: list[np.ndarray]) -> gk.GPKernel:
        return self

    def operator(
        self, x: Any, y: Any = None, backend: str | None = None, power: int = 1, placed: bool = False
    ) -> KernelOperator:
        if power != 1:
            raise InputValueError("a callable kernel has no formula to square: use fast_variance=False")
        return make_kernel(self.fn, x, y, self.sigma, self.nu, backend)

    def diag(self, x: Any) -> np.ndarray:
        return host(self.operator(x).diag(), np.float64)

    def dense(self, x: Any, y: Any = None) -> np.ndarray:
        return host(self.operator(x, y).to_dense(force=True), np.float64)

    def dense_upper(self, x: Any) -> np.ndarray:
        return np.triu(self.dense(x))

    def __repr__(self) -> str:
        return f"callable kernel {getattr(self.fn, '__name__', self.fn)!r}(sigma={self.sigma!r})"


class GaussianProcessRegressor(ClientParameter, RegressionScore, RegressorMixin, BaseEstimator):
    """GP regression with learned hyper-parameters (module docstring), a scikit-learn regressor.

    Parameters
    ----------
    kernel : a :mod:`kernla.models.gp_kernels` kernel or a scikit-learn kernel object (learned by
        default), or a name — ``"gaussian"`` (``"rbf"``), ``"matern"`` (with ``nu``),
        ``"laplacian"``, ``"cauchy"``, ``"inverse_multiquadric"`` — or a callable ``(x, y,
        sigma=...) -> KernelOperator``, for the kernel ``amplitude · k(σ)`` with noise variance
        ``noise``: fixed unless an ``optimizer`` is named, then these are the starting values
        (and the noise a learned white-noise level).
    sigma, amplitude, noise, nu : the named kernel's length scale (a number, or one per input
        dimension: ARD), signal variance, noise variance and Matérn smoothness (0.5, 1.5, 2.5).
    alpha : added to the training covariance's diagonal (not learned); None: 1e-10 with a kernel
        object (scikit-learn's default), 0 with a named kernel (whose ``noise`` is there).
    optimizer : ``"auto"`` (L-BFGS-B for the exact method, Adam for the iterative one, for kernel
        objects; none for named kernels), ``"fmin_l_bfgs_b"``, ``"adam"``, None (keep the
        kernel's values), or a callable ``(obj_func, initial_theta, bounds) -> (theta, value)``
        as scikit-learn's.
    n_restarts_optimizer : extra runs from log-uniform draws inside the bounds; the best is kept.
    optimizer_maxiter, learning_rate : iteration limit of the optimiser (default 200 for
        L-BFGS-B, 100 for Adam; 0: no training on all N points, only the ``start_subset``
        stage) and Adam's step size.
    optimizer_tol : L-BFGS-B stops when an iteration improves the log marginal likelihood by less
        than ``optimizer_tol · max(|value|, 1)`` (scipy's ``ftol``); None: 1e-6
        (:data:`~kernla.models.gp_optimize.LBFGS_TOL`, chosen to stop well within 1e-3·|value| of
        the optimum); scipy's and scikit-learn's own value is 2.2e-9
        (:data:`~kernla.models.gp_optimize.SCIPY_LBFGS_TOL`), for their longer runs.
    start_subset : None, or learn the hyper-parameters first on a random subset of this many
        points (exact evidence, L-BFGS-B, the restarts there; from ``random_state``) and start
        the training on all N points from them: few evaluations at full N then reach the
        optimum (``subset_result_``: that stage's :class:`~kernla.models.gp_optimize.OptimizeResult`).
    method : ``"auto"`` (exact up to ``max_exact_size`` points), ``"exact"`` or ``"iterative"``.
    num_probes, rank : probes of the stochastic estimates and rank of the pivoted-Cholesky
        preconditioner (default about 3.5·√N between 100 and 500).
    train_tol : CG tolerance during iterative training (the final solve uses ``tol``).
    normalize_y : standardise y before fitting (undone in predictions), as scikit-learn.
    random_state : seed of the restarts, of the probes and of ``sample_y``'s default.
    fast_variance, variance_rank : the iterative method's variance cache
        (:func:`~kernla.models.gp_predict.variance_cache`) and its largest pivoted-Cholesky rank
        (default: up to 1000 for the Nyström variances, ``rank`` for the projection cache).
    precond, tol, maxiter, batch_size : preconditioner, tolerance and iteration limit of the CG
        solves of the iterative method, most new points per CG variance batch.
    verbose : 1: a progress bar of the optimiser; 2: one line per iteration.
    backend : engine of every reduction (``None``: automatic).
    client : a ``dask.distributed.Client``: the iterative method's kernel products — training's block
        CG, pivoted Cholesky, stochastic Lanczos quadrature and gradient sums, and the predictions'
        means, variance cache and solves — run on its workers, the training points placed there once
        (:mod:`kernla.models.gp_cluster`; NumPy data, a formula kernel). The exact method (dense
        Cholesky, N ≤ ``max_exact_size``) stays in this process. Clones share the client; a
        pickled model has ``client=None``.

    After ``fit``: ``kernel_`` (the learned kernel), ``X_train_``, ``alpha_`` (``A⁻¹ y``),
    ``log_marginal_likelihood_value_`` (and ``_stderr_``: 0 when exact), ``noise_`` (the
    diagonal σ²), ``method_``, ``optimizer_result_`` and ``subset_result_`` (or None), ``n_features_in_``,
    ``solve_info_`` (the iterative method's CG figures, None when exact).

    Data may be NumPy, torch or CuPy (X and y of one kind); results come back in the kind of
    ``X_new``.

    >>> import numpy as np
    >>> from kernla.models.gp_kernels import ConstantKernel, Matern, WhiteKernel
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(300, 2))
    >>> y = np.sin(4 * X[:, 0]) * X[:, 1] + 0.05 * rng.normal(size=300)
    >>> kernel = ConstantKernel(1.0) * Matern(length_scale=[1.0, 1.0], nu=2.5) + WhiteKernel(0.1)
    >>> gp = GaussianProcessRegressor(kernel).fit(X, y)
    >>> bool(gp.kernel_.k2.noise_level < 0.01), bool(np.sqrt(np.mean((gp.predict(X) - y) ** 2)) < 0.06)
    (True, True)
    """

    def __init__(
        self,
        kernel: Any = "gaussian",
        sigma: Any = 1.0,
        amplitude: float = 1.0,
        noise: float = 1e-2,
        nu: float = 1.5,
        alpha: float | None = None,
        optimizer: Any = "auto",
        n_restarts_optimizer: int = 0,
        optimizer_maxiter: int | None = None,
        optimizer_tol: float | None = None,
        learning_rate: float = 0.1,
        method: str = "auto",
        max_exact_size: int = MAX_EXACT_SIZE,
        num_probes: int = 16,
        rank: int | None = None,
        train_tol: float = 1e-3,
        normalize_y: bool = False,
        random_state: Any = None,
        fast_variance: bool = True,
        variance_rank: int | None = None,
        precond: Any = "auto",
        tol: float | None = None,
        maxiter: int | None = None,
        batch_size: int = 256,
        start_subset: int | None = None,
        verbose: int = 0,
        backend: str | None = None,
        client: Any = None,
    ):
        self.kernel = kernel
        self.sigma = sigma
        self.amplitude = amplitude
        self.noise = noise
        self.nu = nu
        self.alpha = alpha
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.optimizer_maxiter = optimizer_maxiter
        self.optimizer_tol = optimizer_tol
        self.learning_rate = learning_rate
        self.method = method
        self.max_exact_size = max_exact_size
        self.num_probes = num_probes
        self.rank = rank
        self.train_tol = train_tol
        self.normalize_y = normalize_y
        self.random_state = random_state
        self.fast_variance = fast_variance
        self.variance_rank = variance_rank
        self.precond = precond
        self.tol = tol
        self.maxiter = maxiter
        self.batch_size = batch_size
        self.start_subset = start_subset
        self.verbose = verbose
        self.backend = backend
        self.client = client

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for cache in ("_precond", "_variance_cache", "_products"):  # closures over the operator: rebuilt when needed
            state.pop(cache, None)
        return state

    # -- the kernel ------------------------------------------------------------------------------
    def _named(self) -> bool:
        return isinstance(self.kernel, str) or (
            callable(self.kernel) and not isinstance(self.kernel, gk.GPKernel) and not hasattr(self.kernel, "theta")
        )

    def _resolve(self) -> tuple[gk.GPKernel, float, Any]:
        """``(kernel, jitter, optimizer)``: the starting kernel, the fixed diagonal and the optimiser name."""
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise InputValueError(f"batch_size must be a positive integer, got {b!r}")
        if self.method not in ("auto", "exact", "iterative"):
            raise InputValueError(f"method must be 'auto', 'exact' or 'iterative', got {self.method!r}")
        alpha = None if self.alpha is None else positive(self.alpha, "alpha", allow_zero=True)
        if not self._named():
            kernel = gk.as_gp_kernel(self.kernel)
            return kernel, _DEFAULT_ALPHA if alpha is None else alpha, self.optimizer
        check_kernel(self.kernel)
        amplitude = positive(self.amplitude, "amplitude")
        noise = positive(self.noise, "noise", allow_zero=True)
        sigma = np.asarray(self.sigma, dtype=np.float64) if not isinstance(self.sigma, str) else None
        if sigma is None or sigma.ndim > 1 or sigma.size == 0 or not np.all(np.isfinite(sigma) & (sigma > 0)):
            raise InputValueError(f"sigma must be a positive number or a list of them (ARD), got {self.sigma!r}")
        if not isinstance(self.kernel, str):
            return _CallableKernel(self.kernel, positive(self.sigma, "sigma"), self.nu), noise + (alpha or 0.0), None
        learn = self.optimizer not in (None, "auto")
        kernel = gk.legacy_kernel(self.kernel, self.sigma, amplitude, self.nu, learnable=learn)
        if learn and noise > 0:
            return kernel + gk.WhiteKernel(noise), alpha or 0.0, self.optimizer
        return kernel, noise + (alpha or 0.0), self.optimizer if learn else None

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> GaussianProcessRegressor:
        """Learn the hyper-parameters (unless fixed) and condition on X (N, D), y (N,) or (N, k).

        Returns self. The exact method keeps its last Cholesky factor (no second factorisation)
        and, from N = 2000 on, lets BLAS use all its threads. Otherwise host BLAS runs on one
        thread when the products use the compiled CPU engine
        (:func:`kernla.linalg._compute.blas_single_thread`: the two thread pools would otherwise
        spin against each other; measured 0.03 s against up to 1.1 s for a 500×500 Cholesky
        factor on the shared 2-core box).
        """
        X = as_points(X, "X")
        exact = self.method == "exact" or (self.method == "auto" and int(X.shape[0]) <= self.max_exact_size)
        if exact and int(X.shape[0]) >= _THREADED_EXACT_SIZE:  # dense LAPACK only: BLAS keeps its threads
            return self._fit(X, y, exact)
        with blas_single_thread(self.backend, kind(X).on_gpu):
            return self._fit(X, y, exact)

    def _fit(self, X: Any, y: Any, exact: bool) -> GaussianProcessRegressor:
        kernel, jitter, optimizer = self._resolve()
        y = as_targets(y, int(X.shape[0]))
        same_kind(X=X, y=y)
        n = int(X.shape[0])
        y_host = host(y, np.float64)
        if self.normalize_y:
            mean, std = y_host.mean(axis=0), y_host.std(axis=0)
            std = np.where(std > 0, std, 1.0)
        else:
            mean, std = np.zeros(y_host.shape[1:]), np.ones(y_host.shape[1:])
        self._y_mean, self._y_std = mean, std
        Y = ((y_host - mean) / std).reshape(n, -1)
        self.method_ = "exact" if exact else "iterative"
        self._products = self._make_products(X, exact)
        self._rank = default_rank(n) if self.rank is None else int(self.rank)
        self.optimizer_result_ = self.subset_result_ = None
        self._last_cholesky: tuple[np.ndarray, np.ndarray] | None = None
        if optimizer == "auto":
            optimizer = "fmin_l_bfgs_b" if exact else "adam"
        maxiter = self.optimizer_maxiter
        if maxiter is None:
            maxiter = 200 if optimizer != "adam" else 100
        restarts = self.n_restarts_optimizer
        sub = self._start_subset(n)
        if optimizer is not None and kernel.n_dims and sub is not None:
            rows = np.random.default_rng(self._seed()).choice(n, sub, replace=False)
            self.subset_result_ = self._learn(kernel, X[rows], Y[rows], jitter, "fmin_l_bfgs_b", 200, restarts, True)
            kernel, restarts = kernel.clone_with_theta(self.subset_result_.theta), 0
            self._last_cholesky = None
        if optimizer is not None and kernel.n_dims and maxiter:
            res = self._learn(kernel, X, Y, jitter, optimizer, maxiter, restarts, exact)
            kernel = kernel.clone_with_theta(res.theta)
            self.optimizer_result_ = res
        self.kernel_ = kernel
        self._jitter = jitter
        self.noise_ = kernel.white_noise() + jitter
        self.X_train_ = X
        self._Y = Y
        self._precond: Any = None
        self._variance_cache: NystromVariance | LowRankVarianceCache | None = None
        self._chol: CholeskyPosterior | None = None
        if exact:
            last = self._last_cholesky
            reuse = last[1] if last is not None and np.array_equal(last[0], kernel.theta) else None
            self._chol = CholeskyPosterior(kernel, X, self.noise_, self.backend, L=reuse)
            alpha = self._chol.solve(Y)
            L = self._chol.L
            t = Y.shape[1]
            self.log_marginal_likelihood_value_ = (
                -0.5 * float((Y * alpha).sum())
                - t * float(np.log(np.diag(L)).sum())
                - 0.5 * t * n * math.log(2 * math.pi)
            )
            self.log_marginal_likelihood_stderr_ = 0.0
            self.solve_info_ = None
        else:
            ev = self._evidence(kernel, X, Y, jitter, 0, self._tol(), eval_gradient=False)
            alpha = ev.info.pop("alpha")
            self.log_marginal_likelihood_value_, self.log_marginal_likelihood_stderr_ = ev.value, ev.stderr
            self.solve_info_ = ev.info
        self._last_cholesky = None
        self.alpha_ = arr.wrap(np.ascontiguousarray(alpha.reshape(y_host.shape)), kind(X), arr.dtype_of(X))
        self._alpha_host = alpha
        self.n_features_in_ = int(X.shape[1])
        return self

    def _seed(self) -> int:
        return int(self.random_state) if isinstance(self.random_state, (int, np.integer)) else 0

    def _start_subset(self, n: int) -> int | None:
        """The size of the random subset the hyper-parameters are first learned on, or None."""
        s = self.start_subset
        if s is None:
            return None
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 2:
            raise InputValueError(f"start_subset must be None or an integer >= 2, got {s!r}")
        return int(s) if s < n else None

    def _learn(
        self,
        kernel: gk.GPKernel,
        X: Any,
        Y: np.ndarray,
        jitter: float,
        optimizer: Any,
        maxiter: int,
        restarts: int,
        exact: bool,
    ) -> Any:
        """Maximise the evidence of (X, Y) over the kernel's log hyper-parameters from its values;
        the exact objective keeps the last Cholesky factor (``_last_cholesky``), for ``fit`` to reuse."""
        seed = self._seed()

        def objective(theta: np.ndarray, step: int) -> Evidence:
            k = kernel.clone_with_theta(theta)
            if exact:
                ev = exact_evidence(k, X, Y, jitter, True, self.backend)
                factor = ev.info.pop("cholesky", None)
                self._last_cholesky = None if factor is None else (np.array(theta, dtype=np.float64), factor)
            else:
                ev = self._evidence(k, X, Y, jitter, seed + step, self.train_tol)
            lp, lg = k.log_prior(theta)
            return Evidence(ev.value + lp, ev.gradient + lg, ev.stderr, ev.info)

        return optimize(
            objective,
            kernel.theta,
            kernel.bounds,
            optimizer,
            restarts,
            self.random_state,
            maxiter,
            self.learning_rate,
            self.verbose,
            self.optimizer_tol,
        )

    def _make_products(self, X: Any, exact: bool) -> Any:
        """Where the kernel products run: on the cluster (``client``, iterative method), else here."""
        if self.client is None or exact:
            return LocalProducts(X, self.backend)
        from .gp_cluster import ClusterProducts  # optional dependency (dask[distributed]), imported on use

        return ClusterProducts(self.client, X, self.backend)

    def _products_now(self) -> Any:
        """The fitted model's products (local after unpickling: the client is not pickled)."""
        if getattr(self, "_products", None) is None:
            self._products = LocalProducts(self.X_train_, self.backend)
        return self._products

    def _tol(self) -> float:
        return (
            float(self.tol) if self.tol is not None else (1e-6 if arr.dtype_of(self.X_train_) == np.float32 else 1e-10)
        )

    def _evidence(
        self, kernel: gk.GPKernel, X: Any, Y: np.ndarray, jitter: float, seed: int, tol: float, eval_gradient=True
    ) -> Evidence:
        if self.method_ == "exact":
            return exact_evidence(kernel, X, Y, jitter, eval_gradient, self.backend)
        return iterative_evidence(
            kernel,
            X,
            Y,
            jitter,
            num_probes=self.num_probes,
            rank=self._rank,
            seed=seed,
            tol=tol,
            probe_tol=max(tol, self.train_tol),
            maxiter=self.maxiter or 1000,
            eval_gradient=eval_gradient,
            backend=self.backend,
            products=self._products,
        )

    # -- prediction --------------------------------------------------------------------------------
    def _new_points(self, X_new: Any) -> Any:
        X_new = as_points(
            X_new, "X_new", dim=self.n_features_in_, dtype=arr.dtype_of(self.X_train_), model=type(self).__name__
        )
        same_kind(X_new=X_new, X_train=self.X_train_)
        return X_new

    def _out(self, a: np.ndarray, like: Any) -> Any:
        return arr.wrap(np.ascontiguousarray(a), kind(like), arr.dtype_of(self.X_train_))

    def _scale(self, a: np.ndarray, power: int) -> np.ndarray:
        """Undo normalize_y on a per-point array (M,) → (M,) or (M, k), or on a covariance (M, M)."""
        s = np.asarray(self._y_std) ** power
        return a * float(s) if s.ndim == 0 else a[..., None] * s

    def predict(
        self,
        X_new: Any,
        return_std: bool = False,
        return_cov: bool = False,
        include_noise: bool = False,
    ):
        """Posterior mean at X_new (M, D); with ``return_std`` the std, with ``return_cov`` the
        covariance (M, M) (a dense M×M matrix: for a moderate number of points).

        The mean is one reduction ``k(X_new, X) α``. Standard deviations: exact (Cholesky) for the
        exact method; the low-rank cache (or CG solves, ``fast_variance=False``) for the
        iterative one. ``include_noise`` adds the noise variance (the std of a new noisy
        observation, as scikit-learn reports with a ``WhiteKernel``). Shapes: mean and std (M,)
        for y of shape (N,), (M, k) for (N, k); cov (M, M) or (M, M, k).

        >>> import numpy as np
        >>> gp = GaussianProcessRegressor(noise=0.0).fit(np.zeros((1, 1)), np.array([2.0]))
        >>> gp.predict(np.array([[0.0]]), return_std=True)
        (array([2.]), array([0.]))
        """
        check_fitted(self, "alpha_")
        if return_std and return_cov:
            raise InputValueError("at most one of return_std and return_cov can be requested")
        X_new = self._new_points(X_new)
        with blas_single_thread(self.backend, kind(X_new).on_gpu):
            return self._predict(X_new, return_std, return_cov, include_noise)

    def _predict(self, X_new: Any, return_std: bool, return_cov: bool, include_noise: bool):
        Ks = self._products_now().cross(self.kernel_, X_new)
        mean_n = host(Ks @ self.alpha_, np.float64)
        mean_out = self._out(mean_n * self._y_std + self._y_mean, X_new)
        noise = self.noise_ - self._jitter if not self._named() else self.noise_
        if return_cov:
            cov = self._latent_covariance(X_new)
            if include_noise:
                cov[np.diag_indices_from(cov)] += noise
            return mean_out, self._out(self._scale(cov, 2), X_new)
        if not return_std:
            return mean_out
        var = self._latent_variance(X_new) + (noise if include_noise else 0.0)
        return mean_out, self._out(self._scale(np.sqrt(var), 1), X_new)

    def _latent_variance(self, X_new: Any) -> np.ndarray:
        if self._chol is not None:
            return self._chol.variance(X_new)
        if self.fast_variance and not isinstance(self.kernel_, _CallableKernel):
            cache = getattr(self, "_variance_cache", None)
            if cache is None:
                rank = None if self.variance_rank is None else int(self.variance_rank)
                cache = self._variance_cache = variance_cache(
                    self.kernel_, self.X_train_, self.noise_, rank, self._rank, self.backend, self._products_now()
                )
            return cache.variance(X_new)
        n, m = int(self.X_train_.shape[0]), int(X_new.shape[0])
        b = int(max(1, min(self.batch_size, _BATCH_ENTRIES // n, m)))
        var = np.empty(m)
        for s in range(0, m, b):
            batch = X_new[s : s + b]
            C = self.kernel_.operator(self.X_train_, batch, backend=self.backend).to_dense()  # N×b
            V = self._solve(C)
            var[s : s + b] = self.kernel_.diag(batch) - (host(C, np.float64) * host(V, np.float64)).sum(axis=0)
        return np.maximum(var, 0.0)  # rounding can go below 0

    def _latent_covariance(self, X_new: Any) -> np.ndarray:
        if self._chol is not None:
            return self._chol.covariance(X_new)
        C = self.kernel_.operator(self.X_train_, X_new, backend=self.backend).to_dense(force=True)
        V = self._solve(C)
        prior = host(self.kernel_.operator(X_new, backend=self.backend).to_dense(force=True), np.float64)
        return prior - host(C, np.float64).T @ host(V, np.float64)

    def _solve(self, B: Any) -> Any:
        """``A⁻¹ B`` by preconditioned block CG (iterative method)."""
        K = self._products_now().operator(self.kernel_)
        if getattr(self, "_precond", None) is None:
            self._precond = make_preconditioner(self.precond, K, self.noise_, rank=self.rank)
        return K.solve(B, alpha=self.noise_, tol=self._tol(), maxiter=self.maxiter, precond=self._precond)

    def sample_y(self, X_new: Any, n_samples: int = 1, random_state: Any = 0):
        """Draws of the latent function at X_new (M, D) from the posterior: shape (M, n_samples), or
        (M, k, n_samples) for k targets (scikit-learn's ``sample_y``). From the dense posterior
        covariance (its symmetric square root): for a moderate number of points."""
        check_fitted(self, "alpha_")
        X_new = self._new_points(X_new)
        mean = host(self.predict(X_new), np.float64)
        cov = self._latent_covariance(X_new)
        unit = sample_gaussian(np.zeros(cov.shape[0]), cov, n_samples, random_state)  # (M, n_samples)
        if mean.ndim == 1:
            out = mean[:, None] + unit * float(np.asarray(self._y_std))
        else:
            out = mean[:, :, None] + unit[:, None, :] * np.asarray(self._y_std)[None, :, None]
        return self._out(out, X_new)

    # -- evidence ----------------------------------------------------------------------------------
    def log_marginal_likelihood(
        self,
        theta: Any = None,
        eval_gradient: bool = False,
        clone_kernel: bool = True,
        *,
        method: str = "exact",
        max_exact_size: int = MAX_EXACT_SIZE,
        num_probes: int = 32,
        lanczos_steps: int = 1000,
        seed: int | None = 0,
        return_error: bool = False,
    ):
        """log p(y | X, θ) of the fitted data (normalised targets with ``normalize_y``), at the
        fitted hyper-parameters or at ``theta`` (logs of the free ones, scikit-learn's order).

        ``log p = −½ Σ_k y_kᵀ A⁻¹ y_k − (t/2) log det A − (t N / 2) log 2π`` for t output columns.

        - ``method="exact"``: dense Cholesky — exact, O(N²) memory, refused above
          ``max_exact_size`` points.
        - ``method="slq"``: the BBMM **estimate** (:mod:`kernla.models.gp_evidence`):
          ``num_probes`` probes, at most ``lanczos_steps`` CG/Lanczos steps, reproducible with
          ``seed``; memory O(N·(probes + rank)).

        Returns the value; ``(value, gradient)`` with ``eval_gradient``; with ``return_error`` the
        standard error last (the Monte-Carlo error of the estimate, 0.0 when exact).

        >>> import numpy as np
        >>> x = np.linspace(0, 1, 30)[:, None]
        >>> gp = GaussianProcessRegressor(sigma=0.3, noise=0.1).fit(x, np.cos(3 * x[:, 0]))
        >>> exact = gp.log_marginal_likelihood()
        >>> est, err = gp.log_marginal_likelihood(method="slq", return_error=True)
        >>> bool(abs(est - exact) < max(5 * err, 1e-6 * abs(exact)))
        True
        """
        check_fitted(self, "alpha_")
        kernel = self.kernel_ if theta is None else self.kernel_.clone_with_theta(np.asarray(theta, dtype=np.float64))
        n = int(self.X_train_.shape[0])
        if method == "exact":
            if n > max_exact_size:
                raise InputValueError(
                    f"method='exact' builds the dense {n}x{n} matrix and is limited to max_exact_size="
                    f"{max_exact_size} points; pass a larger max_exact_size if you have the memory, or "
                    "method='slq' for a stochastic estimate in linear memory"
                )
            ev = exact_evidence(kernel, self.X_train_, self._Y, self._jitter, eval_gradient, self.backend)
            if not np.isfinite(ev.value):
                raise InputValueError(
                    "the training covariance K + noise·I is not positive definite to machine precision; increase noise"
                )
        elif method == "slq":
            ev = iterative_evidence(
                kernel,
                self.X_train_,
                self._Y,
                self._jitter,
                num_probes=num_probes,
                rank=self._rank,
                seed=seed,
                tol=1e-8,
                maxiter=lanczos_steps,
                eval_gradient=eval_gradient,
                backend=self.backend,
                products=self._products_now(),
            )
        else:
            raise InputValueError(f"method must be 'exact' or 'slq', got {method!r}")
        out: tuple = (ev.value, ev.gradient) if eval_gradient else (ev.value,)
        out = out + (ev.stderr,) if return_error else out
        return out if len(out) > 1 else out[0]


__all__ = ["GaussianProcessRegressor", "MAX_EXACT_SIZE"]
