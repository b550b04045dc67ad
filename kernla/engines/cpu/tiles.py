"""Inner products by matrix-multiply tiles: find them in a formula, and prepare their operands per call.

A formula that reaches the j-variables through an inner product or a squared distance of vectors of
dimension D ≥ :data:`MIN_DIM` — ``SqDist(a, b)``, ``SqNorm2(a - b)``, ``Sum(Square(a - b))``,
``Norm2(a - b)``, ``(a | b)``, ``Sum(a * b)``, with ``a`` a function of i-variables and parameters and
``b`` of j-variables and parameters — is rewritten so that each such *site* is read from a per-pair
tile value. The CPU kernel computes the (row block × column tile) matrix of ⟨a_i, b_j⟩ with a
register-blocked micro-kernel (``kl_tiles.h``), then forms ``max(|a_i|² + |b_j|² − 2⟨a_i, b_j⟩, 0)``
for a distance, and evaluates the rest of the formula on that scalar.

Rounding (float32 or float64, unit roundoff u): a distance is computed on operands centred on the
mean c of the b_j (distances do not change), and the expansion's absolute error is at most about
``(D + 3) u (|a_i − c|² + |b_j − c|²)`` — relative to the squared distance it is large for two points
much closer to each other than to c (the exact per-component path has a relative error of about
``D u``). An inner product's error bound, ``D u |a_i| |b_j|``, is the one of the exact path.
``KERNLA_CPU_TILES=off`` (or ``MIN_DIM = 0`` at run time) keeps the exact path for every formula;
data with a non-finite operand value runs the exact path too.

>>> from kernla.formula import Vi, Vj, call
>>> k = call("Exp", -call("SqDist", Vi(0, 64), Vj(1, 64)))
>>> p = plan((k,), 16, 2)
>>> [s.kind for s in p.sites], str(p.formulas[0])
(['sqdist'], 'Exp((-Var(2,1,1)))')
>>> plan((call("SqDist", Vi(0, 3), Vj(1, 3)),), 16, 2) is None  # below the threshold: the exact path
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...formula.evaluate import evaluate
from ...formula.tree import CAT_I, CAT_J, CAT_PARAM, Node, Var, call

#: the smallest dimension an inner product is computed by tiles at; 0: never (``KERNLA_CPU_TILES=off``,
#: else ``KERNLA_CPU_TILE_DIM``); read at each call
MIN_DIM = 0 if os.environ.get("KERNLA_CPU_TILES", "").lower() in ("off", "0", "no") else 16
if os.environ.get("KERNLA_CPU_TILE_DIM", "").isdigit():
    MIN_DIM = int(os.environ["KERNLA_CPU_TILE_DIM"])

#: columns of one micro-kernel panel, per value type: two 32-byte vectors
PANEL = {"float32": 16, "float64": 8}


@dataclass(frozen=True)
class Site:
    """One inner product of a formula: ``kind`` is ``"sqdist"`` (|a - b|²) or ``"dot"`` ((a|b))."""

    kind: str
    left: Node  # i-variables and parameters
    right: Node  # j-variables and parameters

    @property
    def dim(self) -> int:
        return self.left.dim


@dataclass(frozen=True)
class TilePlan:
    """The rewritten formulas (site ``s`` read as ``Var(base + s, 1, j)``) and the sites."""

    formulas: tuple[Node, ...]
    sites: tuple[Site, ...]
    base: int

    def is_tile_value(self, var: Node) -> bool:
        return var.params[0] >= self.base


def _side(node: Node) -> int | None:
    """CAT_I or CAT_J when ``node``'s variables are of that category (and parameters), else None."""
    cats = {v.params[2] for v in node.variables()} - {CAT_PARAM}
    return cats.pop() if len(cats) == 1 else None


def _pair(a: Node, b: Node) -> tuple[Node, Node] | None:
    """(i-side, j-side) of two operands of one dimension, in either order."""
    if a.dim != b.dim:
        return None
    sides = (_side(a), _side(b))
    if sides == (CAT_I, CAT_J):
        return a, b
    if sides == (CAT_J, CAT_I):
        return b, a
    return None


