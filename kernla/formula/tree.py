"""The formula expression tree.

A formula is an immutable tree of :class:`Node` objects. Nodes are *hash-consed*: building the
same tree twice returns the very same object, so structural equality is identity, hashing is
O(1), and equal formulas map to the same compiled kernel.

Leaves are variables (``Var``: an i-indexed, j-indexed or parameter array of a fixed vector
dimension) and scalar constants (``IntCst``, ``RealCst``). Inner nodes apply an operation from
:mod:`kernla.formula.ops`; the operation checks arities and dimensions when the node is built.

>>> from kernla.formula.tree import Vi, Vj, Pm, call
>>> x, y, g = Vi(0, 3), Vj(1, 3), Pm(2, 1)
>>> k = call("Exp", -g * call("SqDist", x, y))
>>> k.dim, str(k)
(1, 'Exp(((-Var(2,1,2)) * SqDist(Var(0,3,0), Var(1,3,1))))')
>>> k is call("Exp", -g * call("SqDist", x, y))
True
"""

from __future__ import annotations

import itertools
import math
import sys
import weakref
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined]  # the C helper WeakValueDictionary uses
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import FormulaError
from . import limits

#: variable category 0, as in KeOps: indexed by i (one per output row)
CAT_I = 0
#: variable category 1: indexed by j (the reduced index)
CAT_J = 1
#: variable category 2: a parameter, the same for every pair
CAT_PARAM = 2
CATEGORY_NAMES = {CAT_I: "Vi", CAT_J: "Vj", CAT_PARAM: "Pm"}

#: the live nodes: operation name -> {key: weak reference}; the key is the node's argument tuple itself,
#: with its parameters' keys (``(args, keys)``) when it has parameters. An entry goes when its node dies
#: (see _forget); the per-operation tables stay, each made on first use (atomically: the factory is C code).
_interned: defaultdict[str, dict[tuple, _NodeRef]] = defaultdict(dict)


class _NodeRef(weakref.ref):
    """A weak reference to an interned node that knows its operation and key (as ``weakref.KeyedRef``, built faster).

    It names its table rather than holding it: a table holding its references is no cycle, so the references
    go with ``_interned`` (at exit, before the nodes: no callback runs then).
    """

    __slots__ = ("op", "key", "built")
    op: str
    key: tuple
    built: int  # the generation of build that made the node (its rules left it as it is), else 0: see find


def _forget(ref: _NodeRef) -> None:
    # called when a node dies, in whatever thread: one step that is atomic under the GIL and removes the
    # entry only if it still holds a dead reference (a new node of the same key may have taken its place)
    _remove_dead_weakref(_interned[ref.op], ref.key)


def _param_key(p: object) -> tuple:
    # distinguish 2 from 2.0 and -0.0 from 0.0 when interning
    return (type(p).__name__, p.hex() if isinstance(p, float) else p)


class Node:
    """One node of a formula tree (immutable, interned).

    Attributes: ``op`` (operation name), ``args`` (child nodes), ``params`` (compile-time
    integers or the constant's value), ``dim`` (vector dimension of the result).
    """

    __slots__ = ("op", "args", "params", "dim", "__weakref__")

    op: str
    args: tuple[Node, ...]
    params: tuple
    dim: int

    def __new__(cls, op: str, args: tuple[Node, ...] = (), params: tuple = (), dim: int | None = None):
        return _node(op, args, params, dim)

    def __setattr__(self, name, value):
        raise AttributeError("formula nodes are immutable")

    def __reduce__(self):
        # the distinct nodes, children first, each naming its arguments by index: pickle never recurses
        order = list(self.walk())
        index = {id(n): k for k, n in enumerate(order)}
        return (_rebuild, ([(n.op, tuple(index[id(a)] for a in n.args), n.params, n.dim) for n in order],))

    # -- structure -------------------------------------------------------------------------
    @property
    def is_var(self) -> bool:
        return self.op == "Var"

    @property
    def is_const(self) -> bool:
        return self.op in CONSTANT_OPS

    def walk(self) -> Iterator[Node]:
        """All distinct nodes of the tree, children before parents (see :func:`walk_many`)."""
        return walk_many((self,))

    def variables(self) -> list[Node]:
        """The distinct ``Var`` leaves, sorted by position."""
        return sorted((n for n in self.walk() if n.is_var), key=lambda v: v.params)

    def size(self) -> int:
        """Number of distinct nodes (a measure of formula complexity)."""
        return sum(1 for _ in self.walk())

    def replace(self, mapping: dict[Node, Node]) -> Node:
        """Copy of the tree with sub-trees substituted (``mapping`` keys are nodes)."""
        memo: dict[int, Node] = {}
        for node in self.walk():
            if node in mapping:
                memo[id(node)] = mapping[node]
            elif node.args:
                new_args = tuple(memo[id(a)] for a in node.args)
                memo[id(node)] = node if new_args == node.args else call(node.op, *new_args, params=node.params)
            else:
                memo[id(node)] = node
        return memo[id(self)]

    # -- printing --------------------------------------------------------------------------
    def __str__(self) -> str:
        from .printer import display  # cycle inside kernla/formula: printer -> ops -> this module

        return display(self)

    def __repr__(self) -> str:
        return f"Formula({str(self)!r}, dim={self.dim})"

    # -- arithmetic sugar (for building trees in Python) ------------------------------------
    def __add__(self, other):
        return call("Add", self, as_node(other))

    def __radd__(self, other):
        return call("Add", as_node(other), self)

    def __sub__(self, other):
        return call("Subtract", self, as_node(other))

    def __rsub__(self, other):
        return call("Subtract", as_node(other), self)

    def __mul__(self, other):
        return call("Mult", self, as_node(other))

    def __rmul__(self, other):
        return call("Mult", as_node(other), self)

    def __truediv__(self, other):
        return call("Divide", self, as_node(other))

    def __rtruediv__(self, other):
        return call("Divide", as_node(other), self)

    def __neg__(self):
        return call("Minus", self)

    def __or__(self, other):
        return call("Scalprod", self, as_node(other))


