"""A recursive-descent parser for KeOps-style formula strings and aliases.

Formula strings are tokenised and parsed here; nothing is ever handed to ``eval``. Grammar, from
the loosest binding to the tightest::

    formula  := additive ( '|' additive )*          scalar product
    additive := term ( ('+' | '-') term )*
    term     := unary ( ('*' | '/') unary )*
    unary    := ('-' | '+') unary | primary
    primary  := number | alias | Name '(' arguments ')' | '(' formula ')'

Numbers without a dot or exponent are integer constants (``IntCst``), others real constants.
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

from ..errors import FormulaError, FormulaSyntaxError
from .diff import grad
from .ops import OPS, get_op
from .tree import CAT_I, CAT_J, CAT_PARAM, IntCst, Node, RealCst, Var, call

_TOKEN = re.compile(
    r"\s*(?:(?P<real>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)"
    r"|(?P<int>\d+)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<punct>[-+*/|(),=]))"
)
_VAR_MAKERS = {"Vi": CAT_I, "Vj": CAT_J, "Pm": CAT_PARAM}
#: names the language reserves besides the operations: variable makers, ``IntCst`` and ``Grad``
_KEYWORDS = frozenset({"Var", "IntCst", "Grad", *_VAR_MAKERS})
#: operator symbols (``OpSpec.symbol``) -> operations; the grammar fixes their precedence, loosest first
_INFIX = {spec.symbol: name for name, spec in OPS.items() if spec.symbol is not None and spec.arity == 2}
_PREFIX = {spec.symbol: name for name, spec in OPS.items() if spec.symbol is not None and spec.arity == 1}
_LEVELS = (("|",), ("+", "-"), ("*", "/"))
assert sorted(_INFIX) == sorted(s for level in _LEVELS for s in level), "an operator symbol without a precedence"


class _Tokens:
    def __init__(self, text: str):
        self.text = text
        self.items: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                bad = len(text[pos:]) - len(text[pos:].lstrip()) + pos
                raise FormulaSyntaxError(f"unexpected character {text[bad]!r}", text, bad)
            kind = m.lastgroup
            assert kind is not None  # every alternative of _TOKEN is a named group
            self.items.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
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


class _Parser:
    def __init__(self, text: str, aliases: Mapping[str, Node]):
        self.t = _Tokens(text)
        self.aliases = aliases

    def parse(self) -> Node:
        node = self.formula()
        kind, text, pos = self.t.peek()
        if kind != "end":
            raise self.t.error(f"unexpected {text!r} after a complete formula", pos)
        return node

    def formula(self) -> Node:
        return self.binary(0)

    def binary(self, level: int) -> Node:
        """Operands of precedence ``level`` (``_LEVELS``, loosest first) joined by its operators."""
        if level == len(_LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.t.peek()[1] in _LEVELS[level]:
            _, symbol, pos = self.t.next()
            node = self._apply(_INFIX[symbol], (node, self.binary(level + 1)), (), pos)
        return node

    def unary(self) -> Node:
        kind, text, pos = self.t.peek()
        if text in _PREFIX:
            self.t.next()
            return self._apply(_PREFIX[text], (self.unary(),), (), pos)
        if text == "+":
            self.t.next()
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        kind, text, pos = self.t.next()
        if kind == "int":
            try:
                return IntCst(int(text))
            except FormulaError as err:
                raise self.t.error(str(err), pos) from None
        if kind == "real":
            try:
                return RealCst(float(text))
            except FormulaError:
                raise self.t.error(f"the constant {text} is not finite", pos) from None
        if text == "(":
            node = self.formula()
            self.t.expect(")")
            return node
        if kind == "name":
            if self.t.peek()[1] == "(":
                return self.call(text, pos)
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
        return sign * int(text)

    def _arguments(self) -> list[tuple[Node, int]]:
        """Comma-separated formulas up to ')'; positions kept for error messages."""
        self.t.expect("(")
        args: list[tuple[Node, int]] = []
        if self.t.peek()[1] == ")":
            self.t.next()
            return args
        while True:
            start = self.t.peek()[2]
            args.append((self.formula(), start))
            _, text, pos = self.t.next()
            if text == ")":
                return args
            if text != ",":
                raise self.t.error(f"expected ',' or ')', found {text!r}", pos)

    def call(self, name: str, pos: int) -> Node:
        if name in _VAR_MAKERS or name == "Var":
            self.t.expect("(")
            ints = [self._integer()]
            while self.t.peek()[1] == ",":
                self.t.next()
                ints.append(self._integer())
            self.t.expect(")")
            try:
                return _make_var(name, ints)
            except FormulaError as err:
                raise self.t.error(str(err), pos) from None
        if name == "IntCst":
            self.t.expect("(")
            value = self._integer()
            self.t.expect(")")
            try:
                return IntCst(value)
            except FormulaError as err:
                raise self.t.error(str(err), pos) from None
        if name == "Grad":
            args = self._arguments()
            if len(args) != 3:
                raise self.t.error(f"Grad takes 3 arguments (formula, variable, cotangent), got {len(args)}", pos)
            (f, _), (v, vpos), (e, _) = args
            try:
                return grad(f, v, e)
            except FormulaError as err:
                raise self.t.error(str(err), vpos) from None
        if name not in OPS:
            raise self.t.error(f"unknown operation {name!r}", pos)
        spec = get_op(name)
        args = self._arguments()
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


def parse_aliases(aliases: Iterable[str]) -> dict[str, Node]:
    """Parse alias declarations; ``Vi(dim)`` takes its position from the alias's rank in the list.

    >>> parse_aliases(["x = Vi(3)", "b = Vj(2, 2)"])["b"].params
    (2, 2, 1)
    """
    if isinstance(aliases, str):
        aliases = [aliases]
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
        try:
            ints = [int(s) for s in inside.split(",")]
        except ValueError:
            raise FormulaError(f"alias {text!r}: arguments must be integers") from None
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
    if not isinstance(aliases, Mapping):
        aliases = parse_aliases(aliases)
    if not text.strip():
        raise FormulaSyntaxError("empty formula", text, 0)
    return _Parser(text, aliases).parse()
