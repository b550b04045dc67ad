"""The memoised per-call path: LazyTensor expressions rebuilt at every call, and core's checks made once per
argument signature, give the dense float64 answers whatever changes between calls, and bad input still raises.

The same expression is built and reduced again and again, as users write it, while the shapes, the dtype,
the batch dimensions, grad mode and the data change from one call to the next; each result is compared with
dense NumPy / torch float64 references on fresh random data of odd sizes.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernla import ArrayKindError, DTypeError, FormulaError, Genred, InputValueError, LazyTensor, ShapeError, core
from kernla.formula import Vi, Vj, call, limits
from kernla.reductions import Reduction

try:
    import torch
except ImportError:  # optional: the tests that use it are marked requires("torch")
    torch = None

TOL = {np.float32: 2e-5, np.float64: 1e-12}


def gaussian_sum(x, y, b=None):
    """The user's loop body: a Gaussian LazyTensor built from scratch, then reduced over j."""
    x_i, y_j = LazyTensor(x[..., :, None, :]), LazyTensor(y[..., None, :, :])
    K = (-((x_i - y_j) ** 2).sum(-1)).exp()
    return K.sum(dim=K.ndim - 2) if b is None else K @ b


def dense(x, y, b=None):
    """The same in float64 NumPy: (..., N, 1) sums or (..., N, E) products."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k = np.exp(-((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1))
    return k.sum(-1, keepdims=True) if b is None else k @ np.asarray(b, np.float64)


def close(got, want, dtype):
    got = got.detach().numpy() if torch is not None and isinstance(got, torch.Tensor) else np.asarray(got)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


# (batch of x, batch of y, N, M, D): odd sizes, N = M = 1, broadcasting batch dimensions
SHAPES = [((), (), 1, 1, 3), ((), (), 7, 5, 3), ((), (), 13, 1, 2), ((), (), 1, 11, 4), ((2,), (1,), 5, 3, 3)]
SHAPES += [((3, 1), (1, 2), 4, 6, 1), ((2,), (), 3, 9, 5)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_lazy_sums_and_products_as_shapes_change_between_calls(dtype):
    rng = np.random.default_rng(0)
    for bx, by, n, m, d in SHAPES * 2:  # every shape twice: the second time from the memos
        x = rng.normal(size=bx + (n, d)).astype(dtype)
        y = rng.normal(size=by + (m, d)).astype(dtype)
        b = rng.normal(size=(m, 3)).astype(dtype)
        close(gaussian_sum(x, y), dense(x, y), dtype)
        if not bx and not by:
            close(gaussian_sum(x, y, b), dense(x, y, b), dtype)


@pytest.mark.requires("torch")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_lazy_with_and_without_grad_between_calls(dtype):
    rng = np.random.default_rng(1)
    tdtype = getattr(torch, np.dtype(dtype).name)
    for k, (bx, by, n, m, d) in enumerate(SHAPES * 2):
        x = torch.tensor(rng.normal(size=bx + (n, d)), dtype=tdtype)
        y = torch.tensor(rng.normal(size=by + (m, d)), dtype=tdtype)
        want = dense(x, y)
        grad = k % 2 == 1
        x.requires_grad_(grad)
        out = gaussian_sum(x, y)
        close(out, want, dtype)
        assert out.dtype == tdtype and out.requires_grad == grad
        if grad:  # against torch's autograd on the dense float64 matrix
            (gx,) = torch.autograd.grad(out.sum(), x)
            x64 = x.detach().double().requires_grad_()
            ref = torch.exp(-((x64[..., :, None, :] - y.double()[..., None, :, :]) ** 2).sum(-1)).sum()
            (want_gx,) = torch.autograd.grad(ref, x64)
            close(gx, want_gx.numpy(), dtype)
        with torch.no_grad():  # the same tensors, grad mode off: no graph
            assert not gaussian_sum(x, y).requires_grad


@pytest.mark.requires("torch")
def test_torch_matmul_and_sum_over_i_from_the_memos():
    rng = np.random.default_rng(2)
    for n, m in [(7, 5), (1, 1), (7, 5), (4, 9)]:
        x = torch.tensor(rng.normal(size=(n, 3)))
        y = torch.tensor(rng.normal(size=(m, 3)))
        b = torch.tensor(rng.normal(size=(m, 2)))
        close(gaussian_sum(x, y, b), dense(x, y, b.numpy()), np.float64)
        x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
        K = (-((x_i - y_j) ** 2).sum(-1)).exp()
        close(K.sum(dim=0), dense(y, x), np.float64)  # over i: the transposed sums


def test_shared_variables_and_parameters_read_at_each_call():
    """A variable used twice is one argument; a number is a parameter whose value is read at each call."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(8, 2))
    x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
    for g in (0.5, 2.0, 0.5):
        K = ((-g * ((x_i - y_j) ** 2).sum(-1)).exp() * (x_i | y_j)) + x_i.sum(-1)
        assert len(K.variables) == 3  # x, y and the number
        d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
        want = (np.exp(-g * d2) * (x @ y.T) + x.sum(-1)[:, None]).sum(1, keepdims=True)
        close(K.sum(dim=1, backend="numpy"), want, np.float64)


