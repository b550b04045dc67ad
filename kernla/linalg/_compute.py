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

import contextlib
import math
import sys
from typing import Any

import numpy as np

from .. import arrays as arr
from ..engines import resolve_backend
from ..errors import DTypeError, InputValueError, ShapeError


def namespace(on_gpu: bool):
    """(array module, on_gpu): CuPy for GPU data, else NumPy."""
    if on_gpu:
        import cupy  # optional dependency: only for data on a GPU

        return cupy, True
    return np, False


def is_number(x: Any) -> bool:
    """True for real numbers (Python or NumPy scalars, 0-d numeric arrays), False for bools.

    >>> is_number(2.5), is_number(np.float32(1)), is_number(True), is_number(np.ones(2))
    (True, True, False, False)
    """
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)) or (
        isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "fiu"
    )


def finite_number(x: Any, what: str) -> float:
    """``x`` as a finite float; InputValueError naming ``what`` otherwise."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise InputValueError(f"{what} must be a real number, got {x!r}") from None
    if not math.isfinite(value):
        raise InputValueError(f"{what} must be finite, got {value}")
    return value


def is_torch(x: Any) -> bool:
    """True for torch tensors, without importing torch (NumPy-only programs never load it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_foreign(x: Any) -> bool:
    """True for torch tensors and CuPy arrays (they bypass scipy's ``np.asarray`` wrappers)."""
    try:
        return arr.kind_of(x) in ("torch", "cupy")
    except arr.ArrayKindError:
        return False


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


def as_columns(x: Any, rows: int, on_gpu: bool, dtype: np.dtype, what: str, shape: tuple[int, int]) -> tuple[Any, bool]:
    """(compute array of shape (rows, w), was_vector) for an (rows,) or (rows, w) array ``x``.

    ``shape`` is the operator's, for the error message.
    """
    dims = tuple(x.shape)
    if len(dims) == 1 and dims[0] == rows:
        return to_compute(x, on_gpu, dtype, what).reshape(rows, 1), True
    if len(dims) == 2 and dims[0] == rows:
        return to_compute(x, on_gpu, dtype, what), False
    raise ShapeError(
        f"{what} must have shape ({rows},) or ({rows}, k) for a {shape[0]}x{shape[1]} operator, got {dims}"
    )


def to_host(a: Any) -> np.ndarray:
    """A compute array as a host NumPy array (CuPy arrays are copied off the GPU)."""
    return a if isinstance(a, np.ndarray) else a.get()


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


_controller: Any = None


def blas_single_thread(backend: str | None, on_gpu: bool):
    """A context in which host BLAS runs on one thread, when the products use the compiled CPU engine.

    Solvers alternate OpenMP kernel products with NumPy BLAS calls (preconditioner, Lanczos
    reorthogonalisation, Cholesky updates). After each call, OpenBLAS's worker threads keep
    spinning for a while and take cores from the engine's OpenMP threads, and the reverse:
    measured on 2 cores, a Nyström-preconditioned solve at N=5000 took 0.51 s with multithreaded
    BLAS and 0.19 s with BLAS on one thread (0.24 s and 0.08 s at N=2000). Needs threadpoolctl
    (installed with scikit-learn); without it, or for the NumPy and CUDA engines, nothing changes.
    """
    global _controller
    if on_gpu:
        return contextlib.nullcontext()
    try:
        if resolve_backend(backend, False) != "cpu":
            return contextlib.nullcontext()
    except Exception:  # an unknown backend name: the product itself will say so
        return contextlib.nullcontext()
    if _controller is None:
        try:
            import threadpoolctl  # optional dependency (installed with scikit-learn)
        except ImportError:
            _controller = False
        else:
            _controller = threadpoolctl.ThreadpoolController()
    if _controller is False:
        return contextlib.nullcontext()
    return _controller.limit(limits=1, user_api="blas")
