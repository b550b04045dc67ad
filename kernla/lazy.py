"""``LazyTensor``: symbolic (N, M, D) tensors with pykeops semantics.

An array of shape ``(N, 1, D)`` becomes an i-variable, ``(1, M, D)`` a j-variable, a 1-D array
or a float a parameter (leading batch dimensions broadcast). Arithmetic builds a formula;
reductions (``sum``, ``min``, ``argKmin``, ``logsumexp``, ``@``, …) over ``dim=0`` (i) or
``dim=1`` (j) evaluate it. ``dim=-1`` (the vector axis) stays symbolic.

>>> import numpy as np
>>> from kernla import LazyTensor
>>> x = np.array([[0.0], [1.0], [4.0]]); y = np.array([[0.9], [3.0]])
>>> x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
>>> ((x_i - y_j) ** 2).sum(-1).argmin(dim=1, backend="numpy").ravel()
array([0, 0, 1])
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, Union

import numpy as np

from . import arrays as arr
from .core import host_integers
from .engines.ranges import swap_axes
from .errors import ShapeError
from .formula import CAT_I, CAT_J, CAT_PARAM, Var, call, limits
from .formula.complex_words import COMPLEX_WORDS
from .formula.diff import grad as symbolic_grad
from .formula.tree import IntCst, Node
from .genred import Slot, _check_compat, reduce, write_out
from .reductions import Reduction

Operand = Union["LazyTensor", float, int, Any]
_L = TypeVar("_L", bound="LazyTensor")


class LazyTensor:
    """A symbolic tensor: a formula over i-, j-variables and parameters (see the module docstring).

    ``LazyTensor(x)`` reads the role of ``x`` from its shape; ``axis=0`` (i), ``1`` (j) or
    ``2`` (parameter) forces it for 2-D arrays (N, D) / (M, D) / 1-D (D,).
    """

    __array_priority__ = 10000  # numpy arrays on the left defer to our operators

    formula: Node  # the symbolic expression, over Var(pos, dim, cat) nodes
    variables: tuple  # (data, category) per variable position
    #: ``K.solve(b, alpha)``: defined by kernla.linalg (linalg/solve.py), a higher layer than this module
    solve: Callable[..., Any]
    #: block-sparsity pattern, pykeops' 6-tuple (:mod:`kernla.engines.ranges`): set it, or use
    #: :meth:`with_ranges`; the tensors computed from this one keep it, and its reductions use it
    ranges: Any = None
    _unit_dim = 1  # the formula dimension of one value: 2 for a complex LazyTensor (re, im)

    def __new__(cls, x: Any = None, axis: int | None = None):
        if cls is LazyTensor and _is_complex(x):  # pykeops: a complex array makes a ComplexLazyTensor
            return object.__new__(ComplexLazyTensor)  # then initialised by ComplexLazyTensor.__init__
        return super().__new__(cls)

    def __init__(self, x: Any = None, axis: int | None = None):
        if isinstance(x, LazyTensor):
            self.formula, self.variables, self.ranges = x.formula, x.variables, x.ranges
            return
        if x is None:
            raise ShapeError("LazyTensor needs an array or a number")
        if isinstance(x, tuple) and len(x) == 3 and all(isinstance(k, int) for k in x):
            index, dim, cat = x  # pykeops' symbolic variable (index, dim, category)
            self.formula, self.variables = Var(0, dim, cat), ((_Symbolic.of(index, dim, cat), cat),)
            return
        if isinstance(x, (list, tuple)):
            param = _ListParam(tuple(float(v) for v in x))
            self.formula, self.variables = Var(0, len(param.values), CAT_PARAM), ((param, CAT_PARAM),)
            return
        if arr.kind_of(x) == "scalar":
            self.formula, self.variables = Var(0, 1, CAT_PARAM), ((float(x), CAT_PARAM),)
            return
        shape = tuple(x.shape)
        if shape == ():  # a 0-d array or tensor is a scalar parameter
            self.formula, self.variables = Var(0, 1, CAT_PARAM), ((x.reshape(1), CAT_PARAM),)
            return
        if axis is not None:
            if axis not in (0, 1, 2):
                raise ShapeError(f"axis must be 0 (i), 1 (j) or 2 (parameter), got {axis!r}")
            if axis == 2:
                data, cat = x, CAT_PARAM
            elif len(shape) < 2:
                raise ShapeError(f"an {'ij'[axis]}-variable needs an array of shape (..., n, D), got {shape}")
            else:
                data, cat = x, (CAT_I, CAT_J)[axis]
        elif len(shape) == 1:
            data, cat = x, CAT_PARAM
        # (squeeze: a third of the cost of indexing for torch tensors, the same view)
        elif len(shape) >= 3 and shape[-3] == 1 and shape[-2] == 1:
            data, cat = x.squeeze((-3, -2)), CAT_PARAM
        elif len(shape) >= 3 and shape[-2] == 1:
            data, cat = x.squeeze(-2), CAT_I
        elif len(shape) >= 3 and shape[-3] == 1:
            data, cat = x.squeeze(-3), CAT_J
        else:
            raise ShapeError(
                f"cannot tell the role of an array of shape {shape}: use (N, 1, D) for an i-variable, "
                "(1, M, D) for a j-variable, (D,) for a parameter, or pass axis="
            )
        self.formula = Var(0, int(data.shape[-1]), cat)
        self.variables = ((data, cat),)

    @classmethod
    def _make(cls: type[_L], formula: Node, variables: tuple) -> _L:
        obj = object.__new__(cls)  # (not cls.__new__: there is no array whose kind to read)
        obj.formula, obj.variables = formula, variables
        return obj

    def _same(self, formula: Node, cls: type[LazyTensor] | None = None) -> Any:
        """``formula`` over this tensor's variables, with its ranges (a ``cls``, by default a LazyTensor)."""
        res = (cls or LazyTensor)._make(formula, self.variables)
        res.ranges = self.ranges
        return res

    # -- structure ---------------------------------------------------------------------------
    def _size(self, cat: int) -> int | None:
        for data, c in self.variables:
            if c == cat and not isinstance(data, _Placeholder):
                return int(data.shape[-2])
        return None

    @property
    def ni(self) -> int | None:
        """The number of i-points (None when no i-variable is bound to data)."""
        return self._size(CAT_I)

    @property
    def nj(self) -> int | None:
        """The number of j-points (None when no j-variable is bound to data)."""
        return self._size(CAT_J)

    @property
    def nbatchdims(self) -> int:
        return len(self._batch())

    @property
    def dtype(self) -> Any:
        """The dtype of the data, in its own library's spelling (None for numbers and symbols only)."""
        for data, _ in self.variables:
            if not isinstance(data, _Placeholder) and arr.kind_of(data) != "scalar":
                return data.dtype
        return None

    @property
    def _shape(self) -> tuple:
        """pykeops' internal shape: (*batch, N, M, D), with 1 for an index no variable carries."""
        return self._batch() + (self._size(CAT_I) or 1, self._size(CAT_J) or 1, self.formula.dim)

    @property
    def ndim(self) -> int:
        return 3 + len(self._batch())

    def dim(self) -> int:
        """Number of dimensions, as pykeops' ``dim()``: 3 plus the batch dimensions."""
        return self.ndim

    def _batch(self) -> tuple:
        shapes = []
        for data, cat in self.variables:
            if isinstance(data, _Placeholder) or arr.kind_of(data) == "scalar":
                continue
            lead = 1 if cat == CAT_PARAM else 2
            if data.ndim > lead:  # (no batch dimension: nothing to broadcast)
                shapes.append(tuple(data.shape[:-lead]))
        if len(shapes) < 2:
            return shapes[0] if shapes else ()
        try:
            return tuple(np.broadcast_shapes(*shapes))
        except ValueError:
            raise ShapeError(
                f"the batch dimensions of this LazyTensor's variables do not broadcast: {shapes}"
            ) from None

    @property
    def shape(self) -> tuple:
        """pykeops' shape: (*batch, N, M, D) for D values per pair (complex ones for a complex tensor), without
        the last entry when D = 1: (*batch, N, M) for a scalar formula.

        >>> x = np.zeros((4, 1, 3)); y = np.zeros((1, 5, 3))
        >>> (LazyTensor(x) - LazyTensor(y)).shape, ((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1).shape
        ((4, 5, 3), (4, 5))
        """
        *lead, d = self._shape
        d //= self._unit_dim
        return tuple(lead) if d == 1 else (*lead, d)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, formula={self.formula})"

    # -- combination -------------------------------------------------------------------------
    def merge_into(self, variables: list) -> tuple[Node, list[int]]:
        """This tensor's formula with its variables renumbered into the list ``variables``.

        ``variables`` holds ``(data, category)`` pairs; one of this tensor's variables reuses an
        entry with the same data object (``is``) and category, else it is appended in place.
        Returns the renumbered formula and the positions, in ``self.variables``, of the
        variables that were appended (in the order they were appended).
        """
        positions, added = [], []
        for pos, (data, cat) in enumerate(self.variables):
            for k, (d, c) in enumerate(variables):  # noqa: B007  (k: the entry found)
                if d is data and c == cat:
                    break
            else:
                k = len(variables)
                variables.append((data, cat))
                added.append(pos)
            positions.append(k)
        return _renumbered(self.formula, tuple(positions)), added

    def _merge(self, other: LazyTensor) -> tuple[Node, tuple]:
        """Other's formula renumbered into self's variable list, and the merged list."""
        variables = list(self.variables)
        formula, _ = other.merge_into(variables)
        return formula, tuple(variables)

    def _op(self, name: str, *others: Operand, params: tuple = ()) -> LazyTensor:
        if not others:  # a unary operation: the same variables
            res = LazyTensor._make(_call(name, (self.formula,), params), self.variables)
            res.ranges = self.ranges
            return res
        if name in _COMPLEX_ARITHMETIC and _is_complex(others[0]):
            return getattr(ComplexLazyTensor.of(self), _COMPLEX_ARITHMETIC[name])(others[0])
        variables = list(self.variables)
        args = [self.formula]
        for o in others:
            if isinstance(o, int) and not isinstance(o, bool):
                args.append(IntCst(o))
            else:
                args.append(_lazy(o).merge_into(variables)[0])
        res = LazyTensor._make(_call(name, tuple(args), params), tuple(variables))
        res.ranges = _common_ranges(self, *others)
        return res

    def _rop(self, name: str, other: Operand) -> LazyTensor:
        if name in _COMPLEX_ARITHMETIC and _is_complex(other):
            return getattr(ComplexLazyTensor.of(other), _COMPLEX_ARITHMETIC[name])(self)
        if isinstance(other, int) and not isinstance(other, bool):
            res = LazyTensor._make(call(name, IntCst(other), self.formula), self.variables)
            res.ranges = self.ranges
            return res
        return LazyTensor(other)._op(name, self)

    # arithmetic
    def __add__(self, o):
        return self._op("Add", o)

    def __radd__(self, o):
        return self._rop("Add", o)

    def __sub__(self, o):
        return self._op("Subtract", o)

    def __rsub__(self, o):
        return self._rop("Subtract", o)

    def __mul__(self, o):
        return self._op("Mult", o)

    def __rmul__(self, o):
        return self._rop("Mult", o)

    def __truediv__(self, o):
        return self._op("Divide", o)

    def __rtruediv__(self, o):
        return self._rop("Divide", o)

    def __neg__(self):
        return self._op("Minus")

    def __abs__(self):
        return self._op("Abs")

    def __or__(self, o):
        return self._op("Scalprod", o)

    def __ror__(self, o):
        return self._rop("Scalprod", o)

    def __pow__(self, p):
        if isinstance(p, int) and not isinstance(p, bool):
            return self._op("Pow", params=(p,))
        if isinstance(p, float) and p == 0.5:
            return self.sqrt()
        if isinstance(p, float) and p == -0.5:
            return self.rsqrt()
        if isinstance(p, float) and p.is_integer():
            return self._op("Pow", params=(int(p),))
        return self._op("Powf", p)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if key and key[0] is Ellipsis:
            key = key[1:]
        elif len(key) == self.ndim and all(k == slice(None) for k in key[:-1]):
            key = key[-1:]
        if len(key) != 1:
            raise ShapeError("index a LazyTensor on its vector axis: x[..., k] or x[..., a:b]")
        k = key[0]
        d = self.formula.dim
        if isinstance(k, int) and not isinstance(k, bool):
            k = k + d if k < 0 else k
            return self._op("Elem", params=(k,))
        if isinstance(k, slice):
            start, stop, step = k.indices(d)
            if step != 1 or stop <= start:
                raise ShapeError(f"only contiguous non-empty slices of the vector axis are supported, got {k}")
            return self._op("Extract", params=(start, stop - start))
        raise ShapeError(f"cannot index a LazyTensor with {k!r}")

    # maths (element-wise unless stated)
    def exp(self):
        return self._op("Exp")

    def log(self):
        return self._op("Log")

    def xlogx(self):
        return self._op("XLogX")

    def inv(self):
        return self._op("Inv")

    def sqrt(self):
        return self._op("Sqrt")

    def rsqrt(self):
        return self._op("Rsqrt")

    def square(self):
        return self._op("Square")

    def abs(self):
        return self._op("Abs")

    def sign(self):
        return self._op("Sign")

    def step(self):
        return self._op("Step")

    def relu(self):
        return self._op("ReLU")

    def floor(self):
        return self._op("Floor")

    def sin(self):
        return self._op("Sin")

    def cos(self):
        return self._op("Cos")

    def asin(self):
        return self._op("Asin")

    def acos(self):
        return self._op("Acos")

    def atan(self):
        return self._op("Atan")

    def atan2(self, other):
        return self._op("Atan2", other)

    def sinxdivx(self):
        return self._op("SinXDivX")

    def real2complex(self) -> ComplexLazyTensor:
        """This real tensor as a complex one (zero imaginary parts)."""
        return self._same(_word("Real2Complex", self.formula), ComplexLazyTensor)

    def imag2complex(self) -> ComplexLazyTensor:
        """i times this real tensor."""
        return self._same(_word("Imag2Complex", self.formula), ComplexLazyTensor)

    def exp1j(self) -> ComplexLazyTensor:
        """exp(i·x), complex."""
        return self._same(_word("ComplexExp1j", self.formula), ComplexLazyTensor)

    def sinc(self):
        """sin(πx) / (πx), 1 at 0 (torch's and pykeops' normalised sinc)."""
        return (self * np.pi)._op("SinXDivX")

    def power(self, other):
        return self._op("Powf", other)

    def round(self, d: int = 0):
        return self._op("Round", params=(d,))

    def clamp(self, lo, hi):
        return self._op("Clamp", lo, hi)

    def clampint(self, lo: int, hi: int):
        return self._op("ClampInt", params=(lo, hi))

    def ifelse(self, a, b):
        return self._op("IfElse", a, b)

    def mod(self, modulus, offset=0):
        return self._op("Mod", modulus, offset)

    def sqnorm2(self):
        return self._op("SqNorm2")

    def norm2(self):
        return self._op("Norm2")

    def norm(self, dim=-1):
        self._vector_dim(dim)
        return self._op("Norm2")

    def normalize(self):
        return self._op("Normalize")

    def sqdist(self, other):
        return self._op("SqDist", other)

    def weightedsqnorm(self, w):
        return _lazy(w)._op("WeightedSqNorm", self)

    def weightedsqdist(self, other, w):
        return _lazy(w)._op("WeightedSqDist", self, other)

    def elem(self, k: int):
        return self._op("Elem", params=(k,))

    def extract(self, start: int, d: int):
        return self._op("Extract", params=(start, d))

    def concat(self, other):
        return self._op("Concat", other)

    def one_hot(self, d: int):
        return self._op("OneHot", params=(d,))

    def matvecmult(self, other):
        return self._op("MatVecMult", other)

    def vecmatmult(self, other):
        return self._op("VecMatMult", other)

    def tensorprod(self, other):
        return self._op("TensorProd", other)

    def keops_tensordot(self, other, dimfa, dimfb, contfa, contfb, permute=()):
        """pykeops' tensor contraction of the vector components (the ``TensorDot`` operation)."""
        params = tuple(_int_tuple(p) for p in (dimfa, dimfb, contfa, contfb, permute))
        return self._op("TensorDot", other, params=params)

    def keops_kron(self, other, dimfself, dimfother):
        """pykeops' Kronecker product of the vector components (the ``Kron`` operation)."""
        return self._op("Kron", other, params=(_int_tuple(dimfself), _int_tuple(dimfother)))

    def equal(self, other):
        return self._op("Equal", other)

    def notequal(self, other):
        return self._op("NotEqual", other)

    def lessthan(self, other):
        return self._op("LessThan", other)

    def lessorequal(self, other):
        return self._op("LessOrEqual", other)

    # comparisons build formulas (0 or 1), as in pykeops
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self._op("Equal", other)

    def __ne__(self, other):
        return self._op("NotEqual", other)

    def __lt__(self, other):
        return self._op("LessThan", other)

    def __le__(self, other):
        return self._op("LessOrEqual", other)

    def __gt__(self, other):
        return self._rop("LessThan", other)

    def __ge__(self, other):
        return self._rop("LessOrEqual", other)

    @staticmethod
    def concatenate(tensors: tuple, axis: int = -1) -> LazyTensor:
        """The concatenation of LazyTensors along the vector axis (``axis=-1``)."""
        if not isinstance(tensors, (tuple, list)) or not tensors:
            raise ShapeError("LazyTensor.concatenate takes a non-empty tuple of LazyTensors")
        tensors[0]._vector_dim(axis)
        out = tensors[0]
        for t in tensors[1:]:
            out = out.concat(t)
        return out

    @staticmethod
    def cat(tensors: tuple, dim: int = -1) -> LazyTensor:
        """torch's spelling of :meth:`concatenate`."""
        return LazyTensor.concatenate(tensors, dim)

    def grad(self, other: LazyTensor, gradin: Operand) -> LazyTensor:
        """The symbolic gradient of this formula with respect to the variable ``other``, applied to ``gradin``."""
        acc = LazyTensor._make(self.formula, self.variables)
        var, variables = acc._merge(_lazy(other))
        if var.op != "Var":
            raise ShapeError("grad differentiates with respect to a variable: a LazyTensor made from one array")
        e, variables = LazyTensor._make(self.formula, variables)._merge(_lazy(gradin))
        return LazyTensor._make(symbolic_grad(self.formula, var, e), variables)

    def _vector_dim(self, dim) -> None:
        if dim not in (-1, self.ndim - 1):
            raise ShapeError(f"this operation works on the vector axis (dim=-1), got dim={dim}")

    @property
    def T(self) -> LazyTensor:
        """The transpose: i- and j-variables exchange roles."""
        swap = {CAT_I: CAT_J, CAT_J: CAT_I, CAT_PARAM: CAT_PARAM}
        variables = tuple((d, swap[c]) for d, c in self.variables)
        mapping = {v: Var(v.params[0], v.params[1], swap[v.params[2]]) for v in self.formula.variables()}
        res = LazyTensor._make(self.formula.replace(mapping), variables)
        res.ranges = swap_axes(self.ranges)
        return res

    def t(self) -> LazyTensor:
        return self.T

    def with_ranges(self, ranges: Any) -> LazyTensor:
        """This tensor with the block-sparsity pattern ``ranges`` (pykeops' 6-tuple; None: dense).

        >>> x = np.arange(3.0)[:, None]
        >>> K = LazyTensor(x[:, None, :]) * LazyTensor(x[None, :, :])
        >>> r = ([[0, 3]], [1], [[0, 1]], [[0, 1], [1, 3]], [1, 1], [[0, 3]])   # column 0 only
        >>> K.with_ranges(r).sum(dim=1, backend="numpy").ravel(), K.sum(dim=1, backend="numpy").ravel()
        (array([0., 0., 0.]), array([0., 3., 6.]))
        """
        res = LazyTensor._make(self.formula, self.variables)
        res.ranges = ranges
        return res

    # -- reductions --------------------------------------------------------------------------
    def _axis(self, dim: int) -> int | None:
        """0 (over i), 1 (over j) or None (the vector axis)."""
        if dim == -1:  # (without counting the batch dimensions)
            return None
        nb = self.ndim - 3
        if dim in (-1, nb + 2):
            return None
        if dim in (nb, -3):
            return 0
        if dim in (nb + 1, -2):
            return 1
        raise ShapeError(f"dim must be {nb} or -3 (over i), {nb + 1} or -2 (over j), or -1 (vector axis); got {dim}")

    def _reduce(
        self,
        name: str,
        axis: int,
        K: int | None = None,
        weight: Operand | None = None,
        backend: str | None = None,
        ranges: Any = None,
    ) -> list:
        return self._bind(name, axis, K, weight, backend, ranges).run(())

    def _bind(
        self, name: str, axis: int, K: int | None, weight: Operand | None, backend: str | None, ranges: Any = None
    ) -> _BoundReduction:
        formula, variables = self.formula, self.variables
        weight_formula = None
        if weight is not None:
            weight_formula, variables = self._merge(_lazy(weight))
        red = _reduction(name, formula, weight_formula, K)
        slots = list(_slots(tuple((cat, _dim(data)) for data, cat in variables)))
        ranges = _common_ranges(self, weight) if ranges is None else ranges
        return _BoundReduction(red, slots, variables, axis, backend, ranges)

    def _simple(self, name: str, vector_op: str | None, dim: int | None, backend, compat: dict, default: int, **kw):
        post = kw.pop("post", None)
        opts = _CallOptions.take(compat) if compat else _NO_OPTIONS
        if opts.other is not None:
            kw["weight"] = opts.other
        ranges = compat.pop("ranges", None)  # pykeops' per-call ranges=, else self.ranges
        axis = self._axis(_reduction_dim(dim, compat, default))
        if axis is None:
            if vector_op is None:
                raise ShapeError(f"{name} is not available over the vector axis")
            return self._op(vector_op)
        bound = self._bind(name, axis, kw.get("K"), kw.get("weight"), backend, ranges)
        bound.post, bound.keepdim = post, opts.keepdim
        if not opts.call or bound.symbolic:
            return bound
        return bound(out=opts.out)

    def sum(self, dim: int | None = None, backend: str | None = None, **compat):
        """Σ over i (dim=0), j (dim=1) or the vector components (dim=-1, symbolic)."""
        return self._simple("Sum", "Sum", dim, backend, compat, -1)

    def sum_reduction(self, dim: int | None = None, **kw):
        if dim is None and "axis" not in kw:
            dim = 1
        return self.sum(dim, **kw)

    def min(self, dim: int | None = None, backend: str | None = None, **compat):
        return self._simple("Min", "Min", dim, backend, compat, -1)

    def max(self, dim: int | None = None, backend: str | None = None, **compat):
        return self._simple("Max", "Max", dim, backend, compat, -1)

    def argmin(self, dim: int | None = None, backend: str | None = None, **compat):
        return self._simple("ArgMin", "ArgMin", dim, backend, compat, -1)

    def argmax(self, dim: int | None = None, backend: str | None = None, **compat):
        return self._simple("ArgMax", "ArgMax", dim, backend, compat, -1)

    def min_argmin(self, dim: int | None = None, backend: str | None = None, **compat):
        return self._simple("Min_ArgMin", None, dim, backend, compat, 1)

    def max_argmax(self, dim: int | None = None, backend: str | None = None, **compat):
        return self._simple("Max_ArgMax", None, dim, backend, compat, 1)

    def _kshape(self, out):
        d = self.formula.dim
        return out.reshape(tuple(out.shape[:-1]) + ((-1,) if d == 1 else (-1, d)))

    def Kmin(self, K: int, dim: int | None = None, backend: str | None = None, **compat):
        """The K smallest values, sorted: shape (N, K) for scalars, (N, K, D) for vectors."""
        return self._simple("KMin", None, dim, backend, compat, 1, K=K, post=self._kshape)

    def argKmin(self, K: int, dim: int | None = None, backend: str | None = None, **compat):
        """Indices (int64) of the K smallest values, sorted by value."""
        return self._simple("ArgKMin", None, dim, backend, compat, 1, K=K, post=self._kshape)

    def Kmin_argKmin(self, K: int, dim: int | None = None, backend: str | None = None, **compat):
        return self._simple("KMin_ArgKMin", None, dim, backend, compat, 1, K=K, post=self._kshape)

    def logsumexp(self, dim: int | None = None, weight: Operand | None = None, backend: str | None = None, **compat):
        """log Σ exp(F) over i or j (stable); with ``weight`` G: log Σ exp(F)·G."""
        if weight is None:
            return self._simple("LogSumExp", None, dim, backend, compat, 1)
        return self._simple("LogSumExpWeight", None, dim, backend, compat, 1, weight=weight)

    def sumsoftmaxweight(self, weight: Operand, dim: int | None = None, backend: str | None = None, **compat):
        """Σ exp(F)·G / Σ exp(F) over i or j."""
        return self._simple("SumSoftMaxWeight", None, dim, backend, compat, 1, weight=weight)

    def __matmul__(self, v: Any, **options: Any):
        """K @ v = Σ_j K_ij v_j for a scalar K and v of shape (M,) or (..., M, E).

        ``K.__matmul__(v, backend=…, out=…)`` takes the reductions' pykeops keywords.
        """
        if self.formula.dim != self._unit_dim:
            raise ShapeError(
                f"K @ v needs a scalar LazyTensor, this one has dimension {self._shape[-1] // self._unit_dim}"
            )
        flat = tuple(v.shape) if hasattr(v, "shape") else None
        if flat is None or len(flat) == 0:
            raise ShapeError("K @ v needs an array v of shape (M,) or (M, E)")
        vj = LazyTensor(v.reshape(flat[0], 1) if len(flat) == 1 else v, axis=1)
        out = (self * vj).sum(dim=self.ndim - 2, **options)
        return out.reshape(out.shape[:-1]) if len(flat) == 1 and options.get("out") is None else out

    def matvec(self, v: Any) -> Any:
        """K @ v: with :attr:`shape` (N, M) and :attr:`dtype`, what ``scipy.sparse.linalg.aslinearoperator`` reads.

        >>> from scipy.sparse.linalg import aslinearoperator
        >>> x = np.arange(3.0)[:, None]
        >>> A = aslinearoperator(LazyTensor(x[:, None, :]) * LazyTensor(x[None, :, :]))   # x_i x_j
        >>> A.shape, A.matvec(np.ones(3)), A.rmatvec(np.array([0.0, 1.0, 0.0]))
        ((3, 3), array([0., 3., 6.]), array([0., 1., 2.]))
        """
        return self @ v

    def rmatvec(self, v: Any) -> Any:
        """Kᵀ @ v (pykeops' alias for scipy)."""
        return self.T @ v


