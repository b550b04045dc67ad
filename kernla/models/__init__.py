"""Models built on kernel reductions and kernel linear algebra.

- :class:`NearestNeighbors`, :class:`KNeighborsClassifier`, :class:`KNeighborsRegressor`:
  exact k-nearest neighbours (``argKmin`` reductions) for several metrics or a custom formula;
- :class:`KernelInterpolation`: kernel (RBF) interpolation / kernel ridge regression by one
  preconditioned conjugate-gradient solve;
- :class:`GaussianProcessRegressor`: GP regression with fixed hyperparameters — posterior mean
  and standard deviation by preconditioned block CG, log marginal likelihood exact (dense
  Cholesky, small N) or estimated (stochastic Lanczos quadrature).

Every model stores its data in the caller's array kind (NumPy, torch, CuPy) and never builds an
N×N matrix (except ``log_marginal_likelihood(method="exact")``, which says so).

>>> import numpy as np
>>> from kernla.models import KNeighborsClassifier
>>> X = np.array([[0.0], [1.0], [10.0], [11.0]])
>>> KNeighborsClassifier(k=1).fit(X, [0, 0, 1, 1]).predict(np.array([[0.4], [10.6]]))
array([0, 1])
"""

from ._common import NotFittedError
from .gp import GaussianProcessRegressor
from .interpolation import KernelInterpolation
from .knn import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors

__all__ = ["NearestNeighbors", "KNeighborsClassifier", "KNeighborsRegressor", "KernelInterpolation",
           "GaussianProcessRegressor", "NotFittedError"]
