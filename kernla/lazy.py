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

from collections.abc import Callable
from typing import Any, Union

import numpy as np

from . import arrays as arr
from .core import host_integers
from .engines.ranges import swap_axes
from .errors import ShapeError
from .formula import CAT_I, CAT_J, CAT_PARAM, Var, call
from .formula.tree import IntCst, Node
from .genred import Slot, _check_compat, reduce
from .reductions import Reduction

Operand = Union["LazyTensor", float, int, Any]


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

    def __init__(self, x: Any = None, axis: int | None = None):
        if isinstance(x, LazyTensor):
            self.formula, self.variables, self.ranges = x.formula, x.variables, x.ranges
            return
        if x is None:
            raise ShapeError("LazyTensor needs an array or a number")
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
        elif len(shape) >= 3 and shape[-3] == 1 and shape[-2] == 1:
            data, cat = x[..., 0, 0, :], CAT_PARAM
        elif len(shape) >= 3 and shape[-2] == 1:
            data, cat = x[..., :, 0, :], CAT_I
        elif len(shape) >= 3 and shape[-3] == 1:
            data, cat = x[..., 0, :, :], CAT_J
        else:
            raise ShapeError(
                f"cannot tell the role of an array of shape {shape}: use (N, 1, D) for an i-variable, "
                "(1, M, D) for a j-variable, (D,) for a parameter, or pass axis="
            )
        self.formula = Var(0, int(data.shape[-1]), cat)
        self.variables = ((data, cat),)

    @classmethod
    def _make(cls, formula: Node, variables: tuple) -> LazyTensor:
        obj = cls.__new__(cls)
        obj.formula, obj.variables = formula, variables
        return obj

    # -- structure ---------------------------------------------------------------------------
    def _size(self, cat: int) -> int | None:
        for data, c in self.variables:
            if c == cat:
                return int(data.shape[-2])
        return None

    @property
    def ndim(self) -> int:
        return 3 + len(self._batch())

    def dim(self) -> int:
        """Number of dimensions, as pykeops' ``dim()``: 3 plus the batch dimensions."""
        return self.ndim

    def _batch(self) -> tuple:
        shapes = []
        for data, cat in self.variables:
            if arr.kind_of(data) == "scalar":
                continue
            lead = 1 if cat == CAT_PARAM else 2
            shapes.append(tuple(data.shape[:-lead]) if data.ndim > lead else ())
        return tuple(np.broadcast_shapes(*shapes)) if shapes else ()

    @property
    def shape(self) -> tuple:
        """(*batch, N, M, D), with 1 for an index no variable carries."""
        return self._batch() + (self._size(CAT_I) or 1, self._size(CAT_J) or 1, self.formula.dim)

    def __repr__(self) -> str:
        return f"LazyTensor(shape={self.shape}, formula={self.formula})"

    # -- combination -------------------------------------------------------------------------
    def merge_into(self, variables: list) -> tuple[Node, list[int]]:
        """This tensor's formula with its variables renumbered into the list ``variables``.

        ``variables`` holds ``(data, category)`` pairs; one of this tensor's variables reuses an
        entry with the same data object (``is``) and category, else it is appended in place.
        Returns the renumbered formula and the positions, in ``self.variables``, of the
        variables that were appended (in the order they were appended).
        """
        mapping, added = {}, []
        used = set(self.formula.variables())
        for pos, (data, cat) in enumerate(self.variables):
            k = next((k for k, (d, c) in enumerate(variables) if d is data and c == cat), len(variables))
            if k == len(variables):
                variables.append((data, cat))
                added.append(pos)
            old = Var(pos, _dim(data), cat)
            if old in used:
                mapping[old] = Var(k, _dim(data), cat)
        return self.formula.replace(mapping), added

    def _merge(self, other: LazyTensor) -> tuple[Node, tuple]:
        """Other's formula renumbered into self's variable list, and the merged list."""
        variables = list(self.variables)
        formula, _ = other.merge_into(variables)
        return formula, tuple(variables)

    def _op(self, name: str, *others: Operand, params: tuple = ()) -> LazyTensor:
        formula, variables = self.formula, self.variables
        args = [formula]
        acc = LazyTensor._make(formula, variables)
        for o in others:
            if isinstance(o, int) and not isinstance(o, bool):
                args.append(IntCst(o))
                continue
            o = o if isinstance(o, LazyTensor) else LazyTensor(o)
            f, variables = acc._merge(o)
            acc = LazyTensor._make(acc.formula, variables)
            args.append(f)
        res = LazyTensor._make(call(name, *args, params=params), variables)
        res.ranges = _common_ranges(self, *others)
        return res

    def _rop(self, name: str, other: Operand) -> LazyTensor:
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
        elif len(key) == 3 and all(k == slice(None) for k in key[:2]):
            key = key[2:]
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

    def equal(self, other):
        return self._op("Equal", other)

    def notequal(self, other):
        return self._op("NotEqual", other)

    def lessthan(self, other):
        return self._op("LessThan", other)

    def lessorequal(self, other):
        return self._op("LessOrEqual", other)

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
        formula, variables = self.formula, self.variables
        weight_formula = None
        if weight is not None:
            w = weight if isinstance(weight, LazyTensor) else LazyTensor(weight)
            weight_formula, variables = LazyTensor._make(formula, variables)._merge(w)
        red = Reduction(name, formula, weight_formula, K)
        slots = [Slot(f"variable {k} ({'ijp'[cat]})", cat, _dim(data)) for k, (data, cat) in enumerate(variables)]
        ranges = _common_ranges(self, weight) if ranges is None else ranges
        return reduce(red, slots, [data for data, _ in variables], axis, backend, ranges)

    def _simple(self, name: str, vector_op: str | None, dim: int | None, backend, compat: dict, default: int, **kw):
        ranges = compat.pop("ranges", None)  # pykeops' per-call ranges=, else self.ranges
        axis = self._axis(_reduction_dim(dim, compat, default))
        if axis is None:
            if vector_op is None:
                raise ShapeError(f"{name} is not available over the vector axis")
            return self._op(vector_op)
        out = self._reduce(name, axis, backend=backend, ranges=ranges, **kw)
        return out[0] if len(out) == 1 else tuple(out)

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
        return self._kshape(self._simple("KMin", None, dim, backend, compat, 1, K=K))

    def argKmin(self, K: int, dim: int | None = None, backend: str | None = None, **compat):
        """Indices (int64) of the K smallest values, sorted by value."""
        return self._kshape(self._simple("ArgKMin", None, dim, backend, compat, 1, K=K))

    def Kmin_argKmin(self, K: int, dim: int | None = None, backend: str | None = None, **compat):
        vals, idx = self._simple("KMin_ArgKMin", None, dim, backend, compat, 1, K=K)
        return self._kshape(vals), self._kshape(idx)

    def logsumexp(self, dim: int | None = None, weight: Operand | None = None, backend: str | None = None, **compat):
        """log Σ exp(F) over i or j (stable); with ``weight`` G: log Σ exp(F)·G."""
        if weight is None:
            return self._simple("LogSumExp", None, dim, backend, compat, 1)
        return self._simple("LogSumExpWeight", None, dim, backend, compat, 1, weight=weight)

    def sumsoftmaxweight(self, weight: Operand, dim: int | None = None, backend: str | None = None, **compat):
        """Σ exp(F)·G / Σ exp(F) over i or j."""
        return self._simple("SumSoftMaxWeight", None, dim, backend, compat, 1, weight=weight)

    def __matmul__(self, v: Any):
        """K @ v = Σ_j K_ij v_j for a scalar K and v of shape (M,) or (..., M, E)."""
        if self.formula.dim != 1:
            raise ShapeError(f"K @ v needs a scalar LazyTensor, this one has dimension {self.formula.dim}")
        flat = tuple(v.shape) if hasattr(v, "shape") else None
        if flat is None or len(flat) == 0:
            raise ShapeError("K @ v needs an array v of shape (M,) or (M, E)")
        vj = LazyTensor(v.reshape(flat[0], 1) if len(flat) == 1 else v, axis=1)
        out = (self * vj).sum(dim=self.ndim - 2)
        return out.reshape(out.shape[:-1]) if len(flat) == 1 else out


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


def _dim(data: Any) -> int:
    return 1 if arr.kind_of(data) == "scalar" else int(data.shape[-1])


def Vi(x: Any) -> LazyTensor:
    """An i-variable from an (N, D) array (or (N,) for D = 1)."""
    return LazyTensor(x.reshape(-1, 1) if getattr(x, "ndim", 0) == 1 else x, axis=0)


def Vj(x: Any) -> LazyTensor:
    """A j-variable from an (M, D) array (or (M,) for D = 1)."""
    return LazyTensor(x.reshape(-1, 1) if getattr(x, "ndim", 0) == 1 else x, axis=1)


def Pm(x: Any) -> LazyTensor:
    """A parameter from a number or a (D,) array."""
    if arr.kind_of(x) == "scalar":
        return LazyTensor(x)
    return LazyTensor(x, axis=2)
