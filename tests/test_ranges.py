"""Block-sparse reductions (``ranges``, pykeops' layout) on the numpy and cpu engines.

Every reference here is built without kernla's ranges code: the mask is drawn from the ranges
tuple by plain loops, and each output row is the *dense* reduction over that row's kept columns
only (the NumPy engine on the gathered columns, indices mapped back), or a dense float64
NumPy / torch formula with the mask applied.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernla import Genred, LazyTensor, Vi, Vj
from kernla.engines import numpy_engine
from kernla.errors import DTypeError, InputValueError, ShapeError
from kernla.linalg import KernelOperator
from kernla.reductions import KINDS, REDUCTIONS, Reduction

ENGINES = ["numpy", "cpu"]


# ---------------------------------------------------------------------------------------------
# ranges by hand
# ---------------------------------------------------------------------------------------------
def from_keep(ri: np.ndarray, rj: np.ndarray, keep: np.ndarray) -> tuple:
    """pykeops' 6-tuple for clusters ``ri`` (rows) and ``rj`` (columns) and a boolean cluster matrix ``keep``."""
    redj = [rj[c] for a in range(len(ri)) for c in range(len(rj)) if keep[a, c]]
    redi = [ri[a] for c in range(len(rj)) for a in range(len(ri)) if keep[a, c]]
    as2 = lambda rows: np.array(rows, np.int64).reshape(-1, 2)  # noqa: E731
    return (
        as2(ri),
        np.cumsum(keep.sum(1)).astype(np.int64),
        as2(redj),
        as2(rj),
        np.cumsum(keep.sum(0)).astype(np.int64),
        as2(redi),
    )


def mask_of(ranges: tuple, n: int, m: int, axis: int = 1) -> np.ndarray:
    """The (n, m) mask one triple of ``ranges`` describes (the first for axis=1, the second for axis=0)."""
    rows, slices, cols = ranges[:3] if axis == 1 else ranges[3:]
    out = np.zeros((n, m) if axis == 1 else (m, n), bool)
    for k, (a, b) in enumerate(np.asarray(rows)):
        for lo, hi in np.asarray(cols)[(slices[k - 1] if k else 0) : slices[k]]:
            out[a:b, lo:hi] = True
    return out if axis == 1 else out.T