def _common_ranges(*operands: Operand) -> Any:
    """The ranges an operation's result keeps: the one set on its LazyTensor operands (pykeops' rule).

    ShapeError when two operands have different ranges.
    """
    found = None
    for o in operands:
        r = o.ranges if isinstance(o, LazyTensor) else None
        if r is None or r is found:
            continue
        if found is not None and not _same_ranges(found, r):
            raise ShapeError("cannot combine LazyTensors with different ranges (block-sparsity patterns)")
        found = r
    return found


def _same_ranges(a: Any, b: Any) -> bool:
    try:
        return len(a) == len(b) and all(np.array_equal(host_integers(x), host_integers(y)) for x, y in zip(a, b))
    except TypeError:  # not a tuple of arrays: the reduction will say what is wrong
        return False


def _reduction_dim(dim: int | None, compat: dict, default: int) -> int:
    """The reduction axis: pykeops spells it ``dim=`` or ``axis=``; its other options are ignored."""
    axis = compat.pop("axis", None)
    _check_compat(compat)
    if dim is not None and axis is not None and dim != axis:
        raise ShapeError(f"dim={dim} and axis={axis} name different axes")
    chosen = dim if dim is not None else axis
    return default if chosen is None else chosen


def _lazy(x: Operand) -> LazyTensor:
    return x if isinstance(x, LazyTensor) else LazyTensor(x)


