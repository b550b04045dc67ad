"""The parser of KeOps-style formula strings and aliases.

Formula strings are tokenised and parsed here, in time and memory linear in their length, without
recursion (nesting depth is bounded only by :data:`~kernla.formula.limits.MAX_FORMULA_CHARS`);
nothing is ever handed to ``eval``. Grammar, from the loosest binding to the tightest::

    formula  := additive ( '|' additive )*          scalar product
    additive := term ( ('+' | '-') term )*
    term     := unary ( ('*' | '/') unary )*
    unary    := ('-' | '+') unary | primary
    primary  := number | alias | Name '(' arguments ')' | '(' formula ')'

Numbers (ASCII digits only) without a dot or exponent are integer constants (``IntCst``), others
real constants.
Variables are named by aliases (``"X = Vi(3)"``, ``"Y = Vj(1, 3)"``, ``"G = Pm(1)"``,
``"Z = Var(3, 2, 0)"``) or written inline (``Vi(0, 3)``, ``Var(0, 3, 0)``).

>>> aliases = parse_aliases(["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)"])
>>> f = parse("Exp(-G * SqDist(X, Y))", aliases)
>>> f.dim, [v.params for v in f.variables()]
(1, [(0, 3, 0), (1, 3, 1), (2, 1, 2)])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import FormulaError, FormulaSyntaxError
from . import limits
from .diff import grad
from .ops import OPS, get_op
from .tree import CAT_I, CAT_J, CAT_PARAM, IntCst, Node, RealCst, Var, call

_TOKEN = re.compile(
    r"\s*(?:(?P<real>(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)"
    r"|(?P<int>[0-9]+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<punct>[-+*/|(),=])|(?P<bad>\S))"
)
_VAR_MAKERS = {"Vi": CAT_I, "Vj": CAT_J, "Pm": CAT_PARAM}
#: names the language reserves besides the operations: variable makers, ``IntCst`` and ``Grad``
_KEYWORDS = frozenset({"Var", "IntCst", "Grad", *_VAR_MAKERS})
#: operator symbols (``OpSpec.symbol``) -> operations; the grammar fixes their precedence, loosest first
_INFIX = {spec.symbol: name for name, spec in OPS.items() if spec.symbol is not None and spec.arity == 2}
_PREFIX = {spec.symbol: name for name, spec in OPS.items() if spec.symbol is not None and spec.arity == 1}
_LEVELS = (("|",), ("+", "-"), ("*", "/"))
assert sorted(_INFIX) == sorted(s for level in _LEVELS for s in level), "an operator symbol without a precedence"
#: infix symbol -> its precedence (index in _LEVELS: higher binds tighter)
_LEVEL = {symbol: k for k, level in enumerate(_LEVELS) for symbol in level}


def _int_value(digits: str) -> int:
    """The value of an integer literal (ASCII digits); FormulaError beyond float64's range, before ``int`` runs."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > limits.MAX_INT_DIGITS:
        raise FormulaError(
            f"the integer constant {digits[:20]}… ({len(digits)} digits) is too large for a floating-point number"
        )
    return int(digits)


