"""The user API of issue 2: the bad-input contract, array kinds in and out, and pykeops-style use.

Every refusal is a kernla error (a ``ValueError`` or ``TypeError`` subclass) whose message names
the offending variable; non-contiguous inputs simply work.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernla
from kernla import (
    ArrayKindError,
    DTypeError,
    FormulaError,
    FormulaSyntaxError,
    Genred,
    InputValueError,
    KernlaError,
    LazyTensor,
    ShapeError,
)

try:
    import torch
except ImportError:  # optional: the tests that use it are marked requires("torch")
    torch = None

FORMULA = "Exp(-G * SqDist(X, Y)) * C"
ALIASES = ["X = Vi(3)", "Y = Vj(3)", "C = Vj(1)", "G = Pm(1)"]


def data(n=6, m=9, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 3)).astype(dtype),
        rng.normal(size=(m, 3)).astype(dtype),
        rng.normal(size=(m, 1)).astype(dtype),
        np.array([0.5], dtype=dtype),
    )


def reference(x, y, c, g):
    x, y, c, g = (np.asarray(a, dtype=np.float64) for a in (x, y, c, g))
    return np.exp(-g[0] * ((x[:, None] - y[None]) ** 2).sum(-1)) @ c


def refused(exc_type, fn, *names):
    """``fn()`` raises ``exc_type`` (a kernla error, ValueError or TypeError) naming ``names``."""
    with pytest.raises(exc_type) as info:
        fn()
    err = info.value
    assert isinstance(err, KernlaError)
    assert isinstance(err, (ValueError, TypeError))
    for name in names:
        assert name in str(err), f"{name!r} not in: {err}"
    return err


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_unknown_operation_or_alias():
    refused(FormulaSyntaxError, lambda: Genred("Exq(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"]), "'Exq'", "position 0")
    refused(FormulaSyntaxError, lambda: Genred("SqDist(X, Z)", ["X = Vi(3)", "Y = Vj(3)"]), "'Z'", "position 10")
    refused(FormulaError, lambda: Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="Summ"), "'Summ'")
    refused(FormulaError, lambda: Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="KMin"), "K")
    refused(
        FormulaError,
        lambda: Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="SumSoftMaxWeight"),
        "formula2",
    )


def test_dimension_mismatch_between_formula_and_arrays():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(ShapeError, lambda: k(x[:, :2], y, c, g), "'X'", "3", "(6, 2)")
    refused(ShapeError, lambda: k(x, y, np.ones((9, 2)), g), "'C'")
    refused(ShapeError, lambda: k(x, y, c, np.ones(2)), "'G'")
    refused(ShapeError, lambda: k(x, y[:5], c, g), "'Y'", "'C'")  # different numbers of j points
    refused(ShapeError, lambda: k(x[0], y, c, g), "'X'")  # a 1-D array of dimension 3
    # LazyTensor: a formula of mismatched dimensions is refused when built
    x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :2])
    refused(FormulaError, lambda: x_i - y_j, "3", "2")
    refused(FormulaError, lambda: x_i.sqdist(y_j), "SqDist")


def test_wrong_number_of_arrays():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(ShapeError, lambda: k(x, y, c), "4", "3", "X", "Y", "C", "G")
    refused(ShapeError, lambda: k(x, y, c, g, g), "4", "5")


@pytest.mark.requires("torch")
def test_mixed_array_kinds():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(ArrayKindError, lambda: k(x, torch.from_numpy(y), c, g), "'X'", "'Y'", "numpy", "torch")
    refused(ArrayKindError, lambda: k(x, y, c, [0.5]), "'G'", "list")
    x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(torch.from_numpy(y)[None, :, :])
    refused(ArrayKindError, lambda: ((x_i - y_j) ** 2).sum(-1).sum(dim=1), "numpy", "torch")


@pytest.mark.requires("torch")
def test_mixed_dtypes():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(DTypeError, lambda: k(x, y.astype(np.float32), c, g), "'X'", "'Y'", "float64", "float32")
    refused(
        DTypeError,
        lambda: k(*(torch.from_numpy(a) for a in (x, y, c)), torch.tensor([0.5], dtype=torch.float32)),
        "'G'",
    )
    # Python numbers go with any dtype
    x32, y32, c32, _ = data(dtype=np.float32)
    assert k(x32, y32, c32, 0.5, backend="numpy").dtype == np.float32


@pytest.mark.requires("torch")
def test_integer_arrays():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(DTypeError, lambda: k(x.astype(np.int64), y, c, g), "'X'", "int64")
    refused(DTypeError, lambda: k(x, y, c.astype(np.int32), g), "'C'")
    refused(
        DTypeError,
        lambda: k(
            *(torch.from_numpy(a) for a in (x, y)),
            torch.ones(9, 1, dtype=torch.int64),
            torch.tensor([0.5], dtype=torch.float64),
        ),
        "'C'",
    )
    refused(DTypeError, lambda: k(x, y, c.astype(bool), g), "'C'")
    refused(DTypeError, lambda: k(x, y, c.astype(np.complex128), g), "'C'")


@pytest.mark.requires("torch")
def test_unsupported_float_types_are_named():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    t = [torch.from_numpy(a) for a in (x, y, c, g)]
    refused(DTypeError, lambda: k(t[0].to(torch.bfloat16), *t[1:]), "'X'", "bfloat16")
    refused(DTypeError, lambda: k(x.astype(np.longdouble), y, c, g), "'X'")


def test_big_endian_arrays_work():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    out = k(x.astype(">f8"), y.astype(">f8"), c.astype(">f8"), g.astype(">f8"), backend="numpy")
    assert out.dtype == np.float64 and out.dtype.isnative
    np.testing.assert_allclose(out, reference(x, y, c, g), rtol=1e-12)
    out = k(x.astype(">f4"), y.astype("<f4"), c.astype(">f4"), g.astype("<f4"), backend="numpy")
    assert out.dtype == np.float32


def test_non_finite_parameters():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    for bad in (np.array([np.nan]), np.array([np.inf]), np.array([-np.inf]), float("nan"), float("inf")):
        refused(InputValueError, lambda: k(x, y, c, bad), "'G'")


def test_parameters_too_large_for_the_dtype():
    import warnings

    x, y, c, _ = data(dtype=np.float32)
    k = Genred(FORMULA, ALIASES, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refused(InputValueError, lambda: k(x, y, c, 1e300), "'G'", "float32")


@pytest.mark.requires("torch")
def test_nan_in_data():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    for name, pos in (("'X'", 0), ("'Y'", 1), ("'C'", 2)):
        args = [a.copy() for a in (x, y, c, g)]
        args[pos][-1, 0] = np.nan
        refused(InputValueError, lambda: k(*args), name, "NaN")
        refused(InputValueError, lambda: k(*(torch.from_numpy(a) for a in args)), name, "NaN")
    # LazyTensor names the variable by its rank in the expression
    xn = x.copy()
    xn[0, 0] = np.nan
    x_i, y_j = LazyTensor(xn[:, None, :]), LazyTensor(y[None, :, :])
    refused(InputValueError, lambda: x_i.sqdist(y_j).sum(dim=1), "variable 0", "NaN")


def test_empty_arrays():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(ShapeError, lambda: k(x[:0], y, c, g), "'X'", "empty")
    refused(ShapeError, lambda: k(x, y[:0], c[:0], g), "'Y'", "empty")
    for axis in (0, 1):
        refused(ShapeError, lambda: Genred(FORMULA, ALIASES, axis=axis)(x[:0], y, c, g), "'X'")
        refused(ShapeError, lambda: Genred(FORMULA, ALIASES, axis=axis)(x, y[:0], c[:0], g), "'Y'")
    x_i, y_j = LazyTensor(x[:0, None, :]), LazyTensor(y[None, :, :])
    refused(ShapeError, lambda: x_i.sqdist(y_j).sum(dim=1), "empty")
    refused(ShapeError, lambda: x_i.sqdist(y_j).argmin(dim=0), "empty")


def test_empty_and_mismatched_batch_dimensions():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(ShapeError, lambda: k(x[None, :0], y, c, g), "'X'", "empty")
    refused(ShapeError, lambda: k(np.zeros((0, 6, 3)), np.zeros((0, 9, 3)), c, g), "'X'", "empty")
    refused(ShapeError, lambda: k(np.stack([x] * 3), np.stack([y] * 2), c, g), "'X'", "'Y'", "(3,)", "(2,)")
    x_b = LazyTensor(np.zeros((0, 6, 1, 3)))
    refused(ShapeError, lambda: x_b.sqdist(LazyTensor(y[None, None])).sum(dim=2), "empty")


def test_things_that_are_not_arrays_are_named():
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    refused(ArrayKindError, lambda: k(x.tolist(), y, c, g), "'X'", "list")
    refused(ArrayKindError, lambda: k(x, "y", c, g), "'Y'", "str")
    refused(ArrayKindError, lambda: k(x, y, c, None), "'G'", "NoneType")
    refused(ArrayKindError, lambda: k(x, y, c, True), "'G'", "bool")


def test_kmin_needs_k_candidates():
    x, y, _, _ = data(m=3)
    refused(
        ShapeError,
        lambda: Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], "ArgKMin", axis=1, opt_arg=4)(x, y),
        "K=4",
        "3",
    )


def test_errors_happen_before_any_work_and_are_not_crashes():
    """A bad call leaves no state behind: the same Genred works afterwards."""
    x, y, c, g = data()
    k = Genred(FORMULA, ALIASES, axis=1)
    with pytest.raises(ValueError):
        k(x, y, c, np.array([np.nan]))
    np.testing.assert_allclose(k(x, y, c, g, backend="numpy"), reference(x, y, c, g), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# non-contiguous arrays
# ---------------------------------------------------------------------------------------------
@pytest.mark.requires("torch")
def test_non_contiguous_arrays_simply_work():
    x, y, c, g = data(n=20, m=30)
    k = Genred(FORMULA, ALIASES, axis=1)
    want = reference(x[::2], y[1::3], c[1::3], g)
    big_x = np.zeros((40, 7))
    big_x[::2, 1:7:2] = x
    xs = big_x[::4, 1:7:2]  # steps on both axes
    yt = np.ascontiguousarray(y.T).T  # a transposed (Fortran-ordered) view
    ct = np.ascontiguousarray(c.T).T
    assert not xs.flags.c_contiguous and not yt.flags.c_contiguous
    np.testing.assert_allclose(k(xs, yt[1::3], ct[1::3], g, backend="numpy"), want, rtol=1e-12)
    neg = y[::-1][::-1]  # negative strides
    np.testing.assert_allclose(k(x[::2], neg[1::3], c[::-1][::-1][1::3], g, backend="numpy"), want, rtol=1e-12)
    # torch: transposed and sliced tensors
    tx = torch.from_numpy(big_x)[::4, 1:7:2]
    ty = torch.from_numpy(np.ascontiguousarray(y.T)).T[1::3]
    out = k(tx, ty, torch.from_numpy(c)[1::3], torch.from_numpy(g), backend="numpy")
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)
    # LazyTensor
    x_i, y_j = LazyTensor(xs[:, None, :]), LazyTensor(yt[None, 1::3, :])
    D = x_i.sqdist(y_j)
    np.testing.assert_array_equal(
        D.argmin(dim=1, backend="numpy").ravel(), ((x[::2, None] - y[None, 1::3]) ** 2).sum(-1).argmin(1)
    )


# ---------------------------------------------------------------------------------------------
# array kinds in and out
# ---------------------------------------------------------------------------------------------
@pytest.mark.requires("torch")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_torch_in_torch_out(dtype):
    dtype = getattr(torch, dtype)
    x, y, c, g = data()
    tx, ty, tc, tg = (torch.from_numpy(a).to(dtype) for a in (x, y, c, g))
    out = Genred(FORMULA, ALIASES, axis=1)(tx, ty, tc, tg, backend="numpy")
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (6, 1)
    assert out.device.type == "cpu"
    tol = {torch.float16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    np.testing.assert_allclose(
        out.double().numpy(), reference(tx.double(), ty.double(), tc.double(), tg.double()), rtol=tol, atol=tol
    )
    kmin = Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], "KMin_ArgKMin", axis=1, opt_arg=2)
    vals, idx = kmin(tx, ty, backend="numpy")
    assert vals.dtype == dtype and idx.dtype == torch.int64 and idx.shape == (6, 2)
    x_i, y_j = LazyTensor(tx[:, None, :]), LazyTensor(ty[None, :, :])
    D = ((x_i - y_j) ** 2).sum(-1)
    am = D.argmin(dim=1, backend="numpy")
    assert isinstance(am, torch.Tensor) and am.dtype == torch.int64 and am.shape == (6, 1)
    s = D.sum(dim=0, backend="numpy")
    assert isinstance(s, torch.Tensor) and s.dtype == dtype and s.shape == (9, 1)


def test_numpy_in_numpy_out():
    x, y, c, g = data(dtype=np.float32)
    out = Genred(FORMULA, ALIASES, axis=1)(x, y, c, g, backend="numpy")
    assert type(out) is np.ndarray and out.dtype == np.float32
    idx = Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], "ArgMin", axis=0)(x, y, backend="numpy")
    assert type(idx) is np.ndarray and idx.dtype == np.int64 and idx.shape == (9, 1)
    # Python numbers for parameters, 1-D arrays for dimension-1 variables
    out2 = Genred(FORMULA, ALIASES, axis=1)(x, y, c[:, 0], 0.5, backend="numpy")
    np.testing.assert_array_equal(out, out2)


def test_numpy_and_torch_modules_reexport_the_same_names():
    import kernla.numpy as knp
    import kernla.torch as kt

    assert set(knp.__all__) == set(kt.__all__) == set(kernla.__all__)
    for name in kernla.__all__:
        assert getattr(knp, name) is getattr(kernla, name) is getattr(kt, name), name
    for name in ("LazyTensor", "Genred", "Vi", "Vj", "Pm"):
        assert name in knp.__all__


# ---------------------------------------------------------------------------------------------
# pykeops-style usage (ARCHITECTURE.md)
# ---------------------------------------------------------------------------------------------
def test_pykeops_style_lazytensor():
    rng = np.random.default_rng(3)
    N, M, D, E = 12, 17, 3, 2
    x, y = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    b = rng.normal(size=(M,))
    B = rng.normal(size=(M, E))
    x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
    dense = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)

    diff = x_i - y_j
    assert diff.shape == (N, M, D)
    D_ij = (diff**2).sum(dim=2)  # the vector axis: still symbolic
    assert isinstance(D_ij, LazyTensor) and D_ij.shape == (N, M) and D_ij._shape == (N, M, 1)
    assert (diff**2).sum(-1).formula is D_ij.formula
    idx = D_ij.argmin(dim=1, backend="numpy")
    assert idx.shape == (N, 1) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx[:, 0], dense.argmin(1))
    np.testing.assert_allclose(D_ij.sum(dim=1, backend="numpy")[:, 0], dense.sum(1), rtol=1e-12)
    np.testing.assert_allclose(D_ij.sum(dim=0, backend="numpy")[:, 0], dense.sum(0), rtol=1e-12)

    K = (-D_ij / 2).exp()
    Kd = np.exp(-dense / 2)
    v = K @ b
    assert v.shape == (N,)
    np.testing.assert_allclose(v, Kd @ b, rtol=1e-12)
    V = K @ B
    assert V.shape == (N, E)
    np.testing.assert_allclose(V, Kd @ B, rtol=1e-12)
    w = K.T @ rng.normal(size=(N,))
    assert w.shape == (M,)
    u = rng.normal(size=(N,))
    np.testing.assert_allclose(K.T @ u, Kd.T @ u, rtol=1e-12)
    assert K.T.shape == (M, N) and K.T._shape == (M, N, 1)

    # x[..., k]
    np.testing.assert_allclose(
        (x_i[..., 1] * y_j[..., 2]).sum(dim=1, backend="numpy")[:, 0], x[:, 1] * y[:, 2].sum(), rtol=1e-12
    )
    np.testing.assert_allclose(
        (x_i[:, :, 0:2] * y_j[..., -1]).sum(dim=1, backend="numpy"), x[:, 0:2] * y[:, -1].sum(), rtol=1e-12
    )
    # an index that no variable carries has size 1 (pykeops: a (N, 1, D) tensor summed over j)
    np.testing.assert_allclose(x_i.sum(dim=1, backend="numpy"), x, rtol=1e-12)
    np.testing.assert_allclose(x_i.sum(axis=0, backend="numpy"), x.sum(0, keepdims=True), rtol=1e-12)

    # K-min on a scalar: (N, K)
    kmin = D_ij.Kmin(4, dim=1, backend="numpy")
    arg = D_ij.argKmin(4, dim=1, backend="numpy")
    assert kmin.shape == (N, 4) and arg.shape == (N, 4) and arg.dtype == np.int64
    np.testing.assert_array_equal(arg, np.argsort(dense, 1, kind="stable")[:, :4])
    np.testing.assert_allclose(kmin, np.sort(dense, 1)[:, :4], rtol=1e-12)
    vals, args = D_ij.Kmin_argKmin(3, dim=0, backend="numpy")
    assert vals.shape == (M, 3) and args.shape == (M, 3)
    np.testing.assert_array_equal(args, np.argsort(dense, 0, kind="stable")[:3].T)

    # min / max / logsumexp over both axes
    np.testing.assert_allclose(D_ij.min(dim=0, backend="numpy")[:, 0], dense.min(0), rtol=1e-12)
    np.testing.assert_allclose(D_ij.max(dim=1, backend="numpy")[:, 0], dense.max(1), rtol=1e-12)
    from scipy.special import logsumexp

    np.testing.assert_allclose((-D_ij).logsumexp(dim=1, backend="numpy")[:, 0], logsumexp(-dense, axis=1), rtol=1e-12)
    # numbers and 1-D arrays are parameters
    p = LazyTensor(np.array([2.0]))
    np.testing.assert_allclose((D_ij * p + 1.5).sum(dim=1, backend="numpy")[:, 0], (2 * dense + 1.5).sum(1), rtol=1e-12)
    np.testing.assert_allclose((2.5 * D_ij).sum(dim=1, backend="numpy")[:, 0], 2.5 * dense.sum(1), rtol=1e-12)


def test_vi_vj_pm_helpers_and_genred_example_from_the_architecture():
    x, y, c, g = data(n=8, m=11)
    k = Genred(FORMULA, ALIASES, reduction_op="Sum", axis=1)
    np.testing.assert_allclose(k(x, y, c, g, backend="numpy"), reference(x, y, c, g), rtol=1e-12)
    X, Y, C, G = kernla.Vi(x), kernla.Vj(y), kernla.Vj(c), kernla.Pm(g)
    expr = (-G * X.sqdist(Y)).exp() * C
    np.testing.assert_allclose(expr.sum(dim=1, backend="numpy"), reference(x, y, c, g), rtol=1e-12)
    np.testing.assert_allclose(
        (kernla.Vi(x[:, 0]) * kernla.Vj(y[:, 0])).sum(dim=1, backend="numpy")[:, 0], x[:, 0] * y[:, 0].sum(), rtol=1e-12
    )
    np.testing.assert_allclose(
        (kernla.Pm(0.5) * X.sqdist(Y)).sum(dim=1, backend="numpy")[:, 0],
        0.5 * ((x[:, None] - y[None]) ** 2).sum(-1).sum(1),
        rtol=1e-12,
    )


def test_axis_0_is_the_transpose_of_axis_1():
    x, y, c, g = data()
    k0 = Genred("Exp(-G * SqDist(X, Y)) * C", ["X = Vi(3)", "Y = Vj(3)", "C = Vi(1)", "G = Pm(1)"], axis=0)
    rng = np.random.default_rng(0)
    ci = rng.normal(size=(6, 1))
    out = k0(x, y, ci, g, backend="numpy")
    assert out.shape == (9, 1)
    np.testing.assert_allclose(out, reference(y, x, ci, g), rtol=1e-12)


def test_pykeops_axis_keyword_is_the_reduction_axis():
    """pykeops reductions take ``axis=`` as well as ``dim=``; neither may be silently ignored."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    D = LazyTensor(x[:, None, :]).sqdist(LazyTensor(y[None, :, :]))
    dense = ((x[:, None] - y[None]) ** 2).sum(-1)
    np.testing.assert_allclose(D.sum(axis=1, backend="numpy")[:, 0], dense.sum(1), rtol=1e-12)
    np.testing.assert_allclose(D.sum(axis=0, backend="numpy")[:, 0], dense.sum(0), rtol=1e-12)
    np.testing.assert_allclose(D.sum_reduction(axis=0, backend="numpy")[:, 0], dense.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(D.argmin(axis=0, backend="numpy")[:, 0], dense.argmin(0))
    np.testing.assert_array_equal(D.argKmin(2, axis=0, backend="numpy"), np.argsort(dense, 0, kind="stable")[:2].T)
    from scipy.special import logsumexp

    np.testing.assert_allclose(D.logsumexp(axis=0, backend="numpy")[:, 0], logsumexp(dense, axis=0), rtol=1e-12)
    x_i = LazyTensor(x[:, None, :])
    assert isinstance(x_i.sum(axis=-1), LazyTensor) and x_i.sum(axis=2)._shape == (5, 1, 1)
    # the pykeops options kernla does not need are accepted; a typo is not
    np.testing.assert_allclose(D.sum(dim=1, backend="numpy", ranges=None, use_double_acc=True)[:, 0], dense.sum(1))
    with pytest.raises(TypeError):
        D.sum(dimm=1)
    with pytest.raises(ShapeError):
        D.sum(dim=0, axis=1)
