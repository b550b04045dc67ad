"""Where linear algebra computes: host NumPy arrays, or CuPy arrays for data on a GPU.

Linear-algebra routines keep their vectors in one *compute* namespace (NumPy, or CuPy when the
operator's data lives on a GPU) and convert the caller's arrays in and out at the edges, so that
torch tensors come back as torch tensors on their device, CuPy as CuPy, NumPy as NumPy.

>>> import numpy as np
>>> xp, on_gpu = namespace(False)
>>> xp is np, on_gpu
(True, False)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import arrays as arr
from ..errors import DTypeError, InputValueError, ShapeError


def namespace(on_gpu: bool):
    """(array module, on_gpu): CuPy for GPU data, else NumPy."""
    if on_gpu:
        import cupy

        return cupy, True
    return np, False


def kind_of_array(a: Any, what: str) -> arr.Kind:
    """The :class:`kernla.arrays.Kind` of one array argument; scalars and other objects are refused."""
    k = arr.kind_of(a) if not isinstance(a, (list, tuple)) else "list"
    if k == "list":
        a = np.asarray(a)
        k = "numpy"
    if k == "scalar":
        raise ShapeError(f"{what} must be an array, got the number {a!r}")
    return arr.common_kind({what: a})


def to_compute(a: Any, on_gpu: bool, dtype: np.dtype, what: str = "array") -> Any:
    """``a`` as a NumPy (host) or CuPy (GPU) array of ``dtype``; complex or non-numeric input is refused."""
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    dt = arr.dtype_of(a)
    if dt is not None and dt.kind not in "fiub":
        raise DTypeError(f"{what} has dtype {dt}; kernla's linear algebra works on real arrays")
    if on_gpu:
        return arr.to_cupy(a, dtype)
    return arr.to_numpy(a, dtype)


def from_compute(a: Any, kind: arr.Kind, dtype: np.dtype | None = None) -> Any:
    """A compute array turned into the caller's kind (and dtype, for floats)."""
    return arr.wrap(a, kind, dtype)


def check_finite(a: Any, xp: Any, what: str) -> None:
    """InputValueError if ``a`` holds NaN or infinite values."""
    if a.size and not bool(xp.isfinite(a).all()):
        raise InputValueError(f"{what} contains NaN or infinite values")


def output_dtype(a: Any, fallback: np.dtype) -> np.dtype:
    """The float dtype results should have for an input ``a`` (its own if float32/64, else ``fallback``)."""
    dt = arr.dtype_of(a)
    if dt is not None and dt in (np.dtype(np.float32), np.dtype(np.float64)):
        return dt
    return fallback
