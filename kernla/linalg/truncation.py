r"""Automatic truncation of a decaying kernel, with a certified bound on the error of every product.

:func:`truncate` clusters the points ``x`` (rows) and ``y`` (columns) on grids sized from the
bandwidth, takes each cluster's bounding box, and keeps the cluster pairs (A, B) whose boxes are closer
than the cutoff radius ``r`` (``k(r) ≤ eps``, found by bisection):

.. math::  \text{keep}(A, B) \iff d(A, B) < r, \qquad
           d(A, B) = \min_{x \in \text{box}(A),\, y \in \text{box}(B)} |x - y|,

which are exactly the pairs with ``k(d(A, B)) > eps`` up to the bisection's precision and a relative
margin of 1e-9 on distances, both on the side of keeping more.

**The bound.** Let ``k`` be a non-increasing profile with ``|K(x, y)| ≤ k(|x − y|)`` (for the kernels
below, ``K(x, y) = k(|x − y|)``) and ``K_t`` the matrix with the dropped pairs set to zero. A dropped
pair (i, j) has ``x_i ∈ A``, ``y_j ∈ B`` with ``d(A, B) ≥ r``, and ``|x_i − y_j| ≥ d(A, B)`` since
both points lie in their boxes, so ``|K_ij| ≤ k(|x_i − y_j|) ≤ k(r) ≤ ε``. Hence for
every row i and every vector b,

.. math::  |(K b − K_t b)_i| = \Big|\sum_{j \text{ dropped}} K_{ij} b_j\Big|
           \le \varepsilon \sum_j |b_j| = \varepsilon \|b\|_1,

that is ``‖K b − K_t b‖_∞ ≤ ε ‖b‖_1``; the same entrywise bound gives the transposed one,
``‖Kᵀ c − K_tᵀ c‖_∞ ≤ ε ‖c‖_1``, and also ``‖K b − K_t b‖_∞ ≤ ε · M · ‖b‖_∞``. For y = x the kept
set is symmetric (same clusters on both sides, a symmetric test), so ``K_t`` stays symmetric and can
be solved with conjugate gradients. The bound is on exact arithmetic on the given points (float64
boxes; the engine's own rounding in the kept products is not part of it).

**Kept set.** Candidates come from the grids: for each x-cluster, the y-pencils (rows of y-cells
along the last axis) whose box lies within the cutoff radius ``r`` (``k(r) ≤ ε``), and in each
pencil the y-cells within the remaining distance (floating-point subtraction, division and floor are
monotone, so a point within reach is never outside the window); every candidate is then tested
on its boxes. Block pairs that pass are merged into ``[start, end)`` runs of consecutive clusters,
so one range covers a run of neighbouring cells.

Points must be sorted by cluster: row i of the sorted problem is ``x[perm_x[i]]``. The ranges are
pykeops' 6-tuple on the sorted points (see :func:`kernla.cluster.numpy.from_matrix`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(size=(500, 2))
>>> t = truncate(x, kernel="gaussian", sigma=0.02, eps=1e-6)
>>> t.info.fraction_kept < 0.15, t.info.bound
(True, 1e-06)
>>> xs = x[t.perm_x]
>>> K = np.exp(-((xs[:, None] - xs[None]) ** 2).sum(-1) / (2 * 0.02**2))
>>> b = rng.normal(size=500)
>>> bool(np.abs(K @ b - (K * t.mask()) @ b).max() <= 1e-6 * np.abs(b).sum())
True
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .. import arrays as arr
from ..cluster.numpy import Ranges, cell_indices, cluster_ranges, row_major_keys
from ..errors import ArgumentTypeError, InputValueError, ShapeError
from ..formula import CAT_I, CAT_J

#: a non-increasing bound ``k(r)`` of |K(x, y)| at distance r = |x − y| (NumPy in, NumPy out)
Profile = Callable[[np.ndarray], np.ndarray]

#: relative margin on box distances: rounding in them can only keep more pairs
MARGIN = 1e-9

#: default cell sides as fractions of the cutoff radius, by dimension (rows, columns); finer cells keep
#: fewer pairs but make more, smaller blocks: measured in docs/benchmarks.md ("Block-sparse and truncation")
CELL_FRACTION = {1: (0.125, 0.0625), 2: (0.25, 0.125), 3: (1 / 3, 1 / 3)}

#: beyond the table: candidates grow like (2r / cell)^(D-1) per cluster
CELL_FRACTION_HIGH_D = (0.5, 0.5)

#: cells hold at least about this many points at the points' mean density: finer cells add more blocks
#: (and clustering time) than the pairs they save (measured: docs/benchmarks.md)
MIN_POINTS_PER_CELL = 8

#: candidate block pairs tested at once (memory: a few arrays of this length)
CHUNK = 1 << 22


def profile(kernel: str, sigma: float, nu: float = 1.5) -> Profile:
    """The kernel's value as a function of the distance r, with kernla.kernels' conventions.

    >>> float(profile("gaussian", 2.0)(np.array(2.0)))  # exp(-r² / (2σ²)) at r = σ
    0.6065306597126334
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputValueError(f"sigma must be a positive finite number, got {sigma!r}")
    s = float(sigma)
    if kernel == "gaussian":
        return lambda r: np.exp(-(r**2) / (2 * s * s))
    if kernel == "laplacian" or (kernel == "matern" and nu == 0.5):
        return lambda r: np.exp(-r / s)
    if kernel == "matern" and nu in (1.5, 2.5):
        g = math.sqrt(3.0 if nu == 1.5 else 5.0) / s
        h = 0.0 if nu == 1.5 else 5.0 / (3 * s * s)
        return lambda r: (1 + g * r + h * r**2) * np.exp(-g * r)
    if kernel == "cauchy":
        return lambda r: 1 / (1 + (r / s) ** 2)
    if kernel == "inverse_multiquadric":
        return lambda r: 1 / np.sqrt(1 + (r / s) ** 2)
    raise InputValueError(
        f"no decay bound for kernel {kernel!r} (nu={nu!r}): use gaussian, laplacian, matern (nu 0.5, 1.5, 2.5), "
        "cauchy, inverse_multiquadric, or pass a non-increasing function of the distance"
    )


