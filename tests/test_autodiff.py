"""Automatic differentiation: symbolic gradients of formulas, gradients of reductions as
reductions, torch.autograd through ``reduce`` (Genred, LazyTensor), double backward, and the
implicit-function-theorem helper for solves.

Most checks force ``backend="numpy"`` (every gradient formula is new code for a compiling engine,
and the suite must stay fast on 2 cores); one test runs the default backend end to end.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernla import Genred, LazyTensor
from kernla.errors import FormulaError
from kernla.formula import OPS, parse, parse_aliases
from kernla.formula.diff import grad, vjp, zeros
from kernla.formula.evaluate import evaluate
from kernla.formula.printer import to_string
from kernla.formula.tree import CAT_I, CAT_J, CAT_PARAM, IntCst, RealCst, Var, call

try:
    import torch
except ImportError:  # optional: the tests that use it are marked requires("torch")
    torch = None

F64 = torch.float64 if torch is not None else None  # read by the requires("torch") tests only
NP = "numpy"


# ---------------------------------------------------------------------------------------------
# one case per operation (several for broadcasting variants), with inputs in its smooth domain
# ---------------------------------------------------------------------------------------------
def U(lo, hi):
    return lambda r, s: r.uniform(lo, hi, s)


def AZ(lo, hi):
    """|values| in [lo, hi], random signs."""
    return lambda r, s: r.uniform(lo, hi, s) * r.choice([-1.0, 1.0], s)


def OFF(lo, hi, scale=1.0):
    """k + u, u in [0.2, 0.3] or [0.7, 0.8]: far from the jumps of Floor, Round, OneHot."""
    return lambda r, s: (r.integers(lo, hi + 1, s) + r.uniform(0.2, 0.3, s) + r.choice([0.0, 0.5], s)) / scale


R, POS = U(-1.5, 1.5), U(0.3, 2.0)
OP_CASES = [  # (op, [(dim, domain) per argument], integer params)
    ("Add", [(3, R), (3, R)], ()),
    ("Add", [(1, R), (3, R)], ()),
    ("Subtract", [(3, R), (1, R)], ()),
    ("Mult", [(3, R), (3, R)], ()),
    ("Mult", [(1, R), (3, R)], ()),
    ("Divide", [(3, R), (3, AZ(0.5, 2))], ()),
    ("Divide", [(3, R), (1, AZ(0.5, 2))], ()),
    ("Divide", [(1, R), (3, AZ(0.5, 2))], ()),
    ("Minus", [(3, R)], ()),
    ("Inv", [(2, AZ(0.5, 2))], ()),
    ("Square", [(2, R)], ()),
    ("Sqrt", [(2, POS)], ()),
    ("Rsqrt", [(2, POS)], ()),
    ("Exp", [(2, R)], ()),
    ("Log", [(2, POS)], ()),
    ("XLogX", [(2, POS)], ()),
    ("Sin", [(2, R)], ()),
    ("Cos", [(2, R)], ()),
    ("Asin", [(2, U(-0.8, 0.8))], ()),
    ("Acos", [(2, U(-0.8, 0.8))], ()),
    ("Atan", [(2, R)], ()),
    ("SinXDivX", [(2, AZ(0.2, 3))], ()),
    ("Abs", [(2, AZ(0.2, 2))], ()),
    ("Sign", [(2, AZ(0.2, 2))], ()),
    ("Step", [(2, AZ(0.2, 2))], ()),
    ("ReLU", [(2, AZ(0.2, 2))], ()),
    ("Floor", [(2, OFF(-2, 2))], ()),
    ("Pow", [(2, AZ(0.5, 1.5))], (3,)),
    ("Pow", [(2, AZ(0.5, 1.5))], (-2,)),
    ("Pow", [(2, AZ(0.5, 1.5))], (0,)),
    ("Powf", [(2, POS), (2, R)], ()),
    ("Powf", [(2, POS), (1, R)], ()),
    ("Powf", [(1, POS), (2, R)], ()),
    ("Atan2", [(2, R), (2, R)], ()),
    ("Atan2", [(1, R), (2, R)], ()),
    ("Round", [(2, OFF(-2, 2))], (0,)),
    ("Round", [(2, OFF(-20, 20, 10.0))], (1,)),
    ("Mod", [(2, OFF(-3, 3)), (2, U(2.2, 2.4)), (2, U(-0.05, 0.05))], ()),
    ("Mod", [(2, U(0.1, 0.9)), (1, U(1.2, 1.4)), (1, U(-0.05, 0.05))], ()),
    ("Clamp", [(2, AZ(0.2, 2)), (2, U(-0.1, 0.1)), (2, U(1, 1.1))], ()),
    ("Clamp", [(3, U(-2, 2)), (1, U(-1, -0.5)), (1, U(0.5, 1))], ()),
    ("ClampInt", [(3, OFF(-3, 3))], (-1, 1)),
    ("IfElse", [(2, AZ(0.2, 2)), (2, R), (2, R)], ()),
    ("IfElse", [(1, AZ(0.2, 2)), (3, R), (1, R)], ()),
    ("Equal", [(2, R), (2, R)], ()),
    ("NotEqual", [(2, R), (2, R)], ()),
    ("LessThan", [(2, R), (2, R)], ()),
    ("LessOrEqual", [(2, R), (2, R)], ()),
    ("Sum", [(3, R)], ()),
    ("Max", [(3, R)], ()),
    ("Min", [(3, R)], ()),
    ("ArgMax", [(3, R)], ()),
    ("ArgMin", [(3, R)], ()),
    ("Scalprod", [(3, R), (3, R)], ()),
    ("SqNorm2", [(3, R)], ()),
    ("Norm2", [(3, R)], ()),
    ("Normalize", [(3, R)], ()),
    ("Normalize", [(1, AZ(0.3, 1))], ()),
    ("SqDist", [(3, R), (3, R)], ()),
    ("WeightedSqNorm", [(1, POS), (3, R)], ()),
    ("WeightedSqNorm", [(3, POS), (3, R)], ()),
    ("WeightedSqNorm", [(9, R), (3, R)], ()),
    ("WeightedSqNorm", [(1, POS), (1, R)], ()),
    ("WeightedSqDist", [(1, POS), (2, R), (2, R)], ()),
    ("WeightedSqDist", [(2, POS), (2, R), (2, R)], ()),
    ("WeightedSqDist", [(4, R), (2, R), (2, R)], ()),
    ("Elem", [(3, R)], (1,)),
    ("ElemT", [(1, R)], (3, 2)),
    ("Extract", [(4, R)], (1, 2)),
    ("ExtractT", [(2, R)], (1, 4)),
    ("Concat", [(2, R), (1, R)], ()),
    ("OneHot", [(1, OFF(0, 3))], (4,)),
    ("MatVecMult", [(6, R), (3, R)], ()),
    ("VecMatMult", [(2, R), (6, R)], ()),
    ("TensorProd", [(2, R), (3, R)], ()),
    ("TensorDot", [(6, R), (12, R)], ((2, 3), (3, 4), (1,), (0,), (1, 0))),
    ("TensorDot", [(12, R), (6, R)], ((2, 3, 2), (2, 3), (1, 0), (1, 0), ())),
    ("Kron", [(4, R), (6, R)], ((2, 2), (2, 3))),
]
OP_IDS = [f"{op}{[d for d, _ in args]}{params or ''}" for op, args, params in OP_CASES]


def test_every_registered_operation_has_a_case():
    assert set(OPS) == {op for op, _, _ in OP_CASES}


def _fd_check(f, variables, values, e_pos, h):
    """Max relative error between the Grad formulas of ⟨f, e⟩ and central differences."""
    n = next(iter(values.values())).shape[0]
    grads = vjp([(f, Var(e_pos, f.dim, CAT_I))], variables)
    worst = 0.0
    for v, g in zip(variables, grads):
        k = v.params[0]
        got = np.zeros((n, v.dim)) if g is None else np.broadcast_to(evaluate(g, values), (n, v.dim))
        want = np.zeros((n, v.dim))
        for c in range(v.dim):
            hi, lo = dict(values), dict(values)
            hi[k], lo[k] = values[k].copy(), values[k].copy()
            hi[k][:, c] += h
            lo[k][:, c] -= h
            dot = [(np.broadcast_to(evaluate(f, w), (n, f.dim)) * values[e_pos]).sum(-1) for w in (hi, lo)]
            want[:, c] = (dot[0] - dot[1]) / (2 * h)
        worst = max(worst, np.abs(got - want).max() / (1 + np.abs(want).max()))
    return worst


@pytest.mark.parametrize("op, args, params", OP_CASES, ids=OP_IDS)
def test_op_derivative_matches_finite_differences_first_and_second_order(op, args, params):
    rng = np.random.default_rng(abs(hash(op)) % 2**32)
    xs = [Var(k, d, CAT_I) for k, (d, _) in enumerate(args)]
    f = call(op, *xs, params=params)
    n, e1, e2 = 6, len(xs), len(xs) + 1
    values = {k: dom(rng, (n, d)) for k, (d, dom) in enumerate(args)}
    values[e1] = rng.normal(size=(n, f.dim))
    assert _fd_check(f, xs, values, e1, 1e-6) < 1e-6
    # second order: differentiate the gradient formula of the first argument again
    g1 = grad(f, xs[0], Var(e1, f.dim, CAT_I))
    values[e2] = rng.normal(size=(n, xs[0].dim))
    assert _fd_check(g1, xs, values, e2, 1e-5) < 1e-5


def _slots_for(args):
    """Argument k is an i-, j- or parameter variable for k = 0, 1, 2; a j-weight B joins unary ops."""
    cats = [CAT_I, CAT_J, CAT_PARAM]
    xs = [Var(k, d, cats[k]) for k, (d, _) in enumerate(args)]
    return xs


@pytest.mark.requires("torch")
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("op, args, params", OP_CASES, ids=OP_IDS)
def test_gradcheck_every_operation_inside_a_sum_reduction(op, args, params, axis):
    rng = np.random.default_rng(7)
    xs = _slots_for(args)
    f = call(op, *xs, params=params)
    if len(xs) == 1:  # give the reduced axis a variable: F = op(x_i) * b_j
        xs.append(Var(1, 1, CAT_J))
        f = f * xs[1]
        args = list(args) + [(1, U(0.5, 1.5))]
    sizes = {CAT_I: 3, CAT_J: 4}
    inputs = []
    for v, (d, dom) in zip(xs, args):
        shape = (d,) if v.params[2] == CAT_PARAM else (sizes[v.params[2]], d)
        inputs.append(torch.tensor(dom(rng, shape), dtype=F64, requires_grad=True))
    red = Genred(to_string(f), [], reduction_op="Sum", axis=axis)
    assert torch.autograd.gradcheck(lambda *a: red(*a, backend=NP), inputs, eps=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# every differentiable reduction, over both axes, w.r.t. i-, j-variables, parameters and weights
# ---------------------------------------------------------------------------------------------
ALIASES = ["X = Vi(2)", "Y = Vj(2)", "G = Pm(1)", "B = Vj(3)"]
VECTOR_F = "Concat(SqDist(X, Y) * G, Sin(X - Y) + Elem(B, 0))"  # dimension 3
SCALAR_F = "-SqDist(X, Y) * G + Sin(X | Y) * Elem(B, 1)"
REDUCTION_CASES = [
    ("Sum", VECTOR_F, None, None),
    ("Min", VECTOR_F, None, None),
    ("Max", VECTOR_F, None, None),
    ("KMin", VECTOR_F, None, 3),
    ("Min_ArgMin", SCALAR_F, None, None),
    ("Max_ArgMax", VECTOR_F, None, None),
    ("KMin_ArgKMin", SCALAR_F, None, 2),
    ("LogSumExp", VECTOR_F, None, None),
    ("LogSumExpWeight", SCALAR_F, "Exp(B * Elem(X, 0) + G)", None),
    ("SumSoftMaxWeight", SCALAR_F, "B * Elem(X, 1) + Exp(G * B) * Elem(Y, 0)", None),
]


def _inputs(seed=0, n=5, m=4, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=F64)
    y = torch.randn(m, 2, generator=g, dtype=F64)
    p = torch.rand(1, generator=g, dtype=F64) + 0.5
    b = torch.randn(m, 3, generator=g, dtype=F64)
    return [t.requires_grad_(requires_grad) for t in (x, y, p, b)]


@pytest.mark.requires("torch")
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("name, formula, weight, K", REDUCTION_CASES, ids=[c[0] for c in REDUCTION_CASES])
def test_gradcheck_every_differentiable_reduction(name, formula, weight, K, axis):
    red = Genred(formula, ALIASES, reduction_op=name, axis=axis, opt_arg=K, formula2=weight)
    x, y, p, b = _inputs(seed=3)
    if axis == 0:  # reduce over i: the j-variables give the rows
        y, b = y[:3].detach().requires_grad_(), b[:3].detach().requires_grad_()

    def fn(*a):
        out = red(*a, backend=NP)
        return out[0] if isinstance(out, tuple) else out

    assert torch.autograd.gradcheck(fn, (x, y, p, b), eps=1e-6, atol=1e-6)


@pytest.mark.requires("torch")
def test_index_outputs_are_plain_int64_without_graph():
    x, y, p, b = _inputs()
    for name, K in (("ArgMin", None), ("ArgKMin", 2)):
        idx = Genred("SqDist(X, Y)", ALIASES[:2], reduction_op=name, axis=1, opt_arg=K)(x, y, backend=NP)
        assert idx.dtype == torch.int64 and not idx.requires_grad
    vals, idx = Genred("SqDist(X, Y)", ALIASES[:2], reduction_op="Min_ArgMin", axis=1)(x, y, backend=NP)
    assert vals.requires_grad and not idx.requires_grad


@pytest.mark.requires("torch")
def test_min_gradient_goes_to_the_selected_pair_only_and_kmin_without_candidates_is_zero():
    x = torch.tensor([[0.0], [10.0]], dtype=F64, requires_grad=True)
    y = torch.tensor([[1.0], [4.0], [9.5]], dtype=F64, requires_grad=True)
    m = Genred("SqDist(X, Y)", ["X = Vi(1)", "Y = Vj(1)"], reduction_op="Min", axis=1)(x, y, backend=NP)
    gx, gy = torch.autograd.grad(m.sum(), (x, y))
    assert gx.ravel().tolist() == [-2.0, 1.0] and gy.ravel().tolist() == [2.0, 0.0, -1.0]
    # a K-th value with no finite candidate (index -1) passes no gradient, and no NaN
    w = Genred("-Log(Y) * Square(X)", ["X = Vi(1)", "Y = Vj(1)"], reduction_op="KMin", axis=1, opt_arg=2)
    yy = torch.tensor([[0.0], [3.0]], dtype=F64, requires_grad=True)
    out = w(x, yy, backend=NP)
    assert torch.isinf(out[:, 1]).all()
    gx, gy = torch.autograd.grad(out, (x, yy), grad_outputs=torch.ones_like(out))
    assert torch.allclose(gx, -2 * np.log(3.0) * x) and torch.allclose(
        gy, torch.tensor([[0.0], [-(100 + 0) / 3.0]], dtype=F64)
    )


@pytest.mark.requires("torch")
def test_batched_reductions_broadcast_their_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 4, 2, dtype=F64, generator=g).requires_grad_()  # batch (2, 1)
    y = torch.randn(3, 5, 2, dtype=F64, generator=g).requires_grad_()  # batch (3,)
    s = torch.rand(2, 3, 1, dtype=F64, generator=g).add(0.5).requires_grad_()
    red = Genred("Exp(-S * SqDist(X, Y)) * Elem(Y, 0)", ["X = Vi(2)", "Y = Vj(2)", "S = Pm(1)"], "Sum", axis=1)
    mn = Genred("SqDist(X, Y) * S", ["X = Vi(2)", "Y = Vj(2)", "S = Pm(1)"], "Min", axis=1)
    assert torch.autograd.gradcheck(lambda *a: red(*a, backend=NP), (x, y, s))
    assert torch.autograd.gradcheck(lambda *a: mn(*a, backend=NP), (x, y, s))


# ---------------------------------------------------------------------------------------------
# random formulas (a hypothesis strategy over smooth operations)
# ---------------------------------------------------------------------------------------------
LEAVES = [Var(0, 2, CAT_I), Var(1, 2, CAT_J), Var(2, 1, CAT_PARAM), Var(3, 1, CAT_J)]


@st.composite
def smooth_formula(draw, depth=3):
    if depth == 0 or draw(st.integers(0, 5)) == 0:
        if draw(st.integers(0, 6)) == 0:
            return draw(st.sampled_from([IntCst(2), RealCst(0.5), RealCst(-1.5)]))
        return draw(st.sampled_from(LEAVES))
    sub = lambda: draw(smooth_formula(depth=depth - 1))  # noqa: E731
    kind = draw(st.sampled_from(["unary", "binary", "reduce", "select", "concat", "matrix"]))
    a = sub()
    if kind == "unary":
        op = draw(st.sampled_from(["Minus", "Sin", "Cos", "Atan", "Square", "ExpSin", "SqrtPos", "InvPos", "Pow3"]))
        if op == "ExpSin":
            return call("Exp", call("Sin", a))
        if op == "SqrtPos":
            return call("Sqrt", IntCst(1) + call("Square", a))
        if op == "InvPos":
            return call("Inv", RealCst(1.5) + call("Cos", a))
        if op == "Pow3":
            return call("Pow", a, params=(3,))
        return call(op, a)
    if kind == "binary":
        b = sub()
        if a.dim != b.dim and 1 not in (a.dim, b.dim):
            b = call("Sum", b)
        op = draw(st.sampled_from(["Add", "Subtract", "Mult", "DividePos"]))
        if op == "DividePos":
            return a / (IntCst(2) + call("Sin", b))
        return call(op, a, b)
    if kind == "reduce":
        op = draw(st.sampled_from(["Sum", "SqNorm2", "Norm2Pos", "ScalprodSelf"]))
        if op == "Norm2Pos":
            return call("Norm2", a + call("ElemT", IntCst(3), params=(a.dim, 0))) if a.dim > 1 else a
        if op == "ScalprodSelf":
            return call("Scalprod", a, call("Sin", a))
        return call(op, a)
    if kind == "select":
        if a.dim == 1:
            return call("ElemT", a, params=(2, draw(st.integers(0, 1))))
        return call("Elem", a, params=(draw(st.integers(0, a.dim - 1)),))
    if kind == "concat":
        return call("Concat", a, sub()) if a.dim < 4 else call("Extract", a, params=(1, 2))
    b = sub()  # small matrix products
    return call("TensorProd", a, b) if a.dim * b.dim <= 6 else call("Scalprod", call("Sum", a), call("Sum", b))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(smooth_formula(), st.integers(0, 2**31))
def test_random_formulas_grad_formulas_match_finite_differences(f, seed):
    rng = np.random.default_rng(seed)
    values = {k: rng.uniform(-1, 1, (5, v.dim)) for k, v in enumerate(LEAVES)}
    values[4] = rng.normal(size=(5, f.dim))
    flat = [Var(k, v.dim, CAT_I) for k, v in enumerate(LEAVES)]  # same values, any category
    f = f.replace(dict(zip(LEAVES, flat)))
    assert _fd_check(f, flat, values, 4, 1e-6) < 1e-5


@pytest.mark.requires("torch")
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(smooth_formula(), st.sampled_from([0, 1]), st.sampled_from(["Sum", "LogSumExp", "Min"]))
def test_random_formulas_gradcheck_through_reductions(f, axis, name):
    red = Genred(
        to_string(f), ["X = Vi(0, 2)", "Y = Vj(1, 2)", "P = Pm(2, 1)", "B = Vj(3, 1)"], reduction_op=name, axis=axis
    )
    g = torch.Generator().manual_seed(0)
    n, m = (3, 4) if axis == 1 else (4, 3)
    args = (
        torch.rand(n, 2, generator=g, dtype=F64) * 2 - 1,
        torch.rand(m, 2, generator=g, dtype=F64) * 2 - 1,
        torch.rand(1, generator=g, dtype=F64) * 2 - 1,
        torch.rand(m, 1, generator=g, dtype=F64) * 2 - 1,
    )
    args = tuple(a.requires_grad_() for a in args)
    assert torch.autograd.gradcheck(lambda *a: red(*a, backend=NP), args, eps=1e-6, atol=1e-5, fast_mode=True)
    if name == "Sum":
        # (slow mode: torch's fast mode miscounts outputs that do not require grad, such as the
        # zero gradients of arguments a formula does not use)
        assert torch.autograd.gradgradcheck(lambda *a: red(*a, backend=NP), args, eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the symbolic layer: Grad in the string language, zeros, simplification, errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.requires("torch")
def test_grad_in_the_string_language_inside_genred_matches_torch():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(7, 3, generator=g, dtype=F64)
    b, e = torch.randn(7, 2, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)
    aliases = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "E = Vi(2)"]
    gx = Genred("Grad(Exp(-SqDist(X, Y)) * B, X, E)", aliases, reduction_op="Sum", axis=1)(x, y, b, e, backend=NP)
    xr = x.clone().requires_grad_()
    k = torch.exp(-((xr[:, None] - y[None]) ** 2).sum(-1))
    (want,) = torch.autograd.grad(((k @ b) * e).sum(), xr)
    assert torch.allclose(gx, want, rtol=1e-12, atol=1e-12)
    # and it is differentiable like any formula (a Hessian-vector product of the kernel sum)
    xg = x.clone().requires_grad_()
    out = Genred("Grad(Exp(-SqDist(X, Y)) * B, X, E)", aliases, reduction_op="Sum", axis=1)(xg, y, b, e, backend=NP)
    (hv,) = torch.autograd.grad(out.sum(), xg)
    xr2 = x.clone().requires_grad_()
    k2 = torch.exp(-((xr2[:, None] - y[None]) ** 2).sum(-1))
    (g1,) = torch.autograd.grad(((k2 @ b) * e).sum(), xr2, create_graph=True)
    (want2,) = torch.autograd.grad(g1.sum(), xr2)
    assert torch.allclose(hv, want2, rtol=1e-10, atol=1e-12)


def test_grad_conventions_and_errors():
    x, y, e = Var(0, 3, CAT_I), Var(1, 3, CAT_J), Var(2, 1, CAT_I)
    assert grad(call("SqNorm2", y), x, e) is zeros(3)  # independent: the zero formula
    assert grad(call("Step", call("Sum", x)), x, e) is zeros(3)  # a zero derivative
    with pytest.raises(FormulaError, match="must be a variable"):
        grad(call("SqDist", x, y), x + y, e)
    with pytest.raises(FormulaError, match="cotangent has dimension 3"):
        grad(call("SqDist", x, y), x, Var(3, 3, CAT_I))
    aliases = parse_aliases(["X = Vi(3)", "Y = Vj(3)", "E = Vi(1)"])
    with pytest.raises(FormulaError, match="must be a variable"):
        parse("Grad(SqDist(X, Y), X + Y, E)", aliases)
    with pytest.raises(FormulaError, match="Grad takes 3 arguments"):
        parse("Grad(SqDist(X, Y), X)", aliases)


def test_gradients_are_simplified_shared_and_deterministic():
    a = parse_aliases(["X = Vi(3)", "Y = Vj(3)", "B = Vj(3)", "S = Pm(1)", "E = Vi(3)"])
    k = parse("Exp(-SqDist(X, Y) / S)", a)
    f = k * a["B"]
    dx, dy, db = vjp([(f, a["E"])], [a["X"], a["Y"], a["B"]])
    assert dx is vjp([(f, a["E"])], [a["X"]])[0]  # same formula, same node
    nodes = {id(n) for g in (dx, dy, db) for n in g.walk()}
    assert id(k) in nodes and sum(1 for n in dx.walk() if n.op == "Exp") == 1  # the kernel is reused
    assert "ElemT" not in str(dx) and "(-(-" not in str(dy)  # no zero vectors, no double negation
    assert dx.size() <= 20 and dy.size() <= 20
    # constants fold and repeated contributions merge: d/dx (x·x) at cotangent 1 is 2·x
    x1 = Var(0, 1, CAT_I)
    assert str(grad(x1 * x1, x1, IntCst(1))) == "(2 * Var(0,1,0))"


# ---------------------------------------------------------------------------------------------
# LDDMM: H(q, p) = ½ ⟨p, K_qq p⟩ against dense torch, first and second order
# ---------------------------------------------------------------------------------------------
def hamiltonian_kernla(q, p, sigma):
    q_i, q_j, p_j = LazyTensor(q[:, None, :]), LazyTensor(q[None, :, :]), LazyTensor(p[None, :, :])
    k = (-((q_i - q_j) ** 2).sum(-1) / (sigma**2)).exp()
    return 0.5 * (p * (k * p_j).sum(dim=1, backend=NP)).sum()


def hamiltonian_dense(q, p, sigma):
    k = torch.exp(-((q[:, None, :] - q[None, :, :]) ** 2).sum(-1) / sigma**2)
    return 0.5 * (p * (k @ p)).sum()


@pytest.mark.requires("torch")
def test_lddmm_hamiltonian_and_gradients_match_dense_torch():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(300, 3, generator=g, dtype=F64).requires_grad_()
    p = torch.randn(300, 3, generator=g, dtype=F64).requires_grad_()
    h = hamiltonian_kernla(q, p, 0.8)
    gq, gp = torch.autograd.grad(h, (q, p))
    hd = hamiltonian_dense(q, p, 0.8)
    gqd, gpd = torch.autograd.grad(hd, (q, p))
    assert abs(h.item() - hd.item()) <= 1e-10 * abs(hd.item())
    for got, want in ((gq, gqd), (gp, gpd)):
        assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()


@pytest.mark.requires("torch")
def test_double_backward_hessian_vector_products_match_dense():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(60, 3, generator=g, dtype=F64).requires_grad_()
    p = torch.randn(60, 3, generator=g, dtype=F64).requires_grad_()
    vq, vp = torch.randn(60, 3, generator=g, dtype=F64), torch.randn(60, 3, generator=g, dtype=F64)
    results = []
    for ham in (hamiltonian_kernla, hamiltonian_dense):
        gq, gp = torch.autograd.grad(ham(q, p, 0.7), (q, p), create_graph=True)
        results.append(torch.autograd.grad((gq * vq).sum() + (gp * vp).sum(), (q, p)))
    for got, want in zip(*results):
        assert (got - want).abs().max().item() <= 1e-10 * want.abs().max().item()


@pytest.mark.requires("torch")
def test_lazytensor_logsumexp_and_kmin_gradients_match_dense():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(20, 2, generator=g, dtype=F64).requires_grad_()
    y = torch.randn(30, 2, generator=g, dtype=F64).requires_grad_()

    def d_ij():
        return ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)

    def dense():
        return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)

    for ours, ref in (
        (lambda: (-d_ij()).logsumexp(dim=1, backend=NP), lambda: torch.logsumexp(-dense(), 1)),
        (lambda: d_ij().Kmin(3, dim=0, backend=NP), lambda: dense().topk(3, 0, largest=False)[0].T),
        (lambda: d_ij().max(dim=1, backend=NP), lambda: dense().max(1, keepdim=True)[0]),
    ):
        out = ours()
        w = torch.linspace(1, 2, out.numel(), dtype=F64).reshape(out.shape)
        got = torch.autograd.grad((out * w).sum(), (x, y))
        want = torch.autograd.grad((ref().reshape(out.shape) * w).sum(), (x, y))
        for a, b in zip(got, want):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.requires("torch")
def test_default_backend_end_to_end():
    """Whatever engine backend='auto' picks (the compiled one where it is built) gives the gradient."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(40, 3, generator=g, dtype=F64).requires_grad_()
    p = torch.randn(40, 3, generator=g, dtype=F64).requires_grad_()
    q_i, q_j, p_j = LazyTensor(q[:, None, :]), LazyTensor(q[None, :, :]), LazyTensor(p[None, :, :])
    h = 0.5 * (p * ((-((q_i - q_j) ** 2).sum(-1)).exp() * p_j).sum(dim=1)).sum()
    got = torch.autograd.grad(h, (q, p))
    want = torch.autograd.grad(hamiltonian_dense(q, p, 1.0), (q, p))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# solves: the implicit function theorem helper that KernelSolve uses