#: the formula operation Sum (the sum of a vector's components, not the reduction)
_SUM_OP = "Sum"


def _match(node: Node) -> tuple[str, tuple[Node, Node] | None, bool]:
    """(kind, operands, root is a norm) of the inner product ``node`` computes, or ("", None, False)."""
    op, args = node.op, node.args
    if op == "SqDist":
        return "sqdist", _pair(*args), False
    if op == "Scalprod":
        return "dot", _pair(*args), False
    inner = args[0] if len(args) == 1 else None
    if op in ("SqNorm2", "Norm2") and inner is not None and inner.op == "Subtract":
        return "sqdist", _pair(*inner.args), op == "Norm2"
    if op == _SUM_OP and inner is not None and inner.op == "Square" and inner.args[0].op == "Subtract":
        return "sqdist", _pair(*inner.args[0].args), False
    if op == _SUM_OP and inner is not None and inner.op == "Mult":
        return "dot", _pair(*inner.args), False
    return "", None, False


def plan(formulas: Sequence[Node], min_dim: int, base: int) -> TilePlan | None:
    """The tile plan of ``formulas`` for inner products of dimension ≥ ``min_dim`` (None: nothing to tile).

    ``base``: a position above every variable of the reduction (the tile values take ``base + s``).
    """
    if min_dim <= 0:
        return None
    nodes = [n for f in formulas for n in f.walk()]
    sites: list[Site] = []
    mapping: dict[Node, Node] = {}
    for node in nodes:
        kind, pair, norm = _match(node)
        if pair is None or pair[0].dim < min_dim or node in mapping:
            continue
        site = Site(kind, *pair)
        if site not in sites:
            sites.append(site)
        value = Var(base + sites.index(site), 1, CAT_J)
        mapping[node] = call("Sqrt", value) if norm else value
    if not sites:
        return None
    return TilePlan(tuple(f.replace(mapping) for f in formulas), tuple(sites), base)


def _operand(node: Node, arrays: Sequence[np.ndarray], rows: int, dtype: np.dtype) -> np.ndarray:
    """``node`` evaluated on every row, (rows, D) in ``dtype``."""
    if node.is_var:
        return np.asarray(arrays[node.params[0]], dtype)
    value = evaluate(node, {v.params[0]: arrays[v.params[0]] for v in node.variables()}, dtype)
    return np.broadcast_to(value, (rows, node.dim))


def operands(
    tiles: TilePlan, arrays: Sequence[np.ndarray], nx: int, ny: int, dtype: np.dtype
) -> list[np.ndarray] | None:
    """The kernel's extra arrays, four per site (None when an operand is not finite: the exact path).

    ``a`` (nx, D) row-major; ``b`` packed in panels of :data:`PANEL` columns, (panels, D, PANEL),
    zero-padded; ``|a|²`` (nx,) and ``|b|²`` (ny,), both operands centred for a distance.
    """
    width = PANEL[dtype.name]
    out: list[np.ndarray] = []
    for site in tiles.sites:
        a, b = _operand(site.left, arrays, nx, dtype), _operand(site.right, arrays, ny, dtype)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return None
        if site.kind == "sqdist":
            centre = b.mean(axis=0, dtype=np.float64).astype(dtype)
            a, b = a - centre, b - centre
        panels = -(-ny // width)
        packed = np.zeros((panels * width, site.dim), dtype)
        packed[:ny] = b
        packed = np.ascontiguousarray(packed.reshape(panels, width, site.dim).transpose(0, 2, 1))
        norms_a = np.einsum("ij,ij->i", a, a) if site.kind == "sqdist" else np.zeros(1, dtype)
        norms_b = np.einsum("ij,ij->i", b, b) if site.kind == "sqdist" else np.zeros(1, dtype)
        out += [np.ascontiguousarray(a), packed, norms_a, norms_b]
    return out
