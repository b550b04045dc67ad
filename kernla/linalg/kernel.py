"""``Kernel``: the matrix ``K_ij = F(x_i, y_j, params)`` of a scalar formula and its data, unscaled.

It checks and holds the data (converted once to the compute namespace: NumPy on the host, CuPy
on a GPU) and computes what a :class:`~kernla.linalg.KernelOperator` needs from K: products
(one kernla ``Sum`` reduction ``Σ_j F_ij B_j`` for all columns of B), columns (through the
engine), dense blocks and the diagonal (evaluated with NumPy). The operator's scale and shift
are not here (see :mod:`kernla.linalg.affine`).

>>> import numpy as np
>>> from kernla.formula import parse, parse_aliases
>>> x = np.array([[0.0], [1.0]])
>>> K = Kernel.build(parse("Exp(-SqDist(X, Y))", parse_aliases(["X = Vi(1)", "Y = Vj(1)"])),
...                  [(x, 0), (x, 1)], ["X", "Y"])
>>> K.shape, K.product(np.ones((2, 1))).round(4).tolist()
((2, 2), [[1.3679], [1.3679]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import arrays as arr
from ..core import block_sparsity
from ..engines.ranges import BlockSparsity
from ..errors import DTypeError, InputValueError, ShapeError
from ..formula import CAT_I, CAT_J, CAT_PARAM, Var, call
from ..formula.evaluate import evaluate
from ..formula.tree import Node, swap_ij
from ..genred import Slot, reduce
from ..reductions import Reduction
from . import _compute as compute
from .bindings import compact
from .truncation import Order

#: largest intermediate (in scalars) when evaluating blocks of the matrix with NumPy
BLOCK_ELEMENTS = 1 << 21

#: columns per engine call in Kernel.columns (each call costs N·chunk² adds besides the kernel)
COLUMN_CHUNK = 16

_SWAP = {CAT_I: CAT_J, CAT_J: CAT_I, CAT_PARAM: CAT_PARAM}


def _slots(variables: Sequence, names: Sequence) -> tuple[list, tuple[int, int]]:
    """The reduction slots of ``variables`` and the matrix shape (rows from Vi, columns from Vj)."""
    sizes: dict[int, dict[str, int]] = {CAT_I: {}, CAT_J: {}}
    slots = []
    for name, (data, cat) in zip(names, variables):
        scalar = arr.kind_of(data) == "scalar"
        ndim = 0 if scalar else len(data.shape)
        if cat == CAT_PARAM:
            if ndim > 1:
                raise ShapeError(f"parameter {name!r} must be a number or a 1-D array, got shape {tuple(data.shape)}")
        elif ndim != 2:
            raise ShapeError(
                f"{name!r} must be a 2-D (points, dimension) array: a KernelOperator "
                f"has no batch dimensions; got shape {tuple(data.shape)}"
            )
        else:
            sizes[cat][name] = int(data.shape[0])
        slots.append(Slot(name, cat, 1 if scalar else int(data.shape[-1])))
    for cat, label in ((CAT_I, "rows (Vi)"), (CAT_J, "columns (Vj)")):
        if not sizes[cat]:
            raise ShapeError(f"a KernelOperator's formula needs a variable indexed by its {label}")
        if len(set(sizes[cat].values())) > 1:
            detail = ", ".join(f"{n!r} has {v}" for n, v in sizes[cat].items())
            raise ShapeError(f"the {label} variables must have the same number of points: {detail}")
        if next(iter(sizes[cat].values())) == 0:
            raise ShapeError(f"{next(iter(sizes[cat]))!r} is empty (0 points)")
    return slots, (next(iter(sizes[CAT_I].values())), next(iter(sizes[CAT_J].values())))


@dataclass(frozen=True, eq=False, repr=False)
class Kernel:
    """A scalar formula and its checked data; build it with :meth:`Kernel.build`.

    ``source``: the data as given (torch tensors keep their graph); ``data``: the same in the
    compute namespace ``xp`` and ``dtype`` (numbers kept); ``cats``: each variable's category;
    ``kind``: the array kind results come back as.
    """

    formula: Node
    names: tuple
    cats: tuple
    source: tuple
    data: tuple
    slots: tuple
    backend: str | None
    dtype: np.dtype
    shape: tuple
    kind: arr.Kind
    xp: Any
    on_gpu: bool
    has_torch: bool  # products may need a torch graph
    sparsity: BlockSparsity | None = None  # block-sparse ranges: K is zero outside the blocks they keep
    order: Order | None = None  # truncate=: data stored sorted by cluster; methods take and give the caller's order

    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} Kernel {self.formula}, dtype={self.dtype}>"

    @classmethod
    def build(
        cls,
        formula: Node,
        variables: Sequence,
        names: Sequence,
        backend: str | None = None,
        ranges: Any = None,
        order: Order | None = None,
    ) -> Kernel:
        """The kernel of ``formula``, whose ``Var`` positions index ``variables`` ((data, category) pairs).

        ``ranges``: pykeops' block-sparse ranges tuple (checked here, once): the entries outside the
        blocks it keeps are zero, and products visit only the kept blocks.
        """
        formula, variables, names = compact(formula, variables, names)
        if formula.dim != 1:
            raise ShapeError(f"a KernelOperator needs a scalar formula, got dimension {formula.dim}")
        arrays = {n: d for n, (d, _) in zip(names, variables)}
        kind = arr.common_kind(arrays)
        dtype = arr.common_dtype(arrays)
        if dtype == np.float16:
            raise DTypeError("KernelOperator works on float32 or float64 data, got float16")
        slots, shape = _slots(variables, names)
        xp, on_gpu = compute.namespace(kind.on_gpu)
        source = tuple(d for d, _ in variables)
        data = tuple(
            d if arr.kind_of(d) == "scalar" else compute.to_compute(d, on_gpu, dtype, n)
            for n, (d, _) in zip(names, variables)
        )
        return cls(
            formula,
            tuple(names),
            tuple(c for _, c in variables),
            source,
            data,
            tuple(slots),
            backend,
            dtype,
            shape,
            kind,
            xp,
            on_gpu,
            any(compute.is_torch(d) for d in source),
            None if ranges is None else block_sparsity(ranges, *shape),
            order,
        )

    def transposed(self) -> Kernel:
        """Kᵀ: the formula with i and j exchanged."""
        variables = list(zip(self.source, [_SWAP[c] for c in self.cats]))
        ranges = None if self.sparsity is None else self.sparsity.swapped()
        order = None if self.order is None else self.order.swapped()
        return Kernel.build(swap_ij(self.formula), variables, self.names, self.backend, ranges, order)

    def host_copy(self, dtype: Any) -> Kernel:
        """The same kernel on host copies of its compute data in ``dtype`` (e.g. float64 for a solve)."""
        variables = [
            (d if arr.kind_of(d) == "scalar" else np.asarray(d, dtype=dtype), c) for d, c in zip(self.data, self.cats)
        ]
        return Kernel.build(self.formula, variables, self.names, self.backend, self.sparsity, self.order)

    def kept(self, rows: Any, cols: Any) -> np.ndarray | None:
        """Whether K keeps each entry (rows[k], cols[k]) (broadcastable index arrays), or None: all kept."""
        return None if self.sparsity is None else self.sparsity.over_j[0].kept(rows, cols)

    def positions(self, rows: Any, cols: Any) -> tuple[Any, Any]:
        """Where the caller's rows and columns (index arrays; None: all) sit in the stored data."""
        return (rows, cols) if self.order is None else self.order.locate(rows, cols)

    # -- products --------------------------------------------------------------------------------
    def product(self, V: Any, transpose: bool = False) -> Any:
        """``K @ V`` (or ``Kᵀ @ V``) for a compute array V of shape (n, w); one reduction."""
        w = int(V.shape[1])
        n_out = self.shape[1 if transpose else 0]
        if w == 0:
            return self.xp.zeros((n_out, 0), dtype=self.dtype)
        cat = CAT_I if transpose else CAT_J
        red = Reduction("Sum", call("Mult", self.formula, Var(len(self.data), w, cat)))
        slots = [*self.slots, Slot("right-hand side", cat, w)]
        if self.order is not None:  # stored sorted by cluster: sort V, and put the result back in order
            V = V[self.xp.asarray(self.order.into(transpose))]
        out = reduce(red, slots, [*self.data, V], 0 if transpose else 1, self.backend, self.sparsity)[0]
        return out if self.order is None else out[self.xp.asarray(self.order.back(transpose))]

    def columns(self, cols: Sequence[int], chunk: int = COLUMN_CHUNK) -> np.ndarray:
        """The columns ``K[:, cols]`` as a host float64 (n, len(cols)) array, computed by the engine.

        ``chunk`` columns per call: the j-variables restricted to those points and the right-hand
        side an indicator (identity) block, ``Σ_j F(x_i, y_j) e_j`` — one kernel product with
        ``chunk`` rows on the j side, costing N·chunk kernel evaluations (and N·chunk² adds).
        """
        index = np.asarray(cols, dtype=np.int64).reshape(-1)
        n, m = self.shape
        if index.size and (index.min() < 0 or index.max() >= m):
            raise InputValueError(f"column indices must lie in [0, {m}), got {index.min()}..{index.max()}")
        index = self.positions(None, index)[1]
        out = np.empty((n, index.size))
        xp = self.xp
        for c0 in range(0, index.size, chunk):
            sel = index[c0 : c0 + chunk]
            w = int(sel.size)
            where = xp.asarray(sel)
            data = [d[where] if c == CAT_J and arr.kind_of(d) != "scalar" else d for d, c in zip(self.data, self.cats)]
            red = Reduction("Sum", call("Mult", self.formula, Var(len(data), w, CAT_J)))
            slots = [*self.slots, Slot("column indicator", CAT_J, w)]
            block = compute.to_host(reduce(red, slots, [*data, xp.eye(w, dtype=self.dtype)], 1, self.backend)[0])
            kept = self.kept(np.arange(n)[:, None], sel[None, :])
            out[:, c0 : c0 + w] = block if kept is None else block * kept
        return out if self.order is None else out[self.order.inv_x]

    # -- entries evaluated with NumPy ------------------------------------------------------------
    def _host_values(self, cat_rows: dict[int, np.ndarray | None]) -> dict[int, np.ndarray]:
        """NumPy values of each variable; i/j-variables restricted to the given row indices."""
        values = {}
        for pos, (data, cat) in enumerate(zip(self.data, self.cats)):
            if arr.kind_of(data) == "scalar":
                values[pos] = np.array([data], dtype=self.dtype)
                continue
            host = compute.to_host(data)
            if cat != CAT_PARAM and cat_rows.get(cat) is not None:
                host = host[cat_rows[cat]]
            values[pos] = host
        return values

    def _widest(self) -> int:
        return max(node.dim for node in self.formula.walk())

    def block(self, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
        """The dense block ``K[rows][:, cols]`` as a host NumPy array, evaluated in chunks of rows."""
        rows, cols = self.positions(rows, cols)
        values = self._host_values({CAT_I: rows, CAT_J: cols})
        n = self.shape[0] if rows is None else len(rows)
        m = self.shape[1] if cols is None else len(cols)
        chunk = max(1, BLOCK_ELEMENTS // max(1, m * self._widest()))
        out = np.empty((n, m), dtype=self.dtype)
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            local = {}
            for pos, cat in enumerate(self.cats):
                v = values[pos]
                local[pos] = v[i0:i1, None, :] if cat == CAT_I else v[None, :, :] if cat == CAT_J else v
            block = evaluate(self.formula, local, self.dtype)
            out[i0:i1] = np.broadcast_to(block, (i1 - i0, m, 1))[..., 0]
        all_rows = np.arange(self.shape[0]) if rows is None else np.asarray(rows)
        all_cols = np.arange(self.shape[1]) if cols is None else np.asarray(cols)
        kept = self.kept(all_rows[:, None], all_cols[None, :])
        return out if kept is None else out * kept

    def diagonal(self) -> np.ndarray:
        """``F(x_i, y_i)`` for each i, as a host NumPy array (square kernels only)."""
        if self.shape[0] != self.shape[1]:
            raise ShapeError(f"the diagonal is defined for square operators; this one is {self.shape}")
        rows, cols = self.positions(None, None)
        values = self._host_values({CAT_I: rows, CAT_J: cols})
        n = self.shape[0]
        out = np.empty(n, dtype=self.dtype)
        chunk = max(1, BLOCK_ELEMENTS // max(1, self._widest()))
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            local = {
                pos: (values[pos][i0:i1] if cat != CAT_PARAM else values[pos]) for pos, cat in enumerate(self.cats)
            }
            d = evaluate(self.formula, local, self.dtype)
            out[i0:i1] = np.broadcast_to(d, (i1 - i0, 1))[:, 0]
        kept = self.kept(np.arange(n) if rows is None else rows, np.arange(n) if cols is None else cols)
        return out if kept is None else out * kept
