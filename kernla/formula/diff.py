"""Reverse-mode symbolic differentiation of formulas.

``grad(f, v, e)`` is KeOps' ``Grad(f, v, e)``: the gradient of the scalar ⟨f, e⟩ with respect to
the variable ``v``, a formula of ``v``'s dimension. ``e`` (the *cotangent*, of ``f``'s dimension)
is any formula; it is held constant. The derivative of each operation lives with its definition
(``OpSpec.grad`` in :mod:`kernla.formula.ops`); this module only runs the reverse sweep over the
interned DAG: one cotangent per node, summed with ``Add`` over the node's uses, and each
operation's ``grad`` called once per node. Because nodes are hash-consed, sub-formulas shared by
``f`` and by the derivative rules (``Exp``'s derivative reuses the ``Exp`` node, …) are shared in
the result, the compiled code computes them once, and building the same gradient twice yields the
very same formula (so the same compiled kernel).

Conventions:

- a variable that ``f`` does not depend on has a zero gradient: :func:`grad` returns the zero
  formula of ``v``'s dimension (as KeOps does; it keeps gradient code uniform when, say, a
  parameter only appears in a reduction's weight formula), and :func:`vjp` returns ``None``;
- operations that are piecewise constant (``Step``, ``Sign``, ``Floor``, ``Round``, comparisons,
  ``ArgMin``, …) have a zero derivative;
- ``v`` must be a variable (``Var`` leaf); anything else is a :class:`~kernla.errors.FormulaError`.

>>> from kernla.formula.tree import Vi, Vj, call
>>> x, y, e = Vi(0, 2), Vj(1, 2), Vi(2, 1)
>>> str(grad(call("SqDist", x, y), x, e))
'((2 * Var(2,1,0)) * (Var(0,2,0) - Var(1,2,1)))'
>>> grad(call("SqNorm2", y), x, e).dim     # x does not appear: a zero of x's dimension
2
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import FormulaError
from .ops import get_op
from .tree import IntCst, Node, as_node, call, walk_many

__all__ = ["grad", "vjp", "zeros", "depends_on"]


def zeros(dim: int) -> Node:
    """The zero formula of dimension ``dim`` (``0`` for a scalar).

    >>> str(zeros(1)), str(zeros(3)), zeros(3).dim
    ('0', 'ElemT(0, 3, 0)', 3)
    """
    if dim == 1:
        return IntCst(0)
    return call("ElemT", IntCst(0), params=(dim, 0))


def depends_on(f: Node, v: Node) -> bool:
    """Whether formula ``f`` contains the variable ``v``.

    >>> from kernla.formula.tree import Vi, Vj
    >>> depends_on(Vi(0, 1) + Vj(1, 1), Vj(1, 1)), depends_on(Vi(0, 1), Vj(1, 1))
    (True, False)
    """
    return any(n is v for n in f.walk())


def _check_variable(v: Node) -> None:
    if not isinstance(v, Node) or not v.is_var:
        raise FormulaError(
            "the variable of Grad must be a variable (an alias, Vi, Vj or Pm), "
            f"got {v if isinstance(v, Node) else repr(v)}"
        )


def _full(g: Node, dim: int) -> Node:
    """A broadcast scalar cotangent made a vector of dimension ``dim``."""
    return g if g.dim == dim else g + zeros(dim)


def _lean(part: Node, dim: int) -> Node:
    """Peephole rewrites of a cotangent (exact in floating point).

    ``s + 0⃗`` (a scalar repeated into a vector, as the registry's rules write it) stays the
    scalar ``s``, broadcast implicitly until an operation needs the vector; ``-(s · v)`` with a
    scalar ``s`` becomes ``(-s) · v`` so the negation is done once, not per component.
    """
    if part.op == "Add" and part.args[0].dim == 1 and dim > 1 and part.args[1] is zeros(dim):
        return part.args[0]
    if part.op == "Minus":
        return _neg(part.args[0])
    return part


def _neg(x: Node) -> Node:
    """-x, with the sign moved onto a constant, a scalar factor or an inner negation."""
    if x.op == "Minus":
        return x.args[0]
    if x.op in ("Mult", "Divide"):
        a, b = x.args
        if a.op == "Minus":
            return call(x.op, a.args[0], b)
        if x.op == "Mult" and b.op == "Minus":
            return call("Mult", a, b.args[0])
        if a.is_const or (a.dim == 1 and b.dim > 1):
            return call(x.op, _neg(a), b)
        if x.op == "Mult" and (b.is_const or (b.dim == 1 and a.dim > 1)):
            return call("Mult", a, _neg(b))
    return call("Minus", x)


def _accumulate(previous: Node | None, contribution: Node) -> Node:
    if previous is None:
        return contribution
    if previous is contribution:
        return IntCst(2) * contribution
    return call("Add", previous, contribution)


def vjp(seeds: Sequence[tuple[Node, Node]], targets: Sequence[Node]) -> list[Node | None]:
    """Gradients of Σ_k ⟨f_k, e_k⟩ with respect to each target variable, in one reverse sweep.

    ``seeds`` is a list of (formula, cotangent) pairs with equal dimensions; ``targets`` a list of
    variables. Returns one formula per target (``None`` where the seeds do not depend on it).
    Sub-formulas shared between the targets' gradients are shared nodes.

    >>> from kernla.formula.tree import Vi, Vj, Pm, call
    >>> x, y, g, e = Vi(0, 1), Vj(1, 1), Pm(2, 1), Vi(3, 1)
    >>> k = call("Exp", -g * call("SqDist", x, y))
    >>> dx, dy, dg = vjp([(k, e)], [x, y, g])
    >>> [d.dim for d in (dx, dy, dg)], vjp([(k, e)], [Vj(4, 2)])
    ([1, 1, 1], [None])
    """
    seeds = [(as_node(f), as_node(e)) for f, e in seeds]
    for f, e in seeds:
        if e.dim != f.dim:
            raise FormulaError(
                f"Grad: the cotangent has dimension {e.dim} but the formula has dimension {f.dim}; they must be equal"
            )
    for v in targets:
        _check_variable(v)
    order = list(walk_many(f for f, _ in seeds))
    wanted = {id(v) for v in targets}
    live: dict[int, bool] = {}  # does the node depend on a target?
    for node in order:
        live[id(node)] = id(node) in wanted or any(live[id(a)] for a in node.args)

    cot: dict[int, Node] = {}
    for f, e in seeds:
        if live[id(f)]:
            cot[id(f)] = _accumulate(cot.get(id(f)), e)
    for node in reversed(order):
        if not node.args or id(node) not in cot:
            continue
        g = cot.pop(id(node))
        spec = get_op(node.op)
        broadcast = g.dim != node.dim  # a scalar standing for a vector: see _lean
        if broadcast and (not spec.elementwise or any(a.dim != node.dim for a in node.args)):
            g, broadcast = _full(g, node.dim), False
        if spec.grad is None:
            raise FormulaError(f"the operation {node.op} has no derivative")
        parts = spec.grad(node, g)
        if len(parts) != len(node.args):
            raise FormulaError(
                f"internal: the derivative of {node.op} gave {len(parts)} cotangents for {len(node.args)} arguments"
            )
        for arg, part in zip(node.args, parts):
            if part is None or not live[id(arg)]:
                continue
            if part.dim != arg.dim and not (part.dim == 1 and broadcast):
                raise FormulaError(
                    f"internal: the derivative of {node.op} gave a cotangent of dimension "
                    f"{part.dim} for an argument of dimension {arg.dim}"
                )
            part = _lean(part, arg.dim)
            cot[id(arg)] = _accumulate(cot.get(id(arg)), part)
    return [None if id(v) not in cot else _full(cot[id(v)], v.dim) for v in targets]


def grad(f: Node, v: Node, e: Node) -> Node:
    """KeOps' ``Grad(f, v, e)``: the gradient of ⟨f, e⟩ with respect to variable ``v``.

    The result has ``v``'s dimension; it is the zero formula when ``f`` does not depend on ``v``
    (see the module docstring). The string language spells it ``Grad(f, V, e)``.

    >>> from kernla.formula.tree import Vi, Vj, call
    >>> x, e = Vi(0, 1), Vi(1, 1)
    >>> str(grad(call("Exp", call("Square", x)), x, e))
    '((2 * (Var(1,1,0) * Exp(Square(Var(0,1,0))))) * Var(0,1,0))'
    """
    f, e = as_node(f), as_node(e)
    _check_variable(v)
    (out,) = vjp([(f, e)], [v])
    return zeros(v.dim) if out is None else out
