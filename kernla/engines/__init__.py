"""Engines: interchangeable evaluators of one reduction, all behind ``run``.

Every engine module exposes ``name`` and ``run(reduction, arrays, nx, ny, out=None) -> outputs``,
where ``arrays[pos]`` is the C-contiguous float32/float64 array of the variable at position
``pos`` ((nx, D) for i-variables, (ny, D) for j-variables, (D,) for parameters) and the reduction
is over j. ``backend="auto"`` picks ``cuda`` for device arrays, else the compiled ``cpu`` engine
when a compiler works, else ``numpy``; ``KERNLA_BACKEND`` sets the default.

>>> get_engine("numpy").name
'numpy'
"""

from __future__ import annotations

import os
from types import ModuleType

from ..errors import BackendError

BACKENDS = ("auto", "numpy", "cpu", "cuda")
#: pykeops' backend names (any case)
_PYKEOPS_BACKENDS = {"CPU": "cpu", "GPU": "cuda", "GPU_1D": "cuda", "GPU_2D": "cuda", "AUTO": "auto",
                     "NUMPY": "numpy", "CUDA": "cuda"}


def get_engine(name: str) -> ModuleType:
    """The engine module called ``name`` ('numpy', 'cpu' or 'cuda'); BackendError if unavailable."""
    if name == "numpy":
        from . import numpy_engine  # deferred: an engine is loaded when first used

        return numpy_engine
    if name == "cpu":
        try:
            from .cpu import engine as cpu_engine  # deferred: needs a C++ compiler at first use
        except ImportError as err:  # the compiled engine is optional
            raise BackendError(f"the cpu engine is unavailable: {err}") from None
        return cpu_engine
    if name == "cuda":
        try:
            from .cuda import engine as cuda_engine  # optional dependency: CuPy and a GPU
        except ImportError as err:
            raise BackendError(f"the cuda engine is unavailable: {err}") from None
        return cuda_engine
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def resolve_backend(backend: str | None, on_device: bool) -> str:
    """The engine name for a call: explicit ``backend``, else ``KERNLA_BACKEND``, else automatic."""
    if backend is None or backend == "auto":
        backend = os.environ.get("KERNLA_BACKEND", "auto") or "auto"
    backend = _PYKEOPS_BACKENDS.get(backend.upper(), backend) if isinstance(backend, str) else backend
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if on_device:
        return "cuda"
    try:
        get_engine("cpu")
    except BackendError:
        return "numpy"
    return "cpu"