def free_position(*nodes: Node) -> int:
    """The first variable position above every variable the ``nodes`` read (0 if they read none).

    >>> free_position(Vi(0, 3) + Vj(4, 3), Pm(2, 1)), free_position(IntCst(1))
    (5, 0)
    """
    return 1 + max((v.params[0] for n in nodes for v in n.variables()), default=-1)


def walk_many(roots: Iterable[Node]) -> Iterator[Node]:
    """The distinct nodes reachable from ``roots``, children before parents, each node once.

    Depth-first, arguments left to right, roots in order: the order is deterministic, and a
    node shared by several roots comes with the first root that reaches it.

    >>> x, y = Vi(0, 1), Vj(1, 1)
    >>> [str(n) for n in walk_many([x + y, y * x])]
    ['Var(0,1,0)', 'Var(1,1,1)', '(Var(0,1,0) + Var(1,1,1))', '(Var(1,1,1) * Var(0,1,0))']
    """
    seen: set[int] = set()
    for root in roots:
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if id(node) in seen:
                continue
            if expanded or not node.args:
                seen.add(id(node))
                yield node
            else:
                stack.append((node, True))
                stack.extend((a, False) for a in reversed(node.args) if id(a) not in seen)


class _Building(Node):
    """A node while :func:`_node` fills it in: Node's layout with settable attributes; it is a Node when seen."""

    __slots__ = ()
    __setattr__ = object.__setattr__  # plain slot stores: a third of the cost of object.__setattr__(node, …) calls


def _node(op: str, args: tuple[Node, ...], params: tuple, dim: int | None, built: int = 0) -> Node:
    """The interned node of these fields: the live one, else a new one (of dimension ``dim``, computed if None).

    ``built``: :func:`build` calls it, the operation's simplification rules having left these fields as they are,
    with its generation (see :func:`find`).
    """
    table = _interned[op]
    key = (args, tuple(map(_param_key, params))) if params else args
    ref = table.get(key)
    if ref is not None:
        node = ref()
        if node is not None:
            return node
    if dim is None:
        dim = _spec(op).output_dim(tuple(a.dim for a in args), params)
    new = object.__new__(_Building)
    new.op = op
    new.args = args
    new.params = params
    new.dim = dim
    new.__class__ = Node  # type: ignore[assignment]  # the same layout: only the frozen __setattr__ changes
    ref = _NodeRef(new, _forget)
    ref.op, ref.key, ref.built = op, key, built
    while True:  # no lock: each step is atomic, and threads building the same node all get the first one stored
        entry = table.setdefault(key, ref)
        if entry is ref:
            return new
        node = entry()
        if node is not None:
            return node
        _remove_dead_weakref(table, key)  # a dead node's entry, its callback not yet run: retry without it


