"""Element-wise maths: powers, roots, exponential and logarithm, trigonometry.

``Exp`` carries a fast float emitter (``c_fast``): ``kl_exp2f`` of an argument pre-scaled by
log2(e), the factor folded into a uniform (parameter or constant) factor when the argument has one.

>>> from kernla.formula.tree import Vi, Vj, Pm, call
>>> from kernla.formula.codegen import emit_bodies
>>> k = call("Exp", -Pm(2, 1) * call("SqDist", Vi(0, 1), Vj(1, 1)))
>>> lines, outs = emit_bodies([k], lambda v, c: f"v{v.params[0]}[{c}]", fast=True, prune=True)
>>> print("\\n".join(lines))
T t0 = (-v2[0]);
T t1 = (t0 * T(1.4426950408889634));
T t2 = v0[0] - v1[0];
T t3 = (t2 * t2);
T t4 = kl_exp2f(t1 * t3);
"""

from __future__ import annotations

import math

import numpy as np

from ..tree import CAT_PARAM, IntCst, Node, RealCst, call
from .registry import OpSpec, broadcast, c_elementwise, register, same, ub_args

LOG2E = math.log2(math.e)


def np_rsqrt(a):
    """1/√a, 0 at a = 0."""
    with np.errstate(divide="ignore"):
        return np.where(a == 0, a * 0, 1 / np.sqrt(a))


def _np_xlogx(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a == 0, a * 0, a * np.log(a))


def _np_sinxdivx(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a == 0, a * 0 + 1, np.sin(a) / a)


def _np_pow(a, n):
    return a**n if n >= 0 else 1 / a ** (-n)


def _uniform(node: Node) -> bool:
    """True when ``node`` depends on parameters and constants only (the compiler hoists it)."""
    return all(v.params[2] == CAT_PARAM for v in node.variables())


def _c_exp2_prescaled(e, node: Node, exprs) -> list[str]:
    """exp(a) as 2^(a log2 e), log2(e) folded into a uniform factor of ``a`` (``-G * d``, ``d / s``, ``-d``).

    The Gaussian kernel then costs one multiplication and one exp2 (MUFU.EX2 on a GPU) per pair.
    """
    a = node.args[0]
    c = f"T({LOG2E!r})"
    if a.op == "Mult":
        for s, r in (a.args, a.args[::-1]):
            if s.dim == 1 and _uniform(s) and r.dim == node.dim:
                scale = e.tmp(f"({exprs(s)[0]} * {c})")
                return [f"kl_exp2f({scale} * {x})" for x in exprs(r)]
    if a.op == "Minus":
        return [f"kl_exp2f({x} * T({-LOG2E!r}))" for x in exprs(a.args[0])]
    if a.op == "Divide" and a.args[1].dim == 1 and _uniform(a.args[1]) and a.args[0].dim == node.dim:
        scale = e.tmp(f"({c} / {exprs(a.args[1])[0]})")
        return [f"kl_exp2f({x} * {scale})" for x in exprs(a.args[0])]
    return [f"kl_exp2f({x} * {c})" for x in exprs(a)]


# -- derivatives ------------------------------------------------------------------------------
def _d_inv(n: Node, g: Node) -> tuple:
    return (-g * call("Square", n),)


def _d_square(n: Node, g: Node) -> tuple:
    return (IntCst(2) * g * n.args[0],)


def _d_sqrt(n: Node, g: Node) -> tuple:
    # g / (2 √a) through Rsqrt, which is 0 at a = 0 (as KeOps): the subgradient 0 where √ is not
    # differentiable, so distances |x - y| at x = y give finite gradients, not NaN
    return (g * call("Rsqrt", n.args[0]) / IntCst(2),)


def _d_rsqrt(n: Node, g: Node) -> tuple:
    return (RealCst(-0.5) * g * call("Pow", n, params=(3,)),)


def _d_exp(n: Node, g: Node) -> tuple:
    return (g * n,)


def _d_log(n: Node, g: Node) -> tuple:
    return (g / n.args[0],)


def _d_xlogx(n: Node, g: Node) -> tuple:
    return (g * (call("Log", n.args[0]) + IntCst(1)),)


