"""Tensor contractions of the vector components, as KeOps' ``TensorDot`` and ``Kron``.

``TensorDot(a, b, dimfa, dimfb, contfa, contfb, permute)`` reads ``a`` as a row-major tensor of
shape ``dimfa`` and ``b`` of shape ``dimfb``, contracts axis ``contfa[k]`` of a with axis
``contfb[k]`` of b, and lays out the kept axes of a then of b, kept axis t going to position
``permute[t]`` (``[]``: no permutation), flattened row-major. ``Kron(a, b, dimfa, dimfb)`` is the
Kronecker product of two tensors with the same number of axes (a ``TensorDot`` without
contraction, the axes interleaved).

>>> from kernla.formula.tree import Vi, Vj, call
>>> call("TensorDot", Vi(0, 6), Vj(1, 3), params=((2, 3), (3,), (1,), (0,), ())).dim   # a 2×3 matrix times a vector
2
>>> call("Kron", Vi(0, 4), Vj(1, 6), params=((2, 2), (2, 3))).dim
24
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import FormulaError
from ..tree import Node, call
from .registry import OpSpec, register

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class _Contraction:
    """Axis labels of one TensorDot: ``a_labels``, ``b_labels`` and the output's, in order."""

    dimfa: tuple
    dimfb: tuple
    a_labels: tuple
    b_labels: tuple
    out_labels: tuple
    size: dict

    @property
    def out_dims(self) -> tuple:
        return tuple(self.size[c] for c in self.out_labels)


@lru_cache(maxsize=256)
def _contraction(params: tuple) -> _Contraction:
    dimfa, dimfb, contfa, contfb, permute = params
    if len(dimfa) + len(dimfb) > len(_LETTERS):
        raise FormulaError("TensorDot: too many axes")
    if len(contfa) != len(contfb) or len(set(contfa)) != len(contfa) or len(set(contfb)) != len(contfb):
        raise FormulaError(f"TensorDot: contracted axes {list(contfa)} and {list(contfb)} do not pair up")
    if any(not 0 <= k < len(dimfa) for k in contfa) or any(not 0 <= k < len(dimfb) for k in contfb):
        raise FormulaError("TensorDot: a contracted axis is out of range")
    a_labels = list(_LETTERS[: len(dimfa)])
    b_labels = list(_LETTERS[len(dimfa) : len(dimfa) + len(dimfb)])
    for ka, kb in zip(contfa, contfb):
        if dimfa[ka] != dimfb[kb]:
            raise FormulaError(f"TensorDot: contracted axes of sizes {dimfa[ka]} and {dimfb[kb]} differ")
        b_labels[kb] = a_labels[ka]
    kept = [c for k, c in enumerate(a_labels) if k not in contfa] + [
        c for k, c in enumerate(b_labels) if k not in contfb
    ]
    if permute:
        if sorted(permute) != list(range(len(kept))):
            raise FormulaError(f"TensorDot: {list(permute)} is not a permutation of the {len(kept)} kept axes")
        placed = [""] * len(kept)
        for t, c in enumerate(kept):
            placed[permute[t]] = c
        kept = placed
    size = dict(zip(a_labels, dimfa)) | dict(zip(b_labels, dimfb))
    return _Contraction(tuple(dimfa), tuple(dimfb), tuple(a_labels), tuple(b_labels), tuple(kept), size)


def _rule(dims, params):
    if len(params[0]) == 0 or len(params[1]) == 0:
        raise FormulaError("TensorDot needs the shapes of both arguments")
    c = _contraction(params)
    for d, shape, which in ((dims[0], c.dimfa, "first"), (dims[1], c.dimfb, "second")):
        if d != math.prod(shape):
            raise FormulaError(
                f"the {which} argument has dimension {d}, its shape {list(shape)} needs {math.prod(shape)}"
            )
    return math.prod(c.out_dims)


def _np(a, b, dimfa, dimfb, contfa, contfb, permute):
    c = _contraction((dimfa, dimfb, contfa, contfb, permute))
    lead = a.shape[:-1]
    out = np.einsum(
        f"...{''.join(c.a_labels)},...{''.join(c.b_labels)}->...{''.join(c.out_labels)}",
        a.reshape(lead + c.dimfa),
        b.reshape(b.shape[:-1] + c.dimfb),
    )
    return out.reshape(out.shape[: out.ndim - len(c.out_labels)] + (-1,))


def _c(e, args, params, dim):
    c = _contraction(params)
    a, b = args
    summed = [x for x in dict.fromkeys(c.a_labels + c.b_labels) if x not in c.out_labels]
    out = []
    for idx in np.ndindex(*c.out_dims):
        fixed = dict(zip(c.out_labels, idx))
        terms = []
        for inner in np.ndindex(*[c.size[x] for x in summed]):
            at = fixed | dict(zip(summed, inner))
            ka = np.ravel_multi_index([at[x] for x in c.a_labels], c.dimfa)
            kb = np.ravel_multi_index([at[x] for x in c.b_labels], c.dimfb)
            terms.append(f"{a[ka]} * {b[kb]}")
        out.append("(" + " + ".join(terms) + ")")
    return out


def _contract_into(g: Node, g_labels: tuple, other: Node, o_labels: tuple, o_dims: tuple, target: tuple, c) -> Node:
    """Σ g·other over their common labels, laid out as ``target`` (the labels of the argument differentiated)."""
    cont_g = [k for k, x in enumerate(g_labels) if x in o_labels]
    cont_o = [o_labels.index(g_labels[k]) for k in cont_g]
    kept = [x for k, x in enumerate(g_labels) if k not in cont_g] + [
        x for k, x in enumerate(o_labels) if k not in cont_o
    ]
    permute = tuple(target.index(x) for x in kept)
    dims_g = tuple(c.size[x] for x in g_labels)
    return call("TensorDot", g, other, params=(dims_g, o_dims, tuple(cont_g), tuple(cont_o), permute))


def _d(n: Node, g: Node) -> tuple:
    a, b = n.args
    c = _contraction(n.params)
    return (
        _contract_into(g, c.out_labels, b, c.b_labels, c.dimfb, c.a_labels, c),
        _contract_into(g, c.out_labels, a, c.a_labels, c.dimfa, c.b_labels, c),
    )


def _kron_params(params: tuple) -> tuple:
    dimfa, dimfb = params
    if len(dimfa) != len(dimfb):
        raise FormulaError(f"Kron needs shapes with the same number of axes, got {list(dimfa)} and {list(dimfb)}")
    n = len(dimfa)
    return (dimfa, dimfb, (), (), tuple(2 * k for k in range(n)) + tuple(2 * k + 1 for k in range(n)))


register(
    OpSpec(
        "TensorDot",
        2,
        _rule,
        _np,
        _c,
        grad=_d,
        param_names=("dimfa", "dimfb", "contfa", "contfb", "permute"),
        doc="contraction of a (shape dimfa) and b (shape dimfb) over axes contfa/contfb, kept axes permuted",
    )
)
register(
    OpSpec(
        "Kron",
        2,
        lambda dims, params: _rule(dims, _kron_params(params)),
        lambda a, b, dimfa, dimfb: _np(a, b, *_kron_params((dimfa, dimfb))),
        lambda e, args, params, dim: _c(e, args, _kron_params(params), dim),
        grad=lambda n, g: _d(call("TensorDot", *n.args, params=_kron_params(n.params)), g),
        param_names=("dimfa", "dimfb"),
        doc="Kronecker product of a (shape dimfa) and b (shape dimfb), as many axes each",
    )
)
