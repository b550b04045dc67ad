"""The registry core: :class:`OpSpec`, the ``OPS`` table, and the helpers every family of operations shares.

Each :class:`OpSpec` holds everything kernla knows about an operation: its name, arity and
integer parameters, the output-dimension rule, a NumPy evaluation (arrays of shape ``(..., dim)``),
a C emitter (lists of per-component C expressions in, per-component C expressions out, type
``T``), its reverse-mode derivative, optional simplification rules, and the facts other modules
need (``elementwise`` for the differentiator, ``symbol`` for the parser and the printer, ``c_fast``
for engines that opt into fast float code). The families (``arithmetic``, ``elementwise``, …) each
call :func:`register` once per operation.

>>> from kernla.formula.ops import get_op
>>> get_op("SqDist").output_dim((3, 3), ())
1
>>> get_op("Add").symbol, get_op("Add").elementwise, get_op("SqDist").elementwise
('+', True, False)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ...errors import FormulaError
from ..tree import CONSTANT_OPS, IntCst, Node, RealCst, call

#: the C expressions of a node's components, one string per component
CExprs = list[str]
#: ``grad(node, g)``: one cotangent (or ``None`` for a zero) per argument of ``node``
GradRule = Callable[[Node, Node], tuple]
#: ``c_fast(emitter, node, exprs)``: per-component C of ``node``; ``exprs(n)`` gives the C of any
#: node below ``node`` (already emitted: the generator visits children first)
FastEmitter = Callable[..., CExprs]


@dataclass(frozen=True)
class OpSpec:
    """Definition of one operation (see the module docstring).

    ``elementwise``: the operation applies component by component, so its derivative rule is also
    right for a scalar cotangent standing for the same value in every component (when no argument
    is itself broadcast; :mod:`kernla.formula.diff` relies on it). ``symbol``: the operator that
    spells it in formula strings (infix for two arguments, prefix for one). ``c_fast``: a faster C
    emitter for float evaluation, used when the engine asks for it (``fast=True`` in
    :mod:`kernla.formula.codegen`); it may call ``kl_*`` functions that only such engines define.
    ``unroll_cost``: how much each output component weighs in the unrolled size the compiled engines
    bound (:func:`kernla.formula.codegen.unrolled_size`), for operations C compilers are slow on.
    """

    name: str
    arity: int
    dim_rule: Callable[[tuple[int, ...], tuple], int]
    numpy: Callable[..., np.ndarray]
    c: Callable[..., CExprs]
    grad: GradRule | None = None
    param_names: tuple[str, ...] = ()
    simplify: Callable[[tuple, tuple], Node | None] | None = None
    fold: bool = True  # constant-fold when every argument is a constant
    #: the ``simplify`` rules fire only when an argument is a constant, so nodes without one skip them;
    #: ``register`` sets it when folding is the only rule
    constant_rules: bool = False
    doc: str = ""
    elementwise: bool = False
    symbol: str | None = None
    c_fast: FastEmitter | None = None
    unroll_cost: int = 1  # weight of each output component in codegen.unrolled_size (compile time)
    #: arguments of one dimension give a result of that dimension (the rule is ``same`` or ``broadcast``), so
    #: :func:`~kernla.formula.tree.build` need not call it for them; ``register`` sets it
    keeps_equal_dims: bool = False

    def output_dim(self, dims: tuple[int, ...], params: tuple) -> int:
        try:
            return self.dim_rule(dims, params)
        except FormulaError as err:
            raise FormulaError(f"{self.name}: {err}") from None


#: operation name -> its OpSpec: every operation of the formula language (``register`` adds one)
OPS: dict[str, OpSpec] = {}
_CONSTANT_OPS = CONSTANT_OPS  # as Node.is_const, without the property call


def get_op(name: str) -> OpSpec:
    """The registry entry for ``name``; a clear error for unknown names."""
    try:
        return OPS[name]
    except KeyError:
        raise FormulaError(f"unknown operation {name!r}") from None


def operation_names() -> Sequence[str]:
    """Names of every registered operation."""
    return sorted(OPS)


def register(spec: OpSpec) -> None:
    """Add ``spec`` to the registry (constant folding appended to its simplification rules)."""
    if spec.name in OPS:
        raise FormulaError(f"operation {spec.name!r} is already registered")
    if spec.fold:
        spec = replace(spec, simplify=_with_folding(spec), constant_rules=spec.constant_rules or spec.simplify is None)
    spec = replace(spec, keeps_equal_dims=spec.dim_rule in (same, broadcast))
    OPS[spec.name] = spec


def _with_folding(spec: OpSpec):
    folder = _fold_constants(spec)
    custom = spec.simplify
    if custom is None:
        return folder

    def simplify(args: tuple, params: tuple) -> Node | None:
        # the operation's own rules first: they are exact (-IntCst(n) stays an IntCst beyond 2**53,
        # where folding through float64 would turn it into a rounded RealCst)
        return custom(args, params) or folder(args, params)

    return simplify


def _fold_constants(spec: OpSpec):
    def fold(args: tuple, params: tuple) -> Node | None:
        for a in args:  # a loop, not all(…): this runs for every node built
            if a.op not in _CONSTANT_OPS:
                return None
        if not args:
            return None
        if spec.output_dim(tuple(a.dim for a in args), params) != 1:
            return None
        with np.errstate(all="ignore"):
            folded = spec.numpy(*[np.array([a.params[0]], dtype=np.float64) for a in args], *params)
        value = float(np.asarray(folded).reshape(-1)[0])
        if not math.isfinite(value):
            return None
        if all(a.op == "IntCst" for a in args) and value.is_integer() and abs(value) < 2**53:
            return IntCst(int(value))
        return RealCst(value)

    return fold


# ---------------------------------------------------------------------------------------------
# dimension rules
# ---------------------------------------------------------------------------------------------
def same(dims, params):
    """The dimension of the (first) argument."""
    return dims[0]


def broadcast(dims, params):
    """Equal dimensions, or 1 broadcast to the others."""
    if len(dims) == 2 and dims[0] == dims[1]:  # the common case, first: this runs for every node built
        return dims[0]
    out = max(dims)
    for d in dims:
        if d not in (1, out):
            raise FormulaError(
                f"dimensions {' and '.join(map(str, dims))} are incompatible (they must be equal, or 1 to broadcast)"
            )
    return out


def equal_to_scalar(dims, params):
    """Arguments of equal dimensions, a scalar result."""
    if len(set(dims)) != 1:
        raise FormulaError(f"arguments must have equal dimensions, got {' and '.join(map(str, dims))}")
    return 1


def scalar(dims, params):
    """A scalar result, whatever the arguments."""
    return 1


# ---------------------------------------------------------------------------------------------
# helpers for C emitters and derivatives
# ---------------------------------------------------------------------------------------------
def bc(exprs: CExprs, dim: int) -> CExprs:
    """A scalar's C expression repeated to ``dim`` components (vectors unchanged)."""
    return exprs * dim if len(exprs) == 1 else exprs


