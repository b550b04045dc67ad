"""Shared plumbing of the models: input checks, array kinds, the kernel factory.

Models keep their heavy data in the caller's array kind (NumPy, torch or CuPy), so the
reductions run where the data lives; small per-query arrays (k neighbours, votes) are handled
on the host with NumPy and turned back into the caller's kind with :func:`kernla.arrays.wrap`.

>>> import numpy as np
>>> as_points([[0, 1], [2, 3]], "X").dtype
dtype('float64')

The checks raise kernla's errors, which are ``ValueError`` / ``TypeError`` subclasses worded as
scikit-learn's estimator checks expect (e.g. "X has 3 features, but ... is expecting 4").
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import arrays as arr
from .. import kernels as _kernels
from ..errors import DTypeError, InputValueError, ShapeError
from ..linalg import KernelOperator

KernelSpec = str | Callable[..., KernelOperator]

#: kernels selectable by name (all from :mod:`kernla.kernels`; ``"rbf"`` is ``"gaussian"``)
KERNELS: dict[str, Callable[..., KernelOperator]] = {
    "gaussian": _kernels.gaussian,
    "rbf": _kernels.gaussian,
    "laplacian": _kernels.laplacian,
    "matern": _kernels.matern,
    "cauchy": _kernels.cauchy,
    "inverse_multiquadric": _kernels.inverse_multiquadric,
}


def kind(a: Any) -> arr.Kind:
    """The :class:`kernla.arrays.Kind` of one array."""
    return arr.common_kind({"array": a})


def _torch():
    return sys.modules.get("torch")


def as_array(a: Any, what: str) -> Any:
    """``a`` as a NumPy / torch / CuPy array (other array-likes become NumPy); errors for numbers and None.

    >>> as_array([[1, 2]], "X").shape
    (1, 2)
    """
    if a is None:
        raise InputValueError(f"Expected array-like (array or non-string sequence), got None for {what}")
    if type(a).__module__.startswith("scipy.sparse"):
        raise DTypeError(
            f"{what} is a sparse matrix: sparse data is not supported, pass a dense array (e.g. X.toarray())"
        )
    try:
        k = arr.kind_of(a)
    except arr.ArrayKindError:
        try:
            a, k = np.asarray(a), "numpy"
        except (TypeError, ValueError):
            raise arr.ArrayKindError(f"{what} must be a NumPy, torch or CuPy array, got {type(a).__name__}") from None
    if k == "scalar":
        raise ShapeError(f"{what} must be an array, got the number {a!r}")
    return a


def to_float(a: Any, what: str, dtype: DTypeLike | None = None) -> Any:
    """``a`` with a float dtype (integers and booleans become float64, or ``dtype`` if given)."""
    dt = arr.dtype_of(a)
    if dt is None:
        raise ShapeError(f"{what} must be an array")
    if dt.kind == "c":
        raise InputValueError(f"Complex data not supported: {what} is complex; kernla's models work on real arrays")
    if dt.kind == "O":
        a, dt = a.astype(np.float64), np.dtype(np.float64)  # TypeError/ValueError for non-numbers, as NumPy says
    if dt.kind not in "fiub":
        raise DTypeError(f"{what} has dtype {dt}; expected real numbers")
    target = np.dtype(dtype) if dtype is not None else (dt if dt.kind == "f" else np.dtype(np.float64))
    return cast(a, target) if dt != target else a


def cast(a: Any, dtype: DTypeLike) -> Any:
    """``a`` converted to ``dtype`` in its own kind (NumPy / torch / CuPy)."""
    dtype = np.dtype(dtype)
    if arr.kind_of(a) == "torch":
        return a.to(getattr(_torch(), dtype.name))
    return a.astype(dtype)


def all_finite(a: Any) -> bool:
    """Whether every entry of an array (any kind) is finite."""
    k = arr.kind_of(a)
    if k == "torch":
        return bool(_torch().isfinite(a).all())
    if k == "cupy":
        import cupy  # optional dependency: the array is a CuPy array

        return bool(cupy.isfinite(a).all())
    return bool(np.isfinite(a).all())


def as_points(
    x: Any, what: str, dim: int | None = None, dtype: DTypeLike | None = None, model: str = "the model"
) -> Any:
    """Check a point set: a 2-D (n, D) float array of any kind, n ≥ 1, D ≥ 1, finite values.

    ``dim`` (if given) is the dimension the model was fitted with (``model`` names it in the
    message); ``dtype`` converts to the fitted dtype.

    >>> as_points(np.arange(6).reshape(3, 2), "x").shape
    (3, 2)
    """
    x = as_array(x, what)
    shape = tuple(x.shape)
    if len(shape) != 2:
        hint = ": Reshape your data with x.reshape(-1, 1) for points of dimension 1" if len(shape) == 1 else ""
        raise ShapeError(f"{what} must be a 2-D array (points, dimension), got shape {shape}{hint}")
    if x.shape[0] == 0:
        raise ShapeError(f"{what} is empty (0 points)")
    if x.shape[1] == 0:
        raise ShapeError(f"{what} has dimension 0: 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
    if dim is not None and x.shape[1] != dim:
        raise ShapeError(
            f"X has {x.shape[1]} features, but {model} is expecting {dim} features as input "
            f"({what} has dimension {x.shape[1]}; the model was fitted on points of dimension {dim})"
        )
    x = to_float(x, what, dtype)
    if not all_finite(x):
        raise InputValueError(f"{what} contains NaN or infinite values")
    return x


def as_targets(y: Any, n: int, what: str = "y") -> Any:
    """Numeric targets of shape (n,) or (n, k), float, finite."""
    y = as_array(y, what)
    shape = tuple(y.shape)
    if len(shape) not in (1, 2) or shape[0] != n:
        raise ShapeError(f"{what} must have shape ({n},) or ({n}, k) to match the {n} points, got {shape}")
    if len(shape) == 2 and shape[1] == 0:
        raise ShapeError(f"{what} has no columns")
    y = to_float(y, what)
    if not all_finite(y):
        raise InputValueError(f"{what} contains NaN or infinite values")
    return y


def same_kind(**arrays: Any) -> arr.Kind:
    """The common kind of named arrays, with a message naming them when they differ."""
    return arr.common_kind(arrays)


def host(a: Any, dtype: DTypeLike | None = None) -> np.ndarray:
    """A host NumPy copy (or view) of any array."""
    return arr.to_numpy(a, np.dtype(dtype) if dtype is not None else (arr.dtype_of(a) or np.dtype(np.float64)))


def positive(value: Any, what: str, allow_zero: bool = False) -> float:
    """A finite positive (or non-negative) float, else InputValueError naming ``what``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputValueError(
            f"{what} must be a {'non-negative' if allow_zero else 'positive'} finite number, got {value!r}"
        )
    return v


