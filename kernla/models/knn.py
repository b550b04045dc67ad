"""Exact nearest-neighbour search by symbolic distance matrices: k nearest, within a radius, as graphs.

The (n_queries × n_points) distance matrix is a :class:`~kernla.LazyTensor`, never stored; the k
nearest points of every query come from one ``Kmin_argKmin`` reduction, in memory linear in
n_queries + n_points, on the engine where the data lives (NumPy, compiled CPU, CUDA for
torch/CuPy GPU data). The search is exact (a brute-force scan, no index structure). Metrics:
see :mod:`kernla.models.metrics`; large coordinates are rescaled so that distances cannot
overflow, and an index of −1 from the reduction (NaN or infinite distances, e.g. from a custom
metric) raises instead of being used.

``radius_neighbors`` counts the points within the radius of each query (one ``Sum``
reduction of a step function), then takes that many nearest points (one ``Kmin_argKmin``
with K the largest count) and keeps those within the radius: its cost grows with the
largest neighbourhood.

>>> import numpy as np
>>> X = np.array([[0.0], [1.0], [3.0], [7.0]])
>>> dist, idx = NearestNeighbors(n_neighbors=2).fit(X).kneighbors(np.array([[2.9], [0.2]]))
>>> idx
array([[2, 1],
       [0, 1]])
>>> dist.round(2)
array([[0.1, 1.9],
       [0.2, 0.8]])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse

from .. import arrays as arr
from ..errors import InputValueError, ShapeError
from ..lazy import LazyTensor, Pm
from ._common import as_array, as_points, cast, host, kind
from ._sklearn import BaseEstimator, check_fitted
from .metrics import Metric, MetricSpec, metric_for, scale_factor


def check_n_neighbors(k: Any, n_points: int | None = None, self_excluded: bool = False) -> int:
    """A positive integer, at most the number of points (less the query point itself)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputValueError(f"n_neighbors must be a positive integer, got {k!r}")
    if n_points is not None and k > n_points:
        own = " (each point excluded from its own neighbours)" if self_excluded else ""
        raise ShapeError(
            f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, n_samples_fit = "
            f"{n_points + self_excluded}: k={k} neighbours requested but the model was fitted on "
            f"{n_points + self_excluded} point(s){own}"
        )
    return int(k)


def check_radius(radius: Any) -> float:
    """A non-negative finite number."""
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise InputValueError(f"radius must be a non-negative number, got {radius!r}") from None
    if not (r >= 0 and np.isfinite(r)):
        raise InputValueError(f"radius must be a non-negative finite number, got {radius!r}")
    return r


class _Search:
    """One search: the metric, the (rescaled) prepared data and queries, the scale factor."""

    def __init__(self, metric: Metric, data: Any, queries: Any, backend: str | None):
        self.metric, self.backend = metric, backend
        self.kind, self.dtype = kind(data), arr.dtype_of(data)
        self.scale = 1.0
        if metric.degree is not None:
            self.scale = scale_factor(data, queries)
            if self.scale != 1.0:
                data, queries = data * self.scale, queries * self.scale
        D = metric.surrogate(LazyTensor(queries[:, None, :]), LazyTensor(data[None, :, :]))
        if not isinstance(D, LazyTensor) or D.formula.dim != 1:
            raise ShapeError(
                "the metric must return a scalar LazyTensor (e.g. ((x_i - y_j) ** 2).sum(-1)), got "
                + (f"dimension {D.formula.dim}" if isinstance(D, LazyTensor) else type(D).__name__)
            )
        self.D = D

    def nearest(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (host float64, metric units) and indices (host int64) of the k nearest points, sorted."""
        values, idx = self.D.Kmin_argKmin(k, dim=1, backend=self.backend)
        idx = host(idx, np.int64)
        if (idx < 0).any():
            raise InputValueError(
                f"the {self.metric.name} distances of some queries are NaN or infinite, so their "
                "nearest neighbours are undefined (a custom metric that overflows or divides by 0?)"
            )
        dist = self.metric.finish(host(values, np.float64))
        if self.metric.degree and self.scale != 1.0:  # divide by scale**degree, exactly (and to inf, not nan)
            with np.errstate(over="ignore"):
                dist = np.ldexp(dist, -int(self.metric.degree) * (math.frexp(self.scale)[1] - 1))
        return dist, idx

    def counts(self, radius: float) -> np.ndarray:
        """How many points lie within (a hair beyond) ``radius`` of each query, host int64."""
        bound = self.metric.to_surrogate(radius * self.scale ** (self.metric.degree or 0))
        bound += 1e-9 * abs(bound) + 1e-300
        param = arr.wrap(np.array([bound], dtype=self.dtype), self.kind)
        counts = (Pm(param) - self.D).step().sum(dim=1, backend=self.backend)
        return np.rint(host(counts, np.float64).reshape(-1)).astype(np.int64)


def _drop_self(dist: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From k+1 neighbours of each fitted point, drop the point itself (or the farthest if absent)."""
    n, k1 = idx.shape
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k1 - 1)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return dist[keep].reshape(n, k1 - 1), idx[keep].reshape(n, k1 - 1)


