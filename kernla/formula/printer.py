"""Formula trees to formula strings (the inverse of :mod:`kernla.formula.parser`).

Operations with a symbol (``OpSpec.symbol``: ``+ - * / |`` and the prefix ``-``) are printed fully
parenthesised, variables as ``Var(pos,dim,cat)``, so that
``parse(to_string(f)) is f`` for every formula ``f``.

>>> from kernla.formula.tree import Vi, Vj, call
>>> to_string(call("Exp", -call("SqDist", Vi(0, 2), Vj(1, 2))))
'Exp((-SqDist(Var(0,2,0), Var(1,2,1))))'
"""

from __future__ import annotations

from .ops import get_op
from .tree import Node


def _number(value: float | int) -> str:
    text = repr(value)
    if isinstance(value, float) and not any(c in text for c in ".e"):
        text += ".0"  # keep reals real
    return f"({text})" if value < 0 or text.startswith("-") else text


def to_string(formula: Node) -> str:
    """The canonical string of ``formula``."""
    memo: dict[int, str] = {}
    for node in formula.walk():
        if node.op == "Var":
            pos, dim, cat = node.params
            text = f"Var({pos},{dim},{cat})"
        elif node.is_const:
            text = _number(node.params[0])
        elif (symbol := get_op(node.op).symbol) is not None:
            args = [memo[id(x)] for x in node.args]
            text = f"({args[0]} {symbol} {args[1]})" if len(args) == 2 else f"({symbol}{args[0]})"
        else:
            parts = [memo[id(a)] for a in node.args] + [str(p) for p in node.params]
            text = f"{node.op}({', '.join(parts)})"
        memo[id(node)] = text
    return memo[id(formula)]
