"""Every reduction, over both axes, float32 and float64, against dense NumPy / SciPy references.

The formulas are evaluated densely here with plain NumPy (float64, from the same float32 or
float64 inputs), reduced with NumPy / ``scipy.special.logsumexp``, and compared with
``Genred(..., backend="numpy")`` and ``LazyTensor`` reductions. Also: ties go to the smallest
index (within a tile and across tiles), the NaN and infinity rules of :mod:`kernla.reductions`
(these special-value tests run on the ``numpy`` and the compiled ``cpu`` engine alike), float16 in
-> float16 out, float32 accuracy of long sums, and leading batch dimensions against a loop.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from kernla import Genred, LazyTensor
from kernla.engines.cpu.compiler import find_compiler

TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture(
    params=["numpy", pytest.param("cpu", marks=pytest.mark.skipif(find_compiler() is None, reason="no C++ compiler"))]
)
def backend(request, monkeypatch):
    """The special-value tests (ties, NaN, infinities) run on every engine available on the CPU.

    The cpu engine must really run: its fallback to NumPy (no compiler) fails the test instead.
    """
    if request.param == "cpu":
        from kernla.engines.cpu import engine

        class NoFallback:
            @staticmethod
            def run(*args, **kwargs):
                raise AssertionError("the cpu engine fell back to NumPy")

        monkeypatch.setattr(engine, "numpy_engine", NoFallback)
    return request.param


ALIASES = ["X = Vi(2)", "Y = Vj(2)", "V = Vj(3)"]
# a vector formula whose minimiser changes from row to row, a scalar one, and weights
F_VEC = "Sin(3 * X * Y) + Y"
F_SCAL = "-SqDist(X, Y)"
G_POS = "Exp(V) + Square(Elem(X, 0))"  # positive weights (for the log of a weighted sum)
G_ANY = "V * Elem(X, 0)"  # weights of any sign


def f_vec(x, y, v):
    return np.sin(3 * x * y) + y


def f_scal(x, y, v):
    return -np.sum((x - y) ** 2, -1, keepdims=True)


def g_pos(x, y, v):
    return np.exp(v) + x[..., :1] ** 2


def g_any(x, y, v):
    return v * x[..., :1]


FORMULAS = {F_VEC: f_vec, F_SCAL: f_scal, G_POS: g_pos, G_ANY: g_any}


def inputs(n, m, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, (n, 2)).astype(dtype)
    y = rng.uniform(-1.5, 1.5, (m, 2)).astype(dtype)
    v = rng.uniform(-1, 1, (m, 3)).astype(dtype)
    return x, y, v


def dense(formula, x, y, v):
    """(N, M, D) float64 values of ``formula``."""
    x, y, v = (a.astype(np.float64) for a in (x, y, v))
    out = FORMULAS[formula](x[:, None, :], y[None, :, :], v[None, :, :])
    return np.broadcast_to(out, (len(x), len(y), out.shape[-1]))


def ref_reduce(name, F, G, axis, K):
    """Dense reference of reduction ``name`` over ``axis``: outputs in Genred's layout."""
    Fa = np.moveaxis(F, axis, 1)  # (rows, reduced, D)
    Ga = None if G is None else np.moveaxis(G, axis, 1)
    rows = Fa.shape[0]
    if name == "Sum":
        return [Fa.sum(1)]
    if name in ("Min", "Max", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax"):
        val = Fa.min(1) if "Min" in name else Fa.max(1)
        idx = Fa.argmin(1) if "Min" in name else Fa.argmax(1)
        return {
            "Min": [val],
            "Max": [val],
            "ArgMin": [idx],
            "ArgMax": [idx],
            "Min_ArgMin": [val, idx],
            "Max_ArgMax": [val, idx],
        }[name]
    if name in ("KMin", "ArgKMin", "KMin_ArgKMin"):
        order = np.argsort(Fa, 1, kind="stable")[:, :K, :]
        val = np.take_along_axis(Fa, order, 1).reshape(rows, -1)
        idx = order.reshape(rows, -1)
        return {"KMin": [val], "ArgKMin": [idx], "KMin_ArgKMin": [val, idx]}[name]
    if name == "LogSumExp":
        return [logsumexp(Fa, axis=1)]
    if name == "LogSumExpWeight":
        return [logsumexp(np.broadcast_to(Fa, Ga.shape), b=Ga, axis=1)]
    if name == "SumSoftMaxWeight":
        w = np.exp(Fa - Fa.max(1, keepdims=True))
        return [(w * Ga).sum(1) / w.sum(1)]
    if name in ("Max_SumShiftExp", "Max_SumShiftExpWeight"):  # pykeops' raw pair [max, Σ exp(F - max) G]
        m = Fa.max(1)
        w = np.exp(Fa - m[:, None, :]) * (1 if Ga is None else Ga)
        return [np.concatenate([m, w.sum(1)], axis=1)]
    raise AssertionError(name)


REDUCTIONS = {
    # name: (formula, weight formula, K)
    "Sum": (F_VEC, None, None),
    "Min": (F_VEC, None, None),
    "Max": (F_VEC, None, None),
    "ArgMin": (F_VEC, None, None),
    "ArgMax": (F_VEC, None, None),
    "Min_ArgMin": (F_VEC, None, None),
    "Max_ArgMax": (F_VEC, None, None),
    "KMin": (F_VEC, None, 3),
    "ArgKMin": (F_VEC, None, 3),
    "KMin_ArgKMin": (F_VEC, None, 3),
    "LogSumExp": (F_VEC, None, None),
    "LogSumExpWeight": (F_SCAL, G_POS, None),
    "SumSoftMaxWeight": (F_SCAL, G_ANY, None),
    "Max_SumShiftExp": (F_SCAL, None, None),
    "Max_SumShiftExpWeight": (F_SCAL, G_ANY, None),
}
SIZES = [(1, 1), (1, 3), (7, 13), (13, 101), (101, 7)]


def check_values(out, ref, F, axis, dtype, what):
    """Float outputs: within TOL of the reference, scaled by the magnitude of the values involved."""
    assert out.dtype == dtype, what
    assert out.shape == ref.shape, what
    scale = np.abs(np.moveaxis(F, axis, 1)).sum(1).max() + np.abs(ref).max() + 1.0
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=0, atol=TOL[dtype] * scale, err_msg=what)