def check_kernel(kernel: KernelSpec) -> KernelSpec:
    """Validate a kernel given by name (see :data:`KERNELS`) or as a callable."""
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise InputValueError(
                f"unknown kernel {kernel!r}; choose one of {', '.join(sorted(KERNELS))} "
                "or pass a callable (x, y, sigma) -> KernelOperator"
            )
        return kernel
    if callable(kernel):
        return kernel
    raise InputValueError(f"kernel must be a name or a callable, got {type(kernel).__name__}")


def make_kernel(
    kernel: KernelSpec, x: Any, y: Any, sigma: float, nu: float = 1.5, backend: str | None = None
) -> KernelOperator:
    """The operator ``k(x_i, y_j)`` (``y=None``: y = x) for a kernel name or callable.

    A callable is called as ``kernel(x, y, sigma=sigma)`` (plus ``backend=`` when one is set)
    and must return a :class:`~kernla.KernelOperator` — e.g. one of :mod:`kernla.kernels`.

    >>> make_kernel("gaussian", np.zeros((2, 1)), None, 1.0).shape
    (2, 2)
    """
    if isinstance(kernel, str):
        name = check_kernel(kernel)
        assert isinstance(name, str)  # check_kernel returns a name for a name
        fn = KERNELS[name]
        if fn is _kernels.matern:
            return fn(x, y, sigma=sigma, nu=nu, backend=backend)
        return fn(x, y, sigma=sigma, backend=backend)
    extra = {} if backend is None else {"backend": backend}
    op = kernel(x, y, sigma=sigma, **extra)
    if not isinstance(op, KernelOperator):
        raise InputValueError(f"the kernel callable must return a kernla.KernelOperator, got {type(op).__name__}")
    expected = (x.shape[0], (x if y is None else y).shape[0])
    if op.shape != expected:
        raise ShapeError(
            f"the kernel callable returned a {op.shape[0]}x{op.shape[1]} operator for "
            f"{expected[0]} x {expected[1]} points"
        )
    return op