def clusters(n: int, rng, gaps: bool = True) -> np.ndarray:
    """Random consecutive clusters of [0, n), shuffled; with ``gaps``, some points in no cluster."""
    cuts = np.unique(np.concatenate([[0, n], rng.choice(np.arange(1, n), size=min(n - 1, 5), replace=False)]))
    ranges = [[a, b] for a, b in zip(cuts[:-1], cuts[1:])]
    if gaps and len(ranges) > 2:
        a, b = ranges.pop(1)
        ranges.append([a, a + (b - a) // 2])  # part of the cluster is in none
    return np.array(rng.permutation(ranges), np.int64)


def random_ranges(n: int, m: int, rng) -> tuple:
    ri, rj = clusters(n, rng), clusters(m, rng)
    keep = rng.random((len(ri), len(rj))) < 0.5
    keep[0] = False  # a cluster of rows with no column
    return from_keep(ri, rj, keep)


def test_hand_made_ranges_describe_one_mask():
    rng = np.random.default_rng(0)
    for _ in range(5):
        r = random_ranges(23, 31, rng)
        np.testing.assert_array_equal(mask_of(r, 23, 31, 1), mask_of(r, 23, 31, 0))


# ---------------------------------------------------------------------------------------------
# every reduction of the registry, both axes, against the dense reduction on the kept columns
# ---------------------------------------------------------------------------------------------
ALIASES = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)"]
ALIASES_T = ["X = Vi(3)", "Y = Vj(3)", "B = Vi(2)", "G = Pm(1)"]  # axis=0: the weight follows i


def _genred(op: str, axis: int, K: int = 3) -> Genred:
    kind = KINDS[op]
    return Genred(
        "Exp(-G * SqDist(X, Y)) - SqNorm2(X) * 0.1",
        ALIASES if axis == 1 else ALIASES_T,
        reduction_op=op,
        axis=axis,
        opt_arg=K if kind.needs_k else None,
        formula2="B" if kind.needs_weight else None,
    )


def _empty(op: str, dtype, K: int = 3) -> list[np.ndarray]:
    """The outputs of a reduction over no column (the kind's own init and finalize)."""
    from kernla.formula import Vi as FVi
    from kernla.formula import Vj as FVj  # formula variables, for the kind's accumulator only

    kind = KINDS[op]
    red = Reduction(op, FVi(0, 1), FVj(1, 2) if kind.needs_weight else None, K if kind.needs_k else None)
    return red.np_finalize(red.np_init(1, np.dtype(dtype)), np.dtype(dtype))


def reference(g: Genred, op: str, x, y, b, G, mask: np.ndarray, axis: int) -> list[np.ndarray]:
    """Row by row (column by column for axis=0): the dense reduction over the kept partners only."""
    outs = []
    n_out = mask.shape[0] if axis == 1 else mask.shape[1]
    for r in range(n_out):
        kept = np.flatnonzero(mask[r] if axis == 1 else mask[:, r])
        if not len(kept):
            outs.append(_empty(op, x.dtype))
            continue
        if axis == 1:
            res = g(x[r : r + 1], y[kept], b[kept], G, backend="numpy")
        else:
            res = g(x[kept], y[r : r + 1], b[kept], G, backend="numpy")
        res = list(res) if isinstance(res, tuple) else [res]
        outs.append([np.where(o >= 0, kept[np.clip(o, 0, None)], -1) if o.dtype == np.int64 else o for o in res])
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def _data(n, m, dtype, rng, axis):
    x = rng.normal(size=(n, 3)).astype(dtype)
    y = rng.normal(size=(m, 3)).astype(dtype)
    b = rng.normal(size=(m if axis == 1 else n, 2)).astype(dtype)
    return x, y, b, np.array([0.7], dtype)


def _compare(got, ref, dtype, label):
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(ref), label
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for g_, r_ in zip(got, ref):
        if r_.dtype == np.int64:
            np.testing.assert_array_equal(g_, r_, err_msg=label)
        else:
            np.testing.assert_allclose(g_, r_, rtol=tol, atol=tol, err_msg=label)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [1, 0])
def test_every_reduction_matches_the_masked_dense_reduction(engine, dtype, axis):
    rng = np.random.default_rng(11 + axis)
    n, m = 37, 45
    r = random_ranges(n, m, rng)
    mask = mask_of(r, n, m, axis)
    x, y, b, G = _data(n, m, dtype, rng, axis)
    assert (~mask).any(1).any() and mask.any() and (~mask.any(1)).any()  # empty rows and partial ones
    for op in REDUCTIONS:  # every registered reduction, new ones included
        g = _genred(op, axis)
        got = g(x, y, b, G, backend=engine, ranges=r)
        _compare(got, reference(g, op, x, y, b, G, mask, axis), dtype, f"{engine} {op} axis={axis}")