def test_genred_numbers_and_arrays_read_at_each_call():
    g = Genred("Exp(-G * SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)"], axis=1)
    rng = np.random.default_rng(4)
    for n, gamma in [(5, 0.5), (5, 3.0), (9, 0.5), (5, np.float64(0.25))]:
        x, y = rng.normal(size=(n, 3)), rng.normal(size=(7, 3))
        want = np.exp(-gamma * ((x[:, None] - y[None]) ** 2).sum(-1)).sum(1, keepdims=True)
        close(g(x, y, gamma, backend="numpy"), want, np.float64)
        close(g(x, y, np.array([gamma]), backend="numpy"), want, np.float64)


def test_checks_are_found_once_per_signature():
    red = Reduction("Sum", call("SqDist", Vi(0, 2), Vj(1, 2)))
    slots = [core.Slot("x", 0, 2), core.Slot("y", 1, 2)]
    x, y = np.zeros((5, 2)), np.zeros((7, 2))
    first = core.checked(red, slots, [x, y], 1)
    assert core.checked(red, slots, [np.ones((5, 2)), np.ones((7, 2))], 1) is first
    assert core.checked(red, slots, [x.astype(np.float32), y.astype(np.float32)], 1) is not first
    over_i = core.checked(red, slots, [x, y], 0)
    assert (over_i.nx, over_i.ny, first.nx, first.ny) == (7, 5, 5, 7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bad_input_still_refused_after_good_calls(dtype):
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 3)).astype(dtype), rng.normal(size=(6, 3)).astype(dtype)
    g = Genred("SqDist(X, Y) * Z", ["X = Vi(3)", "Y = Vj(3)", "Z = Vi(1)"], axis=1)
    z = np.ones((4, 1), dtype)
    for _ in range(2):  # good calls: the checks are memoised
        g(x, y, z, backend="numpy")
    with pytest.raises(ShapeError, match="same number of points"):
        g(x, y, np.ones((5, 1), dtype), backend="numpy")
    with pytest.raises(ShapeError, match="expects an array of shape"):
        g(x, y[:, :2], z, backend="numpy")
    with pytest.raises(DTypeError, match="same dtype"):
        g(x, y.astype(np.float32 if dtype == np.float64 else np.float64), z, backend="numpy")
    with pytest.raises(ArrayKindError):
        g(x, y.tolist(), z, backend="numpy")
    with pytest.raises(ShapeError, match="expected 3 arrays"):
        g(x, y, backend="numpy")
    bad = x.copy()
    bad[2, 1] = np.nan
    for _ in range(2):  # NaN is found in the data at every call, whatever the memo holds
        with pytest.raises(InputValueError, match="NaN"):
            g(bad, y, z, backend="numpy")
    g(x, y, z, backend="numpy")  # and the good call still runs


def test_lazy_bad_input_still_refused_after_good_calls():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))

    def knn(x, y, k):
        return ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1).argKmin(k, dim=1, backend="numpy")

    want = np.argsort(((x[:, None] - y[None]) ** 2).sum(-1), axis=1)[:, :2]
    for k in (2, np.int64(2)):
        np.testing.assert_array_equal(knn(x, y, k), want)
    with pytest.raises(ShapeError, match="at least K candidates"):
        knn(x, y[:1], 2)
    with pytest.raises(FormulaError, match="integer K"):
        knn(x, y, True)
    with pytest.raises(FormulaError, match="integer K"):
        knn(x, y, 2.0)
    with pytest.raises(ShapeError, match="batch dimensions .*do not broadcast"):
        gaussian_sum(rng.normal(size=(2, 4, 3)), rng.normal(size=(3, 5, 3)))
    with pytest.raises(ShapeError, match="dim must be"):
        (LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])).sum(dim=5)


def test_memoised_operations_still_check_their_arguments(monkeypatch):
    """Operations built before from the memo: limits lowered since and parameters of the wrong type still refused."""
    x = LazyTensor(np.ones((3, 1, 4)))
    for _ in range(2):
        assert x.concat(x).formula.dim == 8 and x.clampint(0, 1).formula.op == "ClampInt"
    with pytest.raises(FormulaError, match="integer"):
        x.clampint(0.0, 1.0)
    with pytest.raises(FormulaError, match="integer"):
        x.clampint(True, 1)
    monkeypatch.setattr(limits, "MAX_DIM", 6)
    with pytest.raises(FormulaError, match="MAX_DIM"):
        x.concat(x)
