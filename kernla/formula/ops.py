"""The operations registry: one entry per operation, and nothing about operations elsewhere.

Each :class:`OpSpec` holds everything kernla knows about an operation: its name, arity and
integer parameters, the output-dimension rule, a NumPy evaluation (arrays of shape ``(..., dim)``),
a C emitter (lists of per-component C expressions in, per-component C expressions out, type
``T``), its reverse-mode derivative, and optional simplification rules. Adding an operation is
adding one ``_register(...)`` call here.

>>> get_op("SqDist").output_dim((3, 3), ())
1
>>> sorted(OPS)[:4]
['Abs', 'Acos', 'Add', 'ArgMax']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import FormulaError
from .tree import IntCst, Node, RealCst, call

CExprs = list[str]


@dataclass(frozen=True)
class OpSpec:
    """Definition of one operation (see the module docstring)."""

    name: str
    arity: int
    dim_rule: Callable[[tuple[int, ...], tuple], int]
    numpy: Callable[..., np.ndarray]
    c: Callable[..., CExprs]
    grad: Optional[Callable[[Node, Node], tuple]] = None
    param_names: tuple[str, ...] = ()
    simplify: Optional[Callable[[tuple, tuple], Optional[Node]]] = None
    fold: bool = True  # constant-fold when every argument is a constant
    doc: str = ""

    def output_dim(self, dims: tuple[int, ...], params: tuple) -> int:
        try:
            return self.dim_rule(dims, params)
        except FormulaError as err:
            raise FormulaError(f"{self.name}: {err}") from None


OPS: dict[str, OpSpec] = {}


def get_op(name: str) -> OpSpec:
    """The registry entry for ``name``; a clear error for unknown names."""
    try:
        return OPS[name]
    except KeyError:
        raise FormulaError(f"unknown operation {name!r}") from None


def _register(spec: OpSpec) -> None:
    assert spec.name not in OPS, spec.name
    if spec.simplify is None and spec.fold:
        spec = OpSpec(**{**spec.__dict__, "simplify": _fold_constants(spec)})
    elif spec.fold:
        custom = spec.simplify
        folder = _fold_constants(spec)
        # the operation's own rules first: they are exact (-IntCst(n) stays an IntCst beyond 2**53,
        # where folding through float64 would turn it into a rounded RealCst)
        spec = OpSpec(**{**spec.__dict__, "simplify": lambda a, p: custom(a, p) or folder(a, p)})
    OPS[spec.name] = spec


# ---------------------------------------------------------------------------------------------
# dimension rules
# ---------------------------------------------------------------------------------------------
def _same(dims, params):
    return dims[0]


def _broadcast(dims, params):
    out = max(dims)
    for d in dims:
        if d not in (1, out):
            raise FormulaError(f"dimensions {' and '.join(map(str, dims))} are incompatible "
                               "(they must be equal, or 1 to broadcast)")
    return out


def _equal_to_scalar(dims, params):
    if len(set(dims)) != 1:
        raise FormulaError(f"arguments must have equal dimensions, got {' and '.join(map(str, dims))}")
    return 1


def _scalar(dims, params):
    return 1


# ---------------------------------------------------------------------------------------------
# helpers for C emitters and derivatives
# ---------------------------------------------------------------------------------------------
def _bc(exprs: CExprs, dim: int) -> CExprs:
    return exprs * dim if len(exprs) == 1 else exprs


def _elementwise(fmt: str):
    """C emitter applying ``fmt`` (``{0}``, ``{1}``, … the argument components) component-wise."""
    def emit(e, args, params, dim):
        cols = [_bc(a, dim) for a in args]
        return [fmt.format(*(c[k] for c in cols), *params) for k in range(dim)]
    return emit


def _ub(g: Optional[Node], dim: int) -> Optional[Node]:
    """Cotangent ``g`` brought to an argument of dimension ``dim``.

    A vector cotangent of a broadcast scalar argument is summed; a scalar cotangent of a
    vector argument is repeated (adding a zero vector of that dimension).
    """
    if g is None or g.dim == dim:
        return g
    if dim == 1:
        return call("Sum", g)
    if g.dim == 1:
        return g + call("ElemT", IntCst(0), params=(dim, 0))
    raise FormulaError(f"internal: cotangent of dimension {g.dim} for an argument of dimension {dim}")


def _fold_constants(spec: OpSpec):
    def fold(args: tuple, params: tuple) -> Optional[Node]:
        if not args or not all(a.is_const for a in args):
            return None
        if spec.output_dim(tuple(a.dim for a in args), params) != 1:
            return None
        with np.errstate(all="ignore"):
            value = spec.numpy(*[np.array([a.params[0]], dtype=np.float64) for a in args], *params)
        value = float(np.asarray(value).reshape(-1)[0])
        if not math.isfinite(value):
            return None
        if all(a.op == "IntCst" for a in args) and value.is_integer() and abs(value) < 2**53:
            return IntCst(int(value))
        return RealCst(value)
    return fold


def _const(node: Node, value) -> bool:
    return node.is_const and node.params[0] == value


# ---------------------------------------------------------------------------------------------
# arithmetic
# ---------------------------------------------------------------------------------------------
def _simplify_add(a, p):
    x, y = a
    if _const(y, 0) and x.dim >= y.dim:
        return x
    if _const(x, 0) and y.dim >= x.dim:
        return y
    return None


def _simplify_sub(a, p):
    x, y = a
    if _const(y, 0) and x.dim >= y.dim:
        return x
    if _const(x, 0) and y.dim >= x.dim:
        return call("Minus", y)
    return None


def _simplify_mult(a, p):
    x, y = a
    if _const(y, 1) and x.dim >= y.dim:
        return x
    if _const(x, 1) and y.dim >= x.dim:
        return y
    if _const(x, -1) and y.dim >= x.dim:
        return call("Minus", y)
    return None


def _simplify_div(a, p):
    x, y = a
    if _const(y, 1) and x.dim >= y.dim:
        return x
    return None


def _simplify_minus(a, p):
    (x,) = a
    if x.op == "Minus":
        return x.args[0]
    if x.op == "IntCst":
        return IntCst(-x.params[0])
    if x.op == "RealCst":
        return RealCst(-x.params[0])
    return None


_register(OpSpec("Add", 2, _broadcast, lambda a, b: a + b, _elementwise("({0} + {1})"),
                 grad=lambda n, g: (_ub(g, n.args[0].dim), _ub(g, n.args[1].dim)),
                 simplify=_simplify_add, doc="a + b"))
_register(OpSpec("Subtract", 2, _broadcast, lambda a, b: a - b, _elementwise("({0} - {1})"),
                 grad=lambda n, g: (_ub(g, n.args[0].dim), _ub(-g, n.args[1].dim)),
                 simplify=_simplify_sub, doc="a - b"))
_register(OpSpec("Mult", 2, _broadcast, lambda a, b: a * b, _elementwise("({0} * {1})"),
                 grad=lambda n, g: (_ub(g * n.args[1], n.args[0].dim), _ub(g * n.args[0], n.args[1].dim)),
                 simplify=_simplify_mult, doc="a * b"))
_register(OpSpec("Divide", 2, _broadcast, lambda a, b: a / b, _elementwise("({0} / {1})"),
                 grad=lambda n, g: (_ub(g / n.args[1], n.args[0].dim),
                                    _ub(-(g * n) / n.args[1], n.args[1].dim)),
                 simplify=_simplify_div, doc="a / b"))
_register(OpSpec("Minus", 1, _same, lambda a: -a, _elementwise("(-{0})"),
                 grad=lambda n, g: (-g,), simplify=_simplify_minus, doc="-a"))


# ---------------------------------------------------------------------------------------------
# element-wise maths
# ---------------------------------------------------------------------------------------------
def _unary(name, np_fn, c_fmt, grad=None, doc=""):
    _register(OpSpec(name, 1, _same, np_fn, _elementwise(c_fmt), grad=grad, doc=doc))


def _np_rsqrt(a):
    with np.errstate(divide="ignore"):
        return np.where(a == 0, a * 0, 1 / np.sqrt(a))


def _np_xlogx(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a == 0, a * 0, a * np.log(a))


def _np_sinxdivx(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a == 0, a * 0 + 1, np.sin(a) / a)


def _np_round_half_away(a):
    return np.sign(a) * np.floor(np.abs(a) + 0.5)


_unary("Inv", lambda a: 1 / a, "(T(1) / {0})", lambda n, g: (-g * call("Square", n),), "1/a")
_unary("Square", lambda a: a * a, "({0} * {0})", lambda n, g: (IntCst(2) * g * n.args[0],), "a²")
_unary("Sqrt", np.sqrt, "kl_sqrt({0})", lambda n, g: (g / (IntCst(2) * n),), "√a")
_unary("Rsqrt", _np_rsqrt, "kl_rsqrt({0})",
       lambda n, g: (RealCst(-0.5) * g * call("Pow", n, params=(3,)),), "1/√a, and 0 at a = 0 (as KeOps)")
_unary("Exp", np.exp, "kl_exp({0})", lambda n, g: (g * n,), "exp(a)")
_unary("Log", np.log, "kl_log({0})", lambda n, g: (g / n.args[0],), "log(a)")
_unary("XLogX", _np_xlogx, "({0} == T(0) ? T(0) : {0} * kl_log({0}))",
       lambda n, g: (g * (call("Log", n.args[0]) + IntCst(1)),), "a·log(a), 0 at a = 0")
_unary("Sin", np.sin, "kl_sin({0})", lambda n, g: (g * call("Cos", n.args[0]),), "sin(a)")
_unary("Cos", np.cos, "kl_cos({0})", lambda n, g: (-(g * call("Sin", n.args[0])),), "cos(a)")
_unary("Asin", np.arcsin, "kl_asin({0})",
       lambda n, g: (g * call("Rsqrt", IntCst(1) - call("Square", n.args[0])),), "arcsin(a)")
_unary("Acos", np.arccos, "kl_acos({0})",
       lambda n, g: (-(g * call("Rsqrt", IntCst(1) - call("Square", n.args[0]))),), "arccos(a)")
_unary("Atan", np.arctan, "kl_atan({0})",
       lambda n, g: (g / (IntCst(1) + call("Square", n.args[0])),), "arctan(a)")
_unary("SinXDivX", _np_sinxdivx, "({0} == T(0) ? T(1) : kl_sin({0}) / {0})",
       lambda n, g: (call("IfElse", -call("Abs", n.args[0]), IntCst(0),  # the derivative is 0 at a = 0
                          g * (call("Cos", n.args[0]) - n) / n.args[0]),), "sin(a)/a, 1 at a = 0")
_unary("Abs", np.abs, "kl_abs({0})", lambda n, g: (g * call("Sign", n.args[0]),), "|a|")
_unary("Sign", np.sign, "kl_sign({0})", lambda n, g: (None,), "sign of a (0 at 0)")
_unary("Step", lambda a: (a >= 0).astype(a.dtype), "({0} >= T(0) ? T(1) : T(0))",
       lambda n, g: (None,), "1 if a >= 0 else 0")
_unary("ReLU", lambda a: np.where(a >= 0, a, a * 0), "({0} >= T(0) ? {0} : T(0))",
       lambda n, g: (g * call("Step", n.args[0]),), "max(a, 0)")
_unary("Floor", np.floor, "kl_floor({0})", lambda n, g: (None,), "largest integer <= a")


def _np_pow(a, n):
    return a ** n if n >= 0 else 1 / a ** (-n)


def _simplify_pow(a, p):
    (n,) = p
    if n == 1:
        return a[0]
    if n == 2:
        return call("Square", a[0])
    return None


_register(OpSpec("Pow", 1, _same, _np_pow, _elementwise("kl_powi({0}, {1})"), param_names=("n",),
                 grad=lambda n, g: (None,) if n.params[0] == 0 else
                 (g * IntCst(n.params[0]) * call("Pow", n.args[0], params=(n.params[0] - 1,)),),
                 simplify=_simplify_pow, doc="a**n for an integer n"))
_register(OpSpec("Powf", 2, _broadcast, np.power, _elementwise("kl_pow({0}, {1})"),
                 grad=lambda n, g: (_ub(g * n.args[1] * call("Powf", n.args[0], n.args[1] - IntCst(1)), n.args[0].dim),
                                    _ub(g * call("Log", n.args[0]) * n, n.args[1].dim)),
                 doc="a**b for a real b"))
_register(OpSpec("Atan2", 2, _broadcast, np.arctan2, _elementwise("kl_atan2({0}, {1})"),
                 grad=lambda n, g: (_ub(g * n.args[1] / (call("Square", n.args[0]) + call("Square", n.args[1])), n.args[0].dim),
                                    _ub(-(g * n.args[0]) / (call("Square", n.args[0]) + call("Square", n.args[1])), n.args[1].dim)),
                 doc="atan2(a, b), the angle of the point (b, a)"))
def _round_rule(dims, params):
    if not -300 <= params[0] <= 300:
        raise FormulaError(f"the number of decimals must be within [-300, 300], got {params[0]}")
    return dims[0]


def _np_round(a, d):
    """Round to d decimals; an overflowing 10**d or a·10**d leaves a (such a is already round)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        scale = np.asarray(10.0, a.dtype) ** d
        if not np.isfinite(scale):
            return a.copy()
        if scale == 0:
            return a * 0
        y = a * scale
        return np.where(np.isfinite(y), _np_round_half_away(y) / scale, a)