class NearestNeighbors(BaseEstimator):
    """Exact nearest-neighbour search in linear memory, a scikit-learn estimator.

    Parameters: ``n_neighbors`` (default number of neighbours), ``radius`` (default radius of
    :meth:`radius_neighbors`), ``metric`` (a name of :mod:`kernla.models.metrics` or a callable
    ``(x_i, y_j) -> LazyTensor`` giving a scalar symbolic distance), ``p`` (Minkowski exponent,
    ``metric="minkowski"``: the default with p = 2 is the Euclidean distance), ``backend``
    (``None``: automatic; ``"numpy"``, ``"cpu"``, ``"cuda"``). They are checked by ``fit``.

    Data may be NumPy, torch or CuPy; results come back in the kind of the queries (indices
    int64). Queries are cast to the fitted data's dtype.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> nn = NearestNeighbors(n_neighbors=3, metric="manhattan").fit(X)
    >>> idx = nn.kneighbors(X[:5], return_distance=False)
    >>> idx[:, 0]                                  # each point is its own nearest neighbour
    array([0, 1, 2, 3, 4])
    >>> own = nn.kneighbors(n_neighbors=1, return_distance=False)   # no query: each point's nearest other
    >>> bool((own[:5, 0] == idx[:, 1]).all())
    True
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        radius: float = 1.0,
        metric: MetricSpec = "minkowski",
        p: float = 2,
        backend: str | None = None,
    ):
        self.n_neighbors = n_neighbors
        self.radius = radius
        self.metric = metric
        self.p = p
        self.backend = backend

    def fit(self, X: Any, y: Any = None) -> NearestNeighbors:
        """Check the parameters and store the reference points X (n, D) (``y`` is ignored). Returns self."""
        check_n_neighbors(self.n_neighbors)
        check_radius(self.radius)
        metric = metric_for(self.metric, self.p)
        X = as_points(X, "X")
        self._fit_X = X
        self._data = metric.prepare(X, "X")
        self.n_samples_fit_ = int(X.shape[0])
        self.n_features_in_ = int(X.shape[1])
        return self

    def _queries(self, X: Any) -> Any:
        X = as_points(as_array(X, "X"), "X", dim=self.n_features_in_, model=type(self).__name__)
        qk, fk = kind(X), kind(self._fit_X)
        if (qk.kind, str(qk.device)) != (fk.kind, str(fk.device)):
            where = lambda k: k.kind + ("" if k.device is None else f" on {k.device}")  # noqa: E731
            raise arr.ArrayKindError(f"the queries are {where(qk)} but the model was fitted on {where(fk)} data")
        dt = arr.dtype_of(self._fit_X)
        return X if dt is None or arr.dtype_of(X) == dt else cast(X, dt)

    def _search(self, X: Any) -> tuple[_Search, arr.Kind]:
        """The search of queries X (None: the fitted points) and the kind results come back as."""
        check_fitted(self, "n_samples_fit_")
        metric = metric_for(self.metric, self.p)
        if X is None:
            return _Search(metric, self._data, self._data, self.backend), kind(self._fit_X)
        X = self._queries(X)
        return _Search(metric, self._data, metric.prepare(X, "X"), self.backend), kind(X)

    def _out(self, dist: np.ndarray, qkind: arr.Kind) -> Any:
        with np.errstate(over="ignore"):  # float32 data: a distance beyond its range is inf
            return arr.wrap(np.ascontiguousarray(dist), qkind, arr.dtype_of(self._fit_X))

    def kneighbors(self, X: Any = None, n_neighbors: int | None = None, return_distance: bool = True):
        """The ``n_neighbors`` nearest reference points of each query, nearest first.

        ``X`` (m, D): queries; ``None`` means the fitted points themselves, each one excluded
        from its own neighbours. ``n_neighbors`` defaults to the constructor's. Returns
        ``(distances, indices)``, both (m, n_neighbors) — distances in the metric's units — or
        only ``indices`` with ``return_distance=False``. Ties go to the smallest index.

        >>> import numpy as np
        >>> nn = NearestNeighbors(n_neighbors=1, metric="cosine").fit(np.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> d, i = nn.kneighbors(np.array([[2.0, 0.1]]))
        >>> int(i[0, 0]), round(float(d[0, 0]), 5)
        (0, 0.00125)
        """
        check_fitted(self, "n_samples_fit_")
        exclude_self = X is None
        k = check_n_neighbors(
            self.n_neighbors if n_neighbors is None else n_neighbors, self.n_samples_fit_ - exclude_self, exclude_self
        )
        search, qkind = self._search(X)
        dist, idx = search.nearest(k + exclude_self)
        if exclude_self:
            dist, idx = _drop_self(dist, idx)
        idx_out = arr.wrap(np.ascontiguousarray(idx), qkind)
        return (self._out(dist, qkind), idx_out) if return_distance else idx_out

    def radius_neighbors(
        self, X: Any = None, radius: float | None = None, return_distance: bool = True, sort_results: bool = True
    ):
        """The reference points within ``radius`` (≤) of each query, as scikit-learn returns them.

        Returns ``(distances, indices)`` — or ``indices`` only — as NumPy object arrays of m
        arrays (one per query, in the queries' kind), each sorted by distance (the search finds
        them in that order, so ``sort_results`` changes nothing). ``X=None``: the fitted points,
        each excluded from its own neighbourhood.

        >>> import numpy as np
        >>> nn = NearestNeighbors(radius=1.5).fit(np.array([[0.0], [1.0], [3.0]]))
        >>> d, i = nn.radius_neighbors(np.array([[0.9], [10.0]]))
        >>> i[0], d[0].round(2), i[1]
        (array([1, 0]), array([0.1, 0.9]), array([], dtype=int64))
        """
        check_fitted(self, "n_samples_fit_")
        r = check_radius(self.radius if radius is None else radius)
        search, qkind = self._search(X)
        m = int(search.D.shape[0])
        k = int(min(search.counts(r).max(initial=0), self.n_samples_fit_))
        if k == 0:
            dist, idx = np.zeros((m, 0)), np.zeros((m, 0), np.int64)
        else:
            dist, idx = search.nearest(k)
        keep = dist <= r
        if X is None:
            keep &= idx != np.arange(m)[:, None]
        dists = np.empty(m, dtype=object)
        idxs = np.empty(m, dtype=object)
        for row in range(m):
            idxs[row] = arr.wrap(np.ascontiguousarray(idx[row, keep[row]]), qkind)
            dists[row] = self._out(dist[row, keep[row]], qkind)
        return (dists, idxs) if return_distance else idxs

    def kneighbors_graph(self, X: Any = None, n_neighbors: int | None = None, mode: str = "connectivity"):
        """The (m, n_samples_fit) CSR matrix of each query's nearest points: ones (``mode="connectivity"``)
        or distances (``mode="distance"``), as scikit-learn's.

        >>> import numpy as np
        >>> NearestNeighbors(n_neighbors=1).fit(np.array([[0.0], [1.0], [3.0]])).kneighbors_graph().toarray()
        array([[0., 1., 0.],
               [1., 0., 0.],
               [0., 1., 0.]])
        """
        _check_mode(mode)
        dist, idx = self.kneighbors(X, n_neighbors)
        dist, idx = host(dist, np.float64), host(idx, np.int64)
        m, k = idx.shape
        data = np.ones(m * k) if mode == "connectivity" else dist.ravel()
        return scipy.sparse.csr_matrix((data, idx.ravel(), np.arange(0, m * k + 1, k)), shape=(m, self.n_samples_fit_))

    def radius_neighbors_graph(
        self, X: Any = None, radius: float | None = None, mode: str = "connectivity", sort_results: bool = True
    ):
        """The (m, n_samples_fit) CSR matrix of the points within ``radius`` of each query (see
        :meth:`kneighbors_graph` for ``mode``)."""
        _check_mode(mode)
        dists, idxs = self.radius_neighbors(X, radius)
        counts = np.array([len(i) for i in idxs], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        idx = np.concatenate([host(i, np.int64) for i in idxs]) if len(idxs) else np.zeros(0, np.int64)
        data = np.ones(len(idx)) if mode == "connectivity" else np.concatenate([host(d, np.float64) for d in dists])
        return scipy.sparse.csr_matrix((data, idx, indptr), shape=(len(idxs), self.n_samples_fit_))


def _check_mode(mode: str) -> None:
    if mode not in ("connectivity", "distance"):
        raise InputValueError(f"mode must be 'connectivity' or 'distance', got {mode!r}")


__all__ = ["NearestNeighbors", "check_n_neighbors", "check_radius"]
