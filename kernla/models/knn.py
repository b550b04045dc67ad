"""Exact k-nearest neighbours by symbolic distance matrices: search, classification, regression.

The (n_queries × n_points) distance matrix is a :class:`~kernla.LazyTensor`, never stored; the k
nearest points of every query come from one ``Kmin_argKmin`` (or ``argKmin``) reduction, in
memory linear in n_queries + n_points, on the engine where the data lives (NumPy, compiled CPU,
CUDA for torch/CuPy GPU data). The search is exact (a brute-force scan, no index structure).

Metrics (``metric=``):

=================  ========================================================  ===================
name               distance                                                  reduced quantity
=================  ========================================================  ===================
``euclidean``      ``|x − y|``                                               ``|x − y|²``
``sqeuclidean``    ``|x − y|²``                                              same
``manhattan``      ``Σ_d |x_d − y_d|``                                       same
``chebyshev``      ``max_d |x_d − y_d|``                                     same
``cosine``         ``1 − ⟨x, y⟩ / (|x| |y|)`` (a zero vector is at 1)        ``−⟨x̂, ŷ⟩``
``hyperbolic``     Poincaré half-space, first coordinate > 0:                ``|x − y|² / (x₀ y₀)``
                   ``arcosh(1 + |x − y|² / (2 x₀ y₀))``
``poincare``       Poincaré ball, ``|x| < 1``:                               ``|x − y|² / ((1 − |x|²)(1 − |y|²))``
                   ``arcosh(1 + 2|x − y|² / ((1 − |x|²)(1 − |y|²)))``
callable           ``metric(x_i, y_j)``: any scalar LazyTensor formula        same
=================  ========================================================  ===================

Each built-in metric reduces a cheaper quantity that increases with the distance (so the
neighbours are the same) and converts the k values found into the metric's units.

>>> import numpy as np
>>> X = np.array([[0.0], [1.0], [3.0], [7.0]])
>>> dist, idx = NearestNeighbors(k=2).fit(X).kneighbors(np.array([[2.9], [0.2]]))
>>> idx
array([[2, 1],
       [0, 1]])
>>> dist.round(2)
array([[0.1, 1.9],
       [0.2, 0.8]])
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np

from .. import arrays as arr
from ..errors import InputValueError, ShapeError
from ..lazy import LazyTensor
from ._common import as_array, as_points, as_targets, cast, check_fitted, host, kind

MetricSpec = Union[str, Callable[[LazyTensor, LazyTensor], LazyTensor]]
WeightSpec = Union[str, Callable[[np.ndarray], np.ndarray]]


# ---------------------------------------------------------------------------------------------
# metrics: prepare the data, a monotone surrogate as a formula, the conversion to distances
# ---------------------------------------------------------------------------------------------
def _acosh1p(t: np.ndarray) -> np.ndarray:
    """arcosh(1 + t) for t ≥ 0, accurate for small t: log1p(t + √(t (t + 2)))."""
    t = np.maximum(t, 0.0)
    return np.log1p(t + np.sqrt(t * (t + 2.0)))


def _normalize_rows(x: Any) -> Any:
    """Rows scaled to unit Euclidean norm (zero rows stay zero), in x's kind."""
    if arr.kind_of(x) == "torch":
        n = x.norm(dim=1, keepdim=True)
        return x / n.clamp_min(np.finfo(np.float64).tiny if x.dtype.itemsize == 8 else np.finfo(np.float32).tiny)
    xp = np if isinstance(x, np.ndarray) else __import__("cupy")
    n = xp.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / xp.maximum(n, np.finfo(x.dtype).tiny)


def _check_half_space(x: Any, what: str) -> Any:
    if not bool((host(x[:, 0]) > 0).all()):
        raise InputValueError(f"the 'hyperbolic' metric (Poincaré half-space) needs points whose first coordinate "
                              f"is > 0; {what} has some that are not")
    return x