_register(OpSpec("Round", 1, _round_rule, _np_round,
                 lambda e, args, params, dim: [f"kl_round({x}, {params[0]})" for x in args[0]],
                 param_names=("decimals",), grad=lambda n, g: (None,),
                 doc="a rounded to d decimals (halves away from zero)"))
_register(OpSpec("Mod", 3, _broadcast, lambda a, m, o: a - m * np.floor((a - o) / m),
                 _elementwise("({0} - {1} * kl_floor(({0} - {2}) / {1}))"),
                 grad=lambda n, g: (_ub(g, n.args[0].dim),
                                    _ub(-(g * call("Floor", (n.args[0] - n.args[2]) / n.args[1])), n.args[1].dim),
                                    None),
                 doc="a - m·floor((a - offset)/m): a wrapped into [offset, offset + m)"))
_register(OpSpec("Clamp", 3, _broadcast, lambda a, lo, hi: np.minimum(np.maximum(a, lo), hi),
                 _elementwise("kl_min(kl_max({0}, {1}), {2})"),
                 grad=lambda n, g: (
                     _ub(g * call("Step", n.args[0] - n.args[1]) * call("Step", n.args[2] - n.args[0]), n.args[0].dim),
                     _ub(g * call("LessThan", n.args[0], n.args[1]), n.args[1].dim),
                     _ub(g * call("LessThan", n.args[2], n.args[0]) * call("Step", n.args[0] - n.args[1]), n.args[2].dim)),
                 doc="a clamped to [lo, hi]"))