def check_indices(out, ref, F, axis, K, dtype, what):
    """Index outputs: int64, equal to the reference in float64; in float32 an index may differ
    only between values equal within rounding."""
    assert out.dtype == np.int64, what
    assert out.shape == ref.shape, what
    if dtype == np.float64:
        np.testing.assert_array_equal(out, ref, err_msg=what)
        return
    Fa = np.moveaxis(F, axis, 1)
    rows, _, d = Fa.shape
    k = K or 1
    o = out.reshape(rows, k, d)
    r = ref.reshape(rows, k, d)
    assert (o >= 0).all(), what
    got = np.take_along_axis(Fa, o, 1)
    want = np.take_along_axis(Fa, r, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * (np.abs(Fa).max() + 1), err_msg=what)
    if K:
        assert all(len(set(o[i, :, c])) == k for i in range(rows) for c in range(d)), what


def run_and_check(name, axis, dtype, n, m, seed, what=""):
    formula, weight, K = REDUCTIONS[name]
    x, y, v = inputs(n, m, dtype, seed)
    reduced = (n, m)[axis]
    if K is not None:
        K = min(K, reduced)
    F = dense(formula, x, y, v)
    G = None if weight is None else dense(weight, x, y, v)
    g = Genred(formula, ALIASES, reduction_op=name, axis=axis, opt_arg=K, formula2=weight)
    out = g(x, y, v, backend="numpy")
    outs = list(out) if isinstance(out, tuple) else [out]
    refs = ref_reduce(name, F, G, axis, K)
    assert len(outs) == len(refs)
    what = f"{name} axis={axis} N={n} M={m} {what}"
    for o, r in zip(outs, refs):
        assert isinstance(o, np.ndarray)
        if r.dtype.kind == "i":
            check_indices(o, r, F, axis, K, dtype, what)
        else:
            check_values(o, r, F, axis, dtype, what)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_against_dense(name, dtype, axis):
    for k, (n, m) in enumerate(SIZES):
        run_and_check(name, axis, dtype, n, m, seed=100 + k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "name", ["Sum", "Min_ArgMin", "Max_ArgMax", "KMin_ArgKMin", "LogSumExp", "LogSumExpWeight", "SumSoftMaxWeight"]
)
def test_reduction_larger_than_a_tile(name, dtype):
    run_and_check(name, 1, dtype, 3, 5003, seed=5)
    run_and_check(name, 0, dtype, 5003, 2, seed=6)