@pytest.mark.parametrize("engine", ENGINES)
def test_dense_float64_formulas_with_the_mask(engine):
    """Independent of the NumPy engine: sums, minima, k-nearest and log-sum-exp written out with the mask."""
    rng = np.random.default_rng(5)
    n, m = 61, 83
    r = random_ranges(n, m, rng)
    mask = mask_of(r, n, m)
    x, y, b, G = _data(n, m, np.float64, rng, 1)
    D = ((x[:, None] - y[None]) ** 2).sum(-1)
    K = np.exp(-0.7 * D)
    al = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"]
    kb = Genred("Exp(-SqDist(X, Y) * 0.7) * B", al, axis=1)(x, y, b, backend=engine, ranges=r)
    np.testing.assert_allclose(kb, (K * mask) @ b, atol=1e-13)
    Dm = np.where(mask, D, np.inf)
    vals, idx = Genred("SqDist(X, Y)", al[:2], "KMin_ArgKMin", axis=1, opt_arg=4)(x, y, backend=engine, ranges=r)
    order = np.argsort(Dm, axis=1, kind="stable")[:, :4]
    want = np.take_along_axis(Dm, order, 1)
    np.testing.assert_allclose(vals, want)
    np.testing.assert_array_equal(idx, np.where(np.isinf(want), -1, order))
    lse = Genred("-SqDist(X, Y)", al[:2], "LogSumExp", axis=0)(x, y, backend=engine, ranges=r)
    with np.errstate(divide="ignore"):
        want = np.log((np.exp(-D) * mask).sum(0))[:, None]
    np.testing.assert_allclose(lse, want, atol=1e-13)


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_index_the_stacked_entries(engine):
    """With batch dimensions, ranges index rows b·N + i and columns b·M + j (pykeops' batch layout),
    or, when all their indices lie in one problem, apply to every entry."""
    rng = np.random.default_rng(8)
    B, n, m = 3, 19, 26
    x = rng.normal(size=(B, n, 3))
    y = rng.normal(size=(B, m, 3))
    b = rng.normal(size=(B, m, 2))
    parts = [random_ranges(n, m, rng) for _ in range(B)]
    shift = {0: n, 2: m, 3: m, 5: n}  # row / column offsets of entry e
    stacked = []
    for k in range(6):
        if k in shift:
            stacked.append(np.concatenate([p[k] + e * shift[k] for e, p in enumerate(parts)]))
        else:  # slices: after the earlier entries' column ranges
            ends = np.cumsum([0] + [len(p[k + 1]) for p in parts])
            stacked.append(np.concatenate([p[k] + ends[e] for e, p in enumerate(parts)]))
    g = Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], axis=1)
    got = g(x, y, b, backend=engine, ranges=tuple(stacked))
    for e in range(B):
        K = np.exp(-((x[e][:, None] - y[e][None]) ** 2).sum(-1)) * mask_of(parts[e], n, m)
        np.testing.assert_allclose(got[e], K @ b[e], atol=1e-13)
    gi = Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], "ArgMin", axis=0)
    got = gi(x, y, backend=engine, ranges=tuple(stacked))
    for e in range(B):
        D = np.where(mask_of(parts[e], n, m), ((x[e][:, None] - y[e][None]) ** 2).sum(-1), np.inf)
        want = np.where(np.isinf(D.min(0)), -1, D.argmin(0))
        np.testing.assert_array_equal(got[e].ravel(), want)
    shared = g(x, y, b, backend=engine, ranges=parts[1])  # indices of one problem: the same blocks in every entry
    for e in range(B):
        K = np.exp(-((x[e][:, None] - y[e][None]) ** 2).sum(-1)) * mask_of(parts[1], n, m)
        np.testing.assert_allclose(shared[e], K @ b[e], atol=1e-13)
    with pytest.raises(InputValueError, match="batch entr"):
        g(x, y, b, backend=engine, ranges=parts[0][:2] + (parts[0][2] + m + 1,) + parts[0][3:])
    with pytest.raises(InputValueError, match=f"<= {n} "):
        g(x[0], y[0], b[0], backend=engine, ranges=tuple(stacked))  # indices past one problem


def test_work_is_the_kept_pairs():
    """The NumPy engine evaluates the formula on the kept pairs only (counted through its evaluator)."""
    rng = np.random.default_rng(2)
    n, m = 300, 400
    r = random_ranges(n, m, rng)
    x, y = rng.normal(size=(n, 1)), rng.normal(size=(m, 1))
    seen = []
    real = numpy_engine.evaluate

    def counting(f, values, dtype):
        out = real(f, values, dtype)
        seen.append(np.broadcast_shapes(*(v.shape[:2] for v in values.values())))
        return out

    numpy_engine.evaluate = counting
    try:
        Genred("SqDist(X, Y)", ["X = Vi(1)", "Y = Vj(1)"], "Min", axis=1)(x, y, backend="numpy", ranges=r)
    finally:
        numpy_engine.evaluate = real
    assert sum(a * b for a, b in seen) == mask_of(r, n, m).sum()


