"""radius_neighbors, kneighbors_graph / radius_neighbors_graph and Minkowski p, against scikit-learn (brute force)."""

from __future__ import annotations

import numpy as np
import pytest

from kernla.errors import InputValueError
from kernla.models import NearestNeighbors

sk_neighbors = pytest.importorskip("sklearn.neighbors")


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(7)
    return r.normal(size=(300, 3)), r.normal(size=(40, 3))


RADII = {
    "euclidean": 0.9,
    "sqeuclidean": 0.8,
    "manhattan": 1.5,
    "chebyshev": 0.7,
    "cosine": 0.05,
    ("minkowski", 3): 0.8,
    ("minkowski", 1.5): 1.1,
}


def _params(key):
    return {"metric": key[0], "p": key[1]} if isinstance(key, tuple) else {"metric": key}


@pytest.mark.parametrize("key", list(RADII), ids=str)
def test_radius_neighbors_match_sklearn(data, key):
    X, Q = data
    radius = RADII[key]
    ref = sk_neighbors.NearestNeighbors(radius=radius, algorithm="brute", **_params(key)).fit(X)
    ours = NearestNeighbors(radius=radius, **_params(key)).fit(X)
    for queries in (Q, None):
        d_ref, i_ref = ref.radius_neighbors(queries, sort_results=True)
        d, i = ours.radius_neighbors(queries)
        assert d.dtype == object and len(i) == len(i_ref)
        assert sum(len(row) for row in i) > len(i)  # the radius keeps a few points per query
        for row in range(len(i)):
            np.testing.assert_array_equal(i[row], i_ref[row])
            np.testing.assert_allclose(d[row], d_ref[row], rtol=1e-9, atol=1e-12)
        G = ours.radius_neighbors_graph(queries, mode="distance")
        G_ref = ref.radius_neighbors_graph(queries, mode="distance")
        np.testing.assert_allclose(G.toarray(), G_ref.toarray(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p", [1, 1.5, 2, 3, np.inf])
def test_minkowski_p_and_kneighbors_graph(data, p):
    X, Q = data
    ref = sk_neighbors.NearestNeighbors(n_neighbors=6, metric="minkowski", p=p, algorithm="brute").fit(X)
    ours = NearestNeighbors(n_neighbors=6, p=p).fit(X)
    d_ref, i_ref = ref.kneighbors(Q)
    d, i = ours.kneighbors(Q)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-10)
    for queries in (Q, None):
        for mode in ("connectivity", "distance"):
            G, G_ref = ours.kneighbors_graph(queries, mode=mode), ref.kneighbors_graph(queries, mode=mode)
            assert G.shape == G_ref.shape and G.format == "csr"
            np.testing.assert_allclose(G.toarray(), G_ref.toarray(), rtol=1e-10)


def test_radius_neighbors_hyperbolic_and_torch(data):
    torch = pytest.importorskip("torch")
    X, Q = data
    X = np.column_stack([np.abs(X[:, 0]) + 0.1, X[:, 1:]])
    Q = np.column_stack([np.abs(Q[:, 0]) + 0.1, Q[:, 1:]])
    D = np.arccosh(1 + ((Q[:, None] - X[None]) ** 2).sum(-1) / (2 * Q[:, :1] * X[None, :, 0]))
    d, i = NearestNeighbors(radius=1.0, metric="hyperbolic").fit(X).radius_neighbors(Q)
    for row in range(len(Q)):
        expected = np.flatnonzero(D[row] <= 1.0)
        np.testing.assert_array_equal(np.sort(i[row]), expected)
        np.testing.assert_allclose(d[row], np.sort(D[row, expected]), rtol=1e-9)
    dt, it = (
        NearestNeighbors(radius=1.0, metric="hyperbolic").fit(torch.from_numpy(X)).radius_neighbors(torch.from_numpy(Q))
    )
    assert isinstance(it[0], torch.Tensor) and isinstance(dt[0], torch.Tensor)
    np.testing.assert_array_equal(it[3].numpy(), i[3])


def test_radius_and_mode_errors(data):
    X, Q = data
    nn = NearestNeighbors().fit(X)
    d, i = nn.radius_neighbors(Q, radius=0.0)
    assert all(len(row) == 0 for row in i)
    with pytest.raises(InputValueError, match="radius"):
        nn.radius_neighbors(Q, radius=-1.0)
    with pytest.raises(InputValueError, match="mode"):
        nn.kneighbors_graph(Q, mode="weights")
    with pytest.raises(InputValueError, match="p must be"):
        NearestNeighbors(p=0.5).fit(X)
