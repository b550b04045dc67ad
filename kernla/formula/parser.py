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

import contextlib
import gc
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import FormulaError, FormulaSyntaxError
from . import limits
from .diff import grad
from .macros import MACROS
from .ops import OPS, OpSpec, get_op
from .tree import CAT_I, CAT_J, CAT_PARAM, IntCst, Node, RealCst, Var, apply, build, find, start_generation

_REAL = r"(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+"
_INT = r"[0-9]+"
_NAME = r"[A-Za-z_][A-Za-z_0-9]*"
_PUNCT = r"[-+*/|(),=\[\]]"
#: one token (after blanks), by kind; a non-blank character that starts no token is ``bad``
_TOKEN = re.compile(rf"\s*(?:(?P<real>{_REAL})|(?P<int>{_INT})|(?P<name>{_NAME})|(?P<punct>{_PUNCT})|(?P<bad>\S))")
#: the same tokens as bare strings, for ``findall`` (their kinds follow from their first characters). No group, no
#: ``\s*``: ``findall`` skips the blanks, where nothing matches; the commonest kinds first, which no other kind's
#: first character starts (the reals before the integers they begin with): half the time of ``_TOKEN``'s order
_TOKEN_TEXT = re.compile(rf"{_PUNCT}|{_NAME}|{_REAL}|{_INT}|\S")
_DIGITS = frozenset("0123456789")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_VAR_MAKERS = {"Vi": CAT_I, "Vj": CAT_J, "Pm": CAT_PARAM}
#: names the language reserves besides the operations: variable makers, ``IntCst`` and ``Grad``
_KEYWORDS = frozenset({"Var", "IntCst", "Grad", *_VAR_MAKERS, *MACROS})
#: operator symbols (``OpSpec.symbol``) -> operations; the grammar fixes their precedence, loosest first
_INFIX = {spec.symbol: spec for spec in OPS.values() if spec.symbol is not None and spec.arity == 2}
_PREFIX = {spec.symbol: spec for spec in OPS.values() if spec.symbol is not None and spec.arity == 1}
_LEVELS = (("|",), ("+", "-"), ("*", "/"))
assert sorted(_INFIX) == sorted(s for level in _LEVELS for s in level), "an operator symbol without a precedence"
#: infix symbol -> (its precedence: index in _LEVELS, higher binds tighter; its operation)
_BINARY = {symbol: (k, _INFIX[symbol]) for k, level in enumerate(_LEVELS) for symbol in level}


