"""Block-sparse reductions: pykeops' ``ranges`` tuples, checked once and put in the form engines run.

A ranges tuple ``(ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)`` (pykeops'
layout; integer arrays) says which blocks of the N×M matrix a reduction visits. For a reduction
over j, the rows ``ranges_i[k, 0] <= i < ranges_i[k, 1]`` reduce over the columns
``redranges_j[l, 0] <= j < redranges_j[l, 1]`` for ``slices_i[k - 1] <= l < slices_i[k]``
(``slices_i[-1]`` read as 0); the last three arrays say the same for a reduction over i (they
describe the same mask, transposed: gradients with respect to j-variables use them). A row that no
range covers, or whose ranges are empty, gets the reduction's value over no column, as in pykeops
(0 for a sum, +inf for a minimum, -inf for a log-sum-exp, NaN for a softmax), except for indices:
kernla's -1 ("no candidate", as for a row of +inf values) where pykeops writes 0, a valid index.

With batch dimensions, a tuple whose indices all lie within one problem (rows < N, columns < M)
applies to every batch entry; otherwise its indices run over the batch entries stacked, row
``b·N + i`` and column ``b·M + j`` for entry ``b`` (the layout pykeops uses inside for batches):
each row range lies in one entry, and its column ranges in the same entry. Beyond pykeops,
kernla refuses what pykeops leaves undefined: row ranges that overlap, and column ranges of one
row range that overlap.

>>> import numpy as np
>>> r = (np.array([[0, 2], [2, 3]]), np.array([1, 2]), np.array([[0, 1], [1, 4]]),
...      np.array([[0, 1], [1, 4]]), np.array([1, 2]), np.array([[0, 2], [2, 3]]))
>>> sp = block_sparsity(r, 3, 4)
>>> sp.over_j[0].kept(np.arange(3)[:, None], np.arange(4)[None, :]).astype(int)
array([[1, 0, 0, 0],
       [1, 0, 0, 0],
       [0, 1, 1, 1]])
>>> sp.over_j[0].pairs, sp.swapped().over_j[0].pairs
(5, 5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DTypeError, InputValueError, ShapeError

#: the names of the six arrays, in order
NAMES = ("ranges_i", "slices_i", "redranges_j", "ranges_j", "slices_j", "redranges_i")


@dataclass(frozen=True, eq=False)
class Blocks:
    """One direction of a ranges tuple for one problem, as the engines run it (a reduction over j).

    ``rows`` (R, 2): row ranges, sorted, covering ``[0, nx)`` exactly (rows that no range of the
    caller covered form ranges of their own, with no columns); ``slices`` (R,): for row range k,
    its column ranges are ``cols[slices[k-1]:slices[k]]`` (``slices[-1]`` read as 0); ``cols``
    (S, 2): column ranges, non-empty, sorted, disjoint and not touching within each row range (touching
    ranges of the caller are joined). All int64, C order.
    """

    rows: np.ndarray
    slices: np.ndarray
    cols: np.ndarray
    nx: int
    ny: int

    @property
    def starts(self) -> np.ndarray:
        """(R,) the first column range of each row range (``slices`` shifted by one)."""
        return np.concatenate([[0], self.slices[:-1]]).astype(np.int64)

    @property
    def pairs(self) -> int:
        """The number of (i, j) pairs visited."""
        lengths = np.concatenate([[0], np.cumsum(self.cols[:, 1] - self.cols[:, 0])])
        per_row = lengths[self.slices] - lengths[self.starts]
        return int(((self.rows[:, 1] - self.rows[:, 0]) * per_row).sum())

    def kept(self, i: Any, j: Any) -> np.ndarray:
        """Whether each pair (i, j) is visited, for broadcastable integer arrays ``i`` and ``j``."""
        i, j = np.broadcast_arrays(np.asarray(i, np.int64), np.asarray(j, np.int64))
        k = np.searchsorted(self.rows[:, 0], i, side="right") - 1
        if not len(self.cols):
            return np.zeros(i.shape, bool)
        owner = np.repeat(np.arange(len(self.rows), dtype=np.int64), self.slices - self.starts)
        keys = owner * (self.ny + 1) + self.cols[:, 0]  # sorted: row ranges in order, columns sorted in each
        p = np.searchsorted(keys, k * (self.ny + 1) + j, side="right") - 1
        inside = (p >= self.starts[k]) & (p < self.slices[k])
        return inside & (j < self.cols[np.clip(p, 0, None), 1])

    def tiles(self, rows_per_block: int) -> np.ndarray:
        """(blocks, 3) int64 ``[row range, first row, end row]``: each row range cut in blocks of at most
        ``rows_per_block`` rows (the CUDA engine's grid; a row range with no column keeps its blocks,
        which write the reduction's empty value)."""
        lengths = self.rows[:, 1] - self.rows[:, 0]
        counts = -(-lengths // rows_per_block)
        k = np.repeat(np.arange(len(self.rows), dtype=np.int64), counts)
        first = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        begin = self.rows[k, 0] + first * rows_per_block
        return np.ascontiguousarray(np.stack([k, begin, np.minimum(begin + rows_per_block, self.rows[k, 1])], 1))


@dataclass(frozen=True, eq=False)
class BlockSparsity:
    """A checked ranges tuple for ``batches`` problems of ``nx`` rows and ``ny`` columns.

    ``over_j[b]`` / ``over_i[b]``: the :class:`Blocks` of batch entry b for a reduction over j / over
    i (the latter in the transposed frame: its rows are the columns j).
    """

    over_j: tuple[Blocks, ...]
    over_i: tuple[Blocks, ...]
    nx: int
    ny: int

    @property
    def batches(self) -> int:
        return len(self.over_j)

    def swapped(self) -> BlockSparsity:
        """The same mask transposed (i and j exchanged)."""
        return BlockSparsity(self.over_i, self.over_j, self.ny, self.nx)


def swap_axes(ranges: Sequence[Any] | None) -> tuple | None:
    """A ranges tuple for the transposed matrix: its two triples exchanged (pykeops' ``swap_axes``).

    >>> swap_axes(("ri", "si", "rj", "rj_", "sj", "ri_"))
    ('rj_', 'sj', 'ri_', 'ri', 'si', 'rj')
    """
    if ranges is None:
        return None
    r = tuple(ranges)
    if len(r) != 6:
        raise ShapeError(f"ranges must be a tuple of 6 arrays {NAMES}, got {len(r)} items")
    return r[3:] + r[:3]


def block_sparsity(ranges: Any, nx: int, ny: int, batches: int = 1) -> BlockSparsity:
    """Check a ranges tuple (host NumPy arrays) or a :class:`BlockSparsity` against the problem's sizes.

    ShapeError for a wrong number of arrays or wrong shapes, DTypeError for non-integer arrays,
    InputValueError for indices out of bounds, decreasing slices, ranges crossing batch entries, or
    overlapping ranges.
    """
    if isinstance(ranges, BlockSparsity):
        if (ranges.nx, ranges.ny, ranges.batches) != (nx, ny, batches):
            raise ShapeError(
                f"these ranges were checked for {ranges.batches} problem(s) of {ranges.nx}x{ranges.ny}, "
                f"not {batches} of {nx}x{ny}"
            )
        return ranges
    if not isinstance(ranges, (tuple, list)) or len(ranges) != 6:
        got = f"{len(ranges)} items" if isinstance(ranges, (tuple, list)) else type(ranges).__name__
        raise ShapeError(f"ranges must be a tuple of 6 integer arrays {NAMES}, got {got}")
    arrays = [_integers(a, name) for a, name in zip(ranges, NAMES)]
    bounds = (nx, None, ny, ny, None, nx)
    shared = batches > 1 and all(n is None or a.size == 0 or a.max() <= n for a, n in zip(arrays, bounds))
    stacked = 1 if shared else batches  # indices within one problem: the same blocks for every entry
    over_j = _direction(arrays[0], arrays[1], arrays[2], NAMES[:3], nx, ny, stacked)
    if nx == ny and all(a is b for a, b in zip(arrays[3:], arrays[:3])):  # a symmetric mask (as truncate builds)
        over_i = over_j
    else:
        over_i = _direction(arrays[3], arrays[4], arrays[5], NAMES[3:], ny, nx, stacked)
    return BlockSparsity(over_j * (batches // stacked), over_i * (batches // stacked), nx, ny)


def _integers(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise DTypeError(f"ranges: {name} must be an integer array (int64 as pykeops builds), got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _direction(
    rows: np.ndarray, slices: np.ndarray, cols: np.ndarray, names: Sequence[str], nx: int, ny: int, batches: int
) -> tuple[Blocks, ...]:
    """One triple checked, split by batch entry and normalised (see :class:`Blocks`)."""
    rn, sn, cn = names
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise ShapeError(f"ranges: {rn} must have shape (R, 2), got {rows.shape}")
    if slices.shape != (len(rows),):
        raise ShapeError(f"ranges: {sn} must have shape ({len(rows)},), one entry per row of {rn}, got {slices.shape}")
    if cols.ndim != 2 or cols.shape[1] != 2:
        raise ShapeError(f"ranges: {cn} must have shape (S, 2), got {cols.shape}")
    _bounds(rows, rn, nx * batches, "rows" if batches == 1 else f"rows of the {batches} stacked batch entries")
    _bounds(cols, cn, ny * batches, "columns" if batches == 1 else f"columns of the {batches} stacked batch entries")
    ends = slices
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    bad = np.flatnonzero((ends < starts) | (ends > len(cols)))
    if bad.size:
        k = int(bad[0])
        raise InputValueError(
            f"ranges: {sn} must be non-decreasing, from 0 to at most {len(cols)} (the length of {cn}); "
            f"entry {k} is {int(ends[k])} after {int(starts[k])}"
        )
    # non-empty row ranges, sorted; their non-empty column ranges
    live = np.flatnonzero(rows[:, 1] > rows[:, 0])
    live = live[np.argsort(rows[live, 0], kind="stable")]
    r = rows[live]
    if len(r) > 1 and (r[1:, 0] < r[:-1, 1]).any():
        k = int(np.flatnonzero(r[1:, 0] < r[:-1, 1])[0])
        raise InputValueError(f"ranges: {rn} has overlapping ranges {r[k].tolist()} and {r[k + 1].tolist()}")
    counts = ends[live] - starts[live]
    owner = np.repeat(np.arange(len(live)), counts)
    s0, s1 = starts[live], ends[live]
    if len(live) and s0[0] == 0 and s1[-1] == len(cols) and (s0[1:] == s1[:-1]).all():
        c = cols  # the live row ranges' column ranges are all of them, in order (no copy)
    else:
        total = int(counts.sum())
        c = cols[np.repeat(s0, counts) + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)]
    nonempty = c[:, 1] > c[:, 0]
    if not nonempty.all():
        c, owner = c[nonempty], owner[nonempty]
    if len(c) > 1 and ((owner[1:] < owner[:-1]) | ((owner[1:] == owner[:-1]) & (c[1:, 0] < c[:-1, 0]))).any():
        order = np.lexsort((c[:, 0], owner))  # (sorted already, as from_matrix builds them: no sort)
        c, owner = c[order], owner[order]
    same = owner[1:] == owner[:-1]
    if (same & (c[1:, 0] < c[:-1, 1])).any():
        k = int(np.flatnonzero(same & (c[1:, 0] < c[:-1, 1]))[0])
        raise InputValueError(
            f"ranges: the {cn} ranges of {rn} {r[owner[k]].tolist()} overlap: {c[k].tolist()} and {c[k + 1].tolist()}"
        )
    c, owner = _coalesce(c, owner)
    entry = r[:, 0] // nx
    if ((r[:, 1] - 1) // nx != entry).any():
        k = int(np.flatnonzero((r[:, 1] - 1) // nx != entry)[0])
        raise InputValueError(f"ranges: {rn} range {r[k].tolist()} crosses batch entries of {nx} rows")
    col_entry = entry[owner]
    wrong = (c[:, 0] // ny != col_entry) | ((c[:, 1] - 1) // ny != col_entry)
    if wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        raise InputValueError(
            f"ranges: {cn} range {c[k].tolist()} of {rn} range {r[owner[k]].tolist()} is not in the same batch "
            f"entry (entries of {nx} rows and {ny} columns)"
        )
    per_range = np.bincount(owner, minlength=len(r))
    out = []
    for b in range(batches):
        lo, hi = np.searchsorted(entry, [b, b + 1])
        c_lo, c_hi = int(per_range[:lo].sum()), int(per_range[:hi].sum())
        out.append(_complete(r[lo:hi] - b * nx, per_range[lo:hi], c[c_lo:c_hi] - b * ny, nx, ny))
    return tuple(out)


def _coalesce(cols: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted column ranges with touching neighbours of one owner joined ([0, 3) and [3, 7) give [0, 7)):
    the same pairs in the same order, in fewer, longer runs for the engines."""
    if len(cols) < 2:
        return cols, owner
    first = np.concatenate([[True], (owner[1:] != owner[:-1]) | (cols[1:, 0] != cols[:-1, 1])])
    last = np.concatenate([first[1:], [True]])
    return np.stack([cols[first, 0], cols[last, 1]], 1), owner[first]


def _bounds(a: np.ndarray, name: str, n: int, what: str) -> None:
    bad = np.flatnonzero((a[:, 0] < 0) | (a[:, 1] < a[:, 0]) | (a[:, 1] > n))
    if bad.size:
        k = int(bad[0])
        raise InputValueError(
            f"ranges: {name}[{k}] = {a[k].tolist()} is not a range [start, end) with 0 <= start <= end <= {n} "
            f"(the number of {what})"
        )


def _complete(rows: np.ndarray, counts: np.ndarray, cols: np.ndarray, nx: int, ny: int) -> Blocks:
    """Sorted disjoint row ranges with their column counts, completed to cover [0, nx) (gaps: no column)."""
    prev_end = np.concatenate([[0], rows[:-1, 1]]).astype(np.int64)
    gap = rows[:, 0] > prev_end
    tail = [[rows[-1, 1] if len(rows) else 0, nx]]
    gaps = np.concatenate([np.stack([prev_end[gap], rows[gap, 0]], 1), tail])
    gaps = gaps[gaps[:, 1] > gaps[:, 0]]
    full = np.concatenate([rows, gaps]).astype(np.int64)
    full_counts = np.concatenate([counts, np.zeros(len(gaps), np.int64)])
    order = np.argsort(full[:, 0], kind="stable")
    return Blocks(
        np.ascontiguousarray(full[order]),
        np.ascontiguousarray(np.cumsum(full_counts[order]).astype(np.int64)),
        np.ascontiguousarray(cols, dtype=np.int64).reshape(-1, 2),
        nx,
        ny,
    )
