"""The cuda engine: kernla's generated kernels compiled with NVRTC through CuPy, run on CuPy arrays.

Importing this module needs CuPy and a usable GPU; otherwise it raises ImportError with the
reason, which :func:`kernla.engines.get_engine` reports as :class:`kernla.BackendError`.

``run(reduction, arrays, nx, ny, out=None)`` follows the engine interface: ``arrays[pos]`` are CuPy
arrays (NumPy arrays are copied over), float16 / float32 / float64 (all the same); outputs are CuPy
arrays of the input dtype (int64 for indices) on the inputs' device; kernels run on CuPy's current
stream. Each reduction's source (:func:`kernla.engines.cuda.source.build_plan`) is compiled once per
device and kept in an in-process dictionary; CuPy also caches the binary on disk, keyed by the
source text, which inlines every template.

Tile paths (:mod:`kernla.engines.cuda.tiles`): an inner product or squared distance of dimension ≥
``tiles.MIN_DIM`` is computed by Gram tiles, its operands made here per call (centred on the mean of
the j side; data with a non-finite operand value runs the exact kernels instead), and kernel products
of ``tiles.PRODUCT_TILE_MIN`` columns or more by k tile × B tile products.

Scheme choice (:func:`kernla.engines.cuda.source.launches`): the 1-D scheme (one block per
KL_BLOCK·rows rows, all j) when it fills the GPU, otherwise the split-j scheme, with the number of
j splits chosen from the SM count and the kernel's occupancy so that blocks spread evenly.

>>> import cupy, numpy as np                                    # doctest: +SKIP
>>> from kernla.formula import Vi, Vj, call                     # doctest: +SKIP
>>> from kernla.reductions import Reduction                     # doctest: +SKIP
>>> x = cupy.random.rand(1000, 3, dtype=cupy.float32)           # doctest: +SKIP
>>> idx, = run(Reduction("ArgMin", call("SqDist", Vi(0, 3), Vj(1, 3))), [x, x], 1000, 1000)  # doctest: +SKIP
>>> bool((idx.ravel() == cupy.arange(1000)).all())              # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import BackendError, DTypeError, ShapeError
from ...formula.tree import CAT_I, CAT_J
from ...reductions import Reduction
from ..ranges import Blocks
from . import tiles
from .source import BLOCK, MERGE_BLOCK, KernelInfo, Launch, Plan, build_plan, dtype_name, launches, ranges_launches

name = "cuda"


def _probe() -> tuple[Any, str | None]:
    """(cupy, None) when CuPy and a GPU are usable, else (None, the reason)."""
    try:
        import cupy as cp  # optional dependency, probed here
    except ImportError as err:
        return None, f"backend='cuda' needs CuPy (pip install cupy-cuda12x or cupy-cuda13x): {err}"
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as err:  # no driver, no device, driver too old for this CuPy
        return None, f"backend='cuda' needs an NVIDIA GPU with a working driver; CuPy says: {err}"
    if count < 1:
        return None, "backend='cuda' needs an NVIDIA GPU; CuPy sees none"
    return cp, None


cupy, _why_not = _probe()
if cupy is None:
    # get_engine reports this ImportError as BackendError. Drop the half-made module first: an
    # importer that registered it before running it (pytest's importlib mode does) keeps it.
    sys.modules.pop(__name__, None)
    raise ImportError(_why_not)

#: NVRTC options (CuPy adds -arch for the device and -ftz=true)
OPTIONS = ("-std=c++17",)

_lock = threading.Lock()
_modules: dict[tuple[str, int], Any] = {}
_functions: dict[tuple[str, int, str], Any] = {}
_resident: dict[tuple[str, int, str], int] = {}
_sms: dict[int, int] = {}


def function(source: str, device: int, kernel: str):
    """The compiled kernel ``kernel`` of ``source`` on ``device`` (the module compiles on first use).

    Thread-safe; compiles of different sources may run in parallel threads (NVRTC releases the GIL).
    """
    key = (source, device, kernel)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    with _lock:
        mod = _modules.get((source, device))
        if mod is None:
            mod = _modules[(source, device)] = cupy.RawModule(code=source, options=OPTIONS)
    try:
        with cupy.cuda.Device(device):
            fn = mod.get_function(kernel)
    except cupy.cuda.compiler.CompileException as err:
        raise BackendError(
            f"NVRTC could not compile kernla's CUDA source (a kernla bug; please report "
            f"it with the output of kernla.cuda_source(...)): {err}"
        ) from None
    _functions[key] = fn
    return fn


def _plan(red: Reduction, dtype: str, ranges: bool, exact: bool = False) -> Plan:
    """The plan the engine runs: the tile paths (:mod:`kernla.engines.cuda.tiles`) unless ``exact``."""
    return build_plan(red, dtype, ranges, 0 if exact else tiles.MIN_DIM, True, tiles.TF32)


def prepare(red: Reduction, dtype: str = "float32", device: int | None = None) -> None:
    """Compile ``red``'s kernels for ``dtype`` now (e.g. ahead of timing, or in parallel threads)."""
    plan = _plan(red, dtype_name(dtype), False)
    device = cupy.cuda.Device().id if device is None else device
    for info in plan.kernels:
        function(plan.source, device, info.name)
        function(plan.source, device, info.merge)