@pytest.mark.parametrize("tile_elements", [1, 5, 64])
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_merges_many_small_tiles(name, tile_elements):
    """Tiles of one or a few columns (and rows): the accumulators' merging order is exercised."""
    from unittest import mock

    from kernla.engines import numpy_engine

    with mock.patch.object(numpy_engine, "_TILE_ELEMENTS", tile_elements):
        for axis in (0, 1):
            run_and_check(name, axis, np.float64, 9, 23, seed=11, what=f"tile={tile_elements}")


def test_every_reduction_is_tested():
    from kernla.reductions import REDUCTIONS as ALL

    assert set(ALL) == set(REDUCTIONS)


# ---------------------------------------------------------------------------------------------
# LazyTensor reductions: shapes and values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("axis", [0, 1])
def test_lazytensor_reductions(axis, dtype):
    n, m, K = 11, 17, 4
    x, y, v = inputs(n, m, dtype, seed=3)
    x_i, y_j, v_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :]), LazyTensor(v[None, :, :])
    F = dense(F_VEC, x, y, v)
    Fs = dense(F_SCAL, x, y, v)
    rows = (m, n)[axis]
    vec = (3 * x_i * y_j).sin() + y_j
    scal = -x_i.sqdist(y_j)
    tol = dict(rtol=0, atol=TOL[dtype] * 100)

    np.testing.assert_allclose(vec.sum(dim=axis, backend="numpy"), F.sum(axis), **tol)
    np.testing.assert_allclose(vec.min(dim=axis, backend="numpy"), F.min(axis), **tol)
    np.testing.assert_allclose(vec.max(dim=axis, backend="numpy"), F.max(axis), **tol)
    np.testing.assert_array_equal(vec.argmin(dim=axis, backend="numpy"), F.argmin(axis))
    np.testing.assert_array_equal(vec.argmax(dim=axis, backend="numpy"), F.argmax(axis))
    val, idx = vec.min_argmin(dim=axis, backend="numpy")
    np.testing.assert_allclose(val, F.min(axis), **tol)
    np.testing.assert_array_equal(idx, F.argmin(axis))
    val, idx = vec.max_argmax(dim=axis, backend="numpy")
    np.testing.assert_allclose(val, F.max(axis), **tol)
    np.testing.assert_array_equal(idx, F.argmax(axis))

    # K-min: (rows, K) for a scalar formula, (rows, K, D) for a vector one
    order_s = np.moveaxis(np.argsort(Fs, axis, kind="stable"), axis, 1)[:, :K, 0]
    order_v = np.moveaxis(np.argsort(F, axis, kind="stable"), axis, 1)[:, :K, :]
    kmin = scal.Kmin(K, dim=axis, backend="numpy")
    assert kmin.shape == (rows, K) and kmin.dtype == dtype
    np.testing.assert_allclose(kmin, np.take_along_axis(np.moveaxis(Fs, axis, 1)[..., 0], order_s, 1), **tol)
    arg = scal.argKmin(K, dim=axis, backend="numpy")
    assert arg.shape == (rows, K) and arg.dtype == np.int64
    np.testing.assert_array_equal(arg, order_s)
    vals, args = vec.Kmin_argKmin(K, dim=axis, backend="numpy")
    assert vals.shape == (rows, K, 2) and args.shape == (rows, K, 2) and args.dtype == np.int64
    np.testing.assert_array_equal(args, order_v)
    np.testing.assert_allclose(vals, np.take_along_axis(np.moveaxis(F, axis, 1), order_v, 1), **tol)

    # log-sum-exp family
    np.testing.assert_allclose(vec.logsumexp(dim=axis, backend="numpy"), logsumexp(F, axis=axis), **tol)
    G = dense(G_POS, x, y, v)
    w = v_j.exp() + x_i[..., 0].square()
    np.testing.assert_allclose(
        scal.logsumexp(dim=axis, weight=w, backend="numpy"),
        logsumexp(np.broadcast_to(Fs, G.shape), b=G, axis=axis),
        **tol,
    )
    G = dense(G_ANY, x, y, v)
    sm = np.exp(Fs - Fs.max(axis, keepdims=True))
    np.testing.assert_allclose(
        scal.sumsoftmaxweight(v_j * x_i[..., 0], dim=axis, backend="numpy"), (sm * G).sum(axis) / sm.sum(axis), **tol
    )