def _d_sin(n: Node, g: Node) -> tuple:
    return (g * call("Cos", n.args[0]),)


def _d_cos(n: Node, g: Node) -> tuple:
    return (-(g * call("Sin", n.args[0])),)


def _d_asin(n: Node, g: Node) -> tuple:
    return (g * call("Rsqrt", IntCst(1) - call("Square", n.args[0])),)


def _d_acos(n: Node, g: Node) -> tuple:
    return (-(g * call("Rsqrt", IntCst(1) - call("Square", n.args[0]))),)


def _d_atan(n: Node, g: Node) -> tuple:
    return (g / (IntCst(1) + call("Square", n.args[0])),)


def _d_sinxdivx(n: Node, g: Node) -> tuple:
    a = n.args[0]  # the derivative is 0 at a = 0
    return (call("IfElse", -call("Abs", a), IntCst(0), g * (call("Cos", a) - n) / a),)


def _d_pow(n: Node, g: Node) -> tuple:
    (k,) = n.params
    if k == 0:
        return (None,)
    return (g * IntCst(k) * call("Pow", n.args[0], params=(k - 1,)),)


def _d_powf(n: Node, g: Node) -> tuple:
    a, b = n.args
    return ub_args(n, g * b * call("Powf", a, b - IntCst(1)), g * call("Log", a) * n)


def _d_atan2(n: Node, g: Node) -> tuple:
    y, x = n.args
    r2 = call("Square", y) + call("Square", x)
    return ub_args(n, g * x / r2, -(g * y) / r2)


def _simplify_pow(a, p):
    (n,) = p
    if n == 1:
        return a[0]
    if n == 2:
        return call("Square", a[0])
    return None


def _unary(name, np_fn, c_fmt, grad, doc, **more):
    register(OpSpec(name, 1, same, np_fn, c_elementwise(c_fmt), grad=grad, doc=doc, elementwise=True, **more))


_unary("Inv", lambda a: 1 / a, "(T(1) / {0})", _d_inv, "1/a")
_unary("Square", lambda a: a * a, "({0} * {0})", _d_square, "a²")
_unary("Sqrt", np.sqrt, "kl_sqrt({0})", _d_sqrt, "√a")
_unary("Rsqrt", np_rsqrt, "kl_rsqrt({0})", _d_rsqrt, "1/√a, and 0 at a = 0 (as KeOps)")
_unary("Exp", np.exp, "kl_exp({0})", _d_exp, "exp(a)", c_fast=_c_exp2_prescaled)
_unary("Log", np.log, "kl_log({0})", _d_log, "log(a)")
_unary("XLogX", _np_xlogx, "({0} == T(0) ? T(0) : {0} * kl_log({0}))", _d_xlogx, "a·log(a), 0 at a = 0")
_unary("Sin", np.sin, "kl_sin({0})", _d_sin, "sin(a)")
_unary("Cos", np.cos, "kl_cos({0})", _d_cos, "cos(a)")
_unary("Asin", np.arcsin, "kl_asin({0})", _d_asin, "arcsin(a)")
_unary("Acos", np.arccos, "kl_acos({0})", _d_acos, "arccos(a)")
_unary("Atan", np.arctan, "kl_atan({0})", _d_atan, "arctan(a)")
_unary("SinXDivX", _np_sinxdivx, "({0} == T(0) ? T(1) : kl_sin({0}) / {0})", _d_sinxdivx, "sin(a)/a, 1 at a = 0")
_unary("Pow", _np_pow, "kl_powi({0}, {1})", _d_pow, "a**n for an integer n", param_names=("n",), simplify=_simplify_pow)
register(
    OpSpec(
        "Powf",
        2,
        broadcast,
        np.power,
        c_elementwise("kl_pow({0}, {1})"),
        grad=_d_powf,
        doc="a**b for a real b",
        elementwise=True,
    )
)
register(
    OpSpec(
        "Atan2",
        2,
        broadcast,
        np.arctan2,
        c_elementwise("kl_atan2({0}, {1})"),
        grad=_d_atan2,
        doc="atan2(a, b), the angle of the point (b, a)",
        elementwise=True,
    )
)
