"""The CPU engine's matrix-multiply tiles (kernla/engines/cpu/tiles.py, kl_tiles.h) against dense float64 references.

Every reduction of the registry on a formula with the three kinds of tiled inner product (a squared
distance, a scalar product, a norm), both dtypes, odd sizes that cut row blocks, column tiles and
micro-kernel panels; dimensions just below and above the threshold and past one inner-product pass;
kernel products of several widths; kNN against scikit-learn and faiss within the stated error bound.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernla import Genred
from kernla.engines import numpy_engine
from kernla.engines.cpu.compiler import find_compiler
from kernla.formula import Pm, Vi, Vj, call
from kernla.reductions import KINDS, Reduction

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C++ compiler")

if find_compiler() is not None:
    from kernla.engines.cpu import engine, tiles

NX, NY = 101, 517  # three row blocks of 48 (the last one short), three column tiles, a short panel
TOL = {np.float32: 2e-4, np.float64: 1e-10}
U = {np.float32: 2.0**-24, np.float64: 2.0**-53}


def data(d: int, dtype, seed: int = 0, width: int = 3):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(NX, d)) / np.sqrt(d)).astype(dtype)
    y = (rng.normal(size=(NY, d)) / np.sqrt(d)).astype(dtype)
    v = rng.uniform(-1, 1, (NY, width)).astype(dtype)
    p = rng.uniform(0.5, 1.5, d).astype(dtype)
    return [x, y, v, p]


def mixed(d: int):
    """A scalar formula with a distance of two expressions, a scalar product and a norm, all of dimension d."""
    x, y, p = Vi(0, d), Vj(1, d), Pm(3, d)
    return (
        call("Exp", -call("SqDist", x * p, y))
        + call("Scalprod", x, y) * 0.3
        + call("Norm2", y - x) * 0.1
        + call("Sum", call("Square", x - y)) * 0.01
    )


def reduction(kind, formula, v):
    weight = call("Exp", v) if kind.needs_weight else None
    return Reduction(kind.name, formula, weight, 4 if kind.needs_k else None)


def reference(red, arrays):
    """The NumPy engine on float64 copies: the reduction's reference accumulator on dense float64 values."""
    return numpy_engine.run(red, [a.astype(np.float64) for a in arrays], NX, NY)


def close(got, want, dtype):
    for g, w in zip(got, want):
        if g.dtype == np.int64:
            np.testing.assert_array_equal(g, w)
        else:
            scale = max(1.0, float(np.nanmax(np.abs(w))))
            np.testing.assert_allclose(g, w, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(KINDS))
def test_every_reduction_through_tiles(name, dtype):
    d = tiles.MIN_DIM + 1
    arrays = data(d, dtype, seed=len(name))
    red = reduction(KINDS[name], mixed(d), Vj(2, 3))
    assert engine.kernel(red, np.dtype(dtype), tiles.MIN_DIM).tiles is not None
    close(engine.run(red, arrays, NX, NY), reference(red, arrays), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [-1, 0, 300])
def test_dimensions_around_the_threshold_and_past_one_pass(offset, dtype):
    d = tiles.MIN_DIM + offset if offset < 300 else offset  # 300: two passes of the micro-kernel's 256 terms
    arrays = data(d, dtype, seed=d)
    red = Reduction("Sum", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))) * Vj(2, 3))
    planned = engine.kernel(red, np.dtype(dtype), tiles.MIN_DIM).tiles
    assert (planned is None) == (offset < 0)
    x, y, v = (a.astype(np.float64) for a in arrays[:3])
    want = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ v
    close(engine.run(red, arrays, NX, NY), [want], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [3, 40])
@pytest.mark.parametrize("width", [1, 3, 17, 40])
def test_kernel_products_of_any_width(width, d, dtype):
    """Σ_j k_ij B_j by the micro-kernel, with and without tiled inner products, B's width cutting panels."""
    x, y, v, p = data(d, dtype, seed=width, width=width)
    k = call("Exp", -call("SqDist", Vi(0, d), Vj(1, d)))
    got = engine.run(Reduction("Sum", k * Vj(2, width)), [x, y, v, p], NX, NY)[0]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want = np.exp(-((x64[:, None] - y64[None]) ** 2).sum(-1)) @ v.astype(np.float64)
    close([got], [want], dtype)


