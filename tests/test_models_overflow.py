"""Neighbours of huge coordinates (issue 15, item 5): distances must not overflow into wrong neighbours.

``(1e200)²`` is inf in float64 and ``(2e19)²`` in float32: every squared distance used to be inf,
argKmin returned -1 and the model indexed its targets with -1 (the last point).
"""

from __future__ import annotations

import numpy as np
import pytest

from kernla.errors import InputValueError
from kernla.models import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors

X = np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
Y = np.array([40.0, 30.0, 20.0, 10.0])


@pytest.mark.parametrize(
    "dtype, big", [(np.float64, 1e200), (np.float64, 1e300), (np.float32, 2e19), (np.float32, 1e38)]
)
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "manhattan", "chebyshev", "minkowski"])
def test_far_query_gets_the_farthest_point(dtype, big, metric):
    reg = KNeighborsRegressor(n_neighbors=1, metric=metric, p=3).fit(X.astype(dtype), Y)
    np.testing.assert_array_equal(reg.predict(np.array([[big, 0.0]], dtype=dtype)), [40.0])
    d, i = (
        NearestNeighbors(n_neighbors=4, metric=metric, p=3)
        .fit(X.astype(dtype))
        .kneighbors(np.array([[big, 0.0]], dtype=dtype))
    )
    np.testing.assert_array_equal(i, [[0, 1, 2, 3]])
    if metric != "sqeuclidean":  # (the squared distance itself is beyond float range)
        np.testing.assert_allclose(d[0, 0], big, rtol=1e-6)


def test_huge_fitted_points_and_cosine():
    big = 1e200 * X + np.array([1e200, 5e199])
    i = NearestNeighbors(n_neighbors=2).fit(big).kneighbors(big[:1] * 1.0000001, return_distance=False)
    assert i[0, 0] == 0
    clf = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(np.array([[1e300, 0.0], [0.0, 1e300]]), [0, 1])
    np.testing.assert_array_equal(clf.predict(np.array([[1e300, 1e299], [1.0, 5.0]])), [0, 1])


def test_undefined_distances_raise_instead_of_index_minus_one():
    def overflowing(x_i, y_j):  # a custom metric that overflows to inf far from the data
        return ((x_i - y_j) ** 2).sum(-1).exp()

    nn = NearestNeighbors(n_neighbors=1, metric=overflowing).fit(X)
    assert nn.kneighbors(X[:1], return_distance=False)[0, 0] == 0
    with pytest.raises(InputValueError, match="NaN or infinite"):
        nn.kneighbors(np.array([[1000.0, 0.0]]))