# ---------------------------------------------------------------------------------------------
# inconsistent tuples
# ---------------------------------------------------------------------------------------------
def _good():
    ri = np.array([[0, 4], [4, 9]])
    rj = np.array([[0, 3], [3, 7]])
    return from_keep(ri, rj, np.array([[True, False], [True, True]]))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda r: r[:5], ShapeError, "6 integer arrays"),
        (lambda r: "ranges", ShapeError, "6 integer arrays"),
        (lambda r: (r[0].astype(float),) + r[1:], DTypeError, "ranges_i must be an integer array"),
        (lambda r: (r[0].ravel(),) + r[1:], ShapeError, r"ranges_i must have shape \(R, 2\)"),
        (lambda r: (r[0], r[1][:1]) + r[2:], ShapeError, "slices_i must have shape"),
        (lambda r: r[:2] + (r[2][:, :1],) + r[3:], ShapeError, "redranges_j must have shape"),
        (lambda r: (r[0] + 1,) + r[1:], InputValueError, r"ranges_i\[1\] = \[5, 10\]"),
        (lambda r: r[:2] + (r[2] - 1,) + r[3:], InputValueError, r"redranges_j\[0\] = \[-1, 2\]"),
        (lambda r: (r[0][:, ::-1],) + r[1:], InputValueError, "0 <= start <= end"),
        (lambda r: (r[0], r[1][::-1]) + r[2:], InputValueError, "slices_i must be non-decreasing"),
        (lambda r: (r[0], r[1] + 5) + r[2:], InputValueError, "at most 3"),
        (lambda r: (np.array([[0, 5], [4, 9]]),) + r[1:], InputValueError, "overlapping"),
        (lambda r: r[:2] + (np.array([[0, 3], [2, 7], [3, 7]]),) + r[3:], InputValueError, "overlap"),
        (lambda r: r[:3] + (r[3] + 1,) + r[4:], InputValueError, r"ranges_j\[1\] = \[4, 8\]"),
    ],
)
def test_inconsistent_ranges_are_refused(change, error, match):
    x, y = np.zeros((9, 1)), np.zeros((7, 1))
    g = Genred("SqDist(X, Y)", ["X = Vi(1)", "Y = Vj(1)"], axis=1)
    assert g(x, y, backend="numpy", ranges=_good()).shape == (9, 1)
    with pytest.raises(error, match=match):
        g(x, y, backend="numpy", ranges=change(_good()))


def test_ranges_from_torch_and_lists_and_int32():
    torch = pytest.importorskip("torch")
    r = _good()
    x, y = np.random.default_rng(0).normal(size=(9, 1)), np.random.default_rng(1).normal(size=(7, 1))
    g = Genred("SqDist(X, Y)", ["X = Vi(1)", "Y = Vj(1)"], axis=1)
    want = g(x, y, backend="numpy", ranges=r)
    for other in (tuple(torch.from_numpy(a) for a in r), [a.tolist() for a in r], tuple(a.astype(np.int32) for a in r)):
        np.testing.assert_array_equal(g(x, y, backend="numpy", ranges=other), want)


# ---------------------------------------------------------------------------------------------
# LazyTensor
# ---------------------------------------------------------------------------------------------
def test_issue_example_lazytensor_ranges_attribute_takes_effect():
    """The issue's report: a block-diagonal mask set with K.ranges must give the masked result."""
    rng = np.random.default_rng(0)
    n = 30
    x = np.sort(rng.random((n, 1)), axis=0)
    b = rng.random((n, 1))
    blocks = np.array([[0, 10], [10, 20], [20, 30]])
    ranges = from_keep(blocks, blocks, np.eye(3, dtype=bool))
    K = (-((LazyTensor(x[:, None, :]) - LazyTensor(x[None, :, :])) ** 2).sum(-1) / 0.1).exp()
    dense = K @ b
    K.ranges = ranges
    sparse = K @ b
    full = np.exp(-((x - x.T) ** 2) / 0.1)
    mask = np.kron(np.eye(3), np.ones((10, 10))).astype(bool)
    np.testing.assert_allclose(sparse, (full * mask) @ b, atol=1e-12)
    np.testing.assert_allclose(dense, full @ b, atol=1e-12)
    assert np.abs(sparse - dense).max() > 0.1  # not a false pass: the dense answer differs


