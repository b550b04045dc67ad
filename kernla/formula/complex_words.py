"""pykeops' complex operations, on interleaved vectors (re₀, im₀, re₁, im₁, …) of even dimension.

Each word is written once, here, with kernla's real operations (components are picked with
``Elem`` and put back with ``Concat``, which the code generator turns into plain copies), so every
engine runs it and the differentiator derives it. The words follow keopscore's
``formulas/complex``: ``ComplexReal``, ``ComplexImag``, ``Real2Complex``, ``Imag2Complex``,
``Conj``, ``ComplexAdd``, ``ComplexSubtract``, ``ComplexMult``, ``ComplexRealScal``,
``ComplexSquareAbs``, ``ComplexAbs``, ``ComplexAngle``, ``ComplexDivide``, ``ComplexExp``,
``ComplexExp1j``, ``ComplexSum`` and ``ComplexSumT``; a complex scalar (dimension 2) broadcasts
against a complex vector in the binary ones, as in keopscore.

>>> import numpy as np
>>> from kernla.formula import Vi
>>> from kernla.formula.evaluate import evaluate
>>> z, w = Vi(0, 2), Vi(1, 2)                                     # one complex number each
>>> f = complex_mult(z, w)
>>> evaluate(f, {0: np.array([[[1.0, 2.0]]]), 1: np.array([[[3.0, -1.0]]])}).ravel()   # (1+2i)(3-i) = 5+5i
array([5., 5.])
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import FormulaError
from .tree import IntCst, Node, call, concat

__all__ = ["COMPLEX_WORDS", "complex_mult", "components", "interleave"]


def components(f: Node) -> list[Node]:
    """The scalar formulas of f's components (a Concat is opened, not indexed)."""
    if f.op == "Concat":
        return components(f.args[0]) + components(f.args[1])
    if f.dim == 1:
        return [f]
    return [call("Elem", f, params=(k,)) for k in range(f.dim)]


def _even(name: str, f: Node) -> None:
    if f.dim % 2:
        raise FormulaError(f"{name}: a complex formula has an even dimension (re, im pairs), got {f.dim}")


def real(f: Node) -> Node:
    """The real parts, dimension f.dim / 2."""
    _even("ComplexReal", f)
    return concat(components(f)[0::2])


def imag(f: Node) -> Node:
    """The imaginary parts, dimension f.dim / 2."""
    _even("ComplexImag", f)
    return concat(components(f)[1::2])


def interleave(re: Node, im: Node) -> Node:
    """The complex vector re + i·im (a scalar part broadcasts to the other's dimension)."""
    if re.dim != im.dim and 1 not in (re.dim, im.dim):
        raise FormulaError(f"real and imaginary parts of dimensions {re.dim} and {im.dim}")
    n = max(re.dim, im.dim)
    rs, js = components(re), components(im)
    rs, js = rs * n if len(rs) == 1 else rs, js * n if len(js) == 1 else js
    return concat([p for pair in zip(rs, js) for p in pair])


def _real2complex(f: Node) -> Node:
    return interleave(f, IntCst(0))


def _imag2complex(f: Node) -> Node:
    return interleave(IntCst(0), f)


def _pair(name: str, f: Node, g: Node) -> None:
    """keopscore's rule for binary complex operations: equal even dimensions, or one complex scalar."""
    _even(name, f)
    _even(name, g)
    if f.dim != g.dim and 2 not in (f.dim, g.dim):
        raise FormulaError(f"{name}: complex dimensions {f.dim} and {g.dim} (equal, or 2 to broadcast)")


def conj(f: Node) -> Node:
    return interleave(real(f), -imag(f))


def _add(f: Node, g: Node) -> Node:
    _pair("ComplexAdd", f, g)
    return f + g if f.dim == g.dim else interleave(real(f) + real(g), imag(f) + imag(g))


def _subtract(f: Node, g: Node) -> Node:
    _pair("ComplexSubtract", f, g)
    return f - g if f.dim == g.dim else interleave(real(f) - real(g), imag(f) - imag(g))