# memoised: a user's loop builds and reduces the same expressions on new data at every call
def _call(name: str, args: tuple[Node, ...], params: tuple) -> Node:
    """``call(name, *args, params=params)``, memoised when the parameters are plain integers."""
    for p in params:
        if type(p) is not int:  # (a tuple, or a value the operation refuses: the checks see it)
            return call(name, *args, params=params)
    node = _known_call(name, args, params)
    return node if node.dim <= limits.MAX_DIM else call(name, *args, params=params)  # (the limit may have changed)


@functools.lru_cache(maxsize=4096)
def _known_call(name: str, args: tuple[Node, ...], params: tuple[int, ...]) -> Node:
    return call(name, *args, params=params)


@functools.lru_cache(maxsize=4096)
def _renumbered(formula: Node, positions: tuple[int, ...]) -> Node:
    """``formula`` with variable number ``p`` renumbered ``positions[p]``."""
    mapping = {}
    for v in formula.variables():
        pos, dim, cat = v.params
        if positions[pos] != pos:
            mapping[v] = Var(positions[pos], dim, cat)
    return formula.replace(mapping) if mapping else formula


def _reduction(name: str, formula: Node, weight: Node | None, K: Any) -> Reduction:
    """``Reduction(name, formula, weight, K)``: the same object for the same arguments (``K`` None or an int)."""
    if K is None or type(K) is int:
        return _known_reduction(name, formula, weight, K)
    return Reduction(name, formula, weight, K)  # (a K of another type: the reduction checks it)