def cutoff_radius(k: Profile, eps: float, scale: float = 1.0) -> float:
    """A radius r with ``k(r) ≤ eps``, below which ``k > eps`` may hold (0 if ``k(0) ≤ eps``, inf if never).

    Every distance d with ``k(d) > eps`` is smaller than it (k non-increasing); found by doubling from
    ``scale`` and bisection.

    >>> r = cutoff_radius(profile("gaussian", 1.0), 1e-6)
    >>> bool(abs(r - math.sqrt(2 * math.log(1e6))) < 1e-9)
    True
    """
    if float(k(np.array(0.0))) <= eps:
        return 0.0
    lo, hi = 0.0, float(scale)
    while float(k(np.array(hi))) > eps:
        lo, hi = hi, 2 * hi
        if hi > 1e300:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if float(k(np.array(mid))) > eps else (lo, mid)
    return hi


@dataclass(frozen=True)
class TruncationInfo:
    """What :func:`truncate` kept, and the bound it certifies: ``‖K b − K_t b‖_∞ ≤ bound · ‖b‖_1``."""

    bound: float
    radius: float
    pairs_kept: int
    pairs_total: int
    blocks_kept: int
    clusters: tuple[int, int]
    cells: tuple[float, float]
    seconds: float

    @property
    def fraction_kept(self) -> float:
        """Kept point pairs over all N·M pairs."""
        return self.pairs_kept / self.pairs_total

    def error_bound(self, b: Any) -> float:
        """The certified bound ``bound · ‖b‖_1`` on ``‖K b − K_t b‖_∞`` (b: a vector, or columns)."""
        return self.bound * float(np.abs(np.asarray(b)).sum(axis=0).max())


