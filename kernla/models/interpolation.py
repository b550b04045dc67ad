"""Kernel interpolation (RBF interpolation, kernel ridge regression) without storing the kernel matrix.

``fit(x, y)`` solves ``(K + alpha·I) c = y`` with ``K_ij = k(x_i, x_j)`` by preconditioned
conjugate gradients (:meth:`kernla.KernelOperator.solve`; all columns of y in one block solve,
one kernel reduction per iteration); ``predict(x_new)`` is one reduction ``Σ_j k(x_new, x_j) c_j``.
There is no polynomial term: with ``alpha = 0`` this is scipy's ``RBFInterpolator`` with
``degree=-1`` (positive definite kernels only), with ``alpha > 0`` its ``smoothing=alpha``.

What is exact and what is iterative: every kernel product is exact (up to floating-point
rounding); the coefficients ``c`` are iterative, to the relative residual ``tol``
(``‖y − (K + αI) c‖ ≤ tol·‖y‖`` per column; default 1e-10 for float64 data, 1e-6 for float32).
Small ``alpha`` makes the system ill-conditioned: CG then needs more iterations (the Nyström
preconditioner helps) and a :class:`~kernla.ConvergenceWarning` says when ``maxiter`` was reached.

>>> import numpy as np
>>> x = np.linspace(0, 1, 50)[:, None]
>>> f = KernelInterpolation(sigma=0.2, alpha=1e-3).fit(x, np.sin(6 * x[:, 0]))
>>> bool(abs(f.predict(np.array([[0.51]]))[0] - np.sin(6 * 0.51)) < 1e-2)
True
"""

from __future__ import annotations

from typing import Any, Optional


from .. import arrays as arr
from ._common import (KernelSpec, as_points, as_targets, check_fitted, check_kernel, make_kernel, positive,
                      same_kind)


class KernelInterpolation:
    """Kernel interpolation / ridge regression: ``f(x) = Σ_j k(x, x_j) c_j`` with ``(K + αI) c = y``.

    Parameters
    ----------
    kernel : ``"gaussian"`` (``"rbf"``), ``"laplacian"``, ``"matern"``, ``"cauchy"``,
        ``"inverse_multiquadric"`` (see :mod:`kernla.kernels`), or a callable
        ``(x, y, sigma=...) -> KernelOperator`` (``y=None`` meaning y = x).
    sigma : length scale of the kernel.
    alpha : ridge term added to the diagonal (scipy's ``smoothing``); 0 interpolates exactly.
    nu : Matérn smoothness (0.5, 1.5 or 2.5) for ``kernel="matern"``.
    precond, rank, tol, maxiter : passed to :meth:`kernla.KernelOperator.solve`
        (``precond="auto"``: Nyström above 300 points, else Jacobi).
    backend : engine of every reduction (``None``: automatic).

    After ``fit``: ``coef_`` (N,) or (N, k), ``solve_info_`` (:class:`kernla.linalg.SolveInfo`).
    Data may be NumPy, torch or CuPy (x and y of one kind); predictions come back in the kind
    of ``x_new``. No gradients flow through a fitted model (use :meth:`KernelOperator.solve`
    with torch tensors for that).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).uniform(size=(200, 2))
    >>> y = np.column_stack([x.sum(1), x[:, 0] * x[:, 1]])
    >>> model = KernelInterpolation(kernel="matern", nu=2.5, sigma=0.5, alpha=1e-6, precond="nystrom").fit(x, y)
    >>> bool(np.abs(model.predict(x) - y).max() < 1e-4), model.predict(x[:3]).shape
    (True, (3, 2))
    """

    def __init__(self, kernel: KernelSpec = "gaussian", sigma: float = 1.0, alpha: float = 1e-6, nu: float = 1.5,
                 precond: Any = "auto", rank: Optional[int] = None, tol: Optional[float] = None,
                 maxiter: Optional[int] = None, backend: Optional[str] = None):
        self.kernel = check_kernel(kernel)
        self.sigma = positive(sigma, "sigma")
        self.alpha = positive(alpha, "alpha", allow_zero=True)
        self.nu = nu
        self.precond = precond
        self.rank = rank
        self.tol = tol
        self.maxiter = maxiter
        self.backend = backend
        self.coef_ = None

    def _kernel(self, x: Any, y: Any = None):
        return make_kernel(self.kernel, x, y, self.sigma, self.nu, self.backend)

    def fit(self, x: Any, y: Any) -> "KernelInterpolation":
        """Solve ``(K + αI) c = y`` for points x (N, D) and values y (N,) or (N, k). Returns self.

        One block conjugate-gradient solve for all columns of y (one reduction per iteration).
        """
        x = as_points(x, "x")
        y = as_targets(y, int(x.shape[0]))
        same_kind(x=x, y=y)
        K = self._kernel(x)
        coef, info = K.solve(y, alpha=self.alpha, precond=self.precond, rank=self.rank, tol=self.tol,
                             maxiter=self.maxiter, return_info=True)
        self.x_ = x
        self.coef_ = coef
        self.solve_info_ = info
        self.n_features_in_ = int(x.shape[1])
        return self

    def predict(self, x_new: Any) -> Any:
        """``f(x_new) = Σ_j k(x_new, x_j) c_j``: (M,) or (M, k), one reduction.

        >>> import numpy as np
        >>> x = np.array([[0.0], [1.0]])
        >>> KernelInterpolation(sigma=1.0, alpha=0.0).fit(x, np.array([1.0, 2.0])).predict(x).round(8)
        array([1., 2.])
        """
        check_fitted(self, "coef_")
        x_new = as_points(x_new, "x_new", dim=self.n_features_in_, dtype=arr.dtype_of(self.x_))
        same_kind(x_new=x_new, x=self.x_)
        return self._kernel(x_new, self.x_) @ self.coef_

    __call__ = predict


__all__ = ["KernelInterpolation"]
