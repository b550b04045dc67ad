"""pykeops' clustering helpers (``pykeops.numpy.cluster``) for NumPy arrays.

Same names, arguments and results as pykeops, with three deliberate differences: ``grid_cluster``
works in any dimension and never merges two distinct cells (pykeops packs the cell indices of a point
in 10 bits per axis, so cells 1024 apart share a label); ``sort_clusters`` is stable (points keep their
order inside a cluster, as pykeops' own example shows but its default sort does not promise); bad input
is a :class:`~kernla.errors.KernlaError`.

>>> x = np.array([[0.0], [5.0], [0.4], [0.3], [2.0]])
>>> lab = grid_cluster(x, 1.0)
>>> x_sorted, lab_sorted = sort_clusters(x, lab)
>>> x_sorted.ravel().tolist(), lab_sorted.tolist()
([0.0, 0.4, 0.3, 2.0, 5.0], [0, 0, 0, 1, 2])
>>> ranges, centroids, counts = cluster_ranges_centroids(x_sorted, lab_sorted)
>>> ranges.tolist(), centroids.ravel().round(3).tolist(), counts.tolist()
([[0, 3], [3, 4], [4, 5]], [0.233, 2.0, 5.0], [3.0, 1.0, 1.0])
>>> keep = np.array([[True, True, False], [False, True, False], [False, False, True]])
>>> [r.tolist() for r in from_matrix(ranges, ranges, keep)[:3]]
[[[0, 3], [3, 4], [4, 5]], [2, 3, 4], [[0, 3], [3, 4], [3, 4], [4, 5]]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputValueError, ShapeError

#: a ranges tuple: (ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)
Ranges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _points(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ShapeError(f"points must be a 2-D (M, D) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise InputValueError("points must be finite numbers")
    return a


def _labels(lab: Any) -> np.ndarray:
    a = np.asarray(lab).reshape(-1)
    if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0):
        raise InputValueError(f"labels must be non-negative integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def cell_indices(x: np.ndarray, size: Any, origin: np.ndarray | None = None) -> np.ndarray:
    """The integer cell ``floor((x - origin) / size)`` of each point, as an (M, D) int64 array.

    ``origin`` defaults to the points' minimum, so indices start at 0 on every axis.
    """
    x = _points(x)
    cell = np.broadcast_to(np.asarray(size, dtype=np.float64), (x.shape[1],))
    if not (np.isfinite(cell).all() and (cell > 0).all()):
        raise InputValueError(f"the cell size must be positive and finite, got {size!r}")
    low = (x.min(axis=0) if x.shape[0] else 0.0) if origin is None else origin
    return np.floor((x - low) / cell).astype(np.int64)


def row_major_keys(q: np.ndarray, extent: np.ndarray | None = None) -> np.ndarray | None:
    """One int64 per row of the non-negative cell indices ``q``, ordered as the rows are lexicographically.

    ``extent``: cells per axis (default: the largest index + 1). None when the grid has 2⁶² cells or
    more (the keys would overflow).
    """
    if extent is None:
        extent = q.max(axis=0) + 1 if q.size else np.ones(q.shape[1], dtype=np.int64)
    if float(np.prod(np.asarray(extent, dtype=np.float64))) >= 2.0**62:
        return None
    strides = np.cumprod(np.concatenate([extent[1:], [1]])[::-1])[::-1]
    return q @ strides


def grid_labels(x: Any, size: Any, origin: np.ndarray | None) -> np.ndarray:
    """Compact labels of the cells ``floor((x - origin) / size)``, in the cells' lexicographic order."""
    q = cell_indices(x, size, origin)
    if q.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    q -= q.min(axis=0)
    keys = row_major_keys(q)
    if keys is None:
        return np.unique(q, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return np.unique(keys, return_inverse=True)[1].reshape(-1).astype(np.int64)


def grid_cluster(x: Any, size: Any) -> np.ndarray:
    """Labels of the cubic cells (side ``size``: a number or one per axis) that hold the points ``x`` (M, D).

    The cells are ``floor(x / size)`` (a grid through the origin, as pykeops.numpy); labels are
    compact, ``0 .. C-1`` for the C non-empty cells, in the lexicographic order of the cells.

    >>> grid_cluster(np.array([[0.0], [0.1], [0.9], [0.05], [0.5]]), 0.2).tolist()
    [0, 0, 2, 0, 1]
    """
    return grid_labels(x, size, np.zeros(_points(x).shape[1]))


def stable_order(lab: Any) -> np.ndarray:
    """The permutation that sorts ``lab`` and keeps equal labels in their original order."""
    return np.argsort(_labels(lab), kind="stable")


def sort_clusters(x: Any, lab: Any) -> tuple[Any, np.ndarray]:
    """``x`` (an array, or a tuple or list of arrays with M rows) and ``lab`` sorted by label, stably.

    >>> x, lab = sort_clusters(np.array([[0.0], [5.0], [0.4]]), np.array([0, 1, 0]))
    >>> x.ravel().tolist(), lab.tolist()
    ([0.0, 0.4, 5.0], [0, 0, 1])
    """
    labels = _labels(lab)
    perm = stable_order(labels)
    if isinstance(x, tuple):
        return tuple(a[perm] for a in x), labels[perm]
    if isinstance(x, list):
        return [a[perm] for a in x], labels[perm]
    return x[perm], labels[perm]


def cluster_ranges(lab: Any, Nlab: Any = None) -> np.ndarray:  # noqa: N803 (pykeops' name)
    """The ``[start, end)`` slice of each cluster in sorted points: a (C, 2) int64 array.

    ``Nlab``: the number of points per cluster, if known (otherwise counted from ``lab``).

    >>> cluster_ranges(np.array([0, 0, 0, 1, 2])).tolist()
    [[0, 3], [3, 4], [4, 5]]
    """
    counts = np.bincount(_labels(lab)) if Nlab is None else np.asarray(Nlab)
    pivots = np.concatenate([[0], np.cumsum(counts.astype(np.int64))])
    return np.stack([pivots[:-1], pivots[1:]], axis=1)


def cluster_centroids(
    x: Any,
    lab: Any,
    Nlab: Any = None,  # noqa: N803 (pykeops' name)
    weights: Any = None,
    weights_c: Any = None,
) -> np.ndarray:
    """The (weighted) mean of each cluster's points: a (C, D) array in x's dtype.

    >>> x = np.array([[0.0], [1.0], [4.0], [5.0], [6.0]])
    >>> cluster_centroids(x, np.array([0, 0, 1, 1, 1]), weights=np.array([0.5, 0.5, 2.0, 1.0, 1.0])).ravel().tolist()
    [0.5, 4.75]
    """
    x = _points(x)
    labels = _labels(lab)
    if labels.size != x.shape[0]:
        raise ShapeError(f"{labels.size} labels for {x.shape[0]} points")
    if weights is None:
        total = (np.bincount(labels) if Nlab is None else np.asarray(Nlab)).astype(np.float64)
        w = np.ones(x.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size != x.shape[0]:
            raise ShapeError(f"{w.size} weights for {x.shape[0]} points")
        given = np.bincount(labels, weights=w) if weights_c is None else weights_c
        total = np.asarray(given, dtype=np.float64).reshape(-1)
    sums = np.stack([np.bincount(labels, weights=x[:, d] * w, minlength=total.size) for d in range(x.shape[1])], 1)
    return (sums / total.reshape(-1, 1)).astype(x.dtype)


def cluster_ranges_centroids(x: Any, lab: Any, weights: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cluster's ``[start, end)`` slice, its (weighted) centroid and its total weight (count by default).

    >>> r, c, w = cluster_ranges_centroids(np.array([[0.0], [0.5], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1, 1]))
    >>> r.tolist(), c.ravel().tolist(), w.tolist()
    ([[0, 2], [2, 5]], [0.25, 2.0], [2.0, 3.0])
    """
    labels = _labels(lab)
    counts = np.bincount(labels).astype(np.float64)
    if weights is None:
        return cluster_ranges(labels, counts), cluster_centroids(x, labels, counts), counts
    w_c = np.bincount(labels, weights=np.asarray(weights, dtype=np.float64).reshape(-1))
    return cluster_ranges(labels, counts), cluster_centroids(x, labels, counts, weights, w_c), w_c


def from_matrix(ranges_i: Any, ranges_j: Any, keep: Any) -> Ranges:
    """The ranges 6-tuple of the cluster pairs ``(k, l)`` with ``keep[k, l]`` true (int64 arrays).

    ``ranges_i`` (K, 2) and ``ranges_j`` (L, 2) are the clusters' slices, ``keep`` a (K, L) boolean
    matrix. The tuple is ``(ranges_i, slices_i, redranges_j, ranges_j, slices_j, redranges_i)``:
    cluster k of i reduces over ``redranges_j[slices_i[k-1]:slices_i[k]]`` (axis=1), cluster l of j
    over ``redranges_i[slices_j[l-1]:slices_j[l]]`` (axis=0).

    >>> r_i = np.array([[2, 5], [7, 12]]); r_j = np.array([[1, 4], [4, 9], [20, 30]])
    >>> t = from_matrix(r_i, r_j, np.array([[True, True, False], [False, True, False]]))
    >>> t[1].tolist(), t[2].tolist(), t[4].tolist(), t[5].tolist()
    ([2, 3], [[1, 4], [4, 9], [4, 9]], [1, 3, 3], [[2, 5], [2, 5], [7, 12]])
    """
    r_i = np.asarray(ranges_i, dtype=np.int64).reshape(-1, 2)
    r_j = np.asarray(ranges_j, dtype=np.int64).reshape(-1, 2)
    mask = np.asarray(keep, dtype=bool)
    if mask.shape != (r_i.shape[0], r_j.shape[0]):
        raise ShapeError(f"keep must have shape ({r_i.shape[0]}, {r_j.shape[0]}), got {mask.shape}")
    cols = np.nonzero(mask)[1]
    rows_t = np.nonzero(mask.T)[1]
    return (
        r_i,
        np.cumsum(mask.sum(axis=1)).astype(np.int64),
        r_j[cols],
        r_j,
        np.cumsum(mask.sum(axis=0)).astype(np.int64),
        r_i[rows_t],
    )


def swap_axes(ranges: Any) -> Any:
    """The ranges tuple of the same reduction with i and j exchanged (None stays None).

    >>> swap_axes(None) is None
    True
    """
    if ranges is None:
        return None
    return (*ranges[3:6], *ranges[0:3])


__all__ = sorted(
    [
        "grid_cluster",
        "from_matrix",
        "sort_clusters",
        "cluster_ranges",
        "cluster_centroids",
        "cluster_ranges_centroids",
        "swap_axes",
    ]
)