# ---------------------------------------------------------------------------------------------
# ties: the smallest index wins, within a tile and across tiles
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("m", [9, 5003])
def test_ties_go_to_the_smallest_index(m, axis, backend):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(m, 2))
    first, second, third = 2, m - 3, m // 2
    pts[second] = pts[first]
    pts[third] = pts[first]
    queries = np.stack([pts[first], pts[first] + 1e-3, [50.0, 50.0]])
    # the duplicated points are the exact nearest neighbours of the first query
    args = (queries, pts) if axis == 1 else (pts, queries)
    aliases = ["X = Vi(2)", "Y = Vj(2)"] if axis == 1 else ["Y = Vi(2)", "X = Vj(2)"]
    for red in ("ArgMin", "Min_ArgMin", "ArgKMin", "KMin_ArgKMin"):
        g = Genred("SqDist(X, Y)", aliases, reduction_op=red, axis=axis, opt_arg=4 if "K" in red else None)
        out = g(*args, backend=backend)
        idx = out[1] if isinstance(out, tuple) else out
        if "K" in red:
            assert list(idx[0, :3]) == sorted([first, second, third]), red
            assert list(idx[1, :3]) == sorted([first, second, third]), red
        else:
            assert idx[0, 0] == first and idx[1, 0] == first, red
    for red in ("ArgMax", "Max_ArgMax"):
        g = Genred("-SqDist(X, Y)", aliases, reduction_op=red, axis=axis)
        out = g(*args, backend=backend)
        idx = out[1] if isinstance(out, tuple) else out
        assert idx[0, 0] == first, red


def test_ties_in_a_constant_formula(backend):
    """Every value equal: index 0 for ArgMin/ArgMax, 0..K-1 for ArgKMin, on every component."""
    x, y = np.zeros((3, 2)), np.zeros((4100, 2))
    for red, expect in (("ArgMin", [0, 0]), ("ArgMax", [0, 0]), ("ArgKMin", [0, 0, 1, 1, 2, 2])):
        g = Genred(
            "X * Y", ["X = Vi(2)", "Y = Vj(2)"], reduction_op=red, axis=1, opt_arg=3 if red == "ArgKMin" else None
        )
        out = g(x, y, backend=backend)
        np.testing.assert_array_equal(out, np.tile(expect, (3, 1)), err_msg=red)


# ---------------------------------------------------------------------------------------------
# NaN and infinity inside formulas (the data themselves may not hold NaN)
# ---------------------------------------------------------------------------------------------
def test_nan_values_are_ignored_by_min_max_and_kmin(backend):
    # Sqrt(X - Y) is NaN where X < Y
    x = np.array([[0.0], [1.5], [10.0]])
    y = np.array([[1.0], [2.0], [3.0], [0.5]])
    F = np.sqrt(np.maximum(x - y.T, 0)).astype(float)
    F[x - y.T < 0] = np.nan
    aliases = ["X = Vi(1)", "Y = Vj(1)"]

    val, idx = Genred("Sqrt(X - Y)", aliases, "Min_ArgMin", axis=1)(x, y, backend=backend)
    assert val[0, 0] == np.inf and idx[0, 0] == -1  # only NaN: no candidate
    assert val[1, 0] == np.nanmin(F[1]) and idx[1, 0] == 0
    assert val[2, 0] == np.nanmin(F[2]) and idx[2, 0] == 2
    val, idx = Genred("Sqrt(X - Y)", aliases, "Max_ArgMax", axis=1)(x, y, backend=backend)
    assert val[0, 0] == -np.inf and idx[0, 0] == -1
    assert val[1, 0] == np.nanmax(F[1]) and idx[1, 0] == 3
    assert val[2, 0] == np.nanmax(F[2]) and idx[2, 0] == 3
    val, idx = Genred("Sqrt(X - Y)", aliases, "KMin_ArgKMin", axis=1, opt_arg=3)(x, y, backend=backend)
    np.testing.assert_array_equal(idx, [[-1, -1, -1], [0, 3, -1], [2, 1, 0]])
    np.testing.assert_array_equal(val[0], [np.inf] * 3)
    np.testing.assert_allclose(val[1], [np.sqrt(0.5), 1.0, np.inf])
    np.testing.assert_allclose(val[2], [np.sqrt(7), np.sqrt(8), 3.0])
    # NaN propagates through sums
    out = Genred("Sqrt(X - Y)", aliases, "Sum", axis=1)(x, y, backend=backend)
    assert np.isnan(out[:2, 0]).all() and np.isfinite(out[2, 0])
    out = Genred("Sqrt(X - Y)", aliases, "LogSumExp", axis=1)(x, y, backend=backend)
    assert np.isnan(out[:2, 0]).all() and np.isfinite(out[2, 0])