@functools.lru_cache(maxsize=1024)
def _known_reduction(name: str, formula: Node, weight: Node | None, K: int | None) -> Reduction:
    return Reduction(name, formula, weight, K)


@functools.lru_cache(maxsize=1024)
def _slots(variables: tuple[tuple[int, int], ...]) -> tuple[Slot, ...]:
    """The argument slots of variables of these (category, dimension)."""
    return tuple(Slot(f"variable {k} ({'ijp'[cat]})", cat, dim) for k, (cat, dim) in enumerate(variables))


def _int_tuple(p: Any) -> tuple:
    return (int(p),) if isinstance(p, (int, np.integer)) else tuple(int(k) for k in p)


def _dim(data: Any) -> int:
    if isinstance(data, _Placeholder):
        return data.dim
    return 1 if arr.kind_of(data) == "scalar" else int(data.shape[-1])


def Vi(x: Any, dim: int | None = None) -> LazyTensor:
    """An i-variable from an (N, D) array (or (N,) for D = 1); ``Vi(index, dim)``: a symbolic one."""
    if isinstance(x, int) and dim is not None:
        return LazyTensor((x, dim, CAT_I))
    return LazyTensor(x.reshape(-1, 1) if getattr(x, "ndim", 0) == 1 else x, axis=0)