def _check_ball(x: Any, what: str) -> Any:
    h = host(x)
    if not bool(((h * h).sum(axis=1) < 1).all()):
        raise InputValueError(f"the 'poincare' metric (Poincaré ball) needs points of norm < 1; {what} has some "
                              "that are not")
    return x


class _Metric:
    """``prepare`` (data → data), ``surrogate`` (x_i, y_j LazyTensors → scalar LazyTensor) and
    ``finish`` (host array of surrogate values → distances)."""

    def __init__(self, name: str, surrogate: Callable, finish: Callable = lambda v: v,
                 prepare: Callable = lambda x, what: x):
        self.name, self.surrogate, self.finish, self.prepare = name, surrogate, finish, prepare


def _sqdist(a: LazyTensor, b: LazyTensor) -> LazyTensor:
    return ((a - b) ** 2).sum(-1)


_METRICS = {
    "euclidean": _Metric("euclidean", _sqdist, lambda v: np.sqrt(np.maximum(v, 0.0))),
    "sqeuclidean": _Metric("sqeuclidean", _sqdist, lambda v: np.maximum(v, 0.0)),
    "manhattan": _Metric("manhattan", lambda a, b: (a - b).abs().sum(-1)),
    "chebyshev": _Metric("chebyshev", lambda a, b: (a - b).abs().max(-1)),
    "cosine": _Metric("cosine", lambda a, b: -(a | b), lambda v: np.clip(1.0 + v, 0.0, 2.0),
                      lambda x, what: _normalize_rows(x)),
    "hyperbolic": _Metric("hyperbolic", lambda a, b: _sqdist(a, b) / (a[..., 0] * b[..., 0]),
                          lambda v: _acosh1p(v / 2.0), _check_half_space),
    "poincare": _Metric("poincare", lambda a, b: _sqdist(a, b) / ((1 - a.sqnorm2()) * (1 - b.sqnorm2())),
                        lambda v: _acosh1p(2.0 * v), _check_ball),
}

#: metric names accepted by the models (a callable (x_i, y_j) -> LazyTensor is accepted as well)
METRICS = tuple(_METRICS)


def _metric(metric: MetricSpec) -> _Metric:
    if isinstance(metric, str):
        if metric not in _METRICS:
            raise InputValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)} or pass a "
                                  "callable (x_i, y_j) -> scalar LazyTensor")
        return _METRICS[metric]
    if callable(metric):
        return _Metric(getattr(metric, "__name__", "custom"), metric)
    raise InputValueError(f"metric must be a name or a callable, got {type(metric).__name__}")