def _rebuild(table: list[tuple[str, tuple[int, ...], tuple, int]]) -> Node:
    """The last node of a table written by ``Node.__reduce__`` (interned again)."""
    built: list[Node] = []
    for op, args, params, dim in table:
        built.append(Node(op, tuple(built[k] for k in args), params, dim))
    return built[-1]


def Var(pos: int, dim: int, cat: int) -> Node:
    """Variable number ``pos`` (its position in the argument list) of dimension ``dim``."""
    for name, value in (("position", pos), ("dimension", dim), ("category", cat)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise FormulaError(f"variable {name} must be an integer, got {value!r}")
    if pos < 0:
        raise FormulaError(f"variable position must be >= 0, got {pos}")
    if dim < 1:
        raise FormulaError(f"variable dimension must be >= 1, got {dim}")
    limits.check_dim(dim, "variable dimension")
    if cat not in CATEGORY_NAMES:
        raise FormulaError(f"variable category must be 0 (i), 1 (j) or 2 (parameter), got {cat}")
    return Node("Var", (), (pos, dim, cat), dim)


def Vi(pos: int, dim: int) -> Node:
    """An i-indexed variable."""
    return Var(pos, dim, CAT_I)


def Vj(pos: int, dim: int) -> Node:
    """A j-indexed variable."""
    return Var(pos, dim, CAT_J)


def Pm(pos: int, dim: int) -> Node:
    """A parameter (same value for every i and j)."""
    return Var(pos, dim, CAT_PARAM)


def IntCst(value: int) -> Node:
    """An integer constant (dimension 1); it must fit in a float64, as it is evaluated in floats."""
    value = int(value)
    if abs(value) > sys.float_info.max:  # not printed: str() refuses integers of more than 4,300 digits
        raise FormulaError(
            f"an integer constant of about {int(abs(value).bit_length() * math.log10(2)) + 1} digits "
            "is too large for a floating-point number"
        )
    return Node("IntCst", (), (value,), 1)


def RealCst(value: float) -> Node:
    """A real constant (dimension 1); must be finite."""
    value = float(value)
    if not math.isfinite(value):
        raise FormulaError(f"constants must be finite, got {value}")
    return Node("RealCst", (), (value,), 1)


def as_node(value: object) -> Node:
    """A node from a node, an int or a float."""
    if isinstance(value, Node):
        return value
    if isinstance(value, bool):
        raise FormulaError("booleans are not formula constants")
    if isinstance(value, int):
        return IntCst(value)
    if isinstance(value, float):
        return RealCst(value)
    raise FormulaError(f"cannot use {type(value).__name__} {value!r} in a formula")


#: the registry's table of operations, bound by :func:`_spec` on first use
_ops: dict[str, Any] = {}


def _spec(op: str) -> Any:
    """The registry entry (an ``OpSpec``) of operation ``op``; FormulaError for unknown names."""
    global _ops
    spec = _ops.get(op)
    if spec is None:
        from .ops import OPS, get_op  # cycle inside kernla/formula: the registry imports this module

        _ops = OPS
        spec = get_op(op)
    return spec


def call(op: str, *args: Node | int | float, params: tuple = ()) -> Node:
    """Apply operation ``op`` (a name from the registry) to formula arguments.

    Integer compile-time parameters (``Pow``'s exponent, ``Elem``'s index, …) go in ``params``;
    the operation's simplification rules run first (``x * 1`` is ``x``, constants fold, …).
    """
    return apply(op, args, params)


def concat(parts: Iterable[Node]) -> Node:
    """The vector of the formulas ``parts``, in order (``Concat`` folded left to right).

    >>> concat([Vi(0, 2), Vj(1, 1)]).dim
    3
    """
    it = iter(parts)
    out = next(it)
    for p in it:
        out = call("Concat", out, p)
    return out


def apply(op: str, args: tuple, params: tuple = ()) -> Node:
    """:func:`call` with the arguments in a tuple (which a new node keeps as its ``args``: no copy).

    >>> x = Vi(0, 1)
    >>> apply("Add", (x, x)) is call("Add", x, x)
    True
    """
    spec = _ops.get(op) or _spec(op)
    nodes = args
    for a in args:
        if not isinstance(a, Node):
            nodes = tuple(as_node(a) for a in args)
            break
    if len(nodes) != spec.arity:
        raise FormulaError(f"{op} takes {spec.arity} formula argument(s), got {len(nodes)}")
    if len(params) != len(spec.param_names):
        raise FormulaError(
            f"{op} takes {len(spec.param_names)} integer parameter(s) "
            f"({', '.join(spec.param_names) or 'none'}), got {len(params)}"
        )
    if params:
        for pname, p in zip(spec.param_names, params):
            for q in p if isinstance(p, tuple) else (p,):  # a parameter is an integer or a tuple of them
                if not isinstance(q, int) or isinstance(q, bool):
                    raise FormulaError(f"{op}: parameter {pname} must be an integer, got {p!r}")
                if not -(2**31) < q < 2**31:  # compiled engines pass them as C ints
                    raise FormulaError(f"{op}: parameter {pname} = {q} is out of range (|{pname}| < 2**31)")
    return build(spec, nodes, tuple(params))


#: the operations whose nodes are constants (``Node.is_const``)
CONSTANT_OPS = ("IntCst", "RealCst")


#: the generations of build: the nodes it makes carry the current one (see find and start_generation)
_generations = itertools.count(1)
_generation = next(_generations)


def start_generation() -> int:
    """A new generation of :func:`build`, returned: the nodes it makes from now on carry it (see :func:`find`).

    >>> start_generation() < start_generation()
    True
    """
    global _generation
    _generation = generation = next(_generations)  # (next is atomic: threads get distinct generations)
    return generation


def find(spec: Any, args: tuple[Node, ...], since: int = 1) -> Node | None:
    """The live node that :func:`build` made for operation ``spec`` (an ``OpSpec``, without parameters) on ``args``,
    in generation ``since`` or later (:func:`start_generation`), else None.

    It is what build would return again: its checks passed, and its simplification rules left the node as it is
    (they depend on the arguments only). A node made otherwise (``Node(…)`` keeps its fields unsimplified,
    unpickling) is not found. A caller that builds many nodes, some of them again (the parser), finds those here
    for one look-up each; with ``since``, the parser builds once in each parse each node it needs.

    >>> from kernla.formula.ops import get_op
    >>> x = Vi(0, 2)
    >>> s = x + x
    >>> find(get_op("Add"), (x, x)) is s, find(get_op("Add"), (x, Vi(1, 2))), find(get_op("Add"), (x, x), 10**9)
    (True, None, None)
    """
    table = _interned.get(spec.name)
    ref = table.get(args) if table is not None else None
    if ref is None or ref.built < since:
        return None
    node = ref()
    if node is None or node.dim > limits.MAX_DIM:  # (the limit may have been lowered since)
        return None
    return node


def build(spec: Any, args: tuple[Node, ...], params: tuple) -> Node:
    """The node of operation ``spec`` (an ``OpSpec``) on ``args``, whose number and ``params`` are checked.

    Dimensions are checked, then the simplification rules run: this is :func:`apply` after its checks,
    for callers that have made them (the parser, for its operators).

    >>> from kernla.formula.ops import get_op
    >>> x = Vi(0, 2)
    >>> build(get_op("Mult"), (x, IntCst(1)), ()) is x
    True
    >>> build(get_op("Add"), (x, x), ()).args == (x, x), build(get_op("Add"), (IntCst(0), x), ()) is x
    (True, True)
    """
    # this runs for every node built: the dimension of a ``same`` or ``broadcast`` operation on arguments of one
    # dimension is that dimension (``keeps_equal_dims``), found without calling the rule
    n = len(args)
    dim = args[0].dim if n else 0
    if not (spec.keeps_equal_dims and (n == 1 or (n == 2 and args[1].dim == dim))):
        dims = tuple([a.dim for a in args])
        try:
            dim = spec.dim_rule(dims, params)
        except FormulaError:
            dim = spec.output_dim(dims, params)  # raises it again, naming the operation
    if dim > limits.MAX_DIM:
        limits.check_dim(dim, f"{spec.name}: the dimension")
    if spec.simplify is not None:
        # the rules of most operations only apply when an argument is a constant (``spec.constant_rules``)
        may_simplify = not spec.constant_rules
        for a in args:  # a loop, not any(…), and no call: this runs for every node built
            if may_simplify:
                break
            may_simplify = a.op in CONSTANT_OPS
        if may_simplify:
            simplified = spec.simplify(args, params)
            if simplified is not None:
                return simplified
    return _node(spec.name, args, params, dim, _generation)


def swap_ij(formula: Node) -> Node:
    """The same formula with the roles of i- and j-variables exchanged (for reductions over i)."""
    mapping = {}
    for v in formula.variables():
        pos, dim, cat = v.params
        if cat != CAT_PARAM:
            mapping[v] = Var(pos, dim, CAT_J if cat == CAT_I else CAT_I)
    return formula.replace(mapping)
