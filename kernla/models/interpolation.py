"""Kernel (RBF) interpolation with scipy ``RBFInterpolator``'s model, without storing the kernel matrix.

The interpolant is ``f(x) = Σ_j φ(ε |x − x_j|) c_j + Σ_k d_k p_k(x)`` with a polynomial tail
``p_k`` of total degree ≤ ``degree``, and ``[[K + S, P], [Pᵀ, 0]] [c; d] = [y; 0]`` (S: the
smoothing on the diagonal, scalar or one value per point). Kernels, ``epsilon``, ``smoothing``
and ``degree`` (with scipy's default per kernel) are scipy's — see :mod:`kernla.models.rbf` —,
so the predictions are those of ``scipy.interpolate.RBFInterpolator`` (to the solver's
tolerance); vector-valued data ``y`` (N, ...) are solved together. kernla's own kernels
(``laplacian``, ``matern`` with ``nu``) and callables ``(x, y, sigma=...) -> KernelOperator``
(assumed positive definite) work too, without a tail unless ``degree`` asks for one.

The system is solved by projected, preconditioned block CG, one kernel reduction per iteration
(:mod:`kernla.models.saddle`); every product is exact, the coefficients are iterative to the
relative residual ``tol`` (default 1e-10 for float64 data, 1e-6 for float32), and
``solve_info_`` reports the iterations and the residual of the whole system.

>>> import numpy as np
>>> x = np.random.default_rng(0).uniform(size=(100, 2))
>>> f = KernelInterpolation().fit(x, np.sin(3 * x[:, 0]) * x[:, 1])      # thin-plate spline, degree 1
>>> bool(abs(f.predict(np.array([[0.5, 0.5]]))[0] - np.sin(1.5) * 0.5) < 1e-2)
True
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from .. import arrays as arr
from ..errors import InputValueError
from ..linalg.cg import default_tol
from ._client import ClientParameter, check_host_data
from ._common import as_array, as_points, as_targets, cast, host, kind, make_kernel, positive, same_kind
from ._sklearn import BaseEstimator, RegressorMixin, check_fitted
from .knn_predictors import RegressionScore
from .rbf import (
    FORMULAS,
    MIN_DEGREE,
    SCALE_INVARIANT,
    default_degree,
    monomial_powers,
    polynomial_frame,
    polynomial_matrix,
    rbf_operator,
)
from .saddle import solve_saddle

#: kernel names that are other names of scipy's kernels
ALIASES = {"rbf": "gaussian", "cauchy": "inverse_quadratic"}

#: kernla's own kernels (length scale ``sigma``), not in scipy
NATIVE = ("laplacian", "matern")


class KernelInterpolation(ClientParameter, RegressionScore, RegressorMixin, BaseEstimator):
    """RBF interpolation / smoothing with a polynomial tail, a scikit-learn regressor (module docstring).

    Parameters
    ----------
    kernel : one of scipy's ``"thin_plate_spline"`` (default), ``"cubic"``, ``"quintic"``,
        ``"linear"``, ``"multiquadric"``, ``"inverse_multiquadric"``, ``"inverse_quadratic"``
        (alias ``"cauchy"``), ``"gaussian"`` (alias ``"rbf"``); kernla's ``"laplacian"``,
        ``"matern"``; or a callable ``(x, y, sigma=...) -> KernelOperator`` (``y=None``: y = x).
    epsilon : scipy's shape parameter (r = ε·distance); default 1 for the scale-invariant
        kernels, required (or ``sigma``) for the other scipy kernels.
    sigma : a length scale instead of ε, in :mod:`kernla.kernels`' convention (gaussian:
        ε = 1/(√2σ), the others ε = 1/σ); the parameter of ``laplacian``, ``matern`` and
        callables (default 1). Give ``epsilon`` or ``sigma``, not both.
    smoothing : ≥ 0, a number or one value per point (S's diagonal); 0 interpolates.
    degree : degree of the polynomial tail, −1 for none; default scipy's for scipy's kernels
        (1 for thin_plate_spline and cubic, 2 for quintic, 0 otherwise), −1 for kernla's.
    nu : Matérn smoothness (0.5, 1.5 or 2.5) for ``kernel="matern"``.
    precond : ``"auto"`` (overlapping local blocks plus a deflated coarse level on spread
        landmarks, :mod:`kernla.models.schwarz`), ``"nystrom"``, ``"jacobi"``, None, or a
        preconditioner as :meth:`kernla.KernelOperator.solve` takes; ``rank``: Nyström rank.
    tol, maxiter : CG tolerance (relative residual of the projected system) and iteration limit.
    backend : engine of every reduction (``None``: automatic).
    client : a ``dask.distributed.Client``: the system's kernel products run on its workers (the
        points placed once at ``fit``, only vectors move per CG iteration; :mod:`kernla.distributed`),
        and so do predictions (the new points against the training points already placed). The
        preconditioner's small dense blocks are computed here. NumPy data only. Default: this process.

    After ``fit``: ``coef_`` (N, ...) (c), ``poly_coef_`` (m, ...) (d), ``powers_`` (the tail's
    monomial exponents), ``epsilon_`` (ε; 1/σ for kernla's kernels), ``degree_``, ``solve_info_``
    (:class:`~kernla.models.saddle.SaddleSolveInfo`), ``n_features_in_``. Data may be NumPy,
    torch or CuPy (x and y of one kind); predictions come back in the kind of the new points.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).uniform(size=(200, 2))
    >>> y = np.column_stack([x.sum(1), x[:, 0] * x[:, 1]])
    >>> model = KernelInterpolation(kernel="gaussian", epsilon=8.0, smoothing=1e-8).fit(x, y)
    >>> bool(np.abs(model.predict(x) - y).max() < 1e-6), model.predict(x[:3]).shape
    (True, (3, 2))
    """

    def __init__(
        self,
        kernel: Any = "thin_plate_spline",
        epsilon: float | None = None,
        smoothing: Any = 0.0,
        degree: int | None = None,
        sigma: float | None = None,
        nu: float = 1.5,
        precond: Any = "auto",
        rank: int | None = None,
        tol: float | None = None,
        maxiter: int | None = None,
        backend: str | None = None,
        client: Any = None,
    ):
        self.kernel = kernel
        self.epsilon = epsilon
        self.smoothing = smoothing
        self.degree = degree
        self.sigma = sigma
        self.nu = nu
        self.precond = precond
        self.rank = rank
        self.tol = tol
        self.maxiter = maxiter
        self.backend = backend
        self.client = client

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_placed"] = None  # the operator on the cluster: the unpickled copy predicts in its own process
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # -- parameters ------------------------------------------------------------------------------
    def _kernel_name(self) -> str | None:
        """The scipy kernel name (aliases resolved), a native kernla name, or None for a callable."""
        k = self.kernel
        if callable(k) and not isinstance(k, str):
            return None
        if isinstance(k, str):
            k = ALIASES.get(k.lower(), k.lower())
            if k in FORMULAS or k in NATIVE:
                return k
        names = sorted([*FORMULAS, *ALIASES, *NATIVE])
        raise InputValueError(
            f"unknown kernel {self.kernel!r}; choose one of {', '.join(names)} or pass a callable "
            "(x, y, sigma) -> KernelOperator"
        )

    def _shape(self, name: str | None) -> float:
        """ε for scipy's kernels, σ for kernla's and callables."""
        if self.epsilon is not None and self.sigma is not None:
            raise InputValueError("give epsilon (scipy's shape parameter) or sigma (a length scale), not both")
        if name in FORMULAS:
            if self.epsilon is not None:
                return positive(self.epsilon, "epsilon")
            if self.sigma is not None:
                s = positive(self.sigma, "sigma")
                return 1.0 / (math.sqrt(2.0) * s) if name == "gaussian" else 1.0 / s
            if name in SCALE_INVARIANT:
                return 1.0
            raise InputValueError(
                f"epsilon must be specified if the kernel is not one of {', '.join(SCALE_INVARIANT)}"
                f" (got kernel={self.kernel!r}); or give a length scale sigma"
            )
        if self.epsilon is not None:
            return 1.0 / positive(self.epsilon, "epsilon")
        return positive(1.0 if self.sigma is None else self.sigma, "sigma")

    def _degree(self, name: str | None) -> int:
        if self.degree is None:
            return default_degree(name) if name in FORMULAS else -1
        d = self.degree
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < -1:
            raise InputValueError(f"degree must be an integer >= -1, got {d!r}")
        low = MIN_DEGREE.get(name or "", -1)
        if -1 < d < low:  # (as scipy; below the minimum the system is solved by MINRES, -1 included)
            warnings.warn(
                f"degree should not be below {low} except -1 when kernel is {name!r}: the interpolant may "
                "not be uniquely solvable (the system is solved by MINRES)",
                UserWarning,
                stacklevel=3,
            )
        return int(d)

    def _smoothing(self, n: int) -> np.ndarray:
        s = self.smoothing
        if np.ndim(s) == 0:
            return np.full(n, positive(s, "smoothing", allow_zero=True))
        s = host(arr.to_numpy(s, np.dtype(np.float64)) if not isinstance(s, np.ndarray) else s, np.float64)
        if s.shape != (n,):
            raise InputValueError(f"smoothing must be a number or have shape ({n},), got shape {s.shape}")
        if not (np.isfinite(s).all() and (s >= 0).all()):
            raise InputValueError("smoothing must hold finite non-negative values")
        return s

    def _operator(self, x: Any, y: Any):
        name = self._kernel_name()
        if name in FORMULAS:
            return rbf_operator(name, x, y, self._shape_param, self.backend)
        return make_kernel(name or self.kernel, x, y, self._shape_param, self.nu, self.backend)

    def _distributed(self, K: Any, x: Any) -> Any:
        """``K`` with its points placed on the workers of ``self.client``."""
        check_host_data(x)
        from ..distributed import distribute  # optional dependency (dask[distributed]), imported on use

        return distribute(K, self.client)

    # -- fit / predict -----------------------------------------------------------------------------
    def fit(self, x: Any, y: Any) -> KernelInterpolation:
        """Solve the interpolation system for points x (N, D) and values y (N, ...). Returns self."""
        name = self._kernel_name()
        shape = self._shape(name)
        degree = self._degree(name)
        x = as_points(x, "X")
        n, dim = int(x.shape[0]), int(x.shape[1])
        y = as_array(y, "y")
        tail_shape = tuple(y.shape[1:])
        y = as_targets(y.reshape(n, -1) if len(tail_shape) > 1 and y.shape[0] == n else y, n)
        same_kind(x=x, y=y)
        smoothing = self._smoothing(n)
        powers = monomial_powers(dim, degree)
        if powers.shape[0] > n:
            raise InputValueError(
                f"At least {powers.shape[0]} data points are required when degree is {degree} and "
                f"the number of dimensions is {dim} (got {n} sample(s))"
            )
        xh = host(x, np.float64)
        self._shift, self._scale = polynomial_frame(xh)
        P = polynomial_matrix(xh, self._shift, self._scale, powers)
        self._shape_param = shape
        self.epsilon_ = shape if name in FORMULAS else 1.0 / shape
        x64 = x if arr.dtype_of(x) == np.float64 else cast(x, np.float64)  # CG needs float64 products
        K = self._operator(x64, x64)
        if self.client is not None:
            K = self._distributed(K, x)
        Y = host(y, np.float64).reshape(n, -1)

        def submatrix(rows, cols):  # the operator K[rows][:, cols] (None: all), for the preconditioner
            return self._operator(x64 if rows is None else x64[rows], x64 if cols is None else x64[cols])

        tol = default_tol(arr.dtype_of(x)) if self.tol is None else self.tol
        C, D, info = solve_saddle(
            K,
            smoothing,
            P,
            Y,
            tol=tol,
            maxiter=self.maxiter,
            precond=self.precond,
            rank=self.rank,
            conditionally_pd=name in MIN_DEGREE,
            definite=degree >= MIN_DEGREE.get(name or "", -1),
            submatrix=submatrix,
            points=xh,
        )
        self.x_ = x
        self._placed = K if self.client is not None else None
        self.coef_ = arr.wrap(np.ascontiguousarray(C.reshape((n,) + tail_shape)), kind(x), arr.dtype_of(x))
        self.poly_coef_ = D.reshape((powers.shape[0],) + tail_shape)
        self.powers_ = powers
        self.degree_ = degree
        self.solve_info_ = info
        self.n_features_in_ = dim
        return self

    def predict(self, x: Any) -> Any:
        """``f(x)`` at new points (M, D): (M,) or (M, ...) as y, in x's kind; one reduction + the tail.

        >>> import numpy as np
        >>> x = np.array([[0.0], [1.0], [2.0]])
        >>> KernelInterpolation(kernel="gaussian", epsilon=1.0).fit(x, np.array([1.0, 2.0, 0.5])).predict(x).round(8)
        array([1. , 2. , 0.5])
        """
        check_fitted(self, "coef_")
        x = as_points(x, "X", dim=self.n_features_in_, dtype=arr.dtype_of(self.x_), model=type(self).__name__)
        same_kind(x_new=x, x=self.x_)
        m = int(x.shape[0])
        tail = tuple(self.coef_.shape[1:])
        cross = self._operator(x, self.x_) if self._placed is None else self._placed.with_rows(host(x, np.float64))
        out = host(cross @ self.coef_.reshape(self.coef_.shape[0], -1), np.float64)
        if self.powers_.shape[0]:
            P = polynomial_matrix(host(x, np.float64), self._shift, self._scale, self.powers_)
            out = out + P @ self.poly_coef_.reshape(self.powers_.shape[0], -1)
        return arr.wrap(np.ascontiguousarray(out.reshape((m,) + tail)), kind(x), arr.dtype_of(self.x_))

    __call__ = predict


__all__ = ["KernelInterpolation", "ALIASES", "NATIVE"]