def Vj(x: Any, dim: int | None = None) -> LazyTensor:
    """A j-variable from an (M, D) array (or (M,) for D = 1); ``Vj(index, dim)``: a symbolic one."""
    if isinstance(x, int) and dim is not None:
        return LazyTensor((x, dim, CAT_J))
    return LazyTensor(x.reshape(-1, 1) if getattr(x, "ndim", 0) == 1 else x, axis=1)


def Pm(x: Any, dim: int | None = None) -> LazyTensor:
    """A parameter from a number, a list of numbers or a (D,) array; ``Pm(index, dim)``: a symbolic one."""
    if isinstance(x, int) and dim is not None:
        return LazyTensor((x, dim, CAT_PARAM))
    if isinstance(x, list) or arr.kind_of(x) == "scalar":
        return LazyTensor(x)
    return LazyTensor(x, axis=2)


# ---------------------------------------------------------------------------------------------
# pykeops' calling conventions: symbolic variables, list parameters, call=False, out=
# ---------------------------------------------------------------------------------------------
class _Placeholder:
    """A variable whose data is supplied later (symbolic) or converted at the call (a list)."""

    dim: int


@dataclass(frozen=True, eq=False)
class _Symbolic(_Placeholder):
    """pykeops' ``Vi(index, dim)``: the data is the call's argument number ``index``."""

    index: int
    dim: int

    @staticmethod
    @functools.cache
    def of(index: int, dim: int, cat: int) -> _Symbolic:
        """One object per (index, dim, category), so that two uses share one argument slot."""
        if index < 0 or dim < 1:
            raise ShapeError(f"a symbolic variable needs an index >= 0 and a dimension >= 1, got ({index}, {dim})")
        return _Symbolic(index, dim)