_register(OpSpec("ClampInt", 1, _same, lambda a, lo, hi: np.minimum(np.maximum(a, lo), hi),
                 _elementwise("kl_min(kl_max({0}, T({1})), T({2}))"), param_names=("lo", "hi"),
                 grad=lambda n, g: (g * call("Step", n.args[0] - IntCst(n.params[0]))
                                    * call("Step", IntCst(n.params[1]) - n.args[0]),),
                 doc="a clamped to the integer bounds [lo, hi]"))
_register(OpSpec("IfElse", 3, _broadcast, lambda f, a, b: np.where(f >= 0, a, b),
                 _elementwise("({0} >= T(0) ? {1} : {2})"),
                 grad=lambda n, g: (None,
                                    _ub(g * call("Step", n.args[0]), n.args[1].dim),
                                    _ub(g * (IntCst(1) - call("Step", n.args[0])), n.args[2].dim)),
                 doc="b where f >= 0, else c"))


def _comparison(name, np_fn, c_op, doc):
    _register(OpSpec(name, 2, _broadcast, lambda a, b: np_fn(a, b).astype(np.result_type(a, b)),
                     _elementwise("({0} " + c_op + " {1} ? T(1) : T(0))"),
                     grad=lambda n, g: (None, None), doc=doc))


_comparison("Equal", np.equal, "==", "1 where a == b, else 0")
_comparison("NotEqual", np.not_equal, "!=", "1 where a != b, else 0")
_comparison("LessThan", np.less, "<", "1 where a < b, else 0")
_comparison("LessOrEqual", np.less_equal, "<=", "1 where a <= b, else 0")


