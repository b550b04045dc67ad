"""Arithmetic: ``+ - * /`` and negation, with their algebraic simplifications.

>>> from kernla.formula.tree import Vi
>>> x = Vi(0, 2)
>>> (x * 1) is x, str(0 - x), str(-(-x))
(True, '(-Var(0,2,0))', 'Var(0,2,0)')
"""

from __future__ import annotations

from ..tree import IntCst, Node, RealCst, call
from .registry import OpSpec, broadcast, c_elementwise, is_const, register, same, ub_args


def _simplify_add(a, p):
    x, y = a
    if is_const(y, 0) and x.dim >= y.dim:
        return x
    if is_const(x, 0) and y.dim >= x.dim:
        return y
    return None


def _simplify_sub(a, p):
    x, y = a
    if is_const(y, 0) and x.dim >= y.dim:
        return x
    if is_const(x, 0) and y.dim >= x.dim:
        return call("Minus", y)
    return None


def _simplify_mult(a, p):
    x, y = a
    if is_const(y, 1) and x.dim >= y.dim:
        return x
    if is_const(x, 1) and y.dim >= x.dim:
        return y
    if is_const(x, -1) and y.dim >= x.dim:
        return call("Minus", y)
    return None


def _simplify_div(a, p):
    x, y = a
    if is_const(y, 1) and x.dim >= y.dim:
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


def _d_add(n: Node, g: Node) -> tuple:
    return ub_args(n, g, g)


def _d_subtract(n: Node, g: Node) -> tuple:
    return ub_args(n, g, -g)


def _d_mult(n: Node, g: Node) -> tuple:
    a, b = n.args
    return ub_args(n, g * b, g * a)


def _d_divide(n: Node, g: Node) -> tuple:
    b = n.args[1]
    return ub_args(n, g / b, -(g * n) / b)


def _d_minus(n: Node, g: Node) -> tuple:
    return (-g,)


register(
    OpSpec(
        "Add",
        2,
        broadcast,
        lambda a, b: a + b,
        c_elementwise("({0} + {1})"),
        grad=_d_add,
        simplify=_simplify_add,
        constant_rules=True,
        doc="a + b",
        elementwise=True,
        symbol="+",
    )
)
register(
    OpSpec(
        "Subtract",
        2,
        broadcast,
        lambda a, b: a - b,
        c_elementwise("({0} - {1})"),
        grad=_d_subtract,
        simplify=_simplify_sub,
        constant_rules=True,
        doc="a - b",
        elementwise=True,
        symbol="-",
    )
)
register(
    OpSpec(
        "Mult",
        2,
        broadcast,
        lambda a, b: a * b,
        c_elementwise("({0} * {1})"),
        grad=_d_mult,
        simplify=_simplify_mult,
        constant_rules=True,
        doc="a * b",
        elementwise=True,
        symbol="*",
    )
)
register(
    OpSpec(
        "Divide",
        2,
        broadcast,
        lambda a, b: a / b,
        c_elementwise("({0} / {1})"),
        grad=_d_divide,
        simplify=_simplify_div,
        constant_rules=True,
        doc="a / b",
        elementwise=True,
        symbol="/",
    )
)
register(
    OpSpec(
        "Minus",
        1,
        same,
        lambda a: -a,
        c_elementwise("(-{0})"),
        grad=_d_minus,
        simplify=_simplify_minus,
        doc="-a",
        elementwise=True,
        symbol="-",
    )
)
