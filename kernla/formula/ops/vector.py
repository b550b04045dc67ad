"""Operations over the components of a vector: sums, extrema, scalar products, norms and distances.

>>> from kernla.formula.tree import Vi, Vj, call
>>> call("SqDist", Vi(0, 3), Vj(1, 3)).dim, call("Normalize", Vi(0, 3)).dim
(1, 3)
"""

from __future__ import annotations

import numpy as np

from ...errors import FormulaError
from ..tree import IntCst, Node, call
from .elementwise import np_rsqrt
from .registry import OpSpec, bc, equal_to_scalar, no_derivative, register, same, scalar, ub


# -- C emitters -------------------------------------------------------------------------------
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


def _c_scalprod(e, args, params, dim):
    a, b = args
    return ["(" + " + ".join(f"{x} * {y}" for x, y in zip(a, b)) + ")"]


def _c_sqnorm(e, args, params, dim):
    return ["(" + " + ".join(f"{x} * {x}" for x in args[0]) + ")"]


def _c_norm(e, args, params, dim):
    return ["kl_sqrt(" + _c_sqnorm(e, args, params, dim)[0] + ")"]


def _c_sqdist(e, args, params, dim):
    diffs = [e.tmp(f"{x} - {y}") for x, y in zip(*args)]
    return ["(" + " + ".join(f"{d} * {d}" for d in diffs) + ")"]


def _c_normalize(e, args, params, dim):
    r = e.tmp("kl_rsqrt(" + " + ".join(f"{x} * {x}" for x in args[0]) + ")")
    return [f"({x} * {r})" for x in args[0]]


def _c_weighted_sqnorm_of(e, w, xs):
    d = len(xs)
    if len(w) == d * d and d > 1:
        terms = [f"{w[r * d + c]} * {xs[r]} * {xs[c]}" for r in range(d) for c in range(d)]
    else:
        ws = bc(w, d)
        terms = [f"{ws[k]} * {xs[k]} * {xs[k]}" for k in range(d)]
    return ["(" + " + ".join(terms) + ")"]


def _c_weighted_sqnorm(e, args, params, dim):
    return _c_weighted_sqnorm_of(e, args[0], args[1])


def _c_weighted_sqdist(e, args, params, dim):
    return _c_weighted_sqnorm_of(e, args[0], [e.tmp(f"{x} - {y}") for x, y in zip(args[1], args[2])])


# -- NumPy ------------------------------------------------------------------------------------
def _np_normalize(a):
    return a * np_rsqrt((a * a).sum(-1, keepdims=True))


def _np_weighted_sqnorm(w, x):
    d = x.shape[-1]
    if w.shape[-1] == d * d and d > 1:
        wm = w.reshape(w.shape[:-1] + (d, d))
        return np.einsum("...k,...kl,...l->...", x, wm, x)[..., None]
    return (w * x * x).sum(-1, keepdims=True)


def _weighted_rule(dims, params):
    w, x = dims[0], dims[1]
    if any(d != x for d in dims[2:]):
        raise FormulaError(f"the vectors must have equal dimensions, got {' and '.join(map(str, dims[1:]))}")
    if w not in (1, x, x * x):
        raise FormulaError(f"the weight must have dimension 1, {x} or {x * x} for vectors of dimension {x}, got {w}")
    return 1


# -- derivatives ------------------------------------------------------------------------------
def _d_sum(n: Node, g: Node) -> tuple:
    return (ub(g, n.args[0].dim),)


def _onehot_of(which: str):
    """The derivative of Max (Min): the cotangent at the component ArgMax (ArgMin) picks."""

    def grad(n: Node, g: Node) -> tuple:
        return (g * call("OneHot", call(which, n.args[0]), params=(n.args[0].dim,)),)

    return grad


def _d_scalprod(n: Node, g: Node) -> tuple:
    return (g * n.args[1], g * n.args[0])


def _d_sqnorm(n: Node, g: Node) -> tuple:
    return (IntCst(2) * g * n.args[0],)


def _d_norm(n: Node, g: Node) -> tuple:
    return (g * call("Normalize", n.args[0]),)


def _d_normalize(n: Node, g: Node) -> tuple:
    if n.dim == 1:
        return (None,)
    return ((g - call("Scalprod", g, n) * n) * call("Rsqrt", call("SqNorm2", n.args[0])),)