# ---------------------------------------------------------------------------------------------
# operations over the components of a vector
# ---------------------------------------------------------------------------------------------
def _c_fold(fn: str):
    def emit(e, args, params, dim):
        acc = args[0][0]
        for x in args[0][1:]:
            acc = f"{fn}({acc}, {x})"
        return [acc]
    return emit


def _c_sum(e, args, params, dim):
    return ["(" + " + ".join(args[0]) + ")"]


def _c_arg(cmp: str):
    def emit(e, args, params, dim):
        xs = args[0]
        best, idx = e.declare(xs[0]), e.declare("T(0)")
        for k, x in enumerate(xs[1:], 1):
            # like NumPy: the first NaN wins, else the first extreme value
            better = f"({x} {cmp} {best} || ({x} != {x} && {best} == {best}))"
            e.assign(idx, f"({better} ? T({k}) : {idx})")
            e.assign(best, f"({better} ? {x} : {best})")
        return [idx]
    return emit


def _onehot_of_arg(n: Node, g: Node, which: str) -> tuple:
    return (g * call("OneHot", call(which, n.args[0]), params=(n.args[0].dim,)),)


_register(OpSpec("Sum", 1, _scalar, lambda a: a.sum(-1, keepdims=True), _c_sum,
                 grad=lambda n, g: (_ub(g, n.args[0].dim),), simplify=lambda a, p: a[0] if a[0].dim == 1 else None,
                 doc="sum of the components"))
