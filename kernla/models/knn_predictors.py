"""k-nearest-neighbour classification and regression on top of :class:`~kernla.models.NearestNeighbors`.

Both are scikit-learn estimators (``ClassifierMixin`` / ``RegressorMixin``): their parameters
are stored as given and checked by ``fit``, which builds the search afresh, so ``set_params``
followed by ``fit`` uses the new values.

>>> import numpy as np
>>> X = np.array([[0.0], [1.0], [2.0], [10.0]])
>>> KNeighborsRegressor(n_neighbors=2).fit(X, np.array([0.0, 1.0, 2.0, 10.0])).predict(np.array([[0.4], [9.0]]))
array([0.5, 6. ])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import arrays as arr
from ..errors import InputValueError, ShapeError
from ._common import as_array, as_targets, host, kind
from ._sklearn import BaseEstimator, ClassifierMixin, RegressorMixin, check_fitted
from .knn import NearestNeighbors
from .metrics import MetricSpec

WeightSpec = str | Callable[[np.ndarray], np.ndarray]


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
    if not callable(weights):
        raise InputValueError(f"weights must be 'uniform', 'distance' or a callable, got {weights!r}")
    w = np.asarray(weights(dist), dtype=np.float64)
    if w.shape != dist.shape:
        raise ShapeError(f"the weights callable must return an array of shape {dist.shape}, got {w.shape}")
    return w


def _check_weights(weights: Any) -> None:
    if not (weights in ("uniform", "distance") or (callable(weights) and not isinstance(weights, str))):
        raise InputValueError(f"weights must be 'uniform', 'distance' or a callable, got {weights!r}")


def _sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = host(as_array(sample_weight, "sample_weight"), np.float64).reshape(-1)
    if w.shape != (n,):
        raise ShapeError(f"sample_weight must have shape ({n},), got {w.shape}")
    return w


class _KNeighborsBase(BaseEstimator):
    def __init__(
        self,
        n_neighbors: int = 5,
        weights: WeightSpec = "uniform",
        metric: MetricSpec = "minkowski",
        p: float = 2,
        backend: str | None = None,
    ):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.p = p
        self.backend = backend

    def _fit_points(self, X: Any) -> None:
        _check_weights(self.weights)
        self._nn = NearestNeighbors(
            n_neighbors=self.n_neighbors, metric=self.metric, p=self.p, backend=self.backend
        ).fit(X)
        self.n_samples_fit_ = self._nn.n_samples_fit_
        self.n_features_in_ = self._nn.n_features_in_

    def _neighbours(self, X: Any) -> tuple[np.ndarray, np.ndarray, arr.Kind]:
        """(host weights, host indices, the queries' kind) of the nearest fitted points.

        ``X=None``: the fitted points, each excluded from its own neighbours (as scikit-learn).
        """
        check_fitted(self, "n_samples_fit_")
        if self.weights == "uniform":
            idx = self._nn.kneighbors(X, return_distance=False)
            return np.ones(tuple(idx.shape)), host(idx, np.int64), kind(idx)
        dist, idx = self._nn.kneighbors(X)
        return _weights(host(dist, np.float64), self.weights), host(idx, np.int64), kind(idx)


class KNeighborsClassifier(ClassifierMixin, _KNeighborsBase):
    """k-nearest-neighbour classifier: votes of the ``n_neighbors`` nearest fitted points.

    ``weights``: ``"uniform"`` (one vote each), ``"distance"`` (vote ∝ 1/distance; a query that
    coincides with fitted points takes only their votes) or a callable mapping the (m, k)
    distances to weights. Ties between classes go to the class that sorts first.
    ``metric``, ``p`` and ``backend`` as for :class:`~kernla.models.NearestNeighbors`.

    Labels may be any NumPy-sortable values (numbers, strings); ``classes_`` holds them sorted.
    ``predict`` returns NumPy labels (torch/CuPy numeric labels come back as their kind);
    ``predict_proba`` returns an (m, n_classes) array in the queries' kind.

    >>> import numpy as np
    >>> X = np.array([[0.0], [0.1], [0.2], [1.0], [1.1]])
    >>> clf = KNeighborsClassifier(n_neighbors=3).fit(X, ["a", "a", "a", "b", "b"])
    >>> clf.predict(np.array([[0.05], [1.2]]))
    array(['a', 'b'], dtype='<U1')
    >>> clf.predict_proba(np.array([[1.2]])).round(3)
    array([[0.333, 0.667]])
    """

    def fit(self, X: Any, y: Any) -> KNeighborsClassifier:
        """Check the parameters, store points X (n, D) and labels y (n,). Returns self."""
        from sklearn.utils.multiclass import check_classification_targets  # deferred: scikit-learn's label rules

        y = as_array(y, "y")
        y_kind = kind(y)
        labels = _labels_host(y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected: it is used as y.ravel()",
                _data_conversion_warning(),
                stacklevel=2,
            )
            labels = labels.ravel()
        self._fit_points(X)
        if labels.ndim != 1 or labels.shape[0] != self.n_samples_fit_:
            raise ShapeError(f"y must be a 1-D array of {self.n_samples_fit_} labels, got shape {labels.shape}")
        check_classification_targets(labels)
        self.classes_, self._y = np.unique(labels, return_inverse=True)
        self._y = self._y.reshape(-1)
        self._label_kind = y_kind
        return self

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities (m, n_classes): each class's share of the neighbours' weights."""
        w, idx, qkind = self._neighbours(X)
        P = _class_weights(w, self._y[idx], len(self.classes_))
        total = P.sum(axis=1, keepdims=True)
        P = np.divide(P, total, out=np.zeros_like(P), where=total > 0)
        return arr.wrap(P, qkind, arr.dtype_of(self._nn._fit_X))

    def predict(self, X: Any) -> Any:
        """The class with the largest (weighted) vote among the nearest fitted points, per query."""
        w, idx, _ = self._neighbours(X)
        P = _class_weights(w, self._y[idx], len(self.classes_))
        labels = self.classes_[P.argmax(axis=1)]
        if self._label_kind.kind != "numpy" and labels.dtype.kind in "fiub":
            return arr.wrap(labels, self._label_kind)
        return labels

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy of ``predict(X)`` against the labels y (weighted by ``sample_weight``)."""
        pred = _labels_host(self.predict(X))
        truth = _labels_host(as_array(y, "y"))
        if truth.shape != pred.shape:
            raise ShapeError(f"y must have shape {pred.shape} to match the queries, got {truth.shape}")
        return float(np.average(pred == truth, weights=_sample_weight(sample_weight, len(truth))))


def _data_conversion_warning() -> type:
    from sklearn.exceptions import DataConversionWarning  # deferred: only when a column-vector y is given

    return DataConversionWarning


def _labels_host(y: Any) -> np.ndarray:
    """Labels as a host NumPy array (NumPy arrays of any dtype are kept as they are)."""
    return y if isinstance(y, np.ndarray) else arr.to_numpy(y, arr.dtype_of(y))


def _class_weights(w: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(m, n_classes) sums of the weights per class."""
    m = labels.shape[0]
    flat = (np.arange(m)[:, None] * n_classes + labels).ravel()
    return np.bincount(flat, weights=w.ravel(), minlength=m * n_classes).reshape(m, n_classes)


def r2_score(truth: np.ndarray, pred: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Coefficient of determination R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)², averaged over outputs (host arrays).

    >>> r2_score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    0.5
    """
    if truth.shape != pred.shape:
        raise ShapeError(f"y must have shape {pred.shape} to match the predictions, got {truth.shape}")
    t2, p2 = truth.reshape(len(truth), -1), pred.reshape(len(pred), -1)
    w = np.ones(len(t2)) if sample_weight is None else sample_weight
    ss_res = (w[:, None] * (t2 - p2) ** 2).sum(axis=0)
    ss_tot = (w[:, None] * (t2 - np.average(t2, axis=0, weights=w)) ** 2).sum(axis=0)
    r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
    return float(r2.mean())


class RegressionScore:
    """``score`` of kernla's regressors: R² on host copies, so torch and CuPy predictions work."""

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R² of ``predict(X)`` against y (averaged over outputs)."""
        pred = host(self.predict(X), np.float64)  # type: ignore[attr-defined]  # a mixin: the estimator predicts
        truth = host(as_array(y, "y"), np.float64)
        return r2_score(truth, pred, _sample_weight(sample_weight, len(truth)))


class KNeighborsRegressor(RegressionScore, RegressorMixin, _KNeighborsBase):
    """k-nearest-neighbour regression: the (weighted) mean of the neighbours' targets.

    ``weights``, ``metric``, ``p`` and ``backend`` as for :class:`KNeighborsClassifier`. Targets
    y are (n,) or (n, t) numbers; predictions have the same trailing shape, in the queries' kind.

    >>> import numpy as np
    >>> X = np.array([[0.0], [1.0], [2.0], [10.0]])
    >>> reg = KNeighborsRegressor(n_neighbors=2).fit(X, np.array([0.0, 1.0, 2.0, 10.0]))
    >>> reg.predict(np.array([[0.4], [9.0]]))
    array([0.5, 6. ])
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any) -> KNeighborsRegressor:
        """Check the parameters, store points X (n, D) and targets y (n,) or (n, t). Returns self."""
        self._fit_points(X)
        self._y = host(as_targets(y, self.n_samples_fit_), np.float64)
        return self

    def predict(self, X: Any) -> Any:
        """The weighted mean of the nearest fitted points' targets, per query."""
        w, idx, qkind = self._neighbours(X)
        Yn = self._y[idx]  # (m, k) or (m, k, t)
        total = w.sum(axis=1)
        if Yn.ndim == 3:
            pred = np.einsum("mk,mkt->mt", w, Yn) / total[:, None]
        else:
            pred = (w * Yn).sum(axis=1) / total
        return arr.wrap(np.ascontiguousarray(pred), qkind, arr.dtype_of(self._nn._fit_X))


__all__ = ["KNeighborsClassifier", "KNeighborsRegressor", "RegressionScore", "r2_score"]