def _d_sqdist(n: Node, g: Node) -> tuple:
    d = n.args[0] - n.args[1]
    return (IntCst(2) * g * d, IntCst(-2) * g * d)


def _grad_weighted(n: Node, g: Node, x: Node) -> tuple[Node, Node]:
    w = n.args[0]
    d = x.dim
    if w.dim == d * d and d > 1:
        return (g * call("TensorProd", x, x), g * (call("MatVecMult", w, x) + call("VecMatMult", x, w)))
    if w.dim == 1:
        return (g * call("SqNorm2", x), IntCst(2) * g * w * x)
    return (g * x * x, IntCst(2) * g * w * x)


def _d_weighted_sqnorm(n: Node, g: Node) -> tuple:
    return _grad_weighted(n, g, n.args[1])


def _d_weighted_sqdist(n: Node, g: Node) -> tuple:
    gw, gx = _grad_weighted(n, g, n.args[1] - n.args[2])
    return (gw, gx, -gx)


def _simplify_sum(a, p):
    return a[0] if a[0].dim == 1 else None


register(
    OpSpec(
        "Sum",
        1,
        scalar,
        lambda a: a.sum(-1, keepdims=True),
        _c_sum,
        grad=_d_sum,
        simplify=_simplify_sum,
        doc="sum of the components",
    )
)
register(
    OpSpec(
        "Max",
        1,
        scalar,
        lambda a: a.max(-1, keepdims=True),
        _c_fold("kl_max"),
        grad=_onehot_of("ArgMax"),
        doc="largest component",
    )
)
register(
    OpSpec(
        "Min",
        1,
        scalar,
        lambda a: a.min(-1, keepdims=True),
        _c_fold("kl_min"),
        grad=_onehot_of("ArgMin"),
        doc="smallest component",
    )
)
register(
    OpSpec(
        "ArgMax",
        1,
        scalar,
        lambda a: a.argmax(-1)[..., None].astype(a.dtype),
        _c_arg(">"),
        grad=no_derivative,
        doc="index of the largest component (first one), as a real",
    )
)
register(
    OpSpec(
        "ArgMin",
        1,
        scalar,
        lambda a: a.argmin(-1)[..., None].astype(a.dtype),
        _c_arg("<"),
        grad=no_derivative,
        doc="index of the smallest component (first one), as a real",
    )
)
register(
    OpSpec(
        "Scalprod",
        2,
        equal_to_scalar,
        lambda a, b: (a * b).sum(-1, keepdims=True),
        _c_scalprod,
        grad=_d_scalprod,
        doc="scalar product (a|b)",
        symbol="|",
    )
)
register(
    OpSpec(
        "SqNorm2",
        1,
        scalar,
        lambda a: (a * a).sum(-1, keepdims=True),
        _c_sqnorm,
        grad=_d_sqnorm,
        doc="squared Euclidean norm",
    )
)
register(
    OpSpec(
        "Norm2",
        1,
        scalar,
        lambda a: np.sqrt((a * a).sum(-1, keepdims=True)),
        _c_norm,
        grad=_d_norm,
        doc="Euclidean norm",
    )
)
register(OpSpec("Normalize", 1, same, _np_normalize, _c_normalize, grad=_d_normalize, doc="a/|a| (0 for a = 0)"))
register(
    OpSpec(
        "SqDist",
        2,
        equal_to_scalar,
        lambda a, b: ((a - b) ** 2).sum(-1, keepdims=True),
        _c_sqdist,
        grad=_d_sqdist,
        doc="squared Euclidean distance |a - b|²",
    )
)
register(
    OpSpec(
        "WeightedSqNorm",
        2,
        _weighted_rule,
        _np_weighted_sqnorm,
        _c_weighted_sqnorm,
        grad=_d_weighted_sqnorm,
        doc="x'Wx with W scalar (dim 1), diagonal (dim D) or a full D×D matrix (dim D², row-major)",
    )
)
register(
    OpSpec(
        "WeightedSqDist",
        3,
        _weighted_rule,
        lambda w, x, y: _np_weighted_sqnorm(w, x - y),
        _c_weighted_sqdist,
        grad=_d_weighted_sqdist,
        doc="WeightedSqNorm(W, x - y)",
    )
)