@dataclass(frozen=True, eq=False)
class _ListParam(_Placeholder):
    """``LazyTensor([1.0, 2.0])``: a parameter, made an array of the call's kind and dtype when it runs."""

    values: tuple

    @property
    def dim(self) -> int:  # type: ignore[override]
        return len(self.values)


@dataclass(frozen=True)
class _CallOptions:
    """The pykeops keywords of a reduction that kernla acts on."""

    out: Any = None
    other: Any = None
    keepdim: bool = False
    call: bool = True

    @classmethod
    def take(cls, compat: dict) -> _CallOptions:
        return cls(**{k: compat.pop(k) for k in ("out", "other", "keepdim", "call") if k in compat})


#: the options of a reduction called without keywords
_NO_OPTIONS = _CallOptions()


class _BoundReduction:
    """A reduction and its variables; calling it runs it.

    What a reduction returns with ``call=False`` or over symbolic variables (``Vi(0, 3)``): call
    it with the arrays of the symbolic variables, by index (``f(x, y)``), or with nothing.
    """

    def __init__(
        self, red: Reduction, slots: list, variables: tuple, axis: int, backend: str | None, ranges: Any = None
    ):
        self.red, self.slots, self.variables, self.axis, self.backend = red, slots, variables, axis, backend
        self.ranges = ranges
        self.post: Callable[[Any], Any] | None = None
        self.keepdim = False

    @property
    def symbolic(self) -> bool:
        return any(isinstance(d, _Symbolic) for d, _ in self.variables)

    def run(self, args: tuple, backend: str | None = None) -> list:
        data = _resolve(self.variables, args)
        return reduce(self.red, self.slots, data, self.axis, backend or self.backend, self.ranges)

    def __call__(self, *args: Any, backend: str | None = None, out: Any = None, **compat: Any):
        _check_compat(compat)
        outs = [self._finish(o) for o in self.run(args, backend)]
        result = outs[0] if len(outs) == 1 else tuple(outs)
        return result if out is None else write_out(out, result)

    def _finish(self, o: Any) -> Any:
        cut = o.ndim - (2 if self.axis == 0 else 1)  # where the reduced axis was (before any post-processing)
        if self.post is not None:
            o = self.post(o)
        if self.keepdim:
            return o.reshape(tuple(o.shape[:cut]) + (1,) + tuple(o.shape[cut:]))
        return o

    def __repr__(self) -> str:
        return f"<{self.red.name} over {'ij'[self.axis]} of {self.red.formula}, a callable>"


