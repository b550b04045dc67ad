"""The checked call path of every reduction, without autograd: shapes, batches, NaN checks, engines.

:func:`reduce` is what ``Genred``, ``LazyTensor`` and the linear algebra run underneath;
:mod:`kernla.autograd` builds its torch.autograd nodes on it, and :func:`kernla.genred.reduce`
adds the autograd dispatch on top.

>>> import numpy as np
>>> from kernla.formula import Vi, Vj, call
>>> from kernla.reductions import Reduction
>>> red = Reduction("ArgMin", call("SqDist", Vi(0, 1), Vj(1, 1)))
>>> slots = [Slot("x", CAT_I, 1), Slot("y", CAT_J, 1)]
>>> reduce(red, slots, [np.array([[0.0], [2.9]]), np.array([[3.0], [0.1]])], backend="numpy")[0].ravel()
array([1, 0])
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import arrays as arr
from .engines import get_engine, resolve_backend
from .engines.ranges import Blocks, BlockSparsity
from .engines.ranges import block_sparsity as check_ranges
from .errors import BackendError, FormulaError, InputValueError, ShapeError
from .formula import CAT_I, CAT_J, CAT_PARAM
from .formula.tree import CATEGORY_NAMES, Node
from .reductions import Reduction


@dataclass(frozen=True)
class Slot:
    """One argument of a reduction: its name (for messages), category and vector dimension."""

    name: str
    cat: int
    dim: int

    def describe(self) -> str:
        return f"{self.name!r} ({CATEGORY_NAMES[self.cat]}, dimension {self.dim})"


def as_rows(a: Any, slot: Slot) -> Any:
    """Check an argument's shape against its slot; rows variables become (..., n, D), parameters (..., D)."""
    if arr.kind_of(a) == "scalar":
        if slot.cat != CAT_PARAM or slot.dim != 1:
            raise ShapeError(f"{slot.describe()} needs an array, got the number {a!r}")
        return np.array([a], dtype=np.float64)
    shape = tuple(a.shape)
    if slot.cat == CAT_PARAM:
        if len(shape) == 0 and slot.dim == 1:
            return a.reshape(1)
        if len(shape) == 0 or shape[-1] != slot.dim:
            raise ShapeError(f"{slot.describe()} expects an array of shape (..., {slot.dim}), got shape {shape}")
        return a
    if len(shape) == 1 and slot.dim == 1:
        return a.reshape(shape[0], 1)
    if len(shape) < 2 or shape[-1] != slot.dim:
        raise ShapeError(f"{slot.describe()} expects an array of shape (..., n, {slot.dim}), got shape {shape}")
    return a


def reduce(
    red: Reduction,
    slots: Sequence[Slot],
    args: Sequence[Any],
    axis: int = 1,
    backend: str | None = None,
    ranges: Any = None,
) -> list:
    """Check ``args`` against ``slots``, run ``red`` over ``axis`` and return outputs in the caller's kind.

    ``red`` is written for a reduction over j (axis=1); axis=0 exchanges the roles of i and j.
    Outputs have shape (*batch, n_rows, width). No graph is recorded (see :func:`kernla.genred.reduce`).
    ``ranges``: pykeops' block-sparse ranges tuple, or a :class:`~kernla.engines.ranges.BlockSparsity`
    from :func:`block_sparsity` (checked once, reused), in the caller's frame (i = rows whatever ``axis``).
    """
    c = checked(red, slots, args, axis)
    blocks = None
    if ranges is not None:  # checked in the caller's frame, then turned with the reduction
        sizes_ij = (c.ny, c.nx) if axis == 0 else (c.nx, c.ny)
        sparsity = block_sparsity(ranges, *sizes_ij, batches=int(np.prod(c.batch, dtype=np.int64)))
        blocks = (sparsity.swapped() if axis == 0 else sparsity).over_j
    engine_name = resolve_backend(backend, c.kind.on_gpu, c.red.formulas)
    engine = get_engine(engine_name)
    if blocks is not None and "ranges" not in inspect.signature(engine.run).parameters:
        raise BackendError(f"the {engine_name} engine does not run block-sparse reductions (ranges=)")
    shaped = c.rows_of(args)
    if engine_name == "cuda":
        # the CUDA kernels read and write float16 themselves (float arithmetic inside)
        with _cuda_context(c.kind):
            outputs = _run_batches(engine, c.red, c.slots, shaped, c.dtype, c.batch, c.nx, c.ny, arr.to_cupy, blocks)
    else:
        compute = np.dtype(np.float32) if c.dtype == np.float16 else c.dtype
        outputs = _run_batches(engine, c.red, c.slots, shaped, compute, c.batch, c.nx, c.ny, arr.to_numpy, blocks)
    return [arr.wrap(o, c.kind, c.dtype) for o in outputs]