def test_infinite_values_are_valid_candidates(backend):
    """-inf is a genuine minimum (its index is reported); +inf never beats the empty minimum."""
    x = np.array([[1.0], [2.0]])
    y = np.array([[3.0], [1.0], [0.0]])
    aliases = ["X = Vi(1)", "Y = Vj(1)"]
    # Log(|X - Y|) is -inf where X == Y
    val, idx = Genred("Log(Abs(X - Y))", aliases, "Min_ArgMin", axis=1)(x, y, backend=backend)
    assert val[0, 0] == -np.inf and idx[0, 0] == 1
    assert idx[1, 0] == 0 and val[1, 0] == 0.0  # |2 - 3| = |2 - 1|: first one
    vals, idx = Genred("Log(Abs(X - Y))", aliases, "KMin_ArgKMin", axis=1, opt_arg=2)(x, y, backend=backend)
    assert idx[0, 0] == 1 and vals[0, 0] == -np.inf
    # 1 / (X - Y) is +inf where X == Y: the largest value for Max
    val, idx = Genred("Inv(X - Y)", aliases, "Max_ArgMax", axis=1)(x, y, backend=backend)
    assert val[0, 0] == np.inf and idx[0, 0] == 1
    # all +inf: Min has no candidate
    val, idx = Genred("Inv(X - X)", aliases, "Min_ArgMin", axis=1)(x, y, backend=backend)
    assert (val == np.inf).all() and (idx == -1).all()
    # log-sum-exp with -inf terms
    out = Genred("Log(Abs(X - Y))", aliases, "LogSumExp", axis=1)(x, y, backend=backend)
    np.testing.assert_allclose(out.ravel(), [np.log(2 + 0 + 1), np.log(1 + 1 + 2)], rtol=1e-14)
    out = Genred("-Inv(X - X)", aliases, "LogSumExp", axis=1)(x, y, backend=backend)
    assert (out == -np.inf).all()