_register(OpSpec("Max", 1, _scalar, lambda a: a.max(-1, keepdims=True), _c_fold("kl_max"),
                 grad=lambda n, g: _onehot_of_arg(n, g, "ArgMax"), doc="largest component"))
_register(OpSpec("Min", 1, _scalar, lambda a: a.min(-1, keepdims=True), _c_fold("kl_min"),
                 grad=lambda n, g: _onehot_of_arg(n, g, "ArgMin"), doc="smallest component"))
_register(OpSpec("ArgMax", 1, _scalar, lambda a: a.argmax(-1)[..., None].astype(a.dtype), _c_arg(">"),
                 grad=lambda n, g: (None,), doc="index of the largest component (first one), as a real"))
_register(OpSpec("ArgMin", 1, _scalar, lambda a: a.argmin(-1)[..., None].astype(a.dtype), _c_arg("<"),
                 grad=lambda n, g: (None,), doc="index of the smallest component (first one), as a real"))


def _c_scalprod(e, args, params, dim):
    a, b = args
    return ["(" + " + ".join(f"{x} * {y}" for x, y in zip(a, b)) + ")"]


def _c_sqnorm(e, args, params, dim):
    return ["(" + " + ".join(f"{x} * {x}" for x in args[0]) + ")"]


def _c_sqdist(e, args, params, dim):
    diffs = [e.tmp(f"{x} - {y}") for x, y in zip(*args)]
    return ["(" + " + ".join(f"{d} * {d}" for d in diffs) + ")"]