def c_elementwise(fmt: str):
    """C emitter applying ``fmt`` (``{0}``, ``{1}``, … the argument components) component-wise."""

    def emit(e, args, params, dim):
        cols = [bc(a, dim) for a in args]
        return [fmt.format(*(c[k] for c in cols), *params) for k in range(dim)]

    return emit


def ub(g: Node | None, dim: int) -> Node | None:
    """Cotangent ``g`` brought to an argument of dimension ``dim``.

    A vector cotangent of a broadcast scalar argument is summed; a scalar cotangent of a
    vector argument is repeated (adding a zero vector of that dimension).
    """
    if g is None or g.dim == dim:
        return g
    if dim == 1:
        return call("Sum", g)
    if g.dim == 1:
        return g + call("ElemT", IntCst(0), params=(dim, 0))
    raise FormulaError(f"internal: cotangent of dimension {g.dim} for an argument of dimension {dim}")


def ub_args(n: Node, *parts: Node | None) -> tuple:
    """Each cotangent of ``parts`` brought to the dimension of the matching argument of ``n``."""
    return tuple(ub(p, a.dim) for p, a in zip(parts, n.args))


def no_derivative(n: Node, g: Node) -> tuple:
    """Zero cotangents: the derivative of a piecewise-constant operation."""
    return (None,) * len(n.args)


def is_const(node: Node, value) -> bool:
    """Whether ``node`` is the constant ``value``."""
    return node.op in _CONSTANT_OPS and node.params[0] == value
