"""Formula trees to formula strings (the inverse of :mod:`kernla.formula.parser`).

Operations with a symbol (``OpSpec.symbol``: ``+ - * / |`` and the prefix ``-``) are printed fully
parenthesised, variables as ``Var(pos,dim,cat)``, so that
``parse(to_string(f)) is f`` for every formula ``f``.

>>> from kernla.formula.tree import Vi, Vj, call
>>> to_string(call("Exp", -call("SqDist", Vi(0, 2), Vj(1, 2))))
'Exp((-SqDist(Var(0,2,0), Var(1,2,1))))'

The canonical string writes a sub-formula used twice twice: it can be exponentially longer than
the formula has nodes (``f = f + f * 0.5`` ten times over). :func:`to_string` refuses strings
longer than :data:`~kernla.formula.limits.MAX_FORMULA_CHARS`; :func:`display` (``str()`` and
``repr()`` of a formula) writes such formulas with each shared sub-formula once, named ``#k``,
and cuts the text at :data:`~kernla.formula.limits.MAX_PRINT_CHARS`. Every walk is iterative, so
deep formulas print too.

>>> f = Vi(0, 1)
>>> for _ in range(3):
...     f = f + f * 0.5
>>> display(f, max_chars=40)
'(#2 + (#2 * 0.5)) where #1 = (Var(0,1,0)… [cut: see kernla.formula.limits.MAX_PRINT_CHARS]'
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import FormulaError
from . import limits
from .ops import get_op
from .tree import Node

_CUT = "… [cut: see kernla.formula.limits.MAX_PRINT_CHARS]"


def _number(value: float | int) -> str:
    text = repr(value)
    if isinstance(value, float) and not any(c in text for c in ".e"):
        text += ".0"  # keep reals real
    return f"({text})" if value < 0 or text.startswith("-") else text


def _leaf(node: Node) -> str:
    if node.op == "Var":
        pos, dim, cat = node.params
        return f"Var({pos},{dim},{cat})"
    return _number(node.params[0])


def _layout(node: Node) -> tuple[str, str, str, list[str]]:
    """(opening, separator, closing, trailing parameters) of an inner node: its text is
    ``opening + arg_1 + separator + … + arg_n + closing``, with ``, param`` after the arguments."""
    symbol = get_op(node.op).symbol
    if symbol is not None:
        return ("(", f" {symbol} ", ")", []) if len(node.args) == 2 else (f"({symbol}", "", ")", [])
    return (f"{node.op}(", ", ", ")", [_param(p) for p in node.params])


def _param(p: int | tuple) -> str:
    """An integer parameter, or a list of them as ``[2, 3]``."""
    return "[" + ", ".join(map(str, p)) + "]" if isinstance(p, tuple) else str(p)


def _pieces(root: Node, names: dict[int, str]) -> Iterator[str]:
    """The text of ``root`` in pieces; nodes in ``names`` (but ``root``) are written as their name."""
    stack: list[Node | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif item is not root and id(item) in names:
            yield names[id(item)]
        elif not item.args:
            yield _leaf(item)
        else:
            opening, separator, closing, params = _layout(item)
            parts: list[Node | str] = [opening]
            for k, a in enumerate(item.args):
                parts += [separator, a] if k else [a]
            parts += [", " + ", ".join(params) + closing if params else closing]
            stack.extend(reversed(parts))


def canonical_length(formula: Node) -> int:
    """The length of :func:`to_string`'s result, in time linear in the number of distinct nodes.

    >>> from kernla.formula.tree import Vi
    >>> canonical_length(Vi(0, 1) + 1) == len(to_string(Vi(0, 1) + 1))
    True
    """
    length: dict[int, int] = {}
    for node in formula.walk():
        if not node.args:
            length[id(node)] = len(_leaf(node))
            continue
        opening, separator, closing, params = _layout(node)
        text = len(opening) + len(separator) * (len(node.args) - 1) + len(closing)
        text += sum(2 + len(p) for p in params)
        length[id(node)] = text + sum(length[id(a)] for a in node.args)
    return length[id(formula)]


def to_string(formula: Node) -> str:
    """The canonical string of ``formula``; FormulaError if longer than ``limits.MAX_FORMULA_CHARS``."""
    n = canonical_length(formula)
    if n > limits.MAX_FORMULA_CHARS:
        raise FormulaError(
            f"the formula's string would have {n} characters, more than the limit of {limits.MAX_FORMULA_CHARS} "
            f"({limits.how_to_raise('MAX_FORMULA_CHARS')}); str() prints it with shared sub-formulas named"
        )
    return "".join(_pieces(formula, {}))


def _shared(formula: Node) -> list[Node]:
    """The inner nodes used more than once in ``formula``, children first."""
    uses: dict[int, int] = {}
    order = list(formula.walk())
    for node in order:
        for a in node.args:
            uses[id(a)] = uses.get(id(a), 0) + 1
    return [n for n in order if n.args and uses.get(id(n), 0) > 1]


def _shared_pieces(formula: Node) -> Iterator[str]:
    """``formula`` with each shared sub-formula written once: ``text where #1 = …; #2 = …``."""
    shared = _shared(formula)
    names = {id(n): f"#{k + 1}" for k, n in enumerate(shared)}
    yield from _pieces(formula, names)
    for k, node in enumerate(shared):
        yield " where " if k == 0 else "; "
        yield f"{names[id(node)]} = "
        yield from _pieces(node, names)


def display(formula: Node, max_chars: int | None = None) -> str:
    """``str(formula)``: the canonical string when at most ``max_chars`` long (default
    ``limits.MAX_PRINT_CHARS``), else shared sub-formulas written once and the text cut there."""
    cap = limits.MAX_PRINT_CHARS if max_chars is None else max_chars
    if canonical_length(formula) <= cap:
        return "".join(_pieces(formula, {}))
    out: list[str] = []
    size = 0
    for piece in _shared_pieces(formula):
        if size + len(piece) > cap:
            out.append(piece[: cap - size])
            return "".join(out) + _CUT
        out.append(piece)
        size += len(piece)
    return "".join(out)