def _c_normalize(e, args, params, dim):
    r = e.tmp("kl_rsqrt(" + " + ".join(f"{x} * {x}" for x in args[0]) + ")")
    return [f"({x} * {r})" for x in args[0]]


def _np_normalize(a):
    return a * _np_rsqrt((a * a).sum(-1, keepdims=True))


_register(OpSpec("Scalprod", 2, _equal_to_scalar, lambda a, b: (a * b).sum(-1, keepdims=True), _c_scalprod,
                 grad=lambda n, g: (g * n.args[1], g * n.args[0]), doc="scalar product (a|b)"))
_register(OpSpec("SqNorm2", 1, _scalar, lambda a: (a * a).sum(-1, keepdims=True), _c_sqnorm,
                 grad=lambda n, g: (IntCst(2) * g * n.args[0],), doc="squared Euclidean norm"))
_register(OpSpec("Norm2", 1, _scalar, lambda a: np.sqrt((a * a).sum(-1, keepdims=True)),
                 lambda e, args, params, dim: ["kl_sqrt(" + _c_sqnorm(e, args, params, dim)[0] + ")"],
                 grad=lambda n, g: (g * call("Normalize", n.args[0]),), doc="Euclidean norm"))
_register(OpSpec("Normalize", 1, _same, _np_normalize, _c_normalize,
                 grad=lambda n, g: ((g - call("Scalprod", g, n) * n) * call("Rsqrt", call("SqNorm2", n.args[0])),)
                 if n.dim > 1 else (None,),
                 doc="a/|a| (0 for a = 0)"))
_register(OpSpec("SqDist", 2, _equal_to_scalar, lambda a, b: ((a - b) ** 2).sum(-1, keepdims=True), _c_sqdist,
                 grad=lambda n, g: (IntCst(2) * g * (n.args[0] - n.args[1]),
                                    IntCst(-2) * g * (n.args[0] - n.args[1])),
                 doc="squared Euclidean distance |a - b|²"))


def _weighted_rule(dims, params):
    w, x = dims[0], dims[1]
    if any(d != x for d in dims[2:]):
        raise FormulaError(f"the vectors must have equal dimensions, got {' and '.join(map(str, dims[1:]))}")
    if w not in (1, x, x * x):
        raise FormulaError(f"the weight must have dimension 1, {x} or {x * x} for vectors of dimension {x}, got {w}")
    return 1


def _np_weighted_sqnorm(w, x):
    d = x.shape[-1]
    if w.shape[-1] == d * d and d > 1:
        wm = w.reshape(w.shape[:-1] + (d, d))
        return np.einsum("...k,...kl,...l->...", x, wm, x)[..., None]
    return (w * x * x).sum(-1, keepdims=True)


def _c_weighted_sqnorm_of(e, w, xs):
    d = len(xs)
    if len(w) == d * d and d > 1:
        terms = [f"{w[k * d + l]} * {xs[k]} * {xs[l]}" for k in range(d) for l in range(d)]
    else:
        ws = _bc(w, d)
        terms = [f"{ws[k]} * {xs[k]} * {xs[k]}" for k in range(d)]
    return ["(" + " + ".join(terms) + ")"]


def _grad_weighted(n: Node, g: Node, x: Node) -> tuple[Node, Node]:
    w = n.args[0]
    d = x.dim
    if w.dim == d * d and d > 1:
        return (g * call("TensorProd", x, x), g * (call("MatVecMult", w, x) + call("VecMatMult", x, w)))
    if w.dim == 1:
        return (g * call("SqNorm2", x), IntCst(2) * g * w * x)
    return (g * x * x, IntCst(2) * g * w * x)


def _grad_weighted_sqdist(n, g):
    gw, gx = _grad_weighted(n, g, n.args[1] - n.args[2])
    return (gw, gx, -gx)


