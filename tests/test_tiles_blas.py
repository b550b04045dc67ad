"""BLAS on the CPU engine's tiles (scipy's ?gemm handed to the kernel) against dense float64 references.

Inner products of dimension ≥ ``tiles.BLAS_DIM`` and kernel products of ≥ ``tiles.BLAS_COLUMNS``
columns call the BLAS; below, the micro-kernel. Every reduction of the registry, both dtypes, odd
sizes, dimensions and widths just below and above each threshold, block-sparse ranges, non-finite
operands, kNN against scikit-learn, and BLAS's thread count restored after each call.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from kernla import LazyTensor
from kernla.engines.cpu.compiler import find_compiler
from kernla.formula import Vi, Vj, call
from kernla.reductions import KINDS, Reduction

pytestmark = pytest.mark.skipif(find_compiler() is None, reason="no C++ compiler")

if find_compiler() is not None:
    from kernla.engines.cpu import engine, tiles

from tests.test_cpu_tiles import NX, NY, _bound, close, data, mixed, reduction, reference  # noqa: E402
from tests.test_ranges_tiles import MASK, RANGES  # noqa: E402


def _uses_blas(red, dtype) -> bool:
    k = engine.kernel(red, np.dtype(dtype), tiles.MIN_DIM, tiles.BLAS_DIM)
    return k.tiles is not None and all(s.blas for s in k.tiles.sites)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(KINDS))
def test_every_reduction_through_blas_tiles(name, dtype):
    d = tiles.BLAS_DIM + 3
    arrays = data(d, dtype, seed=len(name) + 1)
    red = reduction(KINDS[name], mixed(d), Vj(2, 3))
    assert _uses_blas(red, dtype)
    close(engine.run(red, arrays, NX, NY), reference(red, arrays), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [-1, 0, 1, 1000])
def test_dimensions_around_the_blas_threshold(offset, dtype):
    d = tiles.BLAS_DIM + offset
    arrays = data(d, dtype, seed=d)
    red = Reduction("Sum", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))) * Vj(2, 3))
    assert _uses_blas(red, dtype) == (offset >= 0)
    x, y, v = (a.astype(np.float64) for a in arrays[:3])
    want = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ v
    close(engine.run(red, arrays, NX, NY), [want], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [3, 70])
@pytest.mark.parametrize("extra", [-1, 0, 1, 184])
def test_wide_kernel_products_around_the_column_threshold(extra, d, dtype):
    """Σ_j k_ij B_j with B's width just below, at and above ``BLAS_COLUMNS`` (and 200 columns)."""
    width = tiles.BLAS_COLUMNS + extra
    x, y, v, _ = data(d, dtype, seed=width + d, width=width)
    k = call("Exp", -call("SqDist", Vi(0, d), Vj(1, d)))
    got = engine.run(Reduction("Sum", k * Vj(2, width)), [x, y, v], NX, NY)[0]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want = np.exp(-((x64[:, None] - y64[None]) ** 2).sum(-1)) @ v.astype(np.float64)
    close([got], [want], dtype)


def test_the_micro_kernel_stays_available(monkeypatch):
    d = 90
    red = Reduction("Sum", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))) * Vj(2, 40))
    arrays = data(d, np.float64, width=40)
    monkeypatch.setattr(tiles, "BLAS_DIM", 0)
    monkeypatch.setattr(tiles, "BLAS_COLUMNS", 0)
    assert not _uses_blas(red, np.float64)
    close(engine.run(red, arrays, NX, NY), reference(red, arrays), np.float64)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_non_finite_values_through_blas(bad):
    """A non-finite operand takes the exact path; a non-finite B goes through BLAS's product as it is."""
    d = tiles.BLAS_DIM + 5
    arrays = data(d, np.float64, width=30)
    arrays[1][5, 3] = bad
    red = Reduction("Min_ArgMin", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))))
    close(engine.run(red, arrays, NX, NY), reference(red, arrays), np.float64)
    arrays = data(d, np.float64, width=30)
    arrays[2][7, 2] = bad
    red = Reduction("Sum", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))) * Vj(2, 30))
    got, want = engine.run(red, arrays, NX, NY)[0], reference(red, arrays)[0]
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-10, atol=1e-10 * np.abs(want[ok]).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_sparse_ranges_through_blas(dtype):
    rng = np.random.default_rng(3)
    d, width = tiles.BLAS_DIM + 7, tiles.BLAS_COLUMNS + 5
    x, y = rng.normal(size=(301, d)).astype(dtype), rng.normal(size=(257, d)).astype(dtype)
    b = rng.normal(size=(257, width)).astype(dtype)
    d_ij = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)
    K = (-d_ij / d).exp()
    K.ranges = RANGES
    dense = np.exp(-((x[:, None].astype(np.float64) - y[None].astype(np.float64)) ** 2).sum(-1) / d) * MASK
    for got, want in ((K @ b, dense @ b), (K @ b[:, :1], dense @ b[:, :1])):
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= (1e-5 if dtype == np.float32 else 1e-12) * scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_knn_through_blas_agrees_with_sklearn_up_to_ties_within_the_bound(dtype):
    from sklearn.neighbors import NearestNeighbors  # optional dependency (test extra)

    rng = np.random.default_rng(11)
    d, k = 2 * tiles.BLAS_DIM, 7
    y = rng.normal(size=(2503, d)).astype(dtype)
    x = rng.normal(size=(173, d)).astype(dtype)
    got = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1).argKmin(k, dim=1)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    d2 = ((x64[:, None] - y64[None]) ** 2).sum(-1)
    want = np.sort(d2, 1)[:, :k]
    bound = _bound(x64, y64, dtype) + 4 * (2.0**-24 if dtype == np.float32 else 2.0**-53) * want.max()
    np.testing.assert_allclose(np.take_along_axis(d2, got, 1), want, rtol=0, atol=2 * bound)
    gaps = np.diff(np.sort(d2, 1)[:, : k + 1], axis=1)
    clear = (gaps > 2 * bound).all(1)
    assert clear.mean() > 0.5
    sk = NearestNeighbors(n_neighbors=k).fit(y64).kneighbors(x64, return_distance=False)
    np.testing.assert_array_equal(got[clear], sk[clear])


