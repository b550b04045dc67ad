"""Small matrix products; matrices are stored row-major in vectors, as KeOps does.

>>> from kernla.formula.tree import Vi, Vj, call
>>> call("MatVecMult", Vi(0, 6), Vj(1, 3)).dim, call("TensorProd", Vi(0, 2), Vj(1, 3)).dim
(2, 6)
"""

from __future__ import annotations

import numpy as np

from ...errors import FormulaError
from ..tree import Node, call
from .registry import OpSpec, register


def _matvec_rule(dims, params):
    a, b = dims
    if a % b:
        raise FormulaError(f"a matrix of {a} entries cannot multiply a vector of dimension {b}")
    return a // b


def _vecmat_rule(dims, params):
    return _matvec_rule((dims[1], dims[0]), params)


def _tensorprod_rule(dims, params):
    return dims[0] * dims[1]


def _np_matvec(a, b):
    p = b.shape[-1]
    a = a.reshape(a.shape[:-1] + (a.shape[-1] // p, p))
    return np.einsum("...ik,...k->...i", a, b)


def _np_vecmat(b, a):
    n = b.shape[-1]
    a = a.reshape(a.shape[:-1] + (n, a.shape[-1] // n))
    return np.einsum("...k,...ki->...i", b, a)


def _np_tensorprod(a, b):
    out = a[..., :, None] * b[..., None, :]
    return out.reshape(out.shape[:-2] + (a.shape[-1] * b.shape[-1],))


def _c_matvec(e, args, params, dim):
    a, b = args
    p = len(b)
    return ["(" + " + ".join(f"{a[i * p + k]} * {b[k]}" for k in range(p)) + ")" for i in range(dim)]


def _c_vecmat(e, args, params, dim):
    b, a = args
    return ["(" + " + ".join(f"{b[k]} * {a[k * dim + i]}" for k in range(len(b))) + ")" for i in range(dim)]


def _c_tensorprod(e, args, params, dim):
    a, b = args
    return [f"({x} * {y})" for x in a for y in b]


def _d_matvec(n: Node, g: Node) -> tuple:
    a, b = n.args
    return (call("TensorProd", g, b), call("VecMatMult", g, a))


def _d_vecmat(n: Node, g: Node) -> tuple:
    b, a = n.args
    return (call("MatVecMult", a, g), call("TensorProd", b, g))


def _d_tensorprod(n: Node, g: Node) -> tuple:
    a, b = n.args
    return (call("MatVecMult", g, b), call("VecMatMult", a, g))


register(
    OpSpec(
        "MatVecMult",
        2,
        _matvec_rule,
        _np_matvec,
        _c_matvec,
        grad=_d_matvec,
        doc="A·b, A an n×p matrix stored row-major (dimension n·p), b of dimension p",
    )
)
register(
    OpSpec(
        "VecMatMult",
        2,
        _vecmat_rule,
        _np_vecmat,
        _c_vecmat,
        grad=_d_vecmat,
        doc="b'·A, b of dimension n, A an n×p matrix stored row-major",
    )
)
register(
    OpSpec(
        "TensorProd",
        2,
        _tensorprod_rule,
        _np_tensorprod,
        _c_tensorprod,
        grad=_d_tensorprod,
        doc="outer product a⊗b, row-major (dimension dim(a)·dim(b))",
    )
)