_register(OpSpec("WeightedSqNorm", 2, _weighted_rule, _np_weighted_sqnorm,
                 lambda e, args, params, dim: _c_weighted_sqnorm_of(e, args[0], args[1]),
                 grad=lambda n, g: _grad_weighted(n, g, n.args[1]),
                 doc="x'Wx with W scalar (dim 1), diagonal (dim D) or a full D×D matrix (dim D², row-major)"))
_register(OpSpec("WeightedSqDist", 3, _weighted_rule, lambda w, x, y: _np_weighted_sqnorm(w, x - y),
                 lambda e, args, params, dim: _c_weighted_sqnorm_of(
                     e, args[0], [e.tmp(f"{x} - {y}") for x, y in zip(args[1], args[2])]),
                 grad=_grad_weighted_sqdist, doc="WeightedSqNorm(W, x - y)"))


# ---------------------------------------------------------------------------------------------
# component selection and assembly
# ---------------------------------------------------------------------------------------------
def _elem_rule(dims, params):
    (m,) = params
    if not 0 <= m < dims[0]:
        raise FormulaError(f"index {m} out of range for a vector of dimension {dims[0]}")
    return 1


def _extract_rule(dims, params):
    start, d = params
    if d < 1 or start < 0 or start + d > dims[0]:
        raise FormulaError(f"components [{start}, {start + d}) out of range for a vector of dimension {dims[0]}")
    return d


def _elemt_rule(dims, params):
    d, m = params
    if dims[0] != 1 or not 0 <= m < d:
        raise FormulaError(f"needs a scalar and 0 <= m < D, got dimension {dims[0]}, D={d}, m={m}")
    return d


def _extractt_rule(dims, params):
    start, d = params
    if start < 0 or start + dims[0] > d:
        raise FormulaError(f"a vector of dimension {dims[0]} does not fit at {start} in dimension {d}")
    return d


def _np_elemt(a, d, m):
    out = np.zeros(a.shape[:-1] + (d,), a.dtype)
    out[..., m] = a[..., 0]
    return out


def _np_extractt(a, start, d):
    out = np.zeros(a.shape[:-1] + (d,), a.dtype)
    out[..., start:start + a.shape[-1]] = a
    return out


def _np_onehot(a, d):
    r = _np_round_half_away(a[..., 0])
    return (r[..., None] == np.arange(d, dtype=a.dtype)).astype(a.dtype)


def _onehot_rule(dims, params):
    if dims[0] != 1:
        raise FormulaError(f"needs a scalar argument, got dimension {dims[0]}")
    if params[0] < 1:
        raise FormulaError(f"the dimension must be >= 1, got {params[0]}")
    return params[0]


_register(OpSpec("Elem", 1, _elem_rule, lambda a, m: a[..., m:m + 1],
                 lambda e, args, params, dim: [args[0][params[0]]], param_names=("m",),
                 grad=lambda n, g: (call("ElemT", g, params=(n.args[0].dim, n.params[0])),),
                 doc="component m of a (from 0)"))
_register(OpSpec("ElemT", 1, _elemt_rule, _np_elemt,
                 lambda e, args, params, dim: [args[0][0] if k == params[1] else "T(0)" for k in range(dim)],
                 param_names=("D", "m"), grad=lambda n, g: (call("Elem", g, params=(n.params[1],)),),
                 doc="vector of dimension D, zero but for component m = a"))
_register(OpSpec("Extract", 1, _extract_rule, lambda a, s, d: a[..., s:s + d],
                 lambda e, args, params, dim: args[0][params[0]:params[0] + params[1]], param_names=("start", "dim"),
                 grad=lambda n, g: (call("ExtractT", g, params=(n.params[0], n.args[0].dim)),),
                 doc="components start … start+dim-1 of a"))
_register(OpSpec("ExtractT", 1, _extractt_rule, _np_extractt,
                 lambda e, args, params, dim: ["T(0)"] * params[0] + list(args[0])
                 + ["T(0)"] * (dim - params[0] - len(args[0])),
                 param_names=("start", "D"),
                 grad=lambda n, g: (call("Extract", g, params=(n.params[0], n.args[0].dim)),),
                 doc="vector of dimension D, zero but for a placed at start"))
