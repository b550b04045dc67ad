"""The one C code generator: a formula body as straight-line scalar C.

Every engine that compiles code (the CPU template, the CUDA templates) calls :func:`emit_body`:
it gets back declarations of temporaries and one C expression per output component, in terms of
a scalar type ``T`` and the ``kl_*`` maths functions that each engine's prelude defines. Vector
dimensions are unrolled at generation time; shared sub-formulas are computed once.

>>> from kernla.formula.tree import Vi, Vj, call
>>> lines, out = emit_body(call("SqDist", Vi(0, 2), Vj(1, 2)),
...                        lambda v, k: f"v{v.params[0]}[{k}]")
>>> print("\\n".join(lines)); out
T t0 = v0[0] - v1[0];
T t1 = v0[1] - v1[1];
T t2 = (t0 * t0 + t1 * t1);
['t2']
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from .ops import get_op
from .tree import Node

Loader = Callable[[Node, int], str]
_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\[[^\[\]]*\])?$|^T\([-+0-9.e]+\)$")


class CEmitter:
    """Collects C statements; ops call :meth:`tmp`, :meth:`declare` and :meth:`assign`."""

    def __init__(self, prefix: str = "t"):
        self.lines: list[str] = []
        self._n = 0
        self._prefix = prefix

    def _name(self) -> str:
        name = f"{self._prefix}{self._n}"
        self._n += 1
        return name

    def tmp(self, expr: str) -> str:
        """A temporary holding ``expr`` (returned unchanged when already a plain name)."""
        if _SIMPLE.match(expr):
            return expr
        return self.declare(expr)

    def declare(self, expr: str) -> str:
        """A new mutable temporary initialised to ``expr``."""
        name = self._name()
        self.lines.append(f"T {name} = {expr};")
        return name

    def assign(self, name: str, expr: str) -> None:
        self.lines.append(f"{name} = {expr};")

    def emit(self, formula: Node, load: Loader, memo: dict | None = None) -> list[str]:
        """Per-component C expressions of ``formula``; ``load(var, k)`` reads a variable."""
        memo = {} if memo is None else memo
        for node in formula.walk():
            if id(node) in memo:
                continue
            if node.is_var:
                memo[id(node)] = [load(node, k) for k in range(node.dim)]
            elif node.is_const:
                memo[id(node)] = [f"T({float(node.params[0])!r})"]
            else:
                exprs = get_op(node.op).c(self, [memo[id(a)] for a in node.args], node.params, node.dim)
                memo[id(node)] = [self.tmp(x) for x in exprs]
        return memo[id(formula)]


def emit_body(formula: Node, load: Loader, prefix: str = "t") -> tuple[list[str], list[str]]:
    """(statements, output expressions) computing ``formula`` for one (i, j) pair."""
    e = CEmitter(prefix)
    out = e.emit(formula, load)
    return e.lines, out


def emit_bodies(formulas: Sequence[Node], load: Loader, prefix: str = "t") -> tuple[list[str], list[list[str]]]:
    """Like :func:`emit_body` for several formulas sharing their common sub-formulas."""
    e = CEmitter(prefix)
    memo: dict = {}
    outs = [e.emit(f, load, memo) for f in formulas]
    return e.lines, outs
