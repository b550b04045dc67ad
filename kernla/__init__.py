"""kernla: symbolic kernel operators — N×M matrices given by a formula, never stored.

>>> import numpy as np, kernla
>>> x = np.random.default_rng(0).normal(size=(100, 3))
>>> x_i, x_j = kernla.LazyTensor(x[:, None, :]), kernla.LazyTensor(x[None, :, :])
>>> nearest = ((x_i - x_j) ** 2).sum(-1).argKmin(2, dim=1)   # self + nearest neighbour
>>> bool((nearest[:, 0] == np.arange(100)).all())
True
"""

import importlib
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # for type checkers and the API reference: at run time the estimators load on first use
    from . import models
    from .models import (
        GaussianProcessRegressor,
        KernelInterpolation,
        KNeighborsClassifier,
        KNeighborsRegressor,
        NearestNeighbors,
    )

#: the estimators, imported on first use: they need scikit-learn, which takes most of a second to import
_MODELS = (
    "GaussianProcessRegressor",
    "KernelInterpolation",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "NearestNeighbors",
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


def __getattr__(name: str):
    """``kernla.models`` and its estimators, imported on first access (PEP 562)."""
    if name == "models" or name in _MODELS:
        models = importlib.import_module(".models", __name__)  # scikit-learn: imported only when used
        return models if name == "models" else getattr(models, name)
    raise AttributeError(f"module 'kernla' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