def test_lazytensor_ranges_propagate_transpose_and_conflict():
    rng = np.random.default_rng(3)
    n, m = 25, 32
    r = random_ranges(n, m, rng)
    x, y, v = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)), rng.normal(size=(n, 3))
    mask = mask_of(r, n, m)
    D = LazyTensor(x[:, None, :]).sqdist(LazyTensor(y[None, :, :]))
    K = (-D).exp().with_ranges(r)  # a new tensor: D keeps no ranges
    assert D.ranges is None and K.ranges is r
    full = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1))
    np.testing.assert_allclose(K.T @ v, (full * mask).T @ v, atol=1e-12)
    np.testing.assert_allclose((K * 2).sum(dim=0), 2 * (full * mask).sum(0)[:, None], atol=1e-12)
    np.testing.assert_allclose((2 * K).sum(dim=0), 2 * (full * mask).sum(0)[:, None], atol=1e-12)
    np.testing.assert_allclose((1 - K).sum(dim=1), ((1 - full) * mask).sum(1)[:, None], atol=1e-12)
    assert LazyTensor(K).ranges is r
    np.testing.assert_allclose(K.min(dim=1), np.where(mask, full, np.inf).min(1)[:, None])
    np.testing.assert_allclose((-D).exp().sum(dim=1, ranges=r), (full * mask).sum(1)[:, None], atol=1e-12)
    other = random_ranges(n, m, rng)
    with pytest.raises(ShapeError, match="different ranges"):
        K + (-D).with_ranges(other)
    assert (K + K.with_ranges(tuple(a.copy() for a in r))).ranges is not None  # equal values combine


# ---------------------------------------------------------------------------------------------
# autograd: the backward visits the same pairs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("op", ["Sum", "LogSumExp", "Min", "SumSoftMaxWeight", "KMin"])
@pytest.mark.parametrize("axis", [1, 0])
def test_gradients_match_torch_on_the_masked_formula(engine, op, axis):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    n, m = 21, 27
    r = random_ranges(n, m, rng)
    mask = torch.tensor(mask_of(r, n, m))
    t = lambda a: torch.tensor(a, requires_grad=True)  # noqa: E731
    x, y = t(rng.normal(size=(n, 2))), t(rng.normal(size=(m, 2)))
    w = t(rng.normal(size=(m if axis == 1 else n, 2)))
    s = t(np.array([0.8]))
    F = torch.exp(-s * ((x[:, None] - y[None]) ** 2).sum(-1))  # (n, m)
    F = F if axis == 1 else F.T
    M = mask if axis == 1 else mask.T
    inf = torch.tensor(float("inf"), dtype=F.dtype)
    if op == "Sum":
        want = (F * M).sum(1, keepdim=True)
    elif op == "LogSumExp":
        want = torch.logsumexp(torch.where(M, F, -inf), 1, keepdim=True)
    elif op == "Min":
        want = torch.where(M, F, inf).min(1, keepdim=True).values
    elif op == "KMin":
        want = torch.where(M, F, inf).topk(2, 1, largest=False).values
    else:
        empty = ~M.any(1, keepdim=True)  # a softmax over nothing: NaN, left out below
        p = torch.softmax(torch.where(empty, 0.0, torch.where(M, F, -inf)), 1)
        want = torch.where(empty, torch.nan, p @ w)
    al = ["X = Vi(2)", "Y = Vj(2)", f"W = {'Vj' if axis == 1 else 'Vi'}(2)", "S = Pm(1)"]
    g = Genred("Exp(-S * SqDist(X, Y))", al, op, axis=axis, opt_arg=2 if op == "KMin" else None,
               formula2="W" if op == "SumSoftMaxWeight" else None)  # fmt: skip
    got = g(x, y, w, s, backend=engine, ranges=r)
    finite = torch.isfinite(want)
    cot = torch.tensor(rng.normal(size=tuple(want.shape))) * finite
    np.testing.assert_allclose(got.detach().numpy()[finite], want.detach().numpy()[finite], atol=1e-12)
    args = [x, y, s] + ([w] if op == "SumSoftMaxWeight" else [])
    ref = torch.autograd.grad((torch.where(finite, want, 0) * cot).sum(), args, allow_unused=True)
    mine = torch.autograd.grad((torch.where(finite, got, 0) * cot).sum(), args, allow_unused=True)
    for a, b_ in zip(mine, ref):
        np.testing.assert_allclose(a.numpy(), b_.numpy(), atol=1e-11)