def test_logsumexp_with_plus_infinity_is_infinite_and_quiet(backend):
    import warnings

    x = np.array([[1.0], [2.0]])
    y = np.array([[1.0], [-1000.0], [3.0]])  # Inv(X - Y) - Y: +inf, ~1000, -3.5 on the first row
    g = Genred("Inv(X - Y) - Y", ["X = Vi(1)", "Y = Vj(1)"], "LogSumExp", axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = g(x, y, backend=backend)
    assert out[0, 0] == np.inf
    np.testing.assert_allclose(out[1, 0], logsumexp([0.0, 1.0 / 1002 + 1000, -1 - 3.0]), rtol=1e-14)


def test_weighted_log_sum_exp_and_softmax_with_infinite_terms(backend):
    """exp(inf - inf) = 1, exp(-inf - -inf) = 0: +inf terms dominate, -inf terms drop out.

    3000 columns, so the infinite terms sit in the first, a middle and the last tile: the running
    maximum jumps to +inf after finite terms, and finite terms follow +inf ones.
    """
    import warnings

    rng = np.random.default_rng(5)
    m = 3000
    x = np.array([[1.0], [2.0], [5.0], [7.0]])
    y = rng.uniform(10.0, 20.0, size=(m, 1))
    y[[0, 1700]] = 1.0  # row 0: +inf (Inv) / -inf (Log) in the first and a middle tile
    y[m - 1] = 5.0  # row 2: only in the last column
    w = rng.uniform(0.5, 2.0, size=(m, 3))
    aliases = ["X = Vi(1)", "Y = Vj(1)", "W = Vj(3)"]
    with np.errstate(divide="ignore"):
        f_inv = 1.0 / (x - y.T) - np.abs(y.T)
        f_log = np.log(np.abs(x - y.T))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ssmw = Genred("Inv(X - Y) - Abs(Y)", aliases, "SumSoftMaxWeight", axis=1, formula2="W")(
            x, y, w, backend=backend
        )
        lsew = Genred("Inv(X - Y) - Abs(Y)", aliases, "LogSumExpWeight", axis=1, formula2="W")(x, y, w, backend=backend)
    # +inf terms: the mean weight of the infinite terms, and +inf
    np.testing.assert_allclose(ssmw[0], w[[0, 1700]].mean(0), rtol=1e-14)
    np.testing.assert_allclose(ssmw[2], w[m - 1], rtol=1e-14)
    assert np.isposinf(lsew[[0, 2]]).all()
    for r in (1, 3):  # no infinite term
        sm = np.exp(f_inv[r] - f_inv[r].max())
        np.testing.assert_allclose(ssmw[r], sm @ w / sm.sum(), rtol=1e-12)
        np.testing.assert_allclose(lsew[r], logsumexp(f_inv[r][:, None], b=w, axis=0), rtol=1e-12)

    # -inf terms drop out
    ssmw = Genred("Log(Abs(X - Y))", aliases, "SumSoftMaxWeight", axis=1, formula2="W")(x, y, w, backend=backend)
    lsew = Genred("Log(Abs(X - Y))", aliases, "LogSumExpWeight", axis=1, formula2="W")(x, y, w, backend=backend)
    for r in range(4):
        keep = np.isfinite(f_log[r])
        sm = np.exp(f_log[r][keep] - f_log[r][keep].max())
        np.testing.assert_allclose(ssmw[r], sm @ w[keep] / sm.sum(), rtol=1e-12)
        np.testing.assert_allclose(lsew[r], logsumexp(f_log[r][keep][:, None], b=w[keep], axis=0), rtol=1e-12)
    # every term -inf: log 0 = -inf, and the softmax is 0 / 0
    ssmw = Genred("Log(Abs(X - X))", aliases, "SumSoftMaxWeight", axis=1, formula2="W")(x, y, w, backend=backend)
    lsew = Genred("Log(Abs(X - X))", aliases, "LogSumExpWeight", axis=1, formula2="W")(x, y, w, backend=backend)
    assert np.isnan(ssmw).all() and np.isneginf(lsew).all()


def test_logsumexp_with_infinite_terms_across_tiles(backend):
    """LogSumExp of a vector formula: +inf in a late tile after finite terms, -inf terms ignored."""
    m = 3000
    x = np.array([[1.0], [2.0]])
    y = np.linspace(10.0, 20.0, m)[:, None]
    y[2500] = 1.0
    g = Genred("Concat(Inv(X - Y), Log(Abs(X - Y)))", ["X = Vi(1)", "Y = Vj(1)"], "LogSumExp", axis=1)
    out = g(x, y, backend=backend)
    with np.errstate(divide="ignore"):
        f = np.log(np.abs(x - y.T))
    assert out[0, 0] == np.inf
    np.testing.assert_allclose(out[0, 1], logsumexp(f[0][np.isfinite(f[0])]), rtol=1e-13)
    np.testing.assert_allclose(out[1], [logsumexp(1.0 / (2.0 - y[:, 0])), logsumexp(f[1])], rtol=1e-13)


def test_argmin_argmax_over_components_with_nan(backend):
    """ArgMin / ArgMax of a vector inside a formula: a NaN component wins, the first one if several."""
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, size=(50, 1))
    y = rng.uniform(-1, 1, size=(37, 1))
    y[5] = x[3]  # a pair without NaN: Sqrt(0) on both sides
    aliases = ["X = Vi(1)", "Y = Vj(1)"]
    vec = "Concat(Concat(Y, Sqrt(X - Y)), Concat(X, Sqrt(Y - X)))"  # NaN in component 1 or 3

    with np.errstate(invalid="ignore"):
        d = x - y.T
        comps = np.stack([np.broadcast_to(y.T, d.shape), np.sqrt(d), np.broadcast_to(x, d.shape), np.sqrt(-d)], -1)
    # NumPy's argmin / argmax also return the first NaN
    amin, amax = comps.argmin(-1).astype(float), comps.argmax(-1).astype(float)
    assert set(np.unique(amin)) >= {1.0, 3.0}
    for formula, ref in ((f"ArgMin({vec})", amin), (f"ArgMax({vec})", amax)):
        out = Genred(formula, aliases, "Sum", axis=1)(x, y, backend=backend)
        np.testing.assert_array_equal(out[:, 0], ref.sum(1), err_msg=formula)
        # one column: the per-pair values themselves (through the generic, non-Sum path too)
        for red in ("Sum", "Max", "Min_ArgMin"):
            out = Genred(formula, aliases, red, axis=1)(x, y[5:6], backend=backend)
            out = out[0] if isinstance(out, tuple) else out
            np.testing.assert_array_equal(out[:, 0], ref[:, 5], err_msg=f"{formula} {red}")
        # and as the value a selecting reduction compares, over a vector of them
        val, idx = Genred(f"Concat({formula}, -{formula})", aliases, "Max_ArgMax", axis=1)(x, y, backend=backend)
        np.testing.assert_array_equal(val[:, 0], ref.max(1), err_msg=formula)
        np.testing.assert_array_equal(idx[:, 0], ref.argmax(1), err_msg=formula)
        np.testing.assert_array_equal(idx[:, 1], (-ref).argmax(1), err_msg=formula)