class _Tokens:
    """The tokens of a formula string, read in one linear pass, as ``(kind, text, position)``."""

    def __init__(self, text: str):
        self.text = text
        self.items: list[tuple[str, str, int]] = []
        for m in _TOKEN.finditer(text):  # every character is blank or in a token: the matches are contiguous
            kind = m.lastgroup
            assert kind is not None  # every alternative of _TOKEN is a named group
            if kind == "bad":
                raise FormulaSyntaxError(f"unexpected character {m.group(kind)!r}", text, m.start(kind))
            self.items.append((kind, m.group(kind), m.start(kind)))
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.items[self.i] if self.i < len(self.items) else ("end", "", len(self.text))

    def next(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        kind, text, pos = self.next()
        if text != value:
            found = "the end of the formula" if kind == "end" else repr(text)
            raise FormulaSyntaxError(f"expected {value!r}, found {found}", self.text, pos)

    def error(self, message: str, pos: int) -> FormulaSyntaxError:
        return FormulaSyntaxError(message, self.text, pos)


class _Group:
    """An open bracket: a parenthesis (``name`` None) or the argument list of operation ``name``."""

    __slots__ = ("name", "pos", "args", "start")

    def __init__(self, name: str | None, pos: int, start: int = 0):
        self.name = name
        self.pos = pos
        self.args: list[tuple[Node, int]] = []  # the arguments read so far, with their positions
        self.start = start  # the position of the argument being read


#: a pending operator or open bracket: ("binary" | "prefix", symbol, position) or ("group", _Group, position)
_Pending = tuple[str, Any, int]


class _Parser:
    """Operator-precedence parsing with explicit stacks: no recursion, so nesting is bounded by memory only.

    ``ops`` holds the pending operators and open brackets, innermost last, ``values`` the operands
    read. A prefix operator binds tighter than every infix one: it applies as soon as its operand
    is complete. An infix operator waits until the next one is known to bind no tighter (all are
    left-associative); a closing bracket or the end applies every operator back to its bracket.
    """

    def __init__(self, text: str, aliases: Mapping[str, Node]):
        self.t = _Tokens(text)
        self.aliases = aliases

    def parse(self) -> Node:
        ops: list[_Pending] = []
        values: list[Node] = []
        operand = True  # whether the next token starts an operand
        while True:
            kind, text, pos = self.t.next()
            if operand:
                operand = not self._operand(kind, text, pos, ops, values)
                if not operand:
                    self._apply_prefixes(ops, values)
            elif text in _LEVEL:
                self._apply_infix(ops, values, _LEVEL[text])
                ops.append(("binary", text, pos))
                operand = True
            else:
                self._apply_infix(ops, values, 0)
                if not ops:
                    if kind == "end":
                        return values.pop()
                    raise self.t.error(f"unexpected {text!r} after a complete formula", pos)
                operand = self._close(kind, text, pos, ops, values)

    def _operand(self, kind: str, text: str, pos: int, ops: list[_Pending], values: list[Node]) -> bool:
        """Read the start of an operand; whether it is complete (pushed on ``values``)."""
        if text in _PREFIX:
            ops.append(("prefix", text, pos))
            return False
        if text == "+":  # unary plus
            return False
        if text == "(":
            ops.append(("group", _Group(None, pos), pos))
            return False
        if kind == "name" and self.t.peek()[1] == "(":
            if text in _VAR_MAKERS or text in ("Var", "IntCst"):
                values.append(self._integer_call(text, pos))
                return True
            if text != "Grad" and text not in OPS:
                raise self.t.error(f"unknown operation {text!r}", pos)
            self.t.next()
            group = _Group(text, pos, self.t.peek()[2])
            if self.t.peek()[1] == ")":
                self.t.next()
                values.append(self._call(group))
                return True
            ops.append(("group", group, pos))
            return False
        values.append(self._leaf(kind, text, pos))
        return True

    def _close(self, kind: str, text: str, pos: int, ops: list[_Pending], values: list[Node]) -> bool:
        """After a complete operand inside the bracket ``ops[-1]``: read ``,`` or ``)``; whether an operand follows."""
        group = ops[-1][1]
        if group.name is None:
            if text != ")":
                found = "the end of the formula" if kind == "end" else repr(text)
                raise self.t.error(f"expected ')', found {found}", pos)
            ops.pop()
            self._apply_prefixes(ops, values)
            return False
        group.args.append((values.pop(), group.start))
        if text == ",":
            group.start = self.t.peek()[2]
            return True
        if text != ")":
            raise self.t.error(f"expected ',' or ')', found {text!r}", pos)
        ops.pop()
        values.append(self._call(group))
        self._apply_prefixes(ops, values)
        return False

    def _apply_prefixes(self, ops: list[_Pending], values: list[Node]) -> None:
        while ops and ops[-1][0] == "prefix":
            _, symbol, pos = ops.pop()
            values.append(self._apply(_PREFIX[symbol], (values.pop(),), (), pos))

    def _apply_infix(self, ops: list[_Pending], values: list[Node], level: int) -> None:
        """Apply the pending infix operators that bind at least as tightly as ``level``."""
        while ops and ops[-1][0] == "binary" and _LEVEL[ops[-1][1]] >= level:
            _, symbol, pos = ops.pop()
            right = values.pop()
            values.append(self._apply(_INFIX[symbol], (values.pop(), right), (), pos))

    def _leaf(self, kind: str, text: str, pos: int) -> Node:
        """A number or an alias."""
        if kind == "int":
            try:
                return IntCst(_int_value(text))
            except FormulaError as err:
                raise self.t.error(str(err), pos) from None
        if kind == "real":
            try:
                return RealCst(float(text))
            except FormulaError:
                raise self.t.error(f"the constant {text} is not finite", pos) from None
        if kind == "name":
            if text in self.aliases:
                return self.aliases[text]
            raise self.t.error(f"unknown alias or operation {text!r}", pos)
        if kind == "end":
            raise self.t.error("unexpected end of the formula", pos)
        raise self.t.error(f"unexpected {text!r}", pos)

    def _integer(self) -> int:
        sign = 1
        while self.t.peek()[1] in ("-", "+"):
            sign *= -1 if self.t.next()[1] == "-" else 1
        kind, text, pos = self.t.next()
        if kind != "int":
            raise self.t.error(f"expected an integer, found {text!r}", pos)
        return sign * _int_value(text)

    def _integer_call(self, name: str, pos: int) -> Node:
        """``Vi(…)``, ``Vj(…)``, ``Pm(…)``, ``Var(…)`` or ``IntCst(…)``: integer arguments only."""
        self.t.expect("(")
        try:
            ints = [self._integer()]
            while self.t.peek()[1] == ",":
                self.t.next()
                ints.append(self._integer())
            self.t.expect(")")
            if name != "IntCst":
                return _make_var(name, ints)
            if len(ints) != 1:
                raise FormulaError(f"IntCst takes one integer, got {len(ints)}")
            return IntCst(ints[0])
        except FormulaSyntaxError:
            raise
        except FormulaError as err:
            raise self.t.error(str(err), pos) from None

    def _call(self, group: _Group) -> Node:
        """The operation (or ``Grad``) of a closed argument list."""
        name, pos, args = group.name, group.pos, group.args
        assert name is not None  # parentheses are closed by _close
        if name == "Grad":
            if len(args) != 3:
                raise self.t.error(f"Grad takes 3 arguments (formula, variable, cotangent), got {len(args)}", pos)
            (f, _), (v, vpos), (e, _) = args
            try:
                return grad(f, v, e)
            except FormulaError as err:
                raise self.t.error(str(err), vpos) from None
        spec = get_op(name)
        n_params = len(spec.param_names)
        if len(args) != spec.arity + n_params:
            raise self.t.error(f"{name} takes {spec.arity + n_params} argument(s), got {len(args)}", pos)
        formulas = tuple(a for a, _ in args[: spec.arity])
        params = []
        for (node, apos), pname in zip(args[spec.arity :], spec.param_names):
            if node.op != "IntCst":
                raise self.t.error(f"{name}: {pname} must be an integer literal", apos)
            params.append(node.params[0])
        return self._apply(name, formulas, tuple(params), pos)

    def _apply(self, name: str, args: tuple, params: tuple, pos: int) -> Node:
        try:
            return call(name, *args, params=params)
        except FormulaError as err:
            raise self.t.error(str(err), pos) from None


def _make_var(maker: str, ints: list[int], default_pos: int | None = None) -> Node:
    if maker == "Var":
        if len(ints) != 3:
            raise FormulaError("Var takes (position, dimension, category)")
        return Var(*ints)
    cat = _VAR_MAKERS[maker]
    if len(ints) == 2:
        return Var(ints[0], ints[1], cat)
    if len(ints) == 1 and default_pos is not None:
        return Var(default_pos, ints[0], cat)
    if len(ints) == 1:
        raise FormulaError(f"an inline {maker} needs a position and a dimension, e.g. {maker}(0, 3)")
    raise FormulaError(f"{maker} takes (dimension) or (position, dimension)")


_ALIAS = re.compile(r"^\s*([A-Za-z_][A-Za-z_0-9]*)\s*=\s*(Vi|Vj|Pm|Var)\s*\(([^()]*)\)\s*$")
_ALIAS_INT = re.compile(r"^[-+]?[0-9]+$")


def parse_aliases(aliases: Iterable[str]) -> dict[str, Node]:
    """Parse alias declarations; ``Vi(dim)`` takes its position from the alias's rank in the list.

    >>> parse_aliases(["x = Vi(3)", "b = Vj(2, 2)"])["b"].params
    (2, 2, 1)
    """
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, Iterable) or isinstance(aliases, (bytes, Mapping)):
        raise FormulaError(f"aliases must be a list of strings like 'x = Vi(3)', got {type(aliases).__name__}")
    table: dict[str, Node] = {}
    by_pos: dict[int, tuple[str, Node]] = {}
    for rank, text in enumerate(aliases):
        if not isinstance(text, str):
            raise FormulaError(f"aliases must be strings like 'x = Vi(3)', got {text!r}")
        m = _ALIAS.match(text)
        if not m:
            raise FormulaError(
                f"cannot read alias {text!r}: expected 'name = Vi(dim)', 'name = Vj(pos, dim)', "
                "'name = Pm(dim)' or 'name = Var(pos, dim, cat)'"
            )
        name, maker, inside = m.groups()
        parts = [s.strip() for s in inside.split(",")]
        if not all(_ALIAS_INT.match(s) for s in parts):
            raise FormulaError(f"alias {text!r}: arguments must be integers (ASCII digits)")
        ints = [(-1 if s.startswith("-") else 1) * _int_value(s.lstrip("+-")) for s in parts]
        if name in table:
            raise FormulaError(f"alias {name!r} is declared twice")
        if name in OPS or name in _KEYWORDS:
            raise FormulaError(f"alias {name!r} shadows an operation name")
        var = _make_var(maker, ints, default_pos=rank)
        pos = var.params[0]
        if pos in by_pos and by_pos[pos][1] is not var:
            raise FormulaError(
                f"aliases {by_pos[pos][0]!r} and {name!r} both claim position {pos} "
                "with different dimensions or categories"
            )
        by_pos[pos] = (name, var)
        table[name] = var
    return table


def parse(text: str, aliases: Mapping[str, Node] | Iterable[str] = ()) -> Node:
    """Parse a formula string; ``aliases`` is a mapping name → variable, or alias strings."""
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, got {type(text).__name__}")
    if len(text) > limits.MAX_FORMULA_CHARS:
        raise FormulaSyntaxError(
            f"the formula has {len(text)} characters, more than the limit of {limits.MAX_FORMULA_CHARS} "
            f"({limits.how_to_raise('MAX_FORMULA_CHARS')})"
        )
    if not isinstance(aliases, Mapping):
        aliases = parse_aliases(aliases)
    if not text.strip():
        raise FormulaSyntaxError("empty formula", text, 0)
    return _Parser(text, aliases).parse()