def _resolve(variables: tuple, args: tuple) -> list:
    """The data of each variable: symbolic ones from ``args``, lists as arrays of the others' kind."""
    data = []
    for d, _ in variables:
        if isinstance(d, _Symbolic):
            if d.index >= len(args):
                raise ShapeError(f"this reduction reads argument {d.index}, but the call has {len(args)} argument(s)")
            d = args[d.index]
        data.append(d)
    if not any(isinstance(d, _ListParam) for d in data):
        return data
    arrays = {str(k): d for k, d in enumerate(data) if not isinstance(d, _ListParam)}
    kind, dtype = arr.common_kind(arrays), arr.common_dtype(arrays)
    return [arr.wrap(np.asarray(d.values, dtype), kind) if isinstance(d, _ListParam) else d for d in data]


# ---------------------------------------------------------------------------------------------
# complex numbers: interleaved (re, im) formulas, as in pykeops
# ---------------------------------------------------------------------------------------------
#: the arithmetic that a complex operand turns into complex arithmetic
_COMPLEX_ARITHMETIC = {"Add": "__add__", "Subtract": "__sub__", "Mult": "__mul__", "Divide": "__truediv__"}
#: the complex words of the binary operators (kernla.formula.complex_words)
_COMPLEX_BINARY = {"Add": "ComplexAdd", "Subtract": "ComplexSubtract", "Mult": "ComplexMult", "Divide": "ComplexDivide"}
_COMPLEX_OF = {"float16": "complex32", "float32": "complex64", "float64": "complex128"}


def _word(name: str, *args: Any) -> Node:
    """The formula of the complex word ``name`` (kernla.formula.complex_words) applied to ``args``."""
    return COMPLEX_WORDS[name][2](*args)


def _is_complex(x: Any) -> bool:
    """A complex number, a complex NumPy / torch / CuPy array, or a ComplexLazyTensor."""
    if isinstance(x, (complex, np.complexfloating, ComplexLazyTensor)):
        return True
    if isinstance(x, LazyTensor):  # (before reading a dtype: a LazyTensor's is a property that looks at its data)
        return False
    if isinstance(x, list):
        return any(isinstance(v, (complex, np.complexfloating)) for v in x)
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return False
    return bool(getattr(dtype, "is_complex", False)) or getattr(dtype, "kind", "") == "c"


def _as_real(z: Any) -> Any:
    """A complex array (..., D) as its real view (..., 2D), interleaved (re, im); differentiable for torch."""
    if arr.kind_of(z) == "torch":
        torch = sys.modules["torch"]  # loaded: z is a torch tensor
        return torch.view_as_real(z.resolve_conj()).reshape(*z.shape[:-1], -1)
    z = z.reshape(1) if z.ndim == 0 else z
    c = z if z.flags.c_contiguous else z.copy()
    return c.view(c.real.dtype)


def _as_complex(out: Any) -> Any:
    """A real reduction output (..., 2E) back as complex (..., E)."""
    if arr.kind_of(out) == "torch":
        torch = sys.modules["torch"]  # loaded: out is a torch tensor
        return torch.view_as_complex(out.reshape(*out.shape[:-1], -1, 2).contiguous())
    c = out if out.flags.c_contiguous else out.copy()
    return c.view(_COMPLEX_OF[c.dtype.name])