def _int_value(digits: str) -> int:
    """The value of an integer literal (ASCII digits); FormulaError beyond float64's range, before ``int`` runs."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > limits.MAX_INT_DIGITS:
        raise FormulaError(
            f"the integer constant {digits[:20]}… ({len(digits)} digits) is too large for a floating-point number"
        )
    return int(digits)


def _kind(token: str) -> str:
    """The kind of a token of ``_TOKEN_TEXT`` (the group of ``_TOKEN`` that matches it); ``end`` for ``""``."""
    if not token:
        return "end"
    first = token[0]
    if first in _NAME_START:
        return "name"
    if first in _DIGITS or (first == "." and len(token) > 1):
        return "int" if token.isdigit() else "real"
    return "punct" if len(token) == 1 and token in "-+*/|(),=[]" else "bad"


#: formulas of at least this many tokens are parsed with the cyclic garbage collector paused (see _collector_paused)
_PAUSE_GC_TOKENS = 4096


@contextlib.contextmanager
def _collector_paused(pause: bool) -> Iterator[None]:
    """The cyclic garbage collector paused (if ``pause`` and it runs), then resumed.

    A long formula builds many nodes that all stay alive: the collector's full passes over them, which
    it starts each time the live objects grow by a quarter, cost a third of the parse of a 512 KB formula,
    and a parse leaves no cycles to collect. The collector is process-wide: a parse that finds it paused
    (by the caller, or by another thread's parse) leaves it so, and the parse that paused it resumes it.

    After a parse that succeeds, the young objects (the parse's nodes, their argument tuples and weak
    references, with the few others made since the last collection) go to the oldest generation, in
    constant time (``gc.freeze`` then ``gc.unfreeze``), where only full collections visit them: the
    young collections would visit each once or twice for no cycle, a fifth of the parse of a 512 KB
    formula. Not when objects are frozen already (``gc.get_freeze_count()``): unfreezing would thaw them.

    >>> with _collector_paused(True):
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    pause = pause and gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
        if pause and not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
    finally:
        if pause:
            gc.enable()


def check_characters(text: str) -> None:
    """FormulaSyntaxError at the first character of ``text`` that starts no token."""
    for m in _TOKEN.finditer(text):
        if m.lastgroup == "bad":
            raise FormulaSyntaxError(f"unexpected character {m.group('bad')!r}", text, m.start("bad"))


class _Tokens:
    """The tokens of a formula string, read in one linear pass (``re.findall``), with their kinds.

    Tokens are named by their index (the end by ``len(tokens)``); :meth:`error` finds the
    character position of one, by reading the string again, only when there is an error to report.
    """

    def __init__(self, text: str):
        self.text = text
        self.items: list[str] = _TOKEN_TEXT.findall(text)  # every character is blank or in a token
        self.n = len(self.items)
        self.items.append("")  # the end
        self.kinds = {"": "end"}
        self.i = 0

    def kind(self, token: str) -> str:
        kind = self.kinds.get(token)
        if kind is None:
            kind = self.kinds[token] = _kind(token)
        return kind

    def peek(self) -> tuple[str, str, int]:
        token = self.items[min(self.i, self.n)]
        return self.kind(token), token, min(self.i, self.n)

    def next(self) -> tuple[str, str, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        kind, text, index = self.next()
        if text != value:
            found = "the end of the formula" if kind == "end" else repr(text)
            raise self.error(f"expected {value!r}, found {found}", index)

    def position(self, index: int) -> int:
        """The character position of token ``index``."""
        if index >= self.n:
            return len(self.text)
        m = next(itertools.islice(_TOKEN.finditer(self.text), index, None))
        assert m.lastgroup is not None  # every alternative of _TOKEN is a named group
        return m.start(m.lastgroup)

    def error(self, message: str, index: int) -> FormulaSyntaxError:
        return FormulaSyntaxError(message, self.text, self.position(index))


class _Group:
    """The open argument list of operation ``name`` (or ``Grad``), opened at token ``pos``."""

    __slots__ = ("name", "pos", "args", "start")

    def __init__(self, name: str, pos: int, start: int):
        self.name = name
        self.pos = pos
        self.args: list[tuple[Node, int]] = []  # the arguments read so far, with their token indices
        self.start = start  # the token index of the argument being read


#: a pending operator or open bracket: (kind, what, token index, left operand). An infix operator's kind is its
#: precedence (0, 1 or 2), ``what`` its OpSpec, and it holds its left operand; the others hold None there:
#: (_PREFIX_OP, OpSpec, index, None), (_PAREN, None, index, None) and (_GROUP, _Group, index, None)
_Pending = tuple[int, Any, int, Any]
#: the kinds of pending entries besides the infix operators': the operators that an infix one ends are those on
#: top of the stack of kind >= its precedence, so the brackets rank below them all (and a prefix operator never
#: waits for an infix one: see _Parser.parse)
_PAREN, _GROUP, _PREFIX_OP = -2, -1, len(_LEVELS)


class _Parser:
    """Operator-precedence parsing with explicit stacks: no recursion, so nesting is bounded by memory only.

    ``ops`` holds the pending operators and open brackets, innermost last, each infix operator with
    its left operand. A prefix operator binds tighter than every infix one: it applies as soon as its
    operand is complete. An infix operator waits until the next one is known to bind no tighter (all
    are left-associative); a closing bracket or the end applies every operator back to its bracket.
    Positions are token indices until an error needs a character position. Within one parse,
    ``leaves`` remembers the node of each number or alias; a repeated sub-formula is found in the
    interning tables (:func:`~kernla.formula.tree.find`) or in ``memo``: each distinct one is built once.
    """

    def __init__(self, text: str, aliases: Mapping[str, Node], declared: list | None = None):
        self.t = _Tokens(text)
        self.aliases = aliases
        self.declared = declared  # collects the inline variables (Vi(0, 3), Var(1, 3, 1), …) when a list
        self.leaves: dict[str, Node] = {}
        self.int_lists = False  # whether a [2, 3] literal has been read
        self.memo: dict[tuple[str, tuple, tuple], Node] = {}  # what find cannot find: see _build
        self.since = start_generation()  # find finds the nodes this parse built (see _build)

    def parse(self) -> Node:
        tokens, leaves, since = self.t.items, self.leaves, self.since
        ops: list[_Pending] = []
        i = 0  # the index of the next token
        fresh: Node | None = None  # the last node the fast path below made anew of its arguments
        while True:
            # an operand: a leaf seen before (the fast path), else read by _operand
            token = tokens[i]
            i += 1
            node = leaves.get(token)
            if node is None or tokens[i] == "(":
                if token == "(":  # (_operand written out for its commonest case: an open parenthesis)
                    ops.append((_PAREN, None, i - 1, None))
                    continue
                self.t.i = i
                node = self._operand(token, i - 1, ops)
                i = self.t.i
                if node is None:  # a prefix operator or an open bracket was pushed: an operand follows
                    continue
            # `node` is a complete operand: it ends the prefix operators before it; an infix operator or a
            # closing token follows
            while True:
                while ops and ops[-1][0] == _PREFIX_OP:
                    _, spec, index, _ = ops.pop()
                    node = self._apply(spec, (node,), (), index)
                token = tokens[i]
                i += 1
                binary = _BINARY.get(token)
                # apply the pending infix operators that bind at least as tightly: all of them (back to the
                # bracket) before a closing token or the end
                level = 0 if binary is None else binary[0]
                while ops and ops[-1][0] >= level:
                    _, spec, index, left = ops.pop()
                    node = self._apply(spec, (left, node), (), index)
                if binary is not None:
                    # the fast path of a chain (X + Y - Z): while the right operand is a leaf seen before, and the
                    # operator after it binds no tighter than this one, this one applies at once
                    spec, right = binary[1], leaves.get(tokens[i])
                    while (
                        right is not None
                        and tokens[i + 1] != "("
                        and ((after := _BINARY.get(tokens[i + 1])) is None or after[0] <= level)
                    ):
                        args = (node, right)  # (_apply written out: the hottest lines)
                        # a node just made of its own arguments (fresh) is an argument of no node: find would miss
                        found = find(spec, args, since) if node is not fresh else None
                        node = found if found is not None else self._build(spec, args, (), i - 1)
                        fresh = node if node.args is args else None
                        i += 1
                        if after is None or after[0] < level:
                            break  # a closing token, or an operator that may end pending ones: the general path
                        spec, right = after[1], leaves.get(tokens[i + 1])  # the same precedence: the chain goes on
                        i += 1
                    else:
                        ops.append((level, spec, i - 1, node))
                        break  # its right operand follows
                    continue
                if not ops:
                    if not token:
                        return node
                    raise self.t.error(f"unexpected {token!r} after a complete formula", i - 1)
                if token == ")" and ops[-1][0] == _PAREN:  # (_close written out for a closing parenthesis)
                    ops.pop()
                    continue
                self.t.i = i
                node = self._close(token, i - 1, ops, node)
                i = self.t.i
                if node is None:  # after a ',': an operand follows
                    break

    def _operand(self, token: str, index: int, ops: list[_Pending]) -> Node | None:
        """Read the start of an operand: the operand if it is complete, else None (an operator or bracket pushed)."""
        if token in _PREFIX:
            ops.append((_PREFIX_OP, _PREFIX[token], index, None))
            return None
        if token == "+":  # unary plus
            return None
        if token == "(":
            ops.append((_PAREN, None, index, None))
            return None
        if token == "[":
            return self._int_list(index)
        kind = self.t.kind(token)
        if kind == "name" and self.t.peek()[1] == "(":
            if token in _VAR_MAKERS or token in ("Var", "IntCst"):
                return self._integer_call(token, index)
            if token != "Grad" and token not in OPS and token not in MACROS:
                raise self.t.error(f"unknown operation {token!r}", index)
            self.t.next()
            group = _Group(token, index, self.t.peek()[2])
            if self.t.peek()[1] == ")":
                self.t.next()
                return self._call(group)
            ops.append((_GROUP, group, index, None))
            return None
        node = self.leaves[token] = self._leaf(kind, token, index)
        return node

    def _close(self, token: str, index: int, ops: list[_Pending], node: Node) -> Node | None:
        """After the complete operand ``node`` inside the bracket ``ops[-1]``: read ``,`` or ``)``.

        The operand the closed bracket makes, or None after a ``,`` (an operand follows).
        """
        what, group, _, _ = ops[-1]
        if what == _PAREN:
            if token != ")":
                found = "the end of the formula" if not token else repr(token)
                raise self.t.error(f"expected ')', found {found}", index)
            ops.pop()
            return node
        group.args.append((node, group.start))
        if token == ",":
            group.start = self.t.peek()[2]
            return None
        if token != ")":
            raise self.t.error(f"expected ',' or ')', found {token!r}", index)
        ops.pop()
        return self._call(group)

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
                var = _make_var(name, ints)
                if self.declared is not None:
                    self.declared.append(var)
                return var
            if len(ints) != 1:
                raise FormulaError(f"IntCst takes one integer, got {len(ints)}")
            return IntCst(ints[0])
        except FormulaSyntaxError:
            raise
        except FormulaError as err:
            raise self.t.error(str(err), pos) from None

    def _int_list(self, pos: int) -> Any:
        """``[2, 3]`` (after its ``[``): a list of integers, an operation's parameter."""
        items: list[int] = []
        while self.t.peek()[1] != "]":
            if items:
                self.t.expect(",")
            items.append(self._integer())
        self.t.next()
        self.int_lists = True
        return _IntList(tuple(items), pos)

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
        if name in MACROS:
            return self._macro(group)
        spec = get_op(name)
        n_params = len(spec.param_names)
        if len(args) != spec.arity + n_params:
            raise self.t.error(f"{name} takes {spec.arity + n_params} argument(s), got {len(args)}", pos)
        formulas = tuple(a for a, _ in args[: spec.arity])
        params = []
        for (node, apos), pname in zip(args[spec.arity :], spec.param_names):
            if node.op not in ("IntCst", _IntList.op):
                raise self.t.error(f"{name}: {pname} must be an integer literal or a list of them", apos)
            params.append(node.params[0])
        return self._apply(spec, formulas, tuple(params), pos)

    def _macro(self, group: _Group) -> Node:
        """A word of :mod:`kernla.formula.macros`, expanded."""
        name, pos, args = group.name, group.pos, group.args
        assert name is not None  # parentheses are closed by _close
        macro = MACROS[name]
        if len(args) != macro.arity + macro.n_params:
            raise self.t.error(f"{name} takes {macro.arity + macro.n_params} argument(s), got {len(args)}", pos)
        ints = []
        for node, apos in args[macro.arity :]:
            if node.op != "IntCst":
                raise self.t.error(f"{name}: expected an integer literal", apos)
            ints.append(node.params[0])
        try:
            return macro.expand(*(a for a, _ in args[: macro.arity]), *ints)
        except FormulaError as err:
            raise self.t.error(str(err), pos) from None

    def _apply(self, spec: OpSpec, args: tuple, params: tuple, pos: int) -> Node:
        """Operation ``spec`` on ``args``, as many as it takes (the grammar or :meth:`_call` saw to it)."""
        node = None if params else find(spec, args, self.since)
        return node if node is not None else self._build(spec, args, params, pos)

    def _build(self, spec: OpSpec, args: tuple, params: tuple, pos: int) -> Node:
        """:meth:`_apply` when :func:`~kernla.formula.tree.find` found no node.

        It finds only nodes :func:`~kernla.formula.tree.build` made for these arguments in this parse: the
        others (a node made before, a node of another operation that the rules gave, one with parameters) the
        parse remembers itself, in ``memo``, to build each once. (Nor does it find any for a ``[…]``, an error.)
        """
        if self.int_lists:  # a ``[…]`` was read: it may be a parameter (see _call), never an argument
            for a in args:
                if isinstance(a, _IntList):
                    raise self.t.error(
                        f"a list of integers is an operation's parameter, not an argument of {spec.name}", a.pos
                    )
        memo = self.memo
        if memo:
            node = memo.get((spec.name, params, args))
            if node is not None:
                return node
        try:  # apply checks the parameters; without any, the nodes of the right number need no check
            node = apply(spec.name, args, params) if params else build(spec, args, params)
        except FormulaError as err:
            raise self.t.error(str(err), pos) from None
        if params or node.args is not args:  # not a node build made of these arguments: find will not find it
            memo[spec.name, params, args] = node
        return node


class _IntList:
    """A ``[2, 3]`` literal while parsing: only an operation's parameter may be one."""

    op = "IntList"

    def __init__(self, items: tuple, pos: int):
        self.params, self.pos = (items,), pos


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


def parse(text: str, aliases: Mapping[str, Node] | Iterable[str] = (), declared: list | None = None) -> Node:
    """Parse a formula string; ``aliases`` is a mapping name → variable, or alias strings.

    ``declared``, a list, receives every variable written inline, even one the formula simplifies
    away (``Grad(x + Vj(1, 3), x, e)`` no longer reads ``Vj(1, 3)``, but its argument slot stays).

    >>> found = []; f = parse("Grad(X + Vj(1, 2), X, Vi(2, 2))", ["X = Vi(0, 2)"], found)
    >>> sorted({v.params for v in f.variables()}), [v.params for v in found]
    ([(2, 2, 0)], [(1, 2, 1), (2, 2, 0)])
    """
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
    try:
        parser = _Parser(text, aliases, declared)
        with _collector_paused(parser.t.n >= _PAUSE_GC_TOKENS):
            node = parser.parse()
    except Exception:
        check_characters(text)  # a character that starts no token is the first error, wherever it is
        raise
    if isinstance(node, _IntList):
        raise FormulaSyntaxError("a list of integers is not a formula", text, 0)
    return node
