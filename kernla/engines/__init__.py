"""Engines: interchangeable evaluators of one reduction, all behind ``run``.

Every engine module exposes ``name`` and ``run(reduction, arrays, nx, ny, out=None) -> outputs``,
where ``arrays[pos]`` is the C-contiguous float32/float64 array of the variable at position
``pos`` ((nx, D) for i-variables, (ny, D) for j-variables, (D,) for parameters) and the reduction
is over j; ``outputs`` is one (nx, width) array per entry of ``reduction.output_dims()``.
``backend="auto"`` picks ``cuda`` for device arrays, else the compiled ``cpu`` engine when a
compiler works, else ``numpy``; ``KERNLA_BACKEND`` sets the default. :func:`register_engine` adds
an engine under a new name (``docs/architecture.md`` has a worked example).

>>> get_engine("numpy").name
'numpy'
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from types import ModuleType

from ..errors import BackendError
from ..formula import limits
from ..formula.tree import Node


def _builtin(module: str, why: str) -> Callable[[], ModuleType]:
    def load() -> ModuleType:
        try:
            return importlib.import_module(module, __name__)
        except ImportError as err:  # the compiled engines are optional
            raise BackendError(f"the {why}: {err}") from None

    return load


#: engine name -> a function that imports it (BackendError when it cannot be used here)
_LOADERS: dict[str, Callable[[], ModuleType]] = {
    "numpy": _builtin(".numpy_engine", "numpy engine is broken"),
    "cpu": _builtin(".cpu.engine", "cpu engine is unavailable"),
    "cuda": _builtin(".cuda.engine", "cuda engine is unavailable"),
}
#: the backend names kernla ships ("auto" chooses among them)
BACKENDS = ("auto", *_LOADERS)
#: pykeops' backend names (any case)
_PYKEOPS_BACKENDS = {
    "CPU": "cpu",
    "GPU": "cuda",
    "GPU_1D": "cuda",
    "GPU_2D": "cuda",
    "AUTO": "auto",
    "NUMPY": "numpy",
    "CUDA": "cuda",
}


def get_engine(name: str) -> ModuleType:
    """The engine module called ``name`` ('numpy', 'cpu', 'cuda' or a registered one); BackendError if unavailable."""
    load = _LOADERS.get(name)
    if load is None:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(_names())}")
    return load()


def register_engine(name: str, load: Callable[[], ModuleType]) -> None:
    """Make ``backend=name`` run the engine that ``load()`` returns (a module or object with ``name`` and ``run``).

    ``load`` is called at each use (cache inside it if importing is costly) and raises
    :class:`kernla.BackendError` when the engine cannot run here.
    """
    if not isinstance(name, str) or not name.isidentifier() or name.lower() == "auto" or name in _LOADERS:
        raise BackendError(f"cannot register an engine named {name!r}: names are new identifiers other than 'auto'")
    _LOADERS[name] = load


def _names() -> list[str]:
    return ["auto", *_LOADERS]


def resolve_backend(backend: str | None, on_device: bool, formulas: Sequence[Node] = ()) -> str:
    """The engine name for a call: explicit ``backend``, else ``KERNLA_BACKEND``, else automatic.

    Automatic on the host: ``cpu``, but ``numpy`` for ``formulas`` too wide to compile
    (``limits.MAX_UNROLLED``, counted as the cpu engine unrolls them: inner products on its tile path
    are one value each) or without a working compiler.
    """
    if backend is None or backend == "auto":
        backend = os.environ.get("KERNLA_BACKEND", "auto") or "auto"
    backend = _PYKEOPS_BACKENDS.get(backend.upper(), backend) if isinstance(backend, str) else backend
    if backend != "auto" and backend not in _LOADERS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(_names())}")
    if backend != "auto":
        return backend
    if on_device:
        return "cuda"
    try:
        cpu = get_engine("cpu")
    except BackendError:
        return "numpy"
    if formulas and cpu.unrolled_size(tuple(formulas)) > limits.MAX_UNROLLED:
        return "numpy"
    return "cpu"
