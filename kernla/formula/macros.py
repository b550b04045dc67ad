"""pykeops' operations that kernla writes with its own, expanded when a formula string is parsed.

``Diff(f, v, u)`` (the forward derivative of f at v in the direction u, as the transpose of
``Grad``), ``Laplacian(f, v)``, ``SqNormIso(s, x)`` = s·|x|², ``SqNormDiag(s, x)`` = Σ s_k x_k²,
``SymSqNorm(S, x)`` = xᵀ S x, ``SumT(f, d)`` (a scalar repeated d times, the adjoint of ``Sum``),
``IntInv(n)`` = 1/n, ``BSpline(knots, x, order)`` (the B-spline basis functions at x) and
``SoftDTW_SqDist(x, y, gamma)`` (soft dynamic time warping of the series x and y), and the
complex words of :mod:`kernla.formula.complex_words` (``ComplexMult``, ``Conj``, …). Like
``Grad``, they are words of the string language, not nodes: the formula holds what they expand to.

>>> from kernla.formula import parse
>>> str(parse("SqNormIso(S, X)", ["S = Pm(1)", "X = Vi(2)"]))
'(Var(0,1,2) * SqNorm2(Var(1,2,0)))'
>>> import numpy as np
>>> from kernla.formula.evaluate import evaluate
>>> evaluate(parse("Laplacian(SqNorm2(X), X)", ["X = Vi(3)"]), {0: np.ones((1, 1, 3))}).ravel()   # Δ|x|² = 2·3
array([6.])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FormulaError
from .complex_words import COMPLEX_WORDS
from .diff import grad, zeros
from .tree import CAT_I, IntCst, Node, RealCst, Var, call, concat, free_position

__all__ = ["MACROS", "Macro"]


@dataclass(frozen=True)
class Macro:
    """A word of the string language: ``arity`` formulas then ``n_params`` integers, expanded by ``expand``."""

    arity: int
    n_params: int
    expand: Callable[..., Node]
    doc: str


def _variable(v: Node, what: str) -> None:
    if not v.is_var:
        raise FormulaError(f"{what} differentiates with respect to a variable, got {v}")


def _diff(f: Node, v: Node, u: Node) -> Node:
    """J_f(v)·u: ⟨Grad(f, v, e), u⟩ is linear in e, its gradient in e is J·u (e a variable that then vanishes)."""
    _variable(v, "Diff")
    if u.dim != v.dim:
        raise FormulaError(f"Diff: the direction has dimension {u.dim}, the variable {v.dim}")
    e = Var(free_position(f, v, u), f.dim, CAT_I)
    jvp = grad(call("Scalprod", grad(f, v, e), u), e, IntCst(1))
    return jvp.replace({e: zeros(f.dim)})


def _laplacian(f: Node, v: Node) -> Node:
    _variable(v, "Laplacian")
    if f.dim != 1:
        raise FormulaError(f"Laplacian needs a scalar formula, got dimension {f.dim}")
    g = grad(f, v, IntCst(1))
    terms = [call("Elem", grad(call("Elem", g, params=(k,)), v, IntCst(1)), params=(k,)) for k in range(v.dim)]
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _same_dims(name: str, s: Node, x: Node, want: int) -> None:
    if s.dim != want:
        raise FormulaError(f"{name}: the weight has dimension {s.dim}, expected {want} for a vector of {x.dim}")


def _iso(s: Node, x: Node) -> Node:
    _same_dims("SqNormIso", s, x, 1)
    return s * call("SqNorm2", x)


def _diag(s: Node, x: Node) -> Node:
    _same_dims("SqNormDiag", s, x, x.dim)
    return call("Sum", s * call("Square", x))


def _sym(s: Node, x: Node) -> Node:
    _same_dims("SymSqNorm", s, x, x.dim * x.dim)
    return call("Scalprod", x, call("MatVecMult", s, x))


def _sum_t(f: Node, d: int) -> Node:
    if f.dim != 1 or d < 1:
        raise FormulaError(f"SumT repeats a scalar d >= 1 times, got dimension {f.dim} and d = {d}")
    return f + call("ElemT", IntCst(0), params=(d, 0))


def _bspline(knots: Node, x: Node, order: int) -> Node:
    """The B-spline basis of ``order`` on ``knots`` at the scalar x (Cox–de Boor), ``len(knots) - order - 1`` values."""
    n = knots.dim
    if x.dim != 1 or order < 0 or n < order + 2:
        raise FormulaError(f"BSpline needs a scalar x, an order >= 0 and at least order + 2 knots, got {n} knots")
    t = [call("Elem", knots, params=(k,)) for k in range(n)]

    def omega(i: int, k: int) -> Node:  # (x - t_i) / (t_{i+k} - t_i), 0 where t_i = t_{i+k}
        gap = t[i + k] - t[i]
        return (x - t[i]) * call("LessThan", t[i], t[i + k]) / (gap + call("Equal", t[i], t[i + k]))

    basis = [call("LessOrEqual", t[j], x) * call("LessThan", x, t[j + 1]) for j in range(n - 1)]
    for k in range(1, order + 1):
        basis = [omega(i, k) * basis[i] + (1 - omega(i + 1, k)) * basis[i + 1] for i in range(n - 1 - k)]
    return concat(basis)


def _soft_dtw(x: Node, y: Node, gamma: Node) -> Node:
    """Soft-DTW of the series x and y for the squared difference, smoothed by the scalar gamma (KeOps' recursion).

    r_ij = (x_i - y_j)² + softmin_γ(r_{i-1,j-1}, r_{i-1,j}, r_{i,j-1}); plain sums along the first row and column.
    """
    if gamma.dim != 1:
        raise FormulaError(f"SoftDTW_SqDist: gamma must be a scalar, got dimension {gamma.dim}")
    xs = [call("Elem", x, params=(i,)) for i in range(x.dim)]
    ys = [call("Elem", y, params=(j,)) for j in range(y.dim)]

    def soft_min(*v: Node) -> Node:
        low = call("Min", call("Concat", call("Concat", v[0], v[1]), v[2]))
        total = (
            call("Exp", (low - v[0]) / gamma) + call("Exp", (low - v[1]) / gamma) + call("Exp", (low - v[2]) / gamma)
        )
        return low - gamma * call("Log", total)

    r: dict[tuple[int, int], Node] = {}
    for j in range(y.dim):
        for i in range(x.dim):
            d = call("Square", xs[i] - ys[j])
            if i == 0 and j == 0:
                r[i, j] = d
            elif j == 0 or i == 0:
                r[i, j] = d + r[(i - 1, j) if j == 0 else (i, j - 1)]
            else:
                r[i, j] = d + soft_min(r[i - 1, j - 1], r[i - 1, j], r[i, j - 1])
    return r[x.dim - 1, y.dim - 1]


def _int_inv(n: int) -> Node:
    if n == 0:
        raise FormulaError("IntInv(0) is not finite")
    return RealCst(1.0 / n)


MACROS: dict[str, Macro] = {
    "Diff": Macro(3, 0, _diff, "forward derivative J_f(v)·u"),
    "Laplacian": Macro(2, 0, _laplacian, "Σ_k ∂²f/∂v_k² of a scalar f"),
    "SqNormIso": Macro(2, 0, _iso, "s·|x|², s scalar"),
    "SqNormDiag": Macro(2, 0, _diag, "Σ_k s_k x_k²"),
    "SymSqNorm": Macro(2, 0, _sym, "xᵀ S x, S a d×d matrix (row-major)"),
    "SumT": Macro(1, 1, _sum_t, "a scalar repeated d times"),
    "IntInv": Macro(0, 1, _int_inv, "1/n"),
    "BSpline": Macro(2, 1, _bspline, "B-spline basis of an order on knots, at a scalar x"),
    "SoftDTW_SqDist": Macro(3, 0, _soft_dtw, "soft dynamic time warping of two series, squared differences"),
}
MACROS.update({name: Macro(*word) for name, word in COMPLEX_WORDS.items()})
