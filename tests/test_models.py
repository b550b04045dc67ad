"""kernla.models: k-nearest neighbours, kernel interpolation, Gaussian-process regression.

References: scikit-learn (brute-force neighbours, GaussianProcessRegressor with fixed
hyperparameters), scipy's RBFInterpolator, dense NumPy formulas. Sizes stay small so that the
whole file runs in well under 30 s on two cores.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kernla
from kernla import LazyTensor
from kernla.errors import ArrayKindError, InputValueError, ShapeError
from kernla.models import (KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors, NotFittedError)

sk_neighbors = pytest.importorskip("sklearn.neighbors")


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# k-nearest neighbours
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def knn_data():
    r = rng(0)
    X = r.normal(size=(400, 4))
    Q = r.normal(size=(150, 4))
    labels = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    targets = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] ** 2], axis=1)
    return X, Q, labels, targets


SK_METRICS = ["euclidean", "sqeuclidean", "manhattan", "chebyshev", "cosine"]


@pytest.mark.parametrize("metric", SK_METRICS)
def test_kneighbors_matches_sklearn(knn_data, metric):
    X, Q, _, _ = knn_data
    k = 7
    ref = sk_neighbors.NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(X)
    d_ref, i_ref = ref.kneighbors(Q)
    d, i = NearestNeighbors(k=k, metric=metric).fit(X).kneighbors(Q)
    assert i.dtype == np.int64 and i.shape == (150, k) and d.shape == (150, k)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-10, atol=1e-12)
    # no queries: the fitted points, each without itself
    d_ref, i_ref = ref.kneighbors()
    d, i = NearestNeighbors(k=k, metric=metric).fit(X).kneighbors()
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_classifier_and_regressor_match_sklearn(knn_data, metric, weights):
    X, Q, labels, targets = knn_data
    k = 7
    names = np.array(["low", "mid", "high"])[labels]  # string labels
    clf = KNeighborsClassifier(k=k, weights=weights, metric=metric).fit(X, names)
    ref = sk_neighbors.KNeighborsClassifier(n_neighbors=k, weights=weights, metric=metric,
                                            algorithm="brute").fit(X, names)
    np.testing.assert_array_equal(clf.classes_, ref.classes_)
    np.testing.assert_array_equal(clf.predict(Q), ref.predict(Q))
    np.testing.assert_allclose(clf.predict_proba(Q), ref.predict_proba(Q), rtol=1e-10, atol=1e-12)
    assert clf.score(Q, ref.predict(Q)) == 1.0
    assert clf.score(X, names) == pytest.approx(ref.score(X, names))

    for y in (targets, targets[:, 0]):
        reg = KNeighborsRegressor(k=k, weights=weights, metric=metric).fit(X, y)
        sk = sk_neighbors.KNeighborsRegressor(n_neighbors=k, weights=weights, metric=metric,
                                              algorithm="brute").fit(X, y)
        pred = reg.predict(Q)
        assert pred.shape == y[:len(Q)].shape
        np.testing.assert_allclose(pred, sk.predict(Q), rtol=1e-10, atol=1e-12)
        assert reg.score(Q, sk.predict(Q)) == pytest.approx(1.0)
        assert reg.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-10)


def test_distance_weights_with_exact_matches():
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 1, 1, 1])
    # the query sits on point 0: only that point votes, whatever the other neighbours say
    clf = KNeighborsClassifier(k=3, weights="distance").fit(X, y)
    np.testing.assert_array_equal(clf.predict(np.array([[0.0]])), [0])
    reg = KNeighborsRegressor(k=3, weights="distance").fit(X, y.astype(float))
    w = 1 / np.array([0.4, 0.6, 1.4])  # neighbours 1, 2, 0 of the query 1.4
    np.testing.assert_allclose(reg.predict(np.array([[0.0], [1.4]])), [0.0, (w[0] + w[1]) / w.sum()])
    reg = KNeighborsRegressor(k=2, weights=lambda d: np.exp(-d)).fit(X, X[:, 0])
    w = np.exp(-np.array([0.25, 0.75]))
    np.testing.assert_allclose(reg.predict(np.array([[0.25]])), [(w @ [0.0, 1.0]) / w.sum()])


def _acosh(z):
    return np.arccosh(np.maximum(z, 1.0))


def test_hyperbolic_and_poincare_vs_dense_numpy():
    r = rng(3)
    # upper half-space: first coordinate > 0
    X = np.column_stack([r.uniform(0.1, 2.0, 300), r.normal(size=(300, 2))])
    Q = np.column_stack([r.uniform(0.1, 2.0, 60), r.normal(size=(60, 2))])
    sq = ((Q[:, None] - X[None]) ** 2).sum(-1)
    D = _acosh(1 + sq / (2 * Q[:, :1] * X[None, :, 0]))
    i_ref = np.argsort(D, axis=1)[:, :5]
    d, i = NearestNeighbors(k=5, metric="hyperbolic").fit(X).kneighbors(Q)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, np.take_along_axis(D, i_ref, 1), rtol=1e-9)
    # Poincaré ball
    B = r.normal(size=(300, 3))
    B = 0.9 * B / (1 + np.linalg.norm(B, axis=1, keepdims=True))
    P = B[:60] * 0.99 + 0.001
    sq = ((P[:, None] - B[None]) ** 2).sum(-1)
    D = _acosh(1 + 2 * sq / ((1 - (P ** 2).sum(1))[:, None] * (1 - (B ** 2).sum(1))[None]))
    i_ref = np.argsort(D, axis=1)[:, :5]
    d, i = NearestNeighbors(k=5, metric="poincare").fit(B).kneighbors(P)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, np.take_along_axis(D, i_ref, 1), rtol=1e-9)
    # points outside the model's domain are refused
    with pytest.raises(InputValueError, match="first coordinate"):
        NearestNeighbors(metric="hyperbolic").fit(-X)
    with pytest.raises(InputValueError, match="norm < 1"):
        NearestNeighbors(metric="poincare").fit(B * 3)


def test_custom_metric_callable(knn_data):
    X, Q, labels, _ = knn_data
    w = np.array([1.0, 4.0, 0.5, 2.0])

    def weighted(x_i, y_j):
        return (((x_i - y_j) ** 2) * w).sum(-1)

    d, i = NearestNeighbors(k=4, metric=weighted).fit(X).kneighbors(Q)
    D = (((Q[:, None] - X[None]) ** 2) * w).sum(-1)
    i_ref = np.argsort(D, axis=1)[:, :4]
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, np.take_along_axis(D, i_ref, 1), rtol=1e-10)
    clf = KNeighborsClassifier(k=5, metric=weighted).fit(X, labels)
    ref = sk_neighbors.KNeighborsClassifier(n_neighbors=5, algorithm="brute", metric="euclidean")
    ref.fit(X * np.sqrt(w), labels)
    np.testing.assert_array_equal(clf.predict(Q), ref.predict(Q * np.sqrt(w)))
    with pytest.raises(ShapeError, match="scalar LazyTensor"):
        NearestNeighbors(k=2, metric=lambda a, b: a - b).fit(X).kneighbors(Q)


def test_knn_float32_and_torch(knn_data):
    torch = pytest.importorskip("torch")
    X, Q, labels, targets = knn_data
    d64, i64 = NearestNeighbors(k=3).fit(X).kneighbors(Q)
    d, i = NearestNeighbors(k=3).fit(torch.from_numpy(X)).kneighbors(torch.from_numpy(Q))
    assert isinstance(d, torch.Tensor) and isinstance(i, torch.Tensor) and i.dtype == torch.int64
    assert d.dtype == torch.float64
    np.testing.assert_array_equal(i.numpy(), i64)
    np.testing.assert_allclose(d.numpy(), d64, rtol=1e-12)
    reg = KNeighborsRegressor(k=3).fit(torch.from_numpy(X), torch.from_numpy(targets))
    out = reg.predict(torch.from_numpy(Q))
    assert isinstance(out, torch.Tensor) and out.shape == (150, 2)
    clf = KNeighborsClassifier(k=3).fit(torch.from_numpy(X), torch.from_numpy(labels))
    assert isinstance(clf.predict(torch.from_numpy(Q)), torch.Tensor)
    assert isinstance(clf.predict_proba(torch.from_numpy(Q)), torch.Tensor)
    # float32 data: same neighbours here (well separated), float64 queries are cast
    d32, i32 = NearestNeighbors(k=3).fit(X.astype(np.float32)).kneighbors(Q)
    assert d32.dtype == np.float32
    np.testing.assert_array_equal(i32, i64)
    with pytest.raises(ArrayKindError, match="fitted on numpy"):
        NearestNeighbors(k=3).fit(X).kneighbors(torch.from_numpy(Q))


def test_knn_errors(knn_data):
    X, Q, labels, _ = knn_data
    with pytest.raises(NotFittedError, match="fit"):
        NearestNeighbors().kneighbors(Q)
    with pytest.raises(NotFittedError):
        KNeighborsClassifier().predict(Q)
    with pytest.raises(NotFittedError):
        KNeighborsRegressor().predict(Q)
    nn = NearestNeighbors(k=3).fit(X)
    with pytest.raises(ShapeError, match="dimension 3"):
        nn.kneighbors(Q[:, :3])
    with pytest.raises(ShapeError, match="k=401"):
        nn.kneighbors(Q, k=401)
    with pytest.raises(ShapeError, match="k=400"):
        nn.kneighbors(k=400)  # the point itself does not count
    with pytest.raises(InputValueError, match="positive integer"):
        NearestNeighbors(k=0)
    with pytest.raises(InputValueError, match="unknown metric"):
        NearestNeighbors(metric="mahalanobis")
    with pytest.raises(InputValueError, match="weights"):
        KNeighborsClassifier(weights="inverse")
    with pytest.raises(ShapeError, match="labels"):
        KNeighborsClassifier().fit(X, labels[:-1])
    with pytest.raises(ShapeError, match=r"\(400,\)"):
        KNeighborsRegressor().fit(X, np.ones(3))
    with pytest.raises(InputValueError, match="NaN"):
        nn.kneighbors(np.full((2, 4), np.nan))
    with pytest.raises(ShapeError, match="empty"):
        NearestNeighbors().fit(np.zeros((0, 4)))
    with pytest.raises(ShapeError, match="2-D"):
        NearestNeighbors().fit(np.zeros((2, 2, 2)))
