"""Component selection and assembly: single components, slices, their transposes, concatenation, one-hot vectors.

>>> from kernla.formula.tree import Vi, call
>>> x = Vi(0, 4)
>>> str(call("Extract", x, params=(1, 2))), call("Concat", x, x).dim
('Extract(Var(0,4,0), 1, 2)', 8)
"""

from __future__ import annotations

import numpy as np

from ...errors import FormulaError
from ..tree import Node, call
from .piecewise import np_round_half_away
from .registry import OpSpec, no_derivative, register


# -- dimension rules --------------------------------------------------------------------------
def _elem_rule(dims, params):
    (m,) = params
    if not 0 <= m < dims[0]:
        raise FormulaError(f"index {m} out of range for a vector of dimension {dims[0]}")
    return 1


def _extract_rule(dims, params):
    start, d = params
    if d < 1 or start < 0 or start + d > dims[0]:
        raise FormulaError(f"components [{start}, {start + d}) out of range for a vector of dimension {dims[0]}")
    return d


def _elemt_rule(dims, params):
    d, m = params
    if dims[0] != 1 or not 0 <= m < d:
        raise FormulaError(f"needs a scalar and 0 <= m < D, got dimension {dims[0]}, D={d}, m={m}")
    return d


def _extractt_rule(dims, params):
    start, d = params
    if start < 0 or start + dims[0] > d:
        raise FormulaError(f"a vector of dimension {dims[0]} does not fit at {start} in dimension {d}")
    return d


def _concat_rule(dims, params):
    return dims[0] + dims[1]


def _onehot_rule(dims, params):
    if dims[0] != 1:
        raise FormulaError(f"needs a scalar argument, got dimension {dims[0]}")
    if params[0] < 1:
        raise FormulaError(f"the dimension must be >= 1, got {params[0]}")
    return params[0]


# -- NumPy ------------------------------------------------------------------------------------
def _np_elemt(a, d, m):
    out = np.zeros(a.shape[:-1] + (d,), a.dtype)
    out[..., m] = a[..., 0]
    return out


def _np_extractt(a, start, d):
    out = np.zeros(a.shape[:-1] + (d,), a.dtype)
    out[..., start : start + a.shape[-1]] = a
    return out


def _np_concat(a, b):
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return np.concatenate([np.broadcast_to(a, shape + a.shape[-1:]), np.broadcast_to(b, shape + b.shape[-1:])], -1)


def _np_onehot(a, d):
    r = np_round_half_away(a[..., 0])
    return (r[..., None] == np.arange(d, dtype=a.dtype)).astype(a.dtype)


# -- C emitters -------------------------------------------------------------------------------
def _c_elem(e, args, params, dim):
    return [args[0][params[0]]]


def _c_elemt(e, args, params, dim):
    return [args[0][0] if k == params[1] else "T(0)" for k in range(dim)]


def _c_extract(e, args, params, dim):
    return args[0][params[0] : params[0] + params[1]]


def _c_extractt(e, args, params, dim):
    start = params[0]
    return ["T(0)"] * start + list(args[0]) + ["T(0)"] * (dim - start - len(args[0]))


def _c_concat(e, args, params, dim):
    return list(args[0]) + list(args[1])


def _c_onehot(e, args, params, dim):
    r = e.tmp(f"kl_round({args[0][0]}, 0)")
    return [f"({r} == T({k}) ? T(1) : T(0))" for k in range(dim)]


# -- derivatives ------------------------------------------------------------------------------
def _d_elem(n: Node, g: Node) -> tuple:
    return (call("ElemT", g, params=(n.args[0].dim, n.params[0])),)


def _d_elemt(n: Node, g: Node) -> tuple:
    return (call("Elem", g, params=(n.params[1],)),)


def _d_extract(n: Node, g: Node) -> tuple:
    return (call("ExtractT", g, params=(n.params[0], n.args[0].dim)),)


def _d_extractt(n: Node, g: Node) -> tuple:
    return (call("Extract", g, params=(n.params[0], n.args[0].dim)),)


def _d_concat(n: Node, g: Node) -> tuple:
    da, db = (a.dim for a in n.args)
    return (call("Extract", g, params=(0, da)), call("Extract", g, params=(da, db)))


register(
    OpSpec(
        "Elem",
        1,
        _elem_rule,
        lambda a, m: a[..., m : m + 1],
        _c_elem,
        param_names=("m",),
        grad=_d_elem,
        doc="component m of a (from 0)",
    )
)
register(
    OpSpec(
        "ElemT",
        1,
        _elemt_rule,
        _np_elemt,
        _c_elemt,
        param_names=("D", "m"),
        grad=_d_elemt,
        doc="vector of dimension D, zero but for component m = a",
    )
)
register(
    OpSpec(
        "Extract",
        1,
        _extract_rule,
        lambda a, s, d: a[..., s : s + d],
        _c_extract,
        param_names=("start", "dim"),
        grad=_d_extract,
        doc="components start … start+dim-1 of a",
    )
)
register(
    OpSpec(
        "ExtractT",
        1,
        _extractt_rule,
        _np_extractt,
        _c_extractt,
        param_names=("start", "D"),
        grad=_d_extractt,
        doc="vector of dimension D, zero but for a placed at start",
    )
)
register(OpSpec("Concat", 2, _concat_rule, _np_concat, _c_concat, grad=_d_concat, doc="a followed by b"))
register(
    OpSpec(
        "OneHot",
        1,
        _onehot_rule,
        _np_onehot,
        _c_onehot,
        param_names=("D",),
        grad=no_derivative,
        doc="vector of dimension D: 1 at round(a), else 0",
        unroll_cost=16,  # g++ -O3 takes 82 s on Sum(OneHot(G, 201)), over 4 minutes and 3 GB at 301
    )
)