@dataclass(frozen=True)
class Clusters:
    """Points sorted by grid cell: ``perm`` (sorted row k is point ``perm[k]``), the cells' row-major
    ``keys`` (sorted, one per cluster), ``ranges`` ([start, end) slices) and bounding boxes ``low``/``high``
    (D, C): one row per axis, so that gathering one axis reads contiguous memory."""

    perm: np.ndarray
    keys: np.ndarray
    ranges: np.ndarray
    low: np.ndarray
    high: np.ndarray
    extent: np.ndarray  # cells per axis of the grid
    cell: float  # the cells' side

    @classmethod
    def on_grid(cls, points: np.ndarray, cell: float, origin: np.ndarray, extent: np.ndarray) -> Clusters:
        keys = row_major_keys(np.minimum(cell_indices(points, cell, origin), extent - 1), extent)
        if keys is None:
            raise InputValueError(f"cells of side {cell} make too fine a grid: use larger cells")
        perm = np.argsort(keys, kind="stable")
        keys = keys[perm]
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        ranges = cluster_ranges(None, np.diff(np.append(starts, len(keys))))
        sorted_points = points[perm]
        low = np.ascontiguousarray(np.minimum.reduceat(sorted_points, starts, axis=0).T)
        high = np.ascontiguousarray(np.maximum.reduceat(sorted_points, starts, axis=0).T)
        return cls(perm, keys[starts], ranges, low, high, extent, cell)

    @property
    def count(self) -> int:
        return len(self.keys)

    @cached_property
    def pencils(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of cells along the last axis: their keys (the key over the leading axes) and the
        bounding box of their points in the leading axes."""
        lead = self.keys // self.extent[-1]
        first = np.flatnonzero(np.concatenate([[True], lead[1:] != lead[:-1]]))
        low = np.minimum.reduceat(self.low[:-1], first, axis=1)
        high = np.maximum.reduceat(self.high[:-1], first, axis=1)
        return lead[first], low, high


def _gap2(box_a: tuple[np.ndarray, np.ndarray], a: np.ndarray, box_b: tuple[np.ndarray, np.ndarray], b: np.ndarray):
    """Squared distances between the boxes ``a`` of ``box_a`` and ``b`` of ``box_b`` ((low, high), (D, C) each)."""
    out = np.zeros(len(a))
    for axis in range(box_a[0].shape[0]):
        gap = np.maximum(box_b[0][axis][b] - box_a[1][axis][a], box_a[0][axis][a] - box_b[1][axis][b])
        np.maximum(gap, 0.0, out=gap)
        out += gap * gap
    return out


def _expand(first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For intervals ``[first_k, stop_k)``: the interval index and the value of every member."""
    length = stop - first
    owner = np.repeat(np.arange(len(first)), length)
    value = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length) + first[owner]
    return owner, value


def _leading_windows(xc: Clusters, yc: Clusters, reach: float, cell: float, origin: np.ndarray, rows: np.ndarray):
    """(x-cluster, y-pencil key) candidates for the x-clusters ``rows``: pencils whose cells lie within
    ``reach`` of the cluster's box on the leading axes."""
    d = len(origin) - 1
    lo = np.floor((xc.low[:d, rows].T - reach - origin[:d]) / cell).astype(np.int64)
    hi = np.floor((xc.high[:d, rows].T + reach - origin[:d]) / cell).astype(np.int64)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, yc.extent[:d] - 1)
    width = np.maximum(hi - lo + 1, 0)
    owner, t = _expand(np.zeros(len(rows), dtype=np.int64), np.prod(width, axis=1))
    strides = np.cumprod(np.concatenate([yc.extent[1:d], [1]])[::-1])[::-1]
    lead = np.zeros(len(t), dtype=np.int64)
    for axis in range(d - 1, -1, -1):
        w = width[owner, axis]
        lead += (lo[owner, axis] + t % w) * strides[axis]
        t = t // w
    return rows[owner], lead


def _candidates(xc: Clusters, yc: Clusters, radius: float, cell: float, origin: np.ndarray, rows: np.ndarray):
    """(x-cluster, y-cluster) pairs that may pass the box test, for the x-clusters ``rows``."""
    reach = radius * (1 + MARGIN)
    if len(origin) == 1:
        a = rows
        rho = np.full(len(rows), reach)
        base = np.zeros(len(rows), dtype=np.int64)
    else:
        keys, p_low, p_high = yc.pencils
        a, lead = _leading_windows(xc, yc, reach, cell, origin, rows)
        pencil = np.minimum(np.searchsorted(keys, lead), len(keys) - 1)
        g2 = _gap2((xc.low[:-1], xc.high[:-1]), a, (p_low, p_high), pencil)
        near = (keys[pencil] == lead) & (g2 < reach**2)
        a, rho = a[near], np.sqrt(reach**2 - g2[near])
        base = lead[near] * yc.extent[-1]
    n_last = yc.extent[-1]
    lo = np.floor((xc.low[-1][a] - rho - origin[-1]) / cell).astype(np.int64)
    hi = np.floor((xc.high[-1][a] + rho - origin[-1]) / cell).astype(np.int64)
    start = np.searchsorted(yc.keys, base + np.maximum(lo, 0), side="left")
    stop = np.searchsorted(yc.keys, base + np.minimum(hi, n_last - 1), side="right")
    owner, b = _expand(start, np.maximum(stop, start))
    return a[owner], b