class ComplexLazyTensor(LazyTensor):
    """pykeops' complex LazyTensor: a formula of even dimension 2D, the (re, im) pairs of D complex values.

    ``LazyTensor(z)`` for a complex NumPy / torch array (or a complex number, or a list of them)
    makes one. Arithmetic with complex or real numbers, arrays and LazyTensors, ``exp``, ``conj``,
    ``abs``, ``angle``, ``real`` / ``imag``, ``sum`` (over i, j or the vector axis) and ``@`` build
    the ``Complex*`` words of :mod:`kernla.formula.complex_words`, so they run on every engine;
    reductions return complex arrays, differentiable with torch. :attr:`shape` counts complex
    components; :attr:`_shape` is the real formula's.

    >>> z = np.array([[[1 + 2j]], [[3 - 1j]]])                       # (2, 1, 1): an i-variable
    >>> w = np.array([[[1j], [2.0 + 0j]]])                           # (1, 2, 1): a j-variable
    >>> K = (LazyTensor(z) * LazyTensor(w)).exp()
    >>> K.shape, K._shape, K.sum(dim=1, backend="numpy").ravel().round(3)
    ((2, 2), (2, 2, 2), array([  -4.757  -5.478j, -170.577-366.453j]))
    """

    _unit_dim = 2

    def __new__(cls, x: Any = None, axis: int | None = None):
        return object.__new__(cls)

    def __init__(self, x: Any = None, axis: int | None = None):
        if isinstance(x, LazyTensor):
            super().__init__(x)
        elif isinstance(x, (complex, np.complexfloating, int, float)):
            super().__init__([complex(x).real, complex(x).imag])
        elif isinstance(x, list):
            super().__init__([p for v in x for p in (complex(v).real, complex(v).imag)])
        else:
            super().__init__(_as_real(x), axis)
        if self.formula.dim % 2:
            raise ShapeError(f"a complex LazyTensor has an even dimension (re, im pairs), got {self.formula.dim}")

    @staticmethod
    def of(x: Any) -> ComplexLazyTensor:
        """``x`` as a ComplexLazyTensor (a real LazyTensor, number or array gets zero imaginary parts)."""
        if isinstance(x, ComplexLazyTensor):
            return x
        if _is_complex(x):
            return ComplexLazyTensor(x)
        return _lazy(x).real2complex()

    # -- structure: complex components ---------------------------------------------------------
    @property
    def dtype(self) -> Any:
        """The complex dtype of the data (complex128 for float64 parts), in its own library's spelling."""
        real = super().dtype
        if real is None:
            return None
        name = _COMPLEX_OF[str(real).replace("torch.", "")]
        return getattr(sys.modules["torch"], name) if str(real).startswith("torch.") else np.dtype(name)

    @property
    def T(self) -> ComplexLazyTensor:
        return ComplexLazyTensor(super().T)

    def with_ranges(self, ranges: Any) -> ComplexLazyTensor:
        return ComplexLazyTensor(super().with_ranges(ranges))

    # -- complex operations ---------------------------------------------------------------------
    @property
    def real(self) -> LazyTensor:
        return self._same(_word("ComplexReal", self.formula))

    @property
    def imag(self) -> LazyTensor:
        return self._same(_word("ComplexImag", self.formula))

    def conj(self) -> ComplexLazyTensor:
        return self._same(_word("Conj", self.formula), ComplexLazyTensor)

    def abs(self) -> LazyTensor:
        """The modulus |z|, a real LazyTensor."""
        return self._same(_word("ComplexAbs", self.formula))

    __abs__ = abs

    def angle(self) -> LazyTensor:
        """The argument of z in (-π, π], a real LazyTensor."""
        return self._same(_word("ComplexAngle", self.formula))

    def exp(self) -> ComplexLazyTensor:
        """exp(a + ib) = exp(a) (cos b + i sin b)."""
        return self._same(_word("ComplexExp", self.formula), ComplexLazyTensor)

    def __neg__(self) -> ComplexLazyTensor:
        return self._same(-self.formula, ComplexLazyTensor)

    def real2complex(self):
        raise ShapeError("real2complex applies to a real LazyTensor, this one is complex")

    imag2complex = exp1j = real2complex

    def _binary(self, name: str, other: Operand, reverse: bool = False) -> ComplexLazyTensor:
        o = other if isinstance(other, LazyTensor) else ComplexLazyTensor(other) if _is_complex(other) else None
        o = LazyTensor(other) if o is None else o
        if isinstance(o, ComplexLazyTensor) or not (name == "Mult" and o.formula.dim == 1):
            o = ComplexLazyTensor.of(o)
        variables = list(self.variables)
        f, _ = o.merge_into(variables)
        a, b = (f, self.formula) if reverse else (self.formula, f)
        if isinstance(o, ComplexLazyTensor):
            formula = _word(_COMPLEX_BINARY[name], a, b)
        else:
            formula = _word("ComplexRealScal", a, b)
        res = ComplexLazyTensor._make(formula, tuple(variables))
        res.ranges = _common_ranges(self, other)
        return res

    def __add__(self, o):
        return self._binary("Add", o)

    def __radd__(self, o):
        return self._binary("Add", o, reverse=True)

    def __sub__(self, o):
        return self._binary("Subtract", o)

    def __rsub__(self, o):
        return self._binary("Subtract", o, reverse=True)

    def __mul__(self, o):
        return self._binary("Mult", o)

    def __rmul__(self, o):
        return self._binary("Mult", o, reverse=True)

    def __truediv__(self, o):
        return self._binary("Divide", o)

    def __rtruediv__(self, o):
        return self._binary("Divide", o, reverse=True)

    # -- reductions: sums only, complex arrays back ---------------------------------------------
    def sum(self, dim: int | None = None, backend: str | None = None, **compat):
        """Σ over i (dim=0), j (dim=1) — complex arrays back — or the complex components (dim=-1, symbolic)."""
        if self._axis(dim if dim is not None else compat.get("axis", -1)) is None:
            return self._same(_word("ComplexSum", self.formula), ComplexLazyTensor)
        return LazyTensor._simple(self, "Sum", None, dim, backend, compat, -1, post=_as_complex)

    def _simple(self, name: str, vector_op: str | None, dim: int | None, backend, compat: dict, default: int, **kw):
        raise ShapeError(
            f"{name} is not defined for complex values: reduce K.real, K.imag or K.abs(), or sum (K.sum, K @ v)"
        )