def _check_k(k: Any, n_points: int, what: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputValueError(f"{what} must be a positive integer, got {k!r}")
    if n_points is not None and k > n_points:
        raise ShapeError(f"{what}={k} neighbours requested but the model was fitted on {n_points} point(s)")
    return int(k)


# ---------------------------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------------------------
class NearestNeighbors:
    """Exact k-nearest-neighbour search in linear memory (see the module docstring for metrics).

    Parameters: ``k`` (default number of neighbours), ``metric`` (a name or a callable
    ``(x_i, y_j) -> LazyTensor`` giving a scalar symbolic distance), ``backend`` (``None``:
    automatic; ``"numpy"``, ``"cpu"``, ``"cuda"``).

    Data may be NumPy, torch or CuPy; results come back in the kind of the queries (indices
    int64). Queries are cast to the fitted data's dtype.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> nn = NearestNeighbors(k=3, metric="manhattan").fit(X)
    >>> idx = nn.kneighbors(X[:5], return_distance=False)
    >>> idx[:, 0]                                  # each point is its own nearest neighbour
    array([0, 1, 2, 3, 4])
    >>> own = nn.kneighbors(k=1, return_distance=False)   # no query: each point's nearest other point
    >>> bool((own[:5, 0] == idx[:, 1]).all())
    True
    """

    def __init__(self, k: int = 5, metric: MetricSpec = "euclidean", backend: Optional[str] = None):
        self.k = _check_k(k, None)
        self.metric = metric
        self._metric = _metric(metric)
        self.backend = backend
        self._fit_X = None

    def fit(self, X: Any, y: Any = None) -> "NearestNeighbors":
        """Store the reference points X (n, D) (``y`` is ignored). Returns self."""
        X = as_points(X, "X")
        self._fit_X = X
        self._data = self._metric.prepare(X, "X")
        self.n_samples_fit_ = int(X.shape[0])
        self.n_features_in_ = int(X.shape[1])
        return self

    def _search(self, Q: Any, k: int):
        """Surrogate values (host) and indices (Q's kind) of the k nearest points, sorted."""
        q_i = LazyTensor(Q[:, None, :])
        x_j = LazyTensor(self._data[None, :, :])
        D = self._metric.surrogate(q_i, x_j)
        if not isinstance(D, LazyTensor) or D.formula.dim != 1:
            raise ShapeError("the metric must return a scalar LazyTensor (e.g. ((x_i - y_j) ** 2).sum(-1)), got "
                             + (f"dimension {D.formula.dim}" if isinstance(D, LazyTensor) else type(D).__name__))
        values, idx = D.Kmin_argKmin(k, dim=1, backend=self.backend)
        return values, idx

    def kneighbors(self, Q: Any = None, k: Optional[int] = None, return_distance: bool = True):
        """The k nearest reference points of each query, nearest first.

        ``Q`` (m, D): queries; ``None`` means the fitted points themselves, each one excluded
        from its own neighbours. ``k`` defaults to the constructor's. Returns ``(distances,
        indices)``, both (m, k) — distances in the metric's units — or only ``indices`` with
        ``return_distance=False``. Ties are broken by the reduction (not necessarily by index).

        >>> import numpy as np
        >>> nn = NearestNeighbors(k=1, metric="cosine").fit(np.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> d, i = nn.kneighbors(np.array([[2.0, 0.1]]))
        >>> int(i[0, 0]), round(float(d[0, 0]), 5)
        (0, 0.00125)
        """
        check_fitted(self, "_fit_X")
        k = self.k if k is None else k
        exclude_self = Q is None
        k = _check_k(k, self.n_samples_fit_ - (1 if exclude_self else 0), "k")
        if exclude_self:
            Qd, qkind = self._data, kind(self._fit_X)
            values, idx = self._search(Qd, k + 1)
            values, idx = host(values), host(idx, np.int64)
            values, idx = _drop_self(values, idx)
        else:
            Q = self._queries(Q)
            qkind = kind(Q)
            values, idx = self._search(self._metric.prepare(Q, "Q"), k)
            values, idx = host(values), host(idx, np.int64)
        idx_out = arr.wrap(np.ascontiguousarray(idx), qkind)
        if not return_distance:
            return idx_out
        dist = self._metric.finish(values.astype(np.float64, copy=False))
        return arr.wrap(np.ascontiguousarray(dist), qkind, arr.dtype_of(self._fit_X)), idx_out

    def _queries(self, Q: Any) -> Any:
        Q = as_points(as_array(Q, "Q"), "Q", dim=self.n_features_in_)
        qk, fk = kind(Q), kind(self._fit_X)
        if (qk.kind, str(qk.device)) != (fk.kind, str(fk.device)):
            where = lambda k: k.kind + ("" if k.device is None else f" on {k.device}")  # noqa: E731
            raise arr.ArrayKindError(f"the queries are {where(qk)} but the model was fitted on {where(fk)} data")
        dt = arr.dtype_of(self._fit_X)
        return Q if arr.dtype_of(Q) == dt else cast(Q, dt)


def _drop_self(values: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From k+1 neighbours of each fitted point, drop the point itself (or the farthest if absent)."""
    n, k1 = idx.shape
    own = idx == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k1 - 1)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    return values[keep].reshape(n, k1 - 1), idx[keep].reshape(n, k1 - 1)


# ---------------------------------------------------------------------------------------------
# classification and regression
# ---------------------------------------------------------------------------------------------
def _weights(dist: np.ndarray, weights: WeightSpec) -> np.ndarray:
    """Neighbour weights (host, float64): uniform ones, inverse distances, or a callable's."""
    if weights == "uniform":
        return np.ones_like(dist, dtype=np.float64)
    if weights == "distance":
        dist = dist.astype(np.float64)
        zero = dist == 0
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        rows = zero.any(axis=1)
        # a query that coincides with reference points: only those points vote
        w[rows] = zero[rows].astype(np.float64)
        return w
    w = np.asarray(weights(dist), dtype=np.float64)
    if w.shape != dist.shape:
        raise ShapeError(f"the weights callable must return an array of shape {dist.shape}, got {w.shape}")
    return w


def _check_weights(weights: Any) -> WeightSpec:
    if weights in ("uniform", "distance") or (callable(weights) and not isinstance(weights, str)):
        return weights
    raise InputValueError(f"weights must be 'uniform', 'distance' or a callable, got {weights!r}")


class _KNeighborsBase:
    def __init__(self, k: int = 5, weights: WeightSpec = "uniform", metric: MetricSpec = "euclidean",
                 backend: Optional[str] = None):
        self.k = k
        self.weights = _check_weights(weights)
        self.metric = metric
        self.backend = backend
        self._nn = NearestNeighbors(k=k, metric=metric, backend=backend)
        self._y = None

    def _neighbours(self, Q: Any) -> tuple[np.ndarray, np.ndarray, arr.Kind]:
        """(host weights, host indices, the queries' kind) of the k nearest fitted points."""
        check_fitted(self, "_y")
        if Q is None:
            raise ShapeError("Q must be an array of query points")
        Q = as_array(Q, "Q")
        if self.weights == "uniform":
            idx = host(self._nn.kneighbors(Q, return_distance=False), np.int64)
            return np.ones(idx.shape), idx, kind(Q)
        dist, idx = self._nn.kneighbors(Q)
        return _weights(host(dist, np.float64), self.weights), host(idx, np.int64), kind(Q)

    @property
    def n_features_in_(self) -> int:
        check_fitted(self, "_y")
        return self._nn.n_features_in_


class KNeighborsClassifier(_KNeighborsBase):
    """k-nearest-neighbour classifier: votes of the k nearest fitted points.

    ``weights``: ``"uniform"`` (one vote each), ``"distance"`` (vote ∝ 1/distance; a query that
    coincides with fitted points takes only their votes) or a callable mapping the (m, k)
    distances to weights. Ties between classes go to the class that sorts first.
    ``metric``/``backend`` as for :class:`NearestNeighbors`.

    Labels may be any NumPy-sortable values (numbers, strings); ``classes_`` holds them sorted.
    ``predict`` returns NumPy labels (torch/CuPy numeric labels come back as their kind);
    ``predict_proba`` returns an (m, n_classes) array in the queries' kind.

    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [0.2], [1.0], [1.1]])
    >>> clf = KNeighborsClassifier(k=3).fit(X, ["a", "a", "a", "b", "b"])
    >>> clf.predict(np.array([[0.05], [1.2]]))
    array(['a', 'b'], dtype='<U1')
    >>> clf.predict_proba(np.array([[1.2]])).round(3)
    array([[0.333, 0.667]])
    """

    def fit(self, X: Any, y: Any) -> "KNeighborsClassifier":
        """Store points X (n, D) and labels y (n,). Returns self."""
        self._nn.fit(X)
        y = as_array(y, "y")
        y_kind = kind(y)
        labels = _labels_host(y)
        if labels.ndim != 1 or labels.shape[0] != self._nn.n_samples_fit_:
            raise ShapeError(f"y must be a 1-D array of {self._nn.n_samples_fit_} labels, got shape {labels.shape}")
        self.classes_, self._y = np.unique(labels, return_inverse=True)
        self._y = self._y.reshape(-1)
        self._label_kind = y_kind
        return self

    def predict_proba(self, Q: Any) -> Any:
        """Class probabilities (m, n_classes): each class's share of the neighbours' weights."""
        w, idx, qkind = self._neighbours(Q)
        P = _class_weights(w, self._y[idx], len(self.classes_))
        total = P.sum(axis=1, keepdims=True)
        P = np.divide(P, total, out=np.zeros_like(P), where=total > 0)
        return arr.wrap(P, qkind, arr.dtype_of(self._nn._fit_X))

    def predict(self, Q: Any) -> Any:
        """The class with the largest (weighted) vote among the k nearest fitted points, per query."""
        w, idx, _ = self._neighbours(Q)
        P = _class_weights(w, self._y[idx], len(self.classes_))
        labels = self.classes_[P.argmax(axis=1)]
        if self._label_kind.kind != "numpy" and labels.dtype.kind in "fiub":
            return arr.wrap(labels, self._label_kind)
        return labels

    def score(self, Q: Any, y: Any) -> float:
        """Mean accuracy of ``predict(Q)`` against the labels y."""
        pred = _labels_host(self.predict(Q))
        truth = _labels_host(as_array(y, "y"))
        if truth.shape != pred.shape:
            raise ShapeError(f"y must have shape {pred.shape} to match the queries, got {truth.shape}")
        return float(np.mean(pred == truth))


def _labels_host(y: Any) -> np.ndarray:
    """Labels as a host NumPy array (NumPy arrays of any dtype are kept as they are)."""
    return y if isinstance(y, np.ndarray) else arr.to_numpy(y, arr.dtype_of(y))


def _class_weights(w: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(m, n_classes) sums of the weights per class."""
    m = labels.shape[0]
    flat = (np.arange(m)[:, None] * n_classes + labels).ravel()
    return np.bincount(flat, weights=w.ravel(), minlength=m * n_classes).reshape(m, n_classes)


class KNeighborsRegressor(_KNeighborsBase):
    """k-nearest-neighbour regression: the (weighted) mean of the neighbours' targets.

    ``weights``, ``metric`` and ``backend`` as for :class:`KNeighborsClassifier`. Targets y are
    (n,) or (n, t) numbers; predictions have the same trailing shape, in the queries' kind.

    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [10.0]])
    >>> reg = KNeighborsRegressor(k=2).fit(X, np.array([0.0, 1.0, 2.0, 10.0]))
    >>> reg.predict(np.array([[0.4], [9.0]]))
    array([0.5, 6. ])
    """

    def fit(self, X: Any, y: Any) -> "KNeighborsRegressor":
        """Store points X (n, D) and targets y (n,) or (n, t). Returns self."""
        self._nn.fit(X)
        y = as_targets(y, self._nn.n_samples_fit_)
        self._y = host(y, np.float64)
        return self

    def predict(self, Q: Any) -> Any:
        """The weighted mean of the k nearest fitted points' targets, per query."""
        w, idx, qkind = self._neighbours(Q)
        Yn = self._y[idx]                                        # (m, k) or (m, k, t)
        total = w.sum(axis=1)
        if Yn.ndim == 3:
            pred = np.einsum("mk,mkt->mt", w, Yn) / total[:, None]
        else:
            pred = (w * Yn).sum(axis=1) / total
        return arr.wrap(np.ascontiguousarray(pred), qkind, arr.dtype_of(self._nn._fit_X))

    def score(self, Q: Any, y: Any) -> float:
        """Coefficient of determination R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² (averaged over outputs)."""
        pred = host(self.predict(Q), np.float64)
        truth = host(as_array(y, "y"), np.float64)
        if truth.shape != pred.shape:
            raise ShapeError(f"y must have shape {pred.shape} to match the queries, got {truth.shape}")
        t2, p2 = truth.reshape(len(truth), -1), pred.reshape(len(pred), -1)
        ss_res = ((t2 - p2) ** 2).sum(axis=0)
        ss_tot = ((t2 - t2.mean(axis=0)) ** 2).sum(axis=0)
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(ss_res == 0, 1.0, 0.0))
        return float(r2.mean())


__all__ = ["NearestNeighbors", "KNeighborsClassifier", "KNeighborsRegressor", "METRICS"]