def _sm_count(device: int) -> int:
    n = _sms.get(device)
    if n is None:
        n = int(cupy.cuda.Device(device).attributes["MultiProcessorCount"])
        _sms[device] = n
    return n


def _blocks_per_sm(fn, key: tuple) -> int:
    n = _resident.get(key)
    if n is None:
        try:
            n = int(cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(fn.kernel.ptr, BLOCK, 0))
        except Exception:  # estimate from the register count
            regs = max(1, int(getattr(fn, "num_regs", 64)))
            n = max(1, min(2048 // BLOCK, 65536 // (regs * BLOCK)))
        n = max(1, n)
        _resident[key] = n
    return n


def _prepare(red: Reduction, plan: Plan, arrays: Sequence[Any], nx: int, ny: int):
    """Inputs as contiguous CuPy arrays of one dtype, checked against the variables' shapes."""
    shapes = {}
    for f in red.formulas:
        for v in f.variables():
            pos, dim, cat = v.params
            shapes[pos] = (nx, dim) if cat == CAT_I else (ny, dim) if cat == CAT_J else (dim,)
    if plan.product:
        shapes[plan.b_pos] = (ny, None)
    out = []
    for pos in plan.positions:
        if plan.gram is not None and pos in plan.gram.operands:
            continue  # made by tiles.operands
        if pos >= len(arrays):
            raise ShapeError(f"the formula uses argument {pos} but only {len(arrays)} arrays were given")
        a = arrays[pos]
        a = a if isinstance(a, cupy.ndarray) else cupy.asarray(a)
        if a.dtype != np.dtype(plan.dtype):
            a = a.astype(plan.dtype)
        want = shapes[pos]
        if want[-1] is None:
            if a.ndim == 1:
                a = a.reshape(-1, 1)
            if a.ndim != 2 or a.shape[0] != ny:
                raise ShapeError(f"argument {pos} must have shape ({ny}, width), got {a.shape}")
        elif a.size != math.prod(want):
            raise ShapeError(f"argument {pos} must have shape {want}, got {a.shape}")
        out.append(cupy.ascontiguousarray(a))
    return out


def run(
    red: Reduction, arrays: Sequence[Any], nx: int, ny: int, out: list | None = None, ranges: Blocks | None = None
) -> list:
    """Reduce over j on the GPU; outputs are CuPy arrays (nx, width) (see the module docstring).

    ``ranges``: visit only these blocks (:class:`kernla.engines.ranges.Blocks`; the block-sparse
    kernels of :func:`~kernla.engines.cuda.source.ranges_launches`), else every pair.
    """
    used = [arrays[p] for p in sorted({v.params[0] for f in red.formulas for v in f.variables()}) if p < len(arrays)]
    dtypes = {np.dtype(a.dtype) for a in used}
    if not dtypes:
        raise ShapeError("the formula uses no array")
    dtype = dtype_name(max(dtypes, key=lambda d: d.itemsize))
    if len(dtypes) > 1:
        raise DTypeError(f"the cuda engine needs one dtype for all arrays, got {sorted(map(str, dtypes))}")
    plan = _plan(red, dtype, ranges is not None)
    device = next((a.device.id for a in used if isinstance(a, cupy.ndarray)), cupy.cuda.Device().id)
    with cupy.cuda.Device(device):
        extra: list = []
        if plan.gram is not None:
            extra = tiles.operands(plan.gram, arrays, plan.dtype, nx, ny, cupy) or []
            if not extra:  # a non-finite operand value: the expansion would not give it back
                plan = _plan(red, dtype, ranges is not None, exact=True)
        data = _prepare(red, plan, arrays, nx, ny) + extra
        if plan.product:
            width = int(data[plan.positions.index(plan.b_pos)].shape[1])
            dims = [(width, "float")]
        else:
            width = 0
            dims = list(plan.outputs)
        results = _outputs(dims, nx, plan.dtype, out)
        if nx == 0 or any(w == 0 for w, _ in dims):
            return results
        if ranges is not None:
            _launch_ranges(plan, ranges, device, data, results, nx, ny, width)
            return results

        def resident(info: KernelInfo) -> int:
            fn = function(plan.source, device, info.name)
            return _sm_count(device) * _blocks_per_sm(fn, (plan.source, device, info.name))

        for launch in launches(plan, nx, ny, width, resident):
            _launch(plan, launch, device, data, results, nx, ny)
        return results


def _launch_ranges(plan: Plan, ranges: Blocks, device: int, data: list, results: list, nx: int, ny: int, width: int):
    """The block-sparse launches: one block per entry of the block table, the tables on the device."""
    tables: dict[int, Any] = {}

    def table(rows: int):
        if rows not in tables:
            tables[rows] = cupy.asarray(ranges.tiles(BLOCK * rows))
        return tables[rows]

    slices = cupy.asarray(ranges.slices)
    cols = cupy.asarray(ranges.cols if len(ranges.cols) else np.zeros((1, 2), np.int64))  # never read when empty
    scratch = cupy.empty(1, np.float64)
    i64 = np.int64
    for launch, rows in ranges_launches(plan, width, lambda rows: len(table(rows))):
        fn = function(plan.source, device, launch.kernel)
        args = (i64(nx), i64(ny), i64(launch.width), i64(0), *data, *results, scratch, table(rows), slices, cols)
        fn(launch.grid, (BLOCK, 1, 1), args)


def _outputs(dims, nx: int, dtype: str, out: list | None) -> list:
    if out is None:
        return [cupy.empty((nx, w), dtype if kind == "float" else np.int64) for w, kind in dims]
    if len(out) != len(dims):
        raise ShapeError(f"out must hold {len(dims)} arrays, got {len(out)}")
    for o, (w, kind) in zip(out, dims):
        want = np.dtype(dtype if kind == "float" else np.int64)
        if not isinstance(o, cupy.ndarray) or o.shape != (nx, w) or o.dtype != want or not o.flags.c_contiguous:
            raise ShapeError(f"out arrays must be C-contiguous CuPy arrays of shape ({nx}, {w}) and dtype {want}")
    return list(out)


def _launch(plan: Plan, launch: Launch, device: int, data: list, results: list, nx: int, ny: int) -> None:
    fn = function(plan.source, device, launch.kernel)
    scratch = cupy.empty(max(1, launch.scratch_words), np.float64)
    i64 = np.int64
    fn(launch.grid, (BLOCK, 1, 1), (i64(nx), i64(ny), i64(launch.width), i64(launch.jper), *data, *results, scratch))
    if launch.scratch_words:
        merge = function(plan.source, device, launch.merge)
        merge(
            launch.merge_grid, (MERGE_BLOCK, 1, 1), (i64(nx), i64(launch.splits), i64(launch.width), *results, scratch)
        )
