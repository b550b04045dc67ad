"""The compiled CPU engine: generated C++ (SIMD + OpenMP), cached on disk, called through ctypes.

One kernel is compiled per (formula, reduction, dtype); sizes, values and the column count of a
kernel product are run-time arguments, so changing the data never recompiles. Without a working
compiler the engine warns once and runs the NumPy engine instead (same results).

>>> import numpy as np
>>> from kernla.formula import Vi, Vj, call
>>> from kernla.reductions import Reduction
>>> x = np.arange(4.0).reshape(4, 1); y = np.array([[0.4], [2.6]])
>>> run(Reduction("ArgMin", call("SqDist", Vi(0, 1), Vj(1, 1))), [x, y], 4, 2)[0].ravel()
array([0, 0, 1, 1])
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from collections.abc import Sequence

import numpy as np

from ...formula.tree import CAT_J
from ...reductions import Reduction
from .. import numpy_engine
from ..ranges import Blocks
from .compiler import CompilerUnavailableError, compile_module
from .source import kernel_source

name = "cpu"

_kernels: dict = {}
_PAIRS_PER_THREAD = 50_000
_warned = False
_c_int64_p = ctypes.POINTER(ctypes.c_int64)


#: set in a child forked from this process: libgomp's thread pool does not survive a fork, and a
#: child that starts parallel regions the parent used hangs; such a child runs single-threaded
_forked_child = False


def _after_fork_in_child() -> None:
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def threads() -> int:
    """Worker threads: 1 in a forked child, else ``OMP_NUM_THREADS`` if set (read once), else the usable CPUs."""
    return 1 if _forked_child else _configured_threads()


@functools.lru_cache(maxsize=1)
def _configured_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def kernel(red: Reduction, dtype: np.dtype):
    """``(kl_reduce, run-time width, j-variable positions, output dims)`` for ``red`` on ``dtype``, compiled once."""
    key = (red, dtype.str)
    entry = _kernels.get(key)
    if entry is None:
        lib = compile_module(kernel_source(red, dtype.name))
        fn = lib.kl_reduce
        fn.restype = ctypes.c_int
        fn.argtypes = [
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int,
        ]
        product = red.kernel_product()
        j_positions = frozenset(v.params[0] for f in red.formulas for v in f.variables() if v.params[2] == CAT_J)
        entry = _kernels[key] = (fn, product[1].dim if product else 1, j_positions, red.output_dims())
    return entry


def run(
    red: Reduction,
    arrays: Sequence[np.ndarray],
    nx: int,
    ny: int,
    out: list[np.ndarray] | None = None,
    ranges: Blocks | None = None,
) -> list[np.ndarray]:
    """Reduce over j (see :mod:`kernla.engines`); falls back to NumPy without a compiler.

    ``ranges``: visit only these blocks (:class:`kernla.engines.ranges.Blocks`), else every pair.
    """
    global _warned
    dtype = np.result_type(*arrays) if len(arrays) else np.dtype(np.float64)
    try:
        fn, width, j_positions, dims = kernel(red, dtype)
    except CompilerUnavailableError as err:
        if not _warned:
            warnings.warn(f"{err}; using the NumPy engine instead", RuntimeWarning, stacklevel=3)
            _warned = True
        return numpy_engine.run(red, arrays, nx, ny, out, ranges)
    keep = []
    ptrs = (ctypes.c_void_p * max(len(arrays), 1))()
    for pos, a in enumerate(arrays):
        # j-variables go transposed, (D, ny): contiguous along j for the vector loop
        a = np.ascontiguousarray(a.T if pos in j_positions and a.shape[1] > 1 else a)
        keep.append(a)
        ptrs[pos] = a.ctypes.data
    if out is None:
        out = [np.empty((nx, w), dtype if kind == "float" else np.int64) for w, kind in dims]
    out_f = next((o for o, (w, k) in zip(out, dims) if k == "float"), None)
    out_i = next((o for o, (w, k) in zip(out, dims) if k == "index"), None)
    # small problems: waking threads costs more than it saves
    workers = max(1, min(threads(), (nx * ny * width) // _PAIRS_PER_THREAD))
    if ranges is not None:
        out_ptrs = [None if o is None else o.ctypes.data for o in (out_f, out_i)]
        return _run_ranges(red, dtype, ranges, nx, ny, ptrs, out_ptrs, width, out)
    status = fn(
        nx,
        ny,
        ptrs,
        None if out_f is None else out_f.ctypes.data,
        None if out_i is None else out_i.ctypes.data,
        width,
        workers,
    )
    if status != 0:
        raise MemoryError(f"the cpu engine ran out of memory for a reduction of {nx} rows")
    return out


_ranges_kernels: dict = {}


def _run_ranges(
    red: Reduction, dtype: np.dtype, ranges: Blocks, nx: int, ny: int, ptrs, out_ptrs: list, E: int, out: list
) -> list[np.ndarray]:
    """``out`` computed by the block-sparse driver ``kl_reduce_ranges`` of ``red``'s kernel (same library)."""
    key = (red, dtype.str)
    fn = _ranges_kernels.get(key)
    if fn is None:
        fn = compile_module(kernel_source(red, dtype.name)).kl_reduce_ranges
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        fn.argtypes += [ctypes.c_int64, ctypes.c_int, ctypes.c_int64, _c_int64_p, _c_int64_p, _c_int64_p]
        _ranges_kernels[key] = fn
    workers = max(1, min(threads(), (ranges.pairs * E) // _PAIRS_PER_THREAD))
    tables = [np.ascontiguousarray(a, dtype=np.int64) for a in (ranges.rows, ranges.slices, ranges.cols)]
    pointers = [a.ctypes.data_as(_c_int64_p) for a in tables]
    if fn(nx, ny, ptrs, *out_ptrs, E, workers, len(ranges.rows), *pointers) != 0:
        raise MemoryError(f"the cpu engine ran out of memory for a block-sparse reduction of {nx} rows")
    return out
