"""The one C code generator: formula bodies as straight-line scalar C, for every compiling engine.

The CPU template and the CUDA templates both call :func:`emit_bodies`: it returns declarations of
temporaries and, per formula, one C expression per output component, in terms of a scalar type
``T`` and the ``kl_*`` maths functions each engine's maths prelude defines. Vector dimensions are
unrolled at generation time (up to :data:`~kernla.formula.limits.MAX_UNROLLED` scalar operations:
:func:`check_unrolled`); sub-formulas shared by the formulas are computed once. What an
operation becomes in C is its registry entry's business (``OpSpec.c``, and ``OpSpec.c_fast``
under the ``fast`` option); engine options:

- ``fast``: use the operations' fast float emitters where they have one (the CUDA engine for
  float data: ``Exp`` becomes ``kl_exp2f`` of a pre-scaled argument);
- ``prune``: drop statements whose results no output uses (what a fast emitter leaves unused);
  :func:`drop_unused` does the same against any code that reads the body.

>>> from kernla.formula.tree import Vi, Vj, call
>>> lines, outs = emit_bodies([call("SqDist", Vi(0, 2), Vj(1, 2))], lambda v, k: f"v{v.params[0]}[{k}]")
>>> print("\\n".join(lines)); outs
T t0 = v0[0] - v1[0];
T t1 = v0[1] - v1[1];
T t2 = (t0 * t0 + t1 * t1);
[['t2']]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..errors import FormulaError
from . import limits
from .ops import get_op
from .tree import Node, walk_many

Loader = Callable[[Node, int], str]
_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*(\[[^\[\]]*\])?$|^T\([-+0-9.e]+\)$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_STMT = re.compile(r"^(?:T )?([A-Za-z_][A-Za-z_0-9]*) = (.*);$")


class CEmitter:
    """Collects C statements; ops call :meth:`tmp`, :meth:`declare` and :meth:`assign`."""

    def __init__(self, prefix: str = "t", fast: bool = False):
        self.lines: list[str] = []
        self._n = 0
        self._prefix = prefix
        self._fast = fast

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
                self.apply(node, load, memo)
        return memo[id(formula)]

    def apply(self, node: Node, load: Loader, memo: dict) -> None:
        """Emit the operation of ``node`` (its fast emitter under the ``fast`` option) into ``memo``.

        A fast emitter reads sub-formulas through ``exprs``, which emits them on demand.
        """
        spec = get_op(node.op)
        if self._fast and spec.c_fast is not None:
            exprs = spec.c_fast(self, node, lambda n: self.emit(n, load, memo))
        else:
            exprs = spec.c(self, [self.emit(a, load, memo) for a in node.args], node.params, node.dim)
        memo[id(node)] = [self.tmp(x) for x in exprs]


def emit_bodies(
    formulas: Sequence[Node], load: Loader, prefix: str = "t", *, fast: bool = False, prune: bool = False
) -> tuple[list[str], list[list[str]]]:
    """(statements, per-formula output expressions) computing ``formulas`` for one (i, j) pair.

    ``prefix`` names the temporaries; ``fast`` and ``prune`` are the engine options of the module
    docstring. Under ``fast``, the operations with a fast emitter are emitted first, each pulling
    in only the sub-formulas it reads (the argument it rewrites, ``-G * d`` for ``Exp``, is not
    computed unless something else uses it).
    """
    check_unrolled(formulas)
    e = CEmitter(prefix, fast)
    memo: dict = {}
    if fast:
        for f in formulas:
            for node in f.walk():
                if id(node) not in memo and node.args and get_op(node.op).c_fast is not None:
                    e.apply(node, load, memo)
    outs = [e.emit(f, load, memo) for f in formulas]
    lines = e.lines
    if prune:
        lines = drop_unused(lines, " ".join(x for o in outs for x in o))
    return lines, outs


def unrolled_size(formulas: Sequence[Node]) -> int:
    """The scalar operations the generated code unrolls: each distinct node's components plus those it reads.

    A measure of the size of the C code (and of its compile time), in time linear in the number of
    nodes; matrix products count their ``n·p`` terms through the matrix they read, and the components
    of operations compilers are slow on count ``OpSpec.unroll_cost`` times.

    >>> from kernla.formula.tree import Vi, Vj, call
    >>> unrolled_size([call("SqDist", Vi(0, 3), Vj(1, 3))])  # two loads of 3, then 1 + 3 + 3
    13
    >>> unrolled_size([call("OneHot", Vi(0, 1), params=(4,))])  # 1, then 16 * 4 + 1
    66
    """
    return sum(
        n.dim * (get_op(n.op).unroll_cost if n.args else 1) + sum(a.dim for a in n.args) for n in walk_many(formulas)
    )


def check_unrolled(formulas: Sequence[Node]) -> None:
    """FormulaError when :func:`unrolled_size` exceeds ``limits.MAX_UNROLLED`` (before any code is generated)."""
    size = unrolled_size(formulas)
    if size > limits.MAX_UNROLLED:
        widest = max(n.dim for n in walk_many(formulas))
        raise FormulaError(
            f"the formula unrolls to {size} scalar operations (its widest vector has dimension {widest}), more "
            f"than the compiled engines' limit of {limits.MAX_UNROLLED} ({limits.how_to_raise('MAX_UNROLLED')}; "
            "compile time grows faster than the size), or use backend='numpy'"
        )


def drop_unused(lines: list[str], used: str) -> list[str]:
    """Drop the statements whose temporaries nothing uses (``used``: the code that reads the body).

    >>> drop_unused(["T t0 = a * b;", "T t1 = t0 + c;", "T t2 = a - b;"], "out = t1;")
    ['T t0 = a * b;', 'T t1 = t0 + c;']
    """
    live = set(_IDENT.findall(used))
    keep = []
    for line in reversed(lines):
        m = _STMT.match(line)
        if m is None or m.group(1) in live:
            keep.append(line)
            live.update(_IDENT.findall(line))
    return keep[::-1]