def complex_mult(f: Node, g: Node) -> Node:
    """(a + ib)(c + id) = (ac - bd) + i(ad + bc), component-wise."""
    _pair("ComplexMult", f, g)
    a, b, c, d = real(f), imag(f), real(g), imag(g)
    return interleave(a * c - b * d, a * d + b * c)


def _real_scal(f: Node, g: Node) -> Node:
    """A real scalar times a complex vector (either order)."""
    s, z = (f, g) if f.dim == 1 else (g, f)
    if s.dim != 1:
        raise FormulaError(f"ComplexRealScal: one argument must be a real scalar, got dimensions {f.dim} and {g.dim}")
    _even("ComplexRealScal", z)
    return s * z


def square_abs(f: Node) -> Node:
    """|z|², dimension f.dim / 2."""
    return call("Square", real(f)) + call("Square", imag(f))


def _abs(f: Node) -> Node:
    return call("Sqrt", square_abs(f))


def _angle(f: Node) -> Node:
    return call("Atan2", imag(f), real(f))


def _divide(f: Node, g: Node) -> Node:
    """f / g = f·conj(g) / |g|²."""
    _pair("ComplexDivide", f, g)
    num, inv = complex_mult(f, conj(g)), call("Inv", square_abs(g))
    return interleave(real(num) * inv, imag(num) * inv)


def _exp(f: Node) -> Node:
    """exp(a + ib) = exp(a)(cos b + i sin b)."""
    _even("ComplexExp", f)
    r, b = call("Exp", real(f)), imag(f)
    return interleave(r * call("Cos", b), r * call("Sin", b))


def _exp1j(f: Node) -> Node:
    """exp(i·f) for a real f: dimension 2·f.dim."""
    return interleave(call("Cos", f), call("Sin", f))


def _sum(f: Node) -> Node:
    """The sum of the complex components, dimension 2."""
    _even("ComplexSum", f)
    return interleave(call("Sum", real(f)), call("Sum", imag(f)))


def _sum_t(f: Node, d: int) -> Node:
    """A complex scalar repeated to dimension d (d even), the adjoint of ComplexSum."""
    if f.dim != 2 or d < 2 or d % 2:
        raise FormulaError(f"ComplexSumT repeats a complex scalar to an even dimension, got {f.dim} and d = {d}")
    if d == 2:
        return f
    zeros = call("ElemT", IntCst(0), params=(d // 2, 0))
    return interleave(real(f) + zeros, imag(f) + zeros)


#: word -> (arity, number of integer parameters, expansion, doc), made parser words by kernla.formula.macros
COMPLEX_WORDS: dict[str, tuple[int, int, Callable[..., Node], str]] = {
    "ComplexReal": (1, 0, real, "real parts of a complex vector"),
    "ComplexImag": (1, 0, imag, "imaginary parts of a complex vector"),
    "Real2Complex": (1, 0, _real2complex, "a real vector as complex (zero imaginary parts)"),
    "Imag2Complex": (1, 0, _imag2complex, "i times a real vector"),
    "Conj": (1, 0, conj, "complex conjugate"),
    "ComplexAdd": (2, 0, _add, "complex sum"),
    "ComplexSubtract": (2, 0, _subtract, "complex difference"),
    "ComplexMult": (2, 0, complex_mult, "complex product, component-wise"),
    "ComplexRealScal": (2, 0, _real_scal, "a real scalar times a complex vector"),
    "ComplexSquareAbs": (1, 0, square_abs, "|z|² per component"),
    "ComplexAbs": (1, 0, _abs, "|z| per component"),
    "ComplexAngle": (1, 0, _angle, "arg z per component, in (-π, π]"),
    "ComplexDivide": (2, 0, _divide, "complex quotient, component-wise"),
    "ComplexExp": (1, 0, _exp, "complex exponential"),
    "ComplexExp1j": (1, 0, _exp1j, "exp(i·f) of a real f"),
    "ComplexSum": (1, 0, _sum, "sum of the complex components"),
    "ComplexSumT": (1, 1, _sum_t, "a complex scalar repeated to dimension d"),
}