#: :meth:`Checked.rows` entry of a number: it becomes a 1-element float64 array
NUMBER = "number"


@dataclass(frozen=True)
class Checked:
    """What the checks of a call found: the arrays' kind and dtype, the reduction and slots over j (turned for a
    reduction over i), each argument's row layout, the sizes and the batch shape. They depend on the arguments'
    types, dtypes, shapes and devices only, so :func:`checked` finds them once for all calls with the same."""

    kind: arr.Kind
    dtype: np.dtype
    red: Reduction
    slots: tuple[Slot, ...]
    rows: tuple  # per argument: None (taken as it is), the shape to reshape it to, or NUMBER
    nx: int
    ny: int
    batch: tuple

    def rows_of(self, args: Sequence[Any]) -> list:
        """The arguments as :func:`as_rows` makes them: rows variables (..., n, D), parameters (..., D)."""
        return [
            a if r is None else np.array([a], dtype=np.float64) if r is NUMBER else a.reshape(r)
            for a, r in zip(args, self.rows)
        ]


#: the checks found per (reduction, axis, slots, argument signatures); emptied when full
_CHECKED: dict[tuple, Checked] = {}
_MAX_CHECKED = 1024


def checked(red: Reduction, slots: Sequence[Slot], args: Sequence[Any], axis: int) -> Checked:
    """The checks of a call on ``args``, made once per reduction, axis, slots and argument signature
    (:func:`kernla.arrays.signature`: type, dtype, shape, device); bad input raises the checks' error every time.

    >>> from kernla.formula import Vi, Vj, call
    >>> red = Reduction("Sum", call("SqDist", Vi(0, 2), Vj(1, 2)))
    >>> slots = [Slot("x", CAT_I, 2), Slot("y", CAT_J, 2)]
    >>> c = checked(red, slots, [np.zeros((5, 2)), np.zeros((3, 7, 2))], 1)
    >>> (c.nx, c.ny, c.batch), c is checked(red, slots, [np.ones((5, 2)), np.ones((3, 7, 2))], 1)
    ((5, 7, (3,)), True)
    """
    if axis not in (0, 1):
        raise ShapeError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis!r}")
    key = (red, axis, tuple(slots), tuple(map(arr.signature, args)))
    found = _CHECKED.get(key)
    if found is None:
        found = _check(red, slots, args, axis)
        if len(_CHECKED) >= _MAX_CHECKED:
            _CHECKED.clear()
        _CHECKED[key] = found
    return found