# ---------------------------------------------------------------------------------------------
@pytest.mark.requires("torch")
def test_implicit_solve_gradients_match_a_dense_solve():
    from kernla.autograd import implicit_solve  # optional: kernla.autograd imports torch

    g = torch.Generator().manual_seed(6)
    n = 25
    x = torch.randn(n, 2, generator=g, dtype=F64).requires_grad_()
    b = torch.randn(n, 2, generator=g, dtype=F64).requires_grad_()
    s = torch.tensor([0.7], dtype=F64, requires_grad=True)
    alpha = torch.tensor(0.5, dtype=F64, requires_grad=True)
    kernel = Genred("Exp(-S * SqDist(X, Y)) * V", ["X = Vi(2)", "Y = Vj(2)", "V = Vj(2)", "S = Pm(1)"], "Sum", axis=1)

    def matvec(v, x, s):
        return kernel(x, x, v, s, backend=NP)

    def cg(rhs, transpose):  # plain conjugate gradients on (αI + K) z = rhs (K symmetric)
        xd, sd, al = x.detach(), s.detach(), alpha.detach()
        z = torch.zeros_like(rhs)
        r = rhs - (al * z + matvec(z, xd, sd))
        d, rr = r.clone(), (r * r).sum()
        for _ in range(200):
            kd = al * d + matvec(d, xd, sd)
            step = rr / (d * kd).sum()
            z, r = z + step * d, r - step * kd
            rr_new = (r * r).sum()
            if rr_new.sqrt() < 1e-13:
                break
            d, rr = r + rr_new / rr * d, rr_new
        return z

    a = implicit_solve(cg, matvec, b, [x, s], alpha=alpha)
    w = torch.randn(n, 2, generator=g, dtype=F64)
    got = torch.autograd.grad((a * w).sum(), (b, x, s, alpha))
    k = torch.exp(-s * ((x[:, None] - x[None]) ** 2).sum(-1))
    ref = torch.linalg.solve(alpha * torch.eye(n, dtype=F64) + k, b)
    want = torch.autograd.grad((ref * w).sum(), (b, x, s, alpha))
    assert torch.allclose(a, ref, atol=1e-10)
    for u, v in zip(got, want):
        assert torch.allclose(u, v, rtol=1e-8, atol=1e-9)


