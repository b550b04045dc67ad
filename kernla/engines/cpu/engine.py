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

import contextlib
import ctypes
import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...formula import codegen, limits
from ...formula.tree import CAT_J, Node, free_position
from ...reductions import Reduction
from .. import numpy_engine
from ..ranges import Blocks
from . import tiles
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


@dataclass(frozen=True)
class Kernel:
    """One compiled kernel and what its caller needs to know."""

    fn: Any  # kl_reduce
    ranges_fn: Any  # kl_reduce_ranges (the block-sparse driver, same library)
    width: int  # the run-time width E of a kernel product, else 1
    transposed: frozenset  # positions of the j-variables the kernel reads transposed, (D, ny)
    dims: list  # the reduction's output dims
    tiles: tiles.TilePlan | None  # the inner products it computes by matrix-multiply tiles
    float_out: int | None  # which output the kernel's float pointer writes
    index_out: int | None  # which output its index pointer writes
    gemm_arg: int  # the argument that holds BLAS's ?gemm (null: the micro-kernel)
    needs_gemm: bool  # a tile site is computed by BLAS


def _address(a: np.ndarray) -> int:
    """The address of an array's data (faster than ``a.ctypes.data``)."""
    return a.__array_interface__["data"][0]


def unrolled_size(formulas: tuple[Node, ...]) -> int:
    """The scalar operations this engine's code unrolls for ``formulas``: inner products the tile path computes
    (dimension ≥ ``tiles.MIN_DIM``) count as one value each, the rest as :func:`kernla.formula.codegen.unrolled_size`.

    >>> from kernla.formula import Vi, Vj, call
    >>> unrolled_size((call("Exp", -call("SqDist", Vi(0, 1024), Vj(1, 1024))),)) < 100
    True
    """
    return _unrolled_size(formulas, tiles.MIN_DIM)


@functools.lru_cache(maxsize=512)  # the automatic backend asks on every call
def _unrolled_size(formulas: tuple[Node, ...], min_dim: int) -> int:
    plan = tiles.plan(formulas, min_dim, free_position(*formulas))
    return codegen.unrolled_size(plan.formulas if plan else formulas)


def kernel(red: Reduction, dtype: np.dtype, min_dim: int = 0, blas_dim: int = 0) -> Kernel:
    """The kernel of ``red`` on ``dtype``, compiled once; inner products of dimension ≥ ``min_dim`` by tiles,
    by BLAS from ``blas_dim`` on (0: never)."""
    key = (red, dtype.str, min_dim, blas_dim)
    entry = _kernels.get(key)
    if entry is None:
        product = red.kernel_product()
        formulas = (product[0],) if product else red.formulas
        plan = (
            tiles.plan(formulas, min_dim, free_position(*red.formulas), blas_dim) if dtype.name in tiles.PANEL else None
        )
        if plan is not None:
            formulas = plan.formulas
        lib = compile_module(kernel_source(red, dtype.name, plan))
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
        ranges_fn = lib.kl_reduce_ranges
        ranges_fn.restype = ctypes.c_int
        ranges_fn.argtypes = fn.argtypes + [ctypes.c_int64, _c_int64_p, _c_int64_p, _c_int64_p]
        read = {v.params[0] for f in formulas for v in f.variables() if v.params[2] == CAT_J}
        transposed = frozenset(p for p in read if plan is None or p < plan.base)
        dims = red.output_dims()
        first = {kind: n for n, (_, kind) in reversed(list(enumerate(dims)))}
        width = product[1].dim if product else 1
        entry = _kernels[key] = Kernel(
            fn,
            ranges_fn,
            width,
            transposed,
            dims,
            plan,
            first.get("float"),
            first.get("index"),
            tiles.gemm_slot(red.formulas, plan),
            plan is not None and any(s.blas for s in plan.sites),
        )
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
        gemm = tiles.gemm(dtype.name)
        k = kernel(red, dtype, tiles.MIN_DIM, tiles.BLAS_DIM if gemm else 0)
        extra = [] if k.tiles is None else tiles.operands(k.tiles, arrays, nx, ny, dtype)
        if extra is None:  # a non-finite operand: the exact per-component path, if it is not too wide to compile
            if codegen.unrolled_size(red.formulas) > limits.MAX_UNROLLED:
                return numpy_engine.run(red, arrays, nx, ny, out, ranges)
            k, extra = kernel(red, dtype), []
    except CompilerUnavailableError as err:
        if not _warned:
            warnings.warn(f"{err}; using the NumPy engine instead", RuntimeWarning, stacklevel=3)
            _warned = True
        return numpy_engine.run(red, arrays, nx, ny, out, ranges)
    base = len(arrays) if k.tiles is None else k.tiles.base  # the tile operands follow the variables
    # j-variables go transposed, (D, ny): contiguous along j for the vector loop
    keep = [np.ascontiguousarray(a.T if pos in k.transposed and a.shape[1] > 1 else a) for pos, a in enumerate(arrays)]
    addresses: list[int | None] = [_address(a) for a in keep]
    addresses += [None] * (max(base + len(extra), k.gemm_arg + 1) - len(addresses))
    if extra:  # (over positions no formula reads, if any)
        addresses[base : base + len(extra)] = [_address(a) for a in extra]
    use_blas = k.needs_gemm or k.width >= tiles.BLAS_COLUMNS > 0
    addresses[k.gemm_arg] = (gemm or None) if use_blas else None
    ptrs = (ctypes.c_void_p * len(addresses))(*addresses)
    if out is None:
        out = [np.empty((nx, w), dtype if kind == "float" else np.int64) for w, kind in k.dims]
    out_ptrs = [
        None if k.float_out is None else _address(out[k.float_out]),
        None if k.index_out is None else _address(out[k.index_out]),
    ]
    # small problems: waking threads costs more than it saves
    pairs = nx * ny if ranges is None else ranges.pairs
    workers = max(1, min(threads(), (pairs * k.width) // _PAIRS_PER_THREAD))
    with tiles.blas_single_thread() if use_blas and workers > 1 else contextlib.nullcontext():
        if ranges is None:
            status = k.fn(nx, ny, ptrs, *out_ptrs, k.width, workers)
        else:
            tables = [np.ascontiguousarray(a, dtype=np.int64) for a in (ranges.rows, ranges.slices, ranges.cols)]
            pointers = [a.ctypes.data_as(_c_int64_p) for a in tables]
            status = k.ranges_fn(nx, ny, ptrs, *out_ptrs, k.width, workers, len(ranges.rows), *pointers)
    if status != 0:
        raise MemoryError(f"the cpu engine ran out of memory for a reduction of {nx} rows")
    return out