def _check(red: Reduction, slots: Sequence[Slot], args: Sequence[Any], axis: int) -> Checked:
    if len(args) != len(slots):
        raise ShapeError(f"expected {len(slots)} arrays ({', '.join(s.name for s in slots)}), got {len(args)}")
    named = {s.name: a for s, a in zip(slots, args)}
    kind = arr.common_kind(named)
    dtype = arr.common_dtype(named)
    if axis == 0:
        red = red.swap_ij()
        slots = [Slot(s.name, {CAT_I: CAT_J, CAT_J: CAT_I}.get(s.cat, s.cat), s.dim) for s in slots]

    shaped = [as_rows(a, s) for s, a in zip(slots, args)]
    sizes: dict[int, dict[str, int]] = {CAT_I: {}, CAT_J: {}}
    batch_shapes = []
    for s, a in zip(slots, shaped):
        shape = tuple(a.shape)
        if s.cat == CAT_PARAM:
            batch_shapes.append(shape[:-1])
            continue
        sizes[s.cat][s.name] = shape[-2]
        batch_shapes.append(shape[:-2])
    for cat, label in ((CAT_I, "i"), (CAT_J, "j")):
        if len(set(sizes[cat].values())) > 1:
            detail = ", ".join(f"{n!r} has {v}" for n, v in sizes[cat].items())
            raise ShapeError(f"{label}-variables must have the same number of points: {detail}")
    # an index that no variable carries has size 1 (the formula is constant along it)
    nx = next(iter(sizes[CAT_I].values()), 1)
    ny = next(iter(sizes[CAT_J].values()), 1)
    for cat, n in ((CAT_I, nx), (CAT_J, ny)):
        if n == 0:
            name = next(iter(sizes[cat]))
            raise ShapeError(f"{name!r} is empty (0 points); kernla needs at least one point per index")
    if red.K is not None and red.K > ny:
        raise ShapeError(f"{red.name} with K={red.K} needs at least K candidates, got {ny}")
    try:
        batch = np.broadcast_shapes(*batch_shapes) if any(batch_shapes) else ()
    except ValueError:
        detail = ", ".join(f"{s.name!r} has {b}" for s, b in zip(slots, batch_shapes))
        raise ShapeError(f"batch dimensions do not broadcast: {detail}") from None
    if 0 in batch:
        name = next(s.name for s, b in zip(slots, batch_shapes) if 0 in b)
        raise ShapeError(
            f"{name!r} has an empty batch dimension (batch shape {batch}); kernla needs at least one problem per batch"
        )
    rows = tuple(
        NUMBER if arr.kind_of(a) == "scalar" else None if b is a else tuple(b.shape) for a, b in zip(args, shaped)
    )
    return Checked(kind, dtype, red, tuple(slots), rows, nx, ny, batch)


def _run_batches(
    engine,
    red: Reduction,
    slots: Sequence[Slot],
    shaped: list,
    dtype: np.dtype,
    batch: tuple,
    nx: int,
    ny: int,
    convert,
    blocks: Sequence[Blocks] | None = None,
) -> list:
    """Convert, check for NaN (one host sync), run every batch entry, stack the outputs.

    ``blocks``: the block-sparse ranges of each batch entry (in ``np.ndindex`` order), or None.
    """
    # a number too large for the dtype becomes inf, refused below; valid data near the float range may sum to inf
    with np.errstate(over="ignore", invalid="ignore"):
        data = [convert(a, dtype) for a in shaped]
        # fast path: a finite sum proves there is no NaN (and no infinity); else look closer
        finite = isinstance(data[0], np.ndarray) and math.isfinite(sum(float(np.add.reduce(a, None)) for a in data))
    if isinstance(data[0], np.ndarray):
        xp: Any = np
    else:
        import cupy  # optional dependency: the data are CuPy arrays here

        xp = cupy

    if not finite:
        _refuse_nan(slots, data, dtype, xp)

    def run(views: list, b: int) -> list:
        if blocks is None:
            return list(engine.run(red, views, nx, ny))
        return list(engine.run(red, views, nx, ny, ranges=blocks[b]))

    if not batch:
        return run([xp.ascontiguousarray(a) for a in data], 0)
    outputs = []
    for b, index in enumerate(np.ndindex(*batch)):
        views = []
        for s, a in zip(slots, data):
            lead = a.ndim - (1 if s.cat == CAT_PARAM else 2)
            sub = index[len(index) - lead :] if lead else ()
            sub = tuple(0 if a.shape[k] == 1 else i for k, i in enumerate(sub))
            views.append(xp.ascontiguousarray(a[sub]))
        outputs.append(run(views, b))
    return [xp.stack([o[k] for o in outputs]).reshape(batch + outputs[0][k].shape) for k in range(len(outputs[0]))]


