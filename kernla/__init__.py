"""kernla: symbolic kernel operators — N×M matrices given by a formula, never stored.

>>> import numpy as np, kernla
>>> x = np.random.default_rng(0).normal(size=(100, 3))
>>> x_i, x_j = kernla.LazyTensor(x[:, None, :]), kernla.LazyTensor(x[None, :, :])
>>> nearest = ((x_i - x_j) ** 2).sum(-1).argKmin(2, dim=1)   # self + nearest neighbour
>>> bool((nearest[:, 0] == np.arange(100)).all())
True
"""

from . import kernels
from ._version import __version__
from .errors import (
    ArgumentTypeError,
    ArrayKindError,
    BackendError,
    DTypeError,
    FormulaError,
    FormulaSyntaxError,
    InputValueError,
    KernlaError,
    ShapeError,
)
from .generic import generic_argkmin, generic_argmin, generic_logsumexp, generic_sum
from .genred import Genred, cuda_source
from .lazy import ComplexLazyTensor, LazyTensor, Pm, Vi, Vj
from .linalg import ConvergenceWarning, KernelOperator, KernelSolve
from .models import (
    GaussianProcessRegressor,
    KernelInterpolation,
    KNeighborsClassifier,
    KNeighborsRegressor,
    NearestNeighbors,
)

__all__ = [
    "__version__",
    "LazyTensor",
    "ComplexLazyTensor",
    "Vi",
    "Vj",
    "Pm",
    "Genred",
    "cuda_source",
    "generic_sum",
    "generic_logsumexp",
    "generic_argmin",
    "generic_argkmin",
    "KernelOperator",
    "KernelSolve",
    "ConvergenceWarning",
    "kernels",
    "KernlaError",
    "FormulaError",
    "FormulaSyntaxError",
    "ShapeError",
    "InputValueError",
    "DTypeError",
    "ArrayKindError",
    "BackendError",
    "ArgumentTypeError",
    "models",
    "NearestNeighbors",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "KernelInterpolation",
    "GaussianProcessRegressor",
]