_register(OpSpec("Concat", 2, lambda dims, p: dims[0] + dims[1], lambda a, b: np.concatenate(_concat_args(a, b), -1),
    lambda e, args, params, dim: list(args[0]) + list(args[1]),
    grad=lambda n, g: (call("Extract", g, params=(0, n.args[0].dim)),
                       call("Extract", g, params=(n.args[0].dim, n.args[1].dim))),
    doc="a followed by b"))


def _concat_args(a, b):
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return [np.broadcast_to(a, shape + a.shape[-1:]), np.broadcast_to(b, shape + b.shape[-1:])]


def _c_onehot(e, args, params, dim):
    r = e.tmp(f"kl_round({args[0][0]}, 0)")
    return [f"({r} == T({k}) ? T(1) : T(0))" for k in range(dim)]


_register(OpSpec("OneHot", 1, _onehot_rule, _np_onehot, _c_onehot, param_names=("D",),
                 grad=lambda n, g: (None,), doc="vector of dimension D: 1 at round(a), else 0"))


# ---------------------------------------------------------------------------------------------
# small matrix products (matrices stored row-major in vectors, as KeOps does)
# ---------------------------------------------------------------------------------------------
def _matvec_rule(dims, params):
    a, b = dims
    if a % b:
        raise FormulaError(f"a matrix of {a} entries cannot multiply a vector of dimension {b}")
    return a // b


def _vecmat_rule(dims, params):
    return _matvec_rule((dims[1], dims[0]), params)


def _np_matvec(a, b):
    p = b.shape[-1]
    a = a.reshape(a.shape[:-1] + (a.shape[-1] // p, p))
    return np.einsum("...ik,...k->...i", a, b)


def _np_vecmat(b, a):
    n = b.shape[-1]
    a = a.reshape(a.shape[:-1] + (n, a.shape[-1] // n))
    return np.einsum("...k,...ki->...i", b, a)


def _np_tensorprod(a, b):
    out = a[..., :, None] * b[..., None, :]
    return out.reshape(out.shape[:-2] + (a.shape[-1] * b.shape[-1],))


def _c_matvec(e, args, params, dim):
    a, b = args
    p = len(b)
    return ["(" + " + ".join(f"{a[i * p + k]} * {b[k]}" for k in range(p)) + ")" for i in range(dim)]


def _c_vecmat(e, args, params, dim):
    b, a = args
    return ["(" + " + ".join(f"{b[k]} * {a[k * dim + i]}" for k in range(len(b))) + ")" for i in range(dim)]


def _c_tensorprod(e, args, params, dim):
    a, b = args
    return [f"({x} * {y})" for x in a for y in b]


_register(OpSpec("MatVecMult", 2, _matvec_rule, _np_matvec, _c_matvec,
                 grad=lambda n, g: (call("TensorProd", g, n.args[1]), call("VecMatMult", g, n.args[0])),
                 doc="A·b, A an n×p matrix stored row-major (dimension n·p), b of dimension p"))
_register(OpSpec("VecMatMult", 2, _vecmat_rule, _np_vecmat, _c_vecmat,
                 grad=lambda n, g: (call("MatVecMult", n.args[1], g), call("TensorProd", n.args[0], g)),
                 doc="b'·A, b of dimension n, A an n×p matrix stored row-major"))
_register(OpSpec("TensorProd", 2, lambda dims, p: dims[0] * dims[1], _np_tensorprod, _c_tensorprod,
                 grad=lambda n, g: (call("MatVecMult", g, n.args[1]), call("VecMatMult", n.args[0], g)),
                 doc="outer product a⊗b, row-major (dimension dim(a)·dim(b))"))


def operation_names() -> Sequence[str]:
    """Names of every registered operation."""
    return sorted(OPS)
