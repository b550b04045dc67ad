"""Piecewise element-wise operations: sign and steps, rounding, wrapping, clamping, selection, comparisons.

Most have a zero derivative almost everywhere (``Step``, ``Sign``, ``Floor``, ``Round``, comparisons).

>>> from kernla.formula.tree import IntCst, call
>>> str(call("Clamp", IntCst(5), IntCst(0), IntCst(3))), str(call("LessThan", IntCst(1), IntCst(2)))
('3', '1')
"""

from __future__ import annotations

import numpy as np

from ...errors import FormulaError
from ..tree import IntCst, Node, call
from .registry import OpSpec, broadcast, c_elementwise, no_derivative, register, same, ub_args


def np_round_half_away(a):
    """a rounded to the nearest integer, halves away from zero."""
    return np.sign(a) * np.floor(np.abs(a) + 0.5)


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
        return np.where(np.isfinite(y), np_round_half_away(y) / scale, a)


def _c_round(e, args, params, dim):
    return [f"kl_round({x}, {params[0]})" for x in args[0]]


# -- derivatives ------------------------------------------------------------------------------
def _d_abs(n: Node, g: Node) -> tuple:
    return (g * call("Sign", n.args[0]),)


def _d_relu(n: Node, g: Node) -> tuple:
    return (g * call("Step", n.args[0]),)


def _d_mod(n: Node, g: Node) -> tuple:
    a, m, offset = n.args
    return ub_args(n, g, -(g * call("Floor", (a - offset) / m)), None)


def _d_clamp(n: Node, g: Node) -> tuple:
    a, lo, hi = n.args
    inside_lo = call("Step", a - lo)
    return ub_args(
        n, g * inside_lo * call("Step", hi - a), g * call("LessThan", a, lo), g * call("LessThan", hi, a) * inside_lo
    )


def _d_clampint(n: Node, g: Node) -> tuple:
    (a,), (lo, hi) = n.args, n.params
    return (g * call("Step", a - IntCst(lo)) * call("Step", IntCst(hi) - a),)


def _d_ifelse(n: Node, g: Node) -> tuple:
    f = n.args[0]
    return ub_args(n, None, g * call("Step", f), g * (IntCst(1) - call("Step", f)))


def _piecewise(name, arity, np_fn, c_fmt, grad, doc, **more):
    register(
        OpSpec(
            name,
            arity,
            same if arity == 1 else broadcast,
            np_fn,
            c_elementwise(c_fmt),
            grad=grad,
            doc=doc,
            elementwise=True,
            **more,
        )
    )


_piecewise("Abs", 1, np.abs, "kl_abs({0})", _d_abs, "|a|")
_piecewise("Sign", 1, np.sign, "kl_sign({0})", no_derivative, "sign of a (0 at 0)")
_piecewise(
    "Step", 1, lambda a: (a >= 0).astype(a.dtype), "({0} >= T(0) ? T(1) : T(0))", no_derivative, "1 if a >= 0 else 0"
)
_piecewise("ReLU", 1, lambda a: np.where(a >= 0, a, a * 0), "({0} >= T(0) ? {0} : T(0))", _d_relu, "max(a, 0)")
_piecewise("Floor", 1, np.floor, "kl_floor({0})", no_derivative, "largest integer <= a")
register(
    OpSpec(
        "Round",
        1,
        _round_rule,
        _np_round,
        _c_round,
        param_names=("decimals",),
        grad=no_derivative,
        doc="a rounded to d decimals (halves away from zero)",
        elementwise=True,
    )
)
_piecewise(
    "Mod",
    3,
    lambda a, m, o: a - m * np.floor((a - o) / m),
    "({0} - {1} * kl_floor(({0} - {2}) / {1}))",
    _d_mod,
    "a - m·floor((a - offset)/m): a wrapped into [offset, offset + m)",
)
_piecewise(
    "Clamp",
    3,
    lambda a, lo, hi: np.minimum(np.maximum(a, lo), hi),
    "kl_min(kl_max({0}, {1}), {2})",
    _d_clamp,
    "a clamped to [lo, hi]",
)
_piecewise(
    "ClampInt",
    1,
    lambda a, lo, hi: np.minimum(np.maximum(a, lo), hi),
    "kl_min(kl_max({0}, T({1})), T({2}))",
    _d_clampint,
    "a clamped to the integer bounds [lo, hi]",
    param_names=("lo", "hi"),
)
_piecewise(
    "IfElse",
    3,
    lambda f, a, b: np.where(f >= 0, a, b),
    "({0} >= T(0) ? {1} : {2})",
    _d_ifelse,
    "b where f >= 0, else c",
)


def _comparison(name, np_fn, c_op, doc):
    _piecewise(
        name,
        2,
        lambda a, b: np_fn(a, b).astype(np.result_type(a, b)),
        "({0} " + c_op + " {1} ? T(1) : T(0))",
        no_derivative,
        doc,
    )


_comparison("Equal", np.equal, "==", "1 where a == b, else 0")
_comparison("NotEqual", np.not_equal, "!=", "1 where a != b, else 0")
_comparison("LessThan", np.less, "<", "1 where a < b, else 0")
_comparison("LessOrEqual", np.less_equal, "<=", "1 where a <= b, else 0")