def test_logsumexp_is_stable_for_large_values(backend):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5000, 3))
    for scale in (1e3, -1e3, 1e5):
        F = scale * np.sum((x[:, None] - y[None]) ** 2, -1)
        for dtype in (np.float32, np.float64):
            out = Genred("SqDist(X, Y) * P", ["X = Vi(3)", "Y = Vj(3)", "P = Pm(1)"], "LogSumExp", axis=1)(
                x.astype(dtype), y.astype(dtype), np.array([scale], dtype), backend=backend
            )
            assert np.all(np.isfinite(out))
            np.testing.assert_allclose(out[:, 0], logsumexp(F, axis=1), rtol=10 * TOL[dtype])


# ---------------------------------------------------------------------------------------------
# dtypes and accuracy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Sum", "Min_ArgMin", "KMin", "LogSumExp", "SumSoftMaxWeight"])
def test_float16_in_float16_out(name):
    formula, weight, K = REDUCTIONS[name]
    x, y, v = inputs(20, 30, np.float16, seed=2)
    out = Genred(formula, ALIASES, reduction_op=name, axis=1, opt_arg=K, formula2=weight)(x, y, v, backend="numpy")
    outs = list(out) if isinstance(out, tuple) else [out]
    F = dense(formula, x, y, v)
    refs = ref_reduce(name, F, None if weight is None else dense(weight, x, y, v), 1, K)
    for o, r in zip(outs, refs):
        if r.dtype.kind == "i":
            assert o.dtype == np.int64
            continue
        assert o.dtype == np.float16
        np.testing.assert_allclose(o.astype(np.float64), r, rtol=2e-3, atol=2e-3 * np.abs(r).max())
    # torch float16 too
    torch = pytest.importorskip("torch")
    out = Genred(formula, ALIASES, reduction_op=name, axis=1, opt_arg=K, formula2=weight)(
        *(torch.from_numpy(a) for a in (x, y, v)), backend="numpy"
    )
    outs = list(out) if isinstance(out, tuple) else [out]
    assert all(o.dtype in (torch.float16, torch.int64) for o in outs)


