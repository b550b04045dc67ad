"""Models built on kernel reductions and kernel linear algebra, as scikit-learn estimators.

- :class:`NearestNeighbors`, :class:`KNeighborsClassifier`, :class:`KNeighborsRegressor`:
  exact nearest neighbours (``argKmin`` reductions) for several metrics or a custom formula;
- :class:`KernelInterpolation`: scipy's ``RBFInterpolator`` model (kernels, ``epsilon``,
  ``smoothing``, polynomial tail) solved iteratively, plus kernla's own kernels;
- :class:`GaussianProcessRegressor`: GP regression with fixed hyperparameters — posterior mean
  and standard deviation by preconditioned block CG, log marginal likelihood exact (dense
  Cholesky, small N) or estimated (stochastic Lanczos quadrature).

Every model is a scikit-learn estimator (``get_params``, ``set_params``, ``clone``, pipelines,
grid search, pickling); scikit-learn must be installed to construct one. Data may be NumPy,
torch or CuPy: the heavy reductions run where the data lives, results come back in the
caller's kind, and no N×N matrix is built (except ``log_marginal_likelihood(method="exact")``,
which says so).

>>> import numpy as np
>>> from kernla.models import KNeighborsClassifier
>>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
>>> KNeighborsClassifier(n_neighbors=1).fit(X, [0, 0, 1, 1]).predict(np.array([[0.4], [10.6]]))
array([0, 1])
"""

from ._sklearn import NotFittedError
from .gp import GaussianProcessRegressor
from .interpolation import KernelInterpolation
from .knn import NearestNeighbors
from .knn_predictors import KNeighborsClassifier, KNeighborsRegressor
from .metrics import METRICS

__all__ = [
    "NearestNeighbors",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "KernelInterpolation",
    "GaussianProcessRegressor",
    "NotFittedError",
    "METRICS",
]