def test_the_exact_path_stays_available(monkeypatch):
    d = 40
    red = Reduction("Sum", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))))
    arrays = data(d, np.float64)
    monkeypatch.setattr(tiles, "MIN_DIM", 0)
    assert engine.kernel(red, np.dtype(np.float64), tiles.MIN_DIM).tiles is None
    close(engine.run(red, arrays, NX, NY), reference(red, arrays), np.float64)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_operands_take_the_exact_path(bad):
    d = 40
    arrays = data(d, np.float64)
    arrays[1][5, 3] = bad
    red = Reduction("Min_ArgMin", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))))
    close(engine.run(red, arrays, NX, NY), reference(red, arrays), np.float64)


def test_reduction_over_i_and_lazy_tensor_spelling():
    from kernla import LazyTensor

    d = 33
    x, y, v, _ = data(d, np.float32)
    x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
    got = (-((x_i - y_j) ** 2).sum(-1)).exp().sum(0)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want = np.exp(-((x64[:, None] - y64[None]) ** 2).sum(-1)).sum(0)[:, None]
    close([np.asarray(got)], [want], np.float32)


def _bound(x, y, dtype):
    """The expansion's error bound on a squared distance: (D + 3) u (|x - c|² + |y - c|²), c the mean of y."""
    c = y.mean(0)
    return (x.shape[1] + 3) * U[dtype] * (((x - c) ** 2).sum(1).max() + ((y - c) ** 2).sum(1).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_knn_agrees_with_sklearn_and_faiss_up_to_ties_within_the_bound(dtype):
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(7)
    d, k = 50, 10
    centres = rng.normal(size=(5, d)) * 3
    y = (centres[rng.integers(0, 5, 3001)] + rng.normal(size=(3001, d))).astype(dtype)
    x = (centres[rng.integers(0, 5, 211)] + rng.normal(size=(211, d))).astype(dtype)
    knn = Genred("SqDist(X, Y)", [f"X = Vi({d})", f"Y = Vj({d})"], reduction_op="ArgKMin", opt_arg=k, axis=1)
    got = knn(x, y, backend="cpu")
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    d2 = ((x64[:, None] - y64[None]) ** 2).sum(-1)
    want = np.sort(d2, 1)[:, :k]
    bound = _bound(x64, y64, dtype) + 4 * U[dtype] * want.max()
    # the distances at the indices returned are the k smallest, in order, up to the bound (ties within it)
    np.testing.assert_allclose(np.take_along_axis(d2, got, 1), want, rtol=0, atol=2 * bound)
    assert (np.diff(np.take_along_axis(d2, got, 1), axis=1) > -2 * bound).all()
    sk = NearestNeighbors(n_neighbors=k).fit(y64).kneighbors(x64, return_distance=False)
    gaps = np.diff(np.sort(d2, 1)[:, : k + 1], axis=1)
    clear = (gaps > 2 * bound).all(1)  # rows whose k nearest are separated by more than the bound
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(got[clear], sk[clear])
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexFlatL2(d)
    index.add(y.astype(np.float32))
    fi = index.search(x.astype(np.float32), k)[1]
    np.testing.assert_array_equal(got[clear], fi[clear])


def test_the_plan_finds_every_spelling_and_only_pairwise_ones():
    d = 20
    x, y, p = Vi(0, d), Vj(1, d), Pm(2, d)
    found = tiles.plan((mixed(d),), 16, 4)
    assert sorted(s.kind for s in found.sites) == ["dot", "sqdist", "sqdist"]  # Norm2(y - x) is SqDist(x, y)
    assert tiles.plan((call("Sum", (x * y)),), 16, 3).sites[0].kind == "dot"
    assert tiles.plan((call("SqDist", x, p),), 16, 3) is None  # no j-variable
    assert tiles.plan((call("SqDist", x + y, y),), 16, 3) is None  # one operand depends on both