def test_float32_gaussian_sum_is_accurate_at_one_million_columns():
    rng = np.random.default_rng(4)
    n, m = 10, 1_000_000
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (0.5 * rng.normal(size=(m, 3))).astype(np.float32)
    g = Genred("Exp(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="Sum", axis=1)
    out = g(x, y, backend="numpy")
    assert out.dtype == np.float32
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    ref = np.array([np.exp(-((y64 - x64[i]) ** 2).sum(1)).sum() for i in range(n)])
    np.testing.assert_allclose(out[:, 0], ref, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# batch dimensions
# ---------------------------------------------------------------------------------------------
def test_lazytensor_batch_dimensions_match_a_loop():
    rng = np.random.default_rng(8)
    B, n, m, D = 2, 6, 9, 3
    x = rng.normal(size=(B, n, 1, D))
    y = rng.normal(size=(B, 1, m, D))
    y_shared = rng.normal(size=(1, 1, m, D))
    s = rng.uniform(0.5, 1.5, size=(B, 1, 1, 1))
    for yy in (y, y_shared):
        x_i, y_j, s_b = LazyTensor(x), LazyTensor(yy), LazyTensor(s)
        D_ij = ((x_i - y_j) ** 2).sum(-1) * s_b
        outs = {
            "sum1": D_ij.sum(dim=2, backend="numpy"),
            "sum0": D_ij.sum(dim=1, backend="numpy"),
            "argmin": D_ij.argmin(dim=2, backend="numpy"),
            "kmin": D_ij.Kmin(3, dim=2, backend="numpy"),
            "lse": D_ij.logsumexp(dim=1, backend="numpy"),
            "vec": (x_i - y_j).sum(dim=2, backend="numpy"),
        }
        assert outs["sum1"].shape == (B, n, 1) and outs["sum0"].shape == (B, m, 1)
        assert outs["argmin"].shape == (B, n, 1) and outs["argmin"].dtype == np.int64
        assert outs["kmin"].shape == (B, n, 3) and outs["vec"].shape == (B, n, D)
        for b in range(B):
            yb = yy[min(b, len(yy) - 1), 0]
            Db = ((x[b, :, 0, None, :] - yb[None]) ** 2).sum(-1) * s[b, 0, 0, 0]
            np.testing.assert_allclose(outs["sum1"][b, :, 0], Db.sum(1), rtol=1e-12)
            np.testing.assert_allclose(outs["sum0"][b, :, 0], Db.sum(0), rtol=1e-12)
            np.testing.assert_array_equal(outs["argmin"][b, :, 0], Db.argmin(1))
            np.testing.assert_allclose(outs["kmin"][b], np.sort(Db, 1)[:, :3], rtol=1e-12)
            np.testing.assert_allclose(outs["lse"][b, :, 0], logsumexp(Db, axis=0), rtol=1e-12)
            np.testing.assert_allclose(outs["vec"][b], (x[b, :, 0, None, :] - yb[None]).sum(1), rtol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_genred_batch_dimensions_match_a_loop(axis):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 2, 5, 2))  # batch (3, 2)
    y = rng.normal(size=(2, 7, 2))  # batch (2,), broadcast
    b = rng.normal(size=(7, 1))  # no batch
    g = rng.uniform(0.5, 2, size=(3, 1, 1))  # batched parameter
    k = Genred(
        "Exp(-G * SqDist(X, Y)) * B",
        ["X = Vi(2)", "Y = Vj(2)", "B = Vj(1)", "G = Pm(1)"],
        reduction_op="Sum",
        axis=axis,
    )
    out = k(x, y, b, g, backend="numpy")
    assert out.shape == (3, 2, (7, 5)[axis], 1)
    for i in range(3):
        for j in range(2):
            K = np.exp(-g[i, 0, 0] * ((x[i, j][:, None] - y[j][None]) ** 2).sum(-1)) * b[None, :, 0]
            np.testing.assert_allclose(out[i, j, :, 0], K.sum(axis), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_max_sumshiftexp_is_pykeops_raw_pair(backend):
    """pykeops' Max_SumShiftExp is no alias of LogSumExp: it returns [max_j f, Σ_j exp(f - max)], shape (N, 2)."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(23, 2)), rng.normal(size=(41, 2))
    g = Genred("-SqDist(X, Y)", ["X = Vi(2)", "Y = Vj(2)"], reduction_op="Max_SumShiftExp", axis=1)
    out = g(x, y, backend=backend)
    f = -((x[:, None] - y[None]) ** 2).sum(-1)
    assert out.shape == (23, 2)
    np.testing.assert_allclose(out[:, 0], f.max(1), rtol=1e-13)
    np.testing.assert_allclose(out[:, 1], np.exp(f - f.max(1, keepdims=True)).sum(1), rtol=1e-12)
    np.testing.assert_allclose(out[:, 0] + np.log(out[:, 1]), logsumexp(f, axis=1), rtol=1e-12)