def _runs(owner: np.ndarray, member: np.ndarray, n_owner: int, member_ranges: np.ndarray):
    """``(counts, redranges)`` of the blocks (owner, member), sorted by owner then member: consecutive
    members of one owner merge into one ``[start, end)`` range of points, ``counts[k]`` ranges for owner k."""
    new = np.ones(len(owner), dtype=bool)
    new[1:] = (owner[1:] != owner[:-1]) | (member[1:] != member[:-1] + 1)
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [len(owner)]])[: len(starts)] - 1
    red = np.stack([member_ranges[member[starts], 0], member_ranges[member[ends], 1]], axis=1)
    return np.bincount(owner[starts], minlength=n_owner), red.astype(np.int64)


def _kept_blocks(xc: Clusters, yc: Clusters, radius: float, origin: np.ndarray):
    """The kept block pairs (x-cluster a, y-cluster b), sorted by a then b, in chunks of x-clusters:
    ``(rows, a, b)`` with the chunk's x-clusters ``rows``."""
    if radius <= 0:
        return
    cx, cy, dim = xc.cell, yc.cell, len(origin)
    per_row = ((cx + 2 * radius) / cy + 3) ** dim if math.isfinite(radius) else math.inf
    step = max(1, int(CHUNK // min(per_row, yc.count)))
    for r0 in range(0, xc.count, step):
        rows = np.arange(r0, min(xc.count, r0 + step))
        if math.isinf(radius):
            a, b = np.repeat(rows, yc.count), np.tile(np.arange(yc.count), len(rows))
        else:
            a, b = _candidates(xc, yc, radius, cy, origin, rows)
        keep = _gap2((xc.low, xc.high), a, (yc.low, yc.high), b) * (1 - MARGIN) ** 2 < radius**2
        yield rows, a[keep], b[keep]


@dataclass(frozen=True)
class Truncation:
    """The result of :func:`truncate`: ``ranges`` on the sorted points, the permutations and ``info``."""

    ranges: Ranges
    perm_x: np.ndarray
    perm_y: np.ndarray
    info: TruncationInfo

    def mask(self) -> np.ndarray:
        """The dense (N, M) boolean mask of the kept pairs, on the sorted points (for small checks)."""
        r_i, s_i, red_j = self.ranges[:3]
        out = np.zeros((len(self.perm_x), len(self.perm_y)), dtype=bool)
        for k, (a, b) in enumerate(r_i):
            for c, d in red_j[(s_i[k - 1] if k else 0) : s_i[k]]:
                out[a:b, c:d] = True
        return out


def _sparse_side(span: np.ndarray, n: int) -> float:
    """The side of a cube holding ``MIN_POINTS_PER_CELL`` of n points spread over the box ``span``."""
    sides = span[span > 0]
    return float((MIN_POINTS_PER_CELL * np.prod(sides) / n) ** (1 / len(sides))) if len(sides) else 0.0


def _as_points(a: Any, name: str) -> np.ndarray:
    p = arr.to_numpy(a, np.float64)
    p = p.reshape(-1, 1) if p.ndim == 1 else p
    if p.ndim != 2 or p.shape[0] == 0:
        raise ShapeError(f"{name} must be a non-empty (N, D) or (N,) array, got shape {np.shape(a)}")
    if not np.isfinite(p).all():
        raise InputValueError(f"{name} has NaN or infinite coordinates")
    return p


def truncate(
    x: Any,
    y: Any | None = None,
    kernel: str | Profile = "gaussian",
    sigma: float = 1.0,
    eps: float = 1e-6,
    nu: float = 1.5,
    cells: tuple[float, float] | None = None,
) -> Truncation:
    """Cluster ``x`` and ``y`` (None: y = x) and keep the block pairs with ``k(box distance) > eps``.

    ``kernel``: a name of :mod:`kernla.kernels` (``nu`` for ``matern``) with length scale ``sigma``,
    or any non-increasing function of the distance that bounds |K|. ``cells``: the sides of the x and
    y grid cells (default: ``CELL_FRACTION`` of the cutoff radius; for y = x both sides use the
    rows' side, so that the kept set is symmetric). The certified bound is
    ``‖K b − K_t b‖_∞ ≤ eps · ‖b‖_1`` (see the module docstring).
    """
    t0 = time.perf_counter()
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise InputValueError(f"eps must be a positive number, got {eps!r}")
    xs = _as_points(x, "x")
    ys = xs if y is None else _as_points(y, "y")
    if ys.shape[1] != xs.shape[1]:
        raise ShapeError(f"x and y must have the same dimension, got {xs.shape[1]} and {ys.shape[1]}")
    k = profile(kernel, sigma, nu) if isinstance(kernel, str) else kernel
    radius = cutoff_radius(k, eps, float(sigma))
    origin = np.minimum(xs.min(axis=0), ys.min(axis=0))
    span = np.maximum(xs.max(axis=0), ys.max(axis=0)) - origin
    top = float(span.max()) or 1.0
    if cells is None:
        fx, fy = CELL_FRACTION.get(xs.shape[1], CELL_FRACTION_HIGH_D)
        reach = radius if math.isfinite(radius) and radius > 0 else top
        cx = max(reach * fx, _sparse_side(span, len(xs)))
        cells = (cx, cx) if y is None else (cx, max(reach * fy, _sparse_side(span, len(ys))))
    cx, cy = (max(float(c), top * 2.0**-20) for c in cells)
    if not (math.isfinite(cx) and math.isfinite(cy) and cx > 0 and cy > 0):
        raise InputValueError(f"cells must be positive sides, got {cells!r}")
    xc = Clusters.on_grid(xs, cx, origin, np.floor(span / cx).astype(np.int64) + 1)
    yc = xc if y is None and cx == cy else Clusters.on_grid(ys, cy, origin, np.floor(span / cy).astype(np.int64) + 1)
    n_x, n_y = np.diff(xc.ranges, axis=1)[:, 0], np.diff(yc.ranges, axis=1)[:, 0]
    counts, red_j, pairs, blocks, kept = [np.zeros(0, dtype=np.int64)], [np.zeros((0, 2), dtype=np.int64)], 0, 0, []
    small = np.int32 if max(xc.count, yc.count) < 2**31 else np.int64
    for rows, a, b in _kept_blocks(xc, yc, radius, origin):
        c, red = _runs(a - rows[0], b, len(rows), yc.ranges)
        counts.append(c)
        red_j.append(red)
        pairs += int((n_x[a] * n_y[b]).sum())
        blocks += len(a)
        if yc is not xc:
            kept.append((a.astype(small), b.astype(small)))
    counts_i = np.concatenate(counts)
    slices_i = np.cumsum(np.concatenate([counts_i, np.zeros(xc.count - len(counts_i), dtype=np.int64)]))
    slices_i = slices_i.astype(np.int64)
    ranges_j = np.concatenate(red_j)
    if yc is xc:  # a symmetric kept set: the transposed runs are the same arrays (checked once by the engines)
        slices_j, red_i = slices_i, ranges_j
    else:
        a = np.concatenate([np.zeros(0, dtype=small)] + [k[0] for k in kept])
        b = np.concatenate([np.zeros(0, dtype=small)] + [k[1] for k in kept])
        order = np.argsort(b, kind="stable")  # a is sorted: (b, a) order
        c, red_i = _runs(b[order], a[order], yc.count, xc.ranges)
        slices_j = np.cumsum(c).astype(np.int64)
    info = TruncationInfo(
        bound=float(eps),
        radius=radius,
        pairs_kept=pairs,
        pairs_total=xs.shape[0] * ys.shape[0],
        blocks_kept=blocks,
        clusters=(xc.count, yc.count),
        cells=(cx, cy),
        seconds=time.perf_counter() - t0,
    )
    ranges = (xc.ranges, slices_i, ranges_j, yc.ranges, slices_j, red_i)
    return Truncation(ranges, xc.perm, yc.perm, info)


def take_rows(a: Any, index: np.ndarray) -> Any:
    """``a[index]`` for a NumPy, CuPy or torch array (torch: recorded for autograd)."""
    if arr.kind_of(a) == "torch":
        return a[a.new_tensor(index, dtype=sys.modules["torch"].int64)]
    if arr.kind_of(a) == "cupy":
        return a[sys.modules["cupy"].asarray(index)]
    return a[index]


def _gather(table: np.ndarray, index: Any) -> Any:
    if index is None:
        return table
    if arr.kind_of(index) == "torch":
        return index.new_tensor(table)[index]
    return table[np.asarray(index)]


@dataclass(frozen=True, eq=False)
class Order:
    """A kernel stored with its rows and columns sorted by cluster: stored row k is the caller's row
    ``perm_x[k]`` (columns: ``perm_y``); ``inv_x`` / ``inv_y`` say where each caller's row sits."""

    perm_x: np.ndarray
    perm_y: np.ndarray
    info: TruncationInfo

    @cached_property
    def inv_x(self) -> np.ndarray:
        return np.argsort(self.perm_x)

    @cached_property
    def inv_y(self) -> np.ndarray:
        return np.argsort(self.perm_y)

    def into(self, transpose: bool) -> np.ndarray:
        """The permutation that sorts a product's right-hand side (rows of K's columns, or of Kᵀ's)."""
        return self.perm_x if transpose else self.perm_y

    def back(self, transpose: bool) -> np.ndarray:
        """The permutation that puts a product's sorted result back in the caller's order."""
        return self.inv_y if transpose else self.inv_x

    def locate(self, rows: Any, cols: Any) -> tuple[Any, Any]:
        """Where the caller's rows and columns (index arrays, NumPy or torch; None: all) are stored."""
        return _gather(self.inv_x, rows), _gather(self.inv_y, cols)

    def swapped(self) -> Order:
        """The order of Kᵀ."""
        return Order(self.perm_y, self.perm_x, self.info)


def sort_variables(variables: list, truncation: Truncation) -> tuple[list, Ranges, Order]:
    """``(data, category)`` pairs with i-variables sorted by ``perm_x`` and j-variables by ``perm_y``,
    the truncation's ranges and the :class:`Order` that undoes the sorting in products.

    >>> t = truncate(np.array([[0.0], [5.0], [0.1]]), sigma=0.1, eps=1e-3, cells=(1.0, 1.0))
    >>> [d.ravel().tolist() for d, _ in sort_variables([(np.array([[0.0], [5.0], [0.1]]), CAT_I)], t)[0]]
    [[0.0, 0.1, 5.0]]
    """
    if not isinstance(truncation, Truncation):
        raise ArgumentTypeError(
            "truncate= takes the result of kernla.linalg.truncation.truncate(x, y, kernel=..., sigma=..., eps=...) "
            f"(kernla.kernels.<name>(..., truncate=eps) builds it for you), got {type(truncation).__name__}"
        )
    perms = {CAT_I: truncation.perm_x, CAT_J: truncation.perm_y}
    out, done = [], {}  # one sorted copy of an array that is both X and Y (y = x: perm_x is perm_y)
    for data, cat in variables:
        if cat in perms:
            if arr.kind_of(data) == "scalar" or len(data.shape) != 2 or data.shape[0] != len(perms[cat]):
                which = "rows (x)" if cat == CAT_I else "columns (y)"
                raise ShapeError(
                    f"the truncation was computed for {len(perms[cat])} {which}; got data shaped {data.shape}"
                )
            key = (id(data), id(perms[cat]))
            if key not in done:
                done[key] = take_rows(data, perms[cat])
            data = done[key]
        out.append((data, cat))
    return out, truncation.ranges, Order(truncation.perm_x, truncation.perm_y, truncation.info)


__all__ = ["truncate", "Truncation", "TruncationInfo", "Order", "profile", "cutoff_radius", "sort_variables"]
