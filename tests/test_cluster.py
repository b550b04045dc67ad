"""kernla.cluster: pykeops' clustering helpers, checked against brute-force references on random points."""

from __future__ import annotations

import numpy as np
import pytest

from kernla.cluster import numpy as knp
from kernla.errors import InputValueError, ShapeError


@pytest.fixture
def rng():
    return np.random.default_rng(1931)


def _brute_cells(x, size, origin):
    """Cell of each point and the label each cell must get: the rank of the cell in lexicographic order."""
    cells = [tuple(np.floor((p - origin) / size).astype(int)) for p in x]
    rank = {c: k for k, c in enumerate(sorted(set(cells)))}
    return np.array([rank[c] for c in cells])


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
def test_grid_cluster_labels_the_cells_in_lexicographic_order(rng, dim):
    x = rng.normal(size=(317, dim)) * 3
    size = rng.uniform(0.5, 2.0, size=dim)
    assert np.array_equal(knp.grid_cluster(x, size), _brute_cells(x, size, np.zeros(dim)))
    assert np.array_equal(knp.grid_cluster(x, 0.7), _brute_cells(x, 0.7, np.zeros(dim)))


def test_grid_cluster_keeps_far_cells_apart():
    """pykeops packs 10 bits per axis; cells 1024 apart along an axis are still two clusters here."""
    x = np.array([[0.5, 0.5], [1024.5, 0.5], [0.5, 1024.5]])
    assert sorted(knp.grid_cluster(x, 1.0).tolist()) == [0, 1, 2]


def test_sort_clusters_is_stable_and_sorts_tuples_and_lists(rng):
    lab = rng.integers(0, 7, size=101)
    x = rng.normal(size=(101, 2))
    y = rng.normal(size=(101,))
    xs, ls = knp.sort_clusters(x, lab)
    order = sorted(range(101), key=lambda k: (lab[k], k))
    assert np.array_equal(xs, x[order]) and np.array_equal(ls, lab[order])
    (xt, yt), _ = knp.sort_clusters((x, y), lab)
    assert np.array_equal(xt, x[order]) and np.array_equal(yt, y[order])
    xl, _ = knp.sort_clusters([x, y], lab)
    assert isinstance(xl, list) and np.array_equal(xl[1], y[order])


def test_ranges_and_centroids_match_loops(rng):
    x = rng.normal(size=(203, 3))
    lab = rng.integers(0, 11, size=203)
    w = rng.uniform(0.1, 2.0, size=203)
    xs, ls = knp.sort_clusters(x, lab)
    ranges = knp.cluster_ranges(ls)
    for k, (a, b) in enumerate(ranges):
        assert (ls[a:b] == k).all() and b - a == (lab == k).sum()
    means = np.array([x[lab == k].mean(axis=0) for k in range(11)])
    weighted = np.array([(x[lab == k] * w[lab == k, None]).sum(0) / w[lab == k].sum() for k in range(11)])
    np.testing.assert_allclose(knp.cluster_centroids(x, lab), means, rtol=1e-12)
    np.testing.assert_allclose(knp.cluster_centroids(x, lab, weights=w), weighted, rtol=1e-12)
    r, c, total = knp.cluster_ranges_centroids(x, lab, weights=w)
    np.testing.assert_allclose(c, weighted, rtol=1e-12)
    np.testing.assert_allclose(total, [w[lab == k].sum() for k in range(11)], rtol=1e-12)
    r, c, counts = knp.cluster_ranges_centroids(x, lab)
    assert counts.tolist() == [float((lab == k).sum()) for k in range(11)]
    assert r.dtype == np.int64 and r.tolist() == knp.cluster_ranges(lab).tolist()


def _masks(ranges, n, m):
    """The (n, m) point masks the two halves of a ranges tuple describe (axis=1 half, axis=0 half)."""
    r_i, s_i, red_j, r_j, s_j, red_i = ranges
    forward = np.zeros((n, m), dtype=bool)
    for k, (a, b) in enumerate(r_i):
        for c, d in red_j[(s_i[k - 1] if k else 0) : s_i[k]]:
            forward[a:b, c:d] = True
    backward = np.zeros((n, m), dtype=bool)
    for k, (a, b) in enumerate(r_j):
        for c, d in red_i[(s_j[k - 1] if k else 0) : s_j[k]]:
            backward[c:d, a:b] = True
    return forward, backward


def test_from_matrix_describes_the_kept_blocks_on_both_axes(rng):
    n_i, n_j = rng.multinomial(45, np.ones(6) / 6), rng.multinomial(38, np.ones(5) / 5)
    r_i, r_j = knp.cluster_ranges(np.repeat(np.arange(6), n_i)), knp.cluster_ranges(np.repeat(np.arange(5), n_j))
    keep = rng.random((6, 5)) < 0.4
    ranges = knp.from_matrix(r_i, r_j, keep)
    assert all(a.dtype == np.int64 for a in ranges)
    expected = np.repeat(np.repeat(keep, n_i, axis=0), n_j, axis=1)
    forward, backward = _masks(ranges, 45, 38)
    assert np.array_equal(forward, expected) and np.array_equal(backward, expected)
    swapped = _masks(knp.swap_axes(ranges), 38, 45)
    assert np.array_equal(swapped[0], expected.T) and np.array_equal(swapped[1], expected.T)
    assert knp.swap_axes(None) is None


def test_bad_input_is_a_kernla_error():
    with pytest.raises(ShapeError):
        knp.grid_cluster(np.zeros(5), 1.0)
    with pytest.raises(InputValueError):
        knp.grid_cluster(np.zeros((5, 2)), 0.0)
    with pytest.raises(InputValueError):
        knp.grid_cluster(np.full((2, 2), np.nan), 1.0)
    with pytest.raises(InputValueError):
        knp.cluster_ranges(np.array([0, -1]))
    with pytest.raises(ShapeError):
        knp.from_matrix(np.array([[0, 2]]), np.array([[0, 1]]), np.ones((2, 1), dtype=bool))


def test_torch_helpers_agree_with_numpy_and_keep_pykeops_dtypes(rng):
    torch = pytest.importorskip("torch")
    from kernla.cluster import torch as kt  # torch is optional

    x = rng.normal(size=(157, 2))
    xt = torch.tensor(x, requires_grad=True)
    lab = kt.grid_cluster(xt, 0.6)
    assert lab.dtype == torch.int32
    assert np.array_equal(lab.numpy(), _brute_cells(x, 0.6, x.min(axis=0)))  # pykeops.torch: grid at the minimum
    xs, ls = kt.sort_clusters(xt, lab)
    xs.sum().backward()
    assert np.array_equal(xt.grad.numpy(), np.ones_like(x))
    ranges, c, counts = kt.cluster_ranges_centroids(xt, lab)
    assert ranges.dtype == torch.int64 and c.dtype == torch.float64
    np.testing.assert_allclose(c.numpy(), knp.cluster_centroids(x, lab.numpy()), rtol=1e-12)
    w = torch.zeros(157, dtype=torch.float64)
    _, _, total = kt.cluster_ranges_centroids(xt, lab, weights=w)
    assert (total.numpy() > 0).all()  # weights clamped at min_weight
    keep = torch.rand(len(ranges), len(ranges)) < 0.3
    t = kt.from_matrix(ranges, ranges, keep)
    for a, b in zip(t, knp.from_matrix(ranges.numpy(), ranges.numpy(), keep.numpy())):
        assert a.dtype == torch.int64 and np.array_equal(a.numpy(), b)
    assert kt.swap_axes(t)[0] is t[3]