def _refuse_nan(slots: Sequence[Slot], data: list, dtype: np.dtype, xp) -> None:
    """InputValueError for NaN in data or a non-finite parameter (one host sync on the GPU)."""
    flags = [(~xp.isfinite(a) if s.cat == CAT_PARAM else xp.isnan(a)).any() for s, a in zip(slots, data)]
    if bool(xp.stack(flags).any()):
        for s, flag in zip(slots, flags):
            if bool(flag):
                what = f"non-finite values in {dtype}" if s.cat == CAT_PARAM else "NaN values"
                raise InputValueError(f"{s.describe()} contains {what}")


@contextmanager
def _cuda_context(kind: arr.Kind):
    """CuPy work on the caller's device, and on torch's current stream for torch tensors."""
    import cupy  # optional dependency: only reached for GPU arrays

    if kind.kind == "cupy":
        with kind.device:
            yield
        return
    if kind.kind != "torch" or kind.device.type != "cuda":
        yield
        return
    import torch  # optional dependency: only reached for torch CUDA tensors

    index = kind.device.index if kind.device.index is not None else torch.cuda.current_device()
    with cupy.cuda.Device(index):
        with cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream):
            yield


def slots_of(aliases: dict[str, Node], formulas: Sequence[Node]) -> list[Slot]:
    """Argument slots, by position, from aliases and inline variables; gaps are errors."""
    by_pos: dict[int, Slot] = {}
    names = {v: n for n, v in aliases.items()}
    for var in list(aliases.values()) + [v for f in formulas for v in f.variables()]:
        pos, dim, cat = var.params
        slot = Slot(names.get(var, f"argument {pos}"), cat, dim)
        if pos in by_pos and (by_pos[pos].cat, by_pos[pos].dim) != (cat, dim):
            raise FormulaError(
                f"position {pos} is used with two meanings: {by_pos[pos].describe()} and "
                f"{CATEGORY_NAMES[cat]}({pos}, {dim})"
            )
        by_pos.setdefault(pos, slot)
    if len(by_pos) != max(by_pos, default=-1) + 1:  # the first gaps only: positions go up to 2**63
        missing = list(itertools.islice((p for p in range(max(by_pos)) if p not in by_pos), 10))
        raise FormulaError(f"no variable is declared at position(s) {missing}{' …' if len(missing) == 10 else ''}")
    return [by_pos[p] for p in range(len(by_pos))]


def block_sparsity(ranges: Any, nx: int, ny: int, batches: int = 1) -> BlockSparsity:
    """A pykeops ranges tuple (NumPy, torch or CuPy arrays, or lists) checked for ``batches`` problems of
    ``nx`` × ``ny``, as :func:`reduce` takes it (see :mod:`kernla.engines.ranges`); a
    :class:`~kernla.engines.ranges.BlockSparsity` is checked against the sizes and returned.

    >>> r = ([[0, 2]], [1], [[1, 3]], [[1, 3]], [1], [[0, 2]])
    >>> block_sparsity(r, 2, 3).over_j[0].pairs
    4
    """
    if not isinstance(ranges, BlockSparsity) and isinstance(ranges, (tuple, list)):
        ranges = tuple(host_integers(a) for a in ranges)
    return check_ranges(ranges, nx, ny, batches)


def host_integers(a: Any) -> np.ndarray:
    """An index array (NumPy, torch, CuPy, a list) as a host NumPy array of its own dtype."""
    try:
        return arr.to_numpy(a, None)
    except arr.ArrayKindError:  # lists and other array-likes
        return np.asarray(a)