def test_blas_thread_count_is_restored_and_the_pointers_are_scipys():
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    d = tiles.BLAS_DIM
    arrays = data(d, np.float32, width=tiles.BLAS_COLUMNS)
    engine.run(Reduction("Sum", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))) * Vj(2, 16)), arrays, NX, NY)
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before
    assert tiles.gemm("float32") and tiles.gemm("float64") and tiles.gemm("float32") != tiles.gemm("float64")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_row_blocks_and_column_tiles_through_blas(dtype):
    """Sizes that cut BLAS's row blocks (192) and column tiles (1024), one thread and two."""
    rng = np.random.default_rng(5)
    d, nx, ny = tiles.BLAS_DIM + 1, 401, 2111
    x, y = rng.normal(size=(nx, d)).astype(dtype) / 9, rng.normal(size=(ny, d)).astype(dtype) / 9
    b = rng.normal(size=(ny, 21)).astype(dtype)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    k = np.exp(-((x64[:, None] - y64[None]) ** 2).sum(-1))
    red = Reduction("Sum", call("Exp", -call("SqDist", Vi(0, d), Vj(1, d))) * Vj(2, 21))
    assert _uses_blas(red, dtype)
    close(engine.run(red, [x, y, b], nx, ny), [k @ b.astype(np.float64)], dtype)
    lse = Reduction("LogSumExp", -call("SqDist", Vi(0, d), Vj(1, d)))
    want = np.log(np.exp(-((x64[:, None] - y64[None]) ** 2).sum(-1)).sum(1, keepdims=True))
    close(engine.run(lse, [x, y], nx, ny), [want], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tile_routines_compiled_into_each_kernel(cache, monkeypatch, dtype):
    """Without the precompiled prelude (another compiler, a rejected header) each kernel compiles the tile
    routines itself instead of linking the prelude's object: the micro-kernel, BLAS and both product paths."""
    from kernla.engines.cpu import compiler  # only this test reaches into the compiler

    monkeypatch.setattr(compiler, "_with_prelude", lambda *args: None)
    monkeypatch.setattr(engine, "_kernels", {})
    for d, width in [(tiles.MIN_DIM + 5, 1), (tiles.MIN_DIM + 5, 9), (tiles.BLAS_DIM + 7, 3), (3, 23)]:
        x, y, v, _ = data(d, dtype, seed=d + width, width=width)
        k = call("Exp", -call("SqDist", Vi(0, d), Vj(1, d)) * (1.0 / d))
        got = engine.run(Reduction("Sum", k * Vj(2, width)), [x, y, v], NX, NY)[0]
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        want = np.exp(-((x64[:, None] - y64[None]) ** 2).sum(-1) / d) @ v.astype(np.float64)
        close([got], [want], dtype)
    assert not list(cache.glob("kl_pch_*"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [tiles.MIN_DIM + 1, tiles.BLAS_DIM + 1])
def test_one_array_on_both_sides(d, dtype):
    """K(x, x): the tile operands are prepared once for both sides (the same array), distances and dots."""
    x, _, v, _ = data(d, dtype, seed=d)
    x = np.concatenate([x] * 6)[:NY]  # NY rows, some of them repeated: zero distances
    xv = Vi(0, d), Vj(1, d)
    x64 = x.astype(np.float64)
    dist = ((x64[:, None] - x64[None]) ** 2).sum(-1)
    for formula, want in [(call("Exp", -call("SqDist", *xv)), np.exp(-dist)), (call("Scalprod", *xv), x64 @ x64.T)]:
        got = engine.run(Reduction("Sum", formula * Vj(2, 3)), [x, x, v], NY, NY)[0]
        close([got], [want @ v.astype(np.float64)], dtype)