# ---------------------------------------------------------------------------------------------
# KernelOperator
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_kernel_operator_products_solves_and_eigsh(engine):
    rng = np.random.default_rng(6)
    n, m = 40, 33
    r = random_ranges(n, m, rng)
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    full = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1))
    Km = full * mask_of(r, n, m)
    op = KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(y), ranges=r, backend=engine)
    u, v = rng.normal(size=(m, 3)), rng.normal(size=n)
    np.testing.assert_allclose(op @ u, Km @ u, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(v), Km.T @ v, atol=1e-12)
    np.testing.assert_allclose(op.T @ v, Km.T @ v, atol=1e-12)
    np.testing.assert_allclose(op.to_dense(), Km, atol=1e-15)
    np.testing.assert_allclose(op.columns([3, 0, 30]), Km[:, [3, 0, 30]], atol=1e-15)
    # a symmetric block-diagonal kernel: solves and eigenvalues
    blocks = np.array([[0, 13], [13, 14], [14, 40]])
    rs = from_keep(blocks, blocks, np.eye(3, dtype=bool))
    sq = KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(x), ranges=rs, backend=engine)
    Ks = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1)) * mask_of(rs, n, n)
    np.testing.assert_allclose(sq.host_diagonal(), np.diag(Ks))
    a = sq.solve(v, alpha=0.3)
    np.testing.assert_allclose(a, np.linalg.solve(Ks + 0.3 * np.eye(n), v), atol=1e-8)
    vals = np.sort(sq.eigsh(k=3)[0])
    np.testing.assert_allclose(vals, np.linalg.eigvalsh(Ks)[-3:], atol=1e-8)
    lazy = (-LazyTensor(x[:, None, :]).sqdist(LazyTensor(x[None, :, :]))).exp()
    lazy.ranges = rs
    np.testing.assert_allclose(KernelOperator(lazy, backend=engine) @ v, Ks @ v, atol=1e-12)
    np.testing.assert_allclose(lazy.solve(v, alpha=0.3), a, atol=1e-8)
    with pytest.raises(InputValueError):
        KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(y), ranges=rs)  # 40 columns in ranges, 33 here


def test_kernel_operator_torch_graph_uses_the_ranges():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    n = 24
    blocks = np.array([[0, 8], [8, 24]])
    rs = from_keep(blocks, blocks, np.array([[True, True], [False, True]]))
    xt = torch.tensor(rng.normal(size=(n, 2)), requires_grad=True)
    v = torch.tensor(rng.normal(size=n))
    op = KernelOperator("Exp(-SqDist(X, Y))", X=Vi(xt), Y=Vj(xt), ranges=rs)
    M = torch.tensor(mask_of(rs, n, n))
    Kt = torch.exp(-((xt[:, None] - xt[None]) ** 2).sum(-1)) * M
    out = op @ v
    np.testing.assert_allclose(out.detach().numpy(), (Kt @ v).detach().numpy(), atol=1e-12)
    (g,) = torch.autograd.grad(out.square().sum(), xt)
    (ref,) = torch.autograd.grad((Kt @ v).square().sum(), xt)
    np.testing.assert_allclose(g.numpy(), ref.numpy(), atol=1e-11)
    np.testing.assert_allclose(op.to_dense().detach().numpy(), Kt.detach().numpy(), atol=1e-15)


@pytest.mark.slow
def test_few_rows_split_the_columns_on_the_cpu():
    """Few row blocks: the cpu driver cuts each block's columns in pieces (threads) and merges them in order."""
    rng = np.random.default_rng(12)
    n, m = 7, 30011
    ri = np.array([[0, 5], [5, 7]])
    rj = np.array([[0, 9000], [9000, 9001], [9001, 20000], [25000, 30011]])
    r = from_keep(ri, rj, np.array([[True, False, True, True], [True, True, False, False]]))
    mask = mask_of(r, n, m)
    x, y, b, G = _data(n, m, np.float64, rng, 1)
    for op in REDUCTIONS:
        g = _genred(op, 1)
        got = g(x, y, b, G, backend="cpu", ranges=r)
        _compare(got, reference(g, op, x, y, b, G, mask, 1), np.float64, f"cpu {op} few rows")