@pytest.mark.requires("torch")
def test_solve_with_grad_makes_kernelsolve_differentiable():
    """What kernla.linalg's KernelSolve does for torch inputs that require grad."""
    from kernla.autograd import solve_with_grad
    from kernla.genred import reduce
    from kernla.linalg import KernelSolve
    from kernla.reductions import Reduction

    kinv = KernelSolve("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(1)", "G = Pm(1)"], "B", axis=1)
    g = torch.Generator().manual_seed(8)
    n, alpha = 30, 0.3
    x = torch.randn(n, 2, generator=g, dtype=F64).requires_grad_()
    b = torch.randn(n, 1, generator=g, dtype=F64).requires_grad_()
    s = torch.tensor([0.8], dtype=F64, requires_grad=True)
    args = [x, x, b, s]
    a = solve_with_grad(
        lambda ca: kinv(*ca, alpha=alpha, tol=1e-14, backend=NP),
        lambda ca: reduce(Reduction("Sum", kinv.formula), kinv.slots, ca, kinv.axis, NP)[0],
        args,
        kinv.varinv_pos,
        alpha,
    )
    w = torch.randn(n, 1, generator=g, dtype=F64)
    got = torch.autograd.grad((a * w).sum(), (x, b, s))
    k = torch.exp(-s * ((x[:, None] - x[None]) ** 2).sum(-1))
    ref = torch.linalg.solve(k + alpha * torch.eye(n, dtype=F64), b)
    want = torch.autograd.grad((ref * w).sum(), (x, b, s))
    assert torch.allclose(a, ref, atol=1e-9)
    for u, v in zip(got, want):
        assert torch.allclose(u, v, rtol=1e-7, atol=1e-8)


@pytest.mark.requires("torch")
def test_sqrt_gradient_at_zero_is_the_finite_subgradient():
    """Σ_j |x_i - x_j| (GeoMLoss' energy distance): the gradient at the zero distance j = i is 0, not NaN."""
    x = torch.rand(7, 2, dtype=torch.float64, requires_grad=True)
    d = ((LazyTensor(x[:, None]) - LazyTensor(x.detach()[None])) ** 2).sum(-1)
    (g,) = torch.autograd.grad(d.sqrt().sum(1).sum(), x)
    diff = x.detach()[:, None] - x.detach()[None]
    norm = diff.norm(dim=-1, keepdim=True)
    expected = torch.where(norm > 0, diff / norm.clamp_min(1e-300), torch.zeros(())).sum(1)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-12)
