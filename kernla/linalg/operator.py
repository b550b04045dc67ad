"""``KernelOperator``: an N×M kernel matrix as a ``scipy.sparse.linalg.LinearOperator``.

The matrix ``K_ij = F(x_i, y_j, params)`` is given by a scalar formula and its data; it is never
stored. Every product is one kernla ``Sum`` reduction: ``K @ B`` is ``Σ_j F_ij B_j`` (the formula
``F * Vj(B)``, one reduction for all columns of B), ``K.T @ U`` the same formula reduced over i.

>>> import numpy as np
>>> from kernla import Vi, Vj
>>> x = np.array([[0.0], [1.0], [3.0]])
>>> K = KernelOperator("Exp(-G * SqDist(X, Y))", X=Vi(x), Y=Vj(x), G=0.5)
>>> K.shape, K.dtype
((3, 3), dtype('float64'))
>>> bool(np.allclose(K @ np.ones(3), K.to_dense().sum(1)))
True
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .. import arrays as arr
from ..errors import DTypeError, FormulaError, InputValueError, ShapeError
from ..formula import CAT_I, CAT_J, CAT_PARAM, Var, call, parse
from ..formula.evaluate import evaluate
from ..formula.tree import CATEGORY_NAMES, Node, swap_ij
from ..genred import Slot, reduce
from ..lazy import LazyTensor
from ..reductions import Reduction
from . import _compute as cp

#: to_dense() refuses matrices with more entries than this unless forced (2**26 ≈ 67 M: 512 MB in float64)
DENSE_LIMIT = 2 ** 26

#: largest intermediate (in scalars) when evaluating blocks of the matrix with NumPy
_BLOCK_ELEMENTS = 1 << 21

#: columns per engine call in KernelOperator._columns (each call costs N·chunk² adds besides the kernel)
COLUMN_CHUNK = 16

_SWAP = {CAT_I: CAT_J, CAT_J: CAT_I, CAT_PARAM: CAT_PARAM}


def _is_number(x: Any) -> bool:
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)) or (
        isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "fiu")


def _is_foreign(x: Any) -> bool:
    """True for torch tensors and CuPy arrays (they bypass scipy's ``np.asarray`` wrappers)."""
    try:
        return arr.kind_of(x) in ("torch", "cupy")
    except arr.ArrayKindError:
        return False


def _is_torch(x: Any) -> bool:
    """True for torch tensors, without importing torch (NumPy-only programs never load it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _finite_number(x: Any, what: str) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise InputValueError(f"{what} must be a real number, got {x!r}") from None
    if not math.isfinite(value):
        raise InputValueError(f"{what} must be finite, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# building the formula and its variable list
# ---------------------------------------------------------------------------------------------
def _merge_lazy(lazy: LazyTensor, variables: list, names: list, name: str) -> Node:
    """Append ``lazy``'s variables to ``variables`` (sharing identical data) and renumber its formula."""
    formula, added = lazy.merge_into(variables)
    names += [name if len(lazy.variables) == 1 else f"{name}[{pos}]" for pos in added]
    return formula


def _from_string(text: str, bindings: dict) -> tuple[Node, list, list]:
    variables: list = []
    names: list = []
    aliases: dict[str, Node] = {}
    for name, value in bindings.items():
        if isinstance(value, LazyTensor):
            aliases[name] = _merge_lazy(value, variables, names, name)
            continue
        if _is_number(value):
            variables.append((_finite_number(value, f"parameter {name!r}"), CAT_PARAM))
            names.append(name)
            aliases[name] = Var(len(variables) - 1, 1, CAT_PARAM)
            continue
        try:
            kind = arr.kind_of(value)
        except arr.ArrayKindError:
            raise FormulaError(f"binding {name!r} must be Vi(array), Vj(array), a number or a 1-D array of "
                               f"parameters, got {type(value).__name__}") from None
        ndim = len(value.shape)
        if ndim >= 2:
            raise ShapeError(
                f"binding {name!r} is a {ndim}-D array of shape {tuple(value.shape)}: say which index it "
                f"follows with {name}=Vi(array) (rows, i) or {name}=Vj(array) (columns, j); plain arrays "
                "are only taken as 1-D parameter vectors")
        data = value.reshape(1) if ndim == 0 else value
        if kind == "scalar":  # pragma: no cover - numbers were handled above
            data = float(value)
        variables.append((data, CAT_PARAM))
        names.append(name)
        aliases[name] = Var(len(variables) - 1, int(data.shape[-1]), CAT_PARAM)
    formula = parse(text, aliases)
    used = set(formula.variables())
    for name, node in aliases.items():
        if not set(node.variables()) & used:
            raise FormulaError(f"binding {name!r} is not used in the formula {text!r}")
    return formula, variables, names


def _compact(formula: Node, variables: Sequence, names: Sequence) -> tuple[Node, list, list]:
    """Drop unused variables and renumber the rest 0, 1, … in order."""
    mapping, kept, kept_names = {}, [], []
    for v in formula.variables():
        pos, dim, cat = v.params
        mapping[v] = Var(len(kept), dim, cat)
        kept.append(variables[pos])
        kept_names.append(names[pos])
    return formula.replace(mapping), kept, kept_names


# ---------------------------------------------------------------------------------------------
# identity (for K + alpha * I)
# ---------------------------------------------------------------------------------------------
class ScaledIdentity(LinearOperator):
    """``scale * I`` of size n; ``K + alpha * eye(n)`` shifts a :class:`KernelOperator`.

    >>> I = eye(3)
    >>> (2.0 * I) @ np.ones(3)
    array([2., 2., 2.])
    """

    def __init__(self, n: int, scale: float = 1.0, dtype: Any = np.float64):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ShapeError(f"the identity needs a positive integer size, got {n!r}")
        self.scale = _finite_number(scale, "the identity's scale")
        super().__init__(np.dtype(dtype), (int(n), int(n)))

    def _matvec(self, x):
        return self.scale * x

    def _matmat(self, X):
        return self.scale * X

    def _adjoint(self):
        return self

    def _transpose(self):
        return self

    def __mul__(self, x):
        if _is_number(x):
            return ScaledIdentity(self.shape[0], self.scale * float(x), self.dtype)
        return super().__mul__(x)

    def __rmul__(self, x):
        if _is_number(x):
            return ScaledIdentity(self.shape[0], self.scale * float(x), self.dtype)
        return super().__rmul__(x)

    def __neg__(self):
        return ScaledIdentity(self.shape[0], -self.scale, self.dtype)

    def __add__(self, other):
        if isinstance(other, KernelOperator):
            return other.__add__(self)
        return super().__add__(other)

    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} ScaledIdentity {self.scale:g} * I>"


def eye(n: int, dtype: Any = np.float64) -> ScaledIdentity:
    """The n×n identity as a LinearOperator, for writing ``K + alpha * eye(n)``.

    >>> eye(2).shape
    (2, 2)
    """
    return ScaledIdentity(n, 1.0, dtype)


# ---------------------------------------------------------------------------------------------
# the operator
# ---------------------------------------------------------------------------------------------
class KernelOperator(LinearOperator):
    """The matrix ``scale · K + shift · I`` with ``K_ij = F(x_i, y_j, params)``, never stored.

    Build it from a formula string and keyword bindings — ``X=Vi(x)`` (an (N, D) array that
    follows the row index i), ``Y=Vj(y)`` (an (M, D) array that follows the column index j),
    numbers and 1-D arrays (parameters) — or from a scalar symbolic :class:`~kernla.LazyTensor`.
    ``backend`` ('auto', 'numpy', 'cpu', 'cuda') picks the engine of every product.

    It is a ``scipy.sparse.linalg.LinearOperator`` (``matvec``, ``matmat``, ``rmatvec``,
    ``rmatmat``, ``.T``, ``.H``, ``@``) usable by scipy's solvers and eigensolvers; torch tensors
    and CuPy arrays go through the same methods and come back as their own kind. Products with
    any number of columns are a single reduction.

    >>> import numpy as np
    >>> from kernla import Vi, Vj
    >>> x = np.linspace(0, 1, 5)[:, None]
    >>> K = KernelOperator("Exp(-SqDist(X, Y) / S)", X=Vi(x), Y=Vj(x), S=0.1)
    >>> a = K.solve(np.ones(5), alpha=0.1)
    >>> bool(np.allclose(K @ a + 0.1 * a, 1.0))
    True
    """

    def __init__(self, formula: "str | LazyTensor", /, *, backend: Optional[str] = None, **bindings: Any):
        if isinstance(formula, LazyTensor):
            if bindings:
                raise TypeError("bindings are only taken with a formula string; "
                                f"got a LazyTensor and {', '.join(bindings)}")
            if formula.formula.dim != 1:
                raise ShapeError(f"a KernelOperator needs a scalar formula, this LazyTensor has dimension "
                                 f"{formula.formula.dim}; reduce its vector axis first (e.g. .sum(-1))")
            node, variables = formula.formula, list(formula.variables)
            names = [f"variable {k} ({CATEGORY_NAMES[c]})" for k, (_, c) in enumerate(variables)]
        elif isinstance(formula, str):
            node, variables, names = _from_string(formula, bindings)
        else:
            raise TypeError(f"KernelOperator takes a formula string or a LazyTensor, got {type(formula).__name__}")
        node, variables, names = _compact(node, variables, names)
        self._setup(node, variables, names, backend, 1.0, 0.0)

    @classmethod
    def _from_parts(cls, formula: Node, variables: Sequence, names: Sequence, backend: Optional[str] = None,
                    scale: float = 1.0, shift: float = 0.0) -> "KernelOperator":
        """An operator from a formula whose ``Var`` positions index ``variables`` ((data, category) pairs)."""
        formula, variables, names = _compact(formula, variables, names)
        obj = cls.__new__(cls)
        obj._setup(formula, variables, names, backend, scale, shift)
        return obj

    def _setup(self, formula: Node, variables: list, names: list, backend: Optional[str],
               scale: float, shift: float) -> None:
        if formula.dim != 1:
            raise ShapeError(f"a KernelOperator needs a scalar formula, got dimension {formula.dim}")
        arrays = {n: d for n, (d, _) in zip(names, variables)}
        kind = arr.common_kind(arrays)
        dtype = arr.common_dtype(arrays)
        if dtype == np.float16:
            raise DTypeError("KernelOperator works on float32 or float64 data, got float16")
        sizes: dict[int, dict[str, int]] = {CAT_I: {}, CAT_J: {}}
        slots = []
        for name, (data, cat) in zip(names, variables):
            scalar = arr.kind_of(data) == "scalar"
            ndim = 0 if scalar else len(data.shape)
            if cat == CAT_PARAM:
                if ndim > 1:
                    raise ShapeError(f"parameter {name!r} must be a number or a 1-D array, got shape {tuple(data.shape)}")
            elif ndim != 2:
                raise ShapeError(f"{name!r} must be a 2-D (points, dimension) array: a KernelOperator "
                                 f"has no batch dimensions; got shape {tuple(data.shape)}")
            else:
                sizes[cat][name] = int(data.shape[0])
            slots.append(Slot(name, cat, 1 if scalar else int(data.shape[-1])))
        for cat, label in ((CAT_I, "rows (Vi)"), (CAT_J, "columns (Vj)")):
            if not sizes[cat]:
                raise ShapeError(f"a KernelOperator's formula needs a variable indexed by its {label}")
            if len(set(sizes[cat].values())) > 1:
                detail = ", ".join(f"{n!r} has {v}" for n, v in sizes[cat].items())
                raise ShapeError(f"the {label} variables must have the same number of points: {detail}")
            if next(iter(sizes[cat].values())) == 0:
                raise ShapeError(f"{next(iter(sizes[cat]))!r} is empty (0 points)")
        # scipy's LinearOperator sets attributes of its own (newer versions: an array namespace ``_xp``):
        # initialise it first so that nothing of ours is overwritten
        super().__init__(dtype, (next(iter(sizes[CAT_I].values())), next(iter(sizes[CAT_J].values()))))
        self._ns, self._on_gpu = cp.namespace(kind.on_gpu)
        self._kind = kind
        self._formula = formula
        self._names = list(names)
        self._cats = [c for _, c in variables]
        self._source = [d for d, _ in variables]
        self._has_torch = any(_is_torch(d) for d in self._source)  # products may need a torch graph
        self._data = [d if arr.kind_of(d) == "scalar" else cp.to_compute(d, self._on_gpu, dtype, n)
                      for n, (d, _) in zip(names, variables)]
        self._slots = slots
        self._backend = backend
        self._scale = float(scale)
        self._shift = float(shift)

    # -- description ---------------------------------------------------------------------------
    @property
    def formula(self) -> Node:
        """The scalar formula F (without the scale and shift)."""
        return self._formula

    @property
    def scale(self) -> float:
        """The factor c of ``c · K + s · I``."""
        return self._scale

    @property
    def shift(self) -> float:
        """The diagonal shift s of ``c · K + s · I``."""
        return self._shift

    @property
    def backend(self) -> Optional[str]:
        return self._backend

    def __repr__(self) -> str:
        n, m = self.shape
        text = str(self._formula)
        if self._scale != 1.0:
            text = f"{self._scale:g} * ({text})"
        if self._shift != 0.0:
            text = f"{text} + {self._shift:g} * I"
        return f"<{n}x{m} KernelOperator {text}, dtype={self.dtype}>"

    def _derived(self, formula: Optional[Node] = None, cats: Optional[Sequence[int]] = None,
                 scale: Optional[float] = None, shift: Optional[float] = None) -> "KernelOperator":
        variables = list(zip(self._source, self._cats if cats is None else cats))
        return KernelOperator._from_parts(self._formula if formula is None else formula, variables, self._names,
                                          self._backend, self._scale if scale is None else scale,
                                          self._shift if shift is None else shift)

    # -- products ------------------------------------------------------------------------------
    def _product(self, V: Any, transpose: bool = False) -> Any:
        """``(c·K + s·I) @ V`` (or with Kᵀ) for a compute array V of shape (n, w); one reduction."""
        w = int(V.shape[1])
        n_out = self.shape[1 if transpose else 0]
        if w == 0:
            return self._ns.zeros((n_out, 0), dtype=self.dtype)
        cat = CAT_I if transpose else CAT_J
        rhs = Var(len(self._data), w, cat)
        red = Reduction("Sum", call("Mult", self._formula, rhs))
        slots = self._slots + [Slot("right-hand side", cat, w)]
        out = reduce(red, slots, self._data + [V], 0 if transpose else 1, self._backend)[0]
        if self._scale != 1.0:
            out = out * self.dtype.type(self._scale)
        if self._shift != 0.0:
            if self.shape[0] != self.shape[1]:  # pragma: no cover - shifts are only built on square operators
                raise ShapeError("a shifted operator must be square")
            out = out + self.dtype.type(self._shift) * V
        return out

    # -- torch.autograd: products recorded in torch's graph -------------------------------------
    def _records_graph(self, *extra: Any) -> bool:
        """Whether a computation on this operator (and ``extra`` inputs) must record a torch graph.

        True when grad mode is on and the operator's data or one of ``extra`` is a torch tensor
        that requires grad. Never imports torch for NumPy/CuPy-only operators and inputs.
        """
        if not self._has_torch and not any(_is_torch(e) for e in extra):
            return False
        from ..autograd import needs_grad

        return needs_grad([*self._source, *extra])

    def _torch_sources(self, like: Any, sources: Optional[Sequence[Any]] = None) -> list:
        """The operator's data as torch tensors (numbers kept) on ``like``'s device, in the operator's dtype.

        Torch data is used as is (its graph is kept); NumPy/CuPy data is converted (constants).
        ``sources`` replaces the operator's own data (same order), e.g. by fresh leaves.
        """
        torch = sys.modules["torch"]
        tdtype = getattr(torch, self.dtype.name)
        kind = arr.Kind("torch", like.device)
        out = []
        for d in self._source if sources is None else sources:
            if arr.kind_of(d) == "scalar":
                out.append(d)
            elif _is_torch(d):
                out.append(d if d.dtype == tdtype else d.to(tdtype))
            else:
                out.append(arr.wrap(d, kind, self.dtype))
        return out

    def _torch_product(self, x: Any, transpose: bool = False, sources: Optional[Sequence[Any]] = None) -> Any:
        """``(c·K + s·I) @ x`` (or with Kᵀ) for a torch tensor x, recorded for torch.autograd.

        One ``Sum`` reduction through :func:`kernla.genred.reduce` on the original torch tensors,
        so gradients flow to x and to every operator tensor that requires grad (the backward
        passes are kernla reductions too). ``x`` is (rows,) or (rows, w); the result has x's
        shape convention and float dtype.
        """
        rows = self.shape[0 if transpose else 1]
        n_out = self.shape[1 if transpose else 0]
        shape = tuple(x.shape)
        if not (len(shape) == 1 and shape[0] == rows or len(shape) == 2 and shape[0] == rows):
            raise ShapeError(f"the vector must have shape ({rows},) or ({rows}, k) for a "
                             f"{self.shape[0]}x{self.shape[1]} operator, got {shape}")
        dt = arr.dtype_of(x)
        if dt is not None and dt.kind not in "fiub":
            raise DTypeError(f"the vector has dtype {dt}; kernla's linear algebra works on real arrays")
        out_dtype = cp.output_dtype(x, self.dtype)
        torch = sys.modules["torch"]
        V = (x.reshape(rows, 1) if len(shape) == 1 else x).to(getattr(torch, self.dtype.name))
        w = int(V.shape[1])
        if w == 0:
            out = V.new_zeros((n_out, 0))
        else:
            cat = CAT_I if transpose else CAT_J
            red = Reduction("Sum", call("Mult", self._formula, Var(len(self._slots), w, cat)))
            slots = self._slots + [Slot("right-hand side", cat, w)]
            args = self._torch_sources(x, sources) + [V]
            out = reduce(red, slots, args, 0 if transpose else 1, self._backend)[0]
            if self._scale != 1.0:
                out = out * self._scale
            if self._shift != 0.0:
                out = out + self._shift * V
        if len(shape) == 1:
            out = out.reshape(-1)
        return out.to(getattr(torch, out_dtype.name))

    def _torch_pairs(self, rows: Any, cols: Any) -> Any:
        """``c · F(x_rows[k], y_cols[k])`` for k < P (index tensors), as a (P,) tensor recorded for autograd.

        The pairs become the rows of a reduction over one dummy column: i-variables are gathered
        with ``rows``, j-variables with ``cols`` and turned into i-variables. O(P) memory and work.
        """
        torch = sys.modules["torch"]
        data = self._torch_sources(next(d for d in self._source if _is_torch(d)))
        args, slots, mapping = [], [], {}
        for pos, (d, slot) in enumerate(zip(data, self._slots)):
            if slot.cat == CAT_PARAM:
                args.append(d)
                slots.append(slot)
                continue
            args.append(d[rows if slot.cat == CAT_I else cols])
            slots.append(Slot(slot.name, CAT_I, slot.dim))
            if slot.cat == CAT_J:
                mapping[Var(pos, slot.dim, CAT_J)] = Var(pos, slot.dim, CAT_I)
        ref = next(a for a in args if _is_torch(a))
        slots.append(Slot("pair column", CAT_J, 1))
        args.append(torch.zeros((1, 1), dtype=ref.dtype, device=ref.device))
        out = reduce(Reduction("Sum", self._formula.replace(mapping)), slots, args, 1, self._backend)[0]
        out = out.reshape(-1)
        return out * self._scale if self._scale != 1.0 else out

    def _compute_input(self, x: Any, rows: int, what: str) -> tuple[Any, bool]:
        """(compute array of shape (rows, w), was_vector)."""
        shape = tuple(x.shape)
        if len(shape) == 1 and shape[0] == rows:
            return cp.to_compute(x, self._on_gpu, self.dtype, what).reshape(rows, 1), True
        if len(shape) == 2 and shape[0] == rows:
            return cp.to_compute(x, self._on_gpu, self.dtype, what), False
        raise ShapeError(f"{what} must have shape ({rows},) or ({rows}, k) for a {self.shape[0]}x{self.shape[1]} "
                         f"operator, got {shape}")

    def _apply(self, x: Any, transpose: bool = False) -> Any:
        """The product with any array kind; the result has x's kind, device and (float) dtype."""
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        if _is_torch(x) and self._records_graph(x):  # torch.autograd sees the reduction
            return self._torch_product(x, transpose)
        kind = cp.kind_of_array(x, "the vector")
        rows = self.shape[0 if transpose else 1]
        V, vector = self._compute_input(x, rows, "the vector")
        out = self._product(V, transpose)
        if vector:
            out = out.reshape(-1)
        return cp.from_compute(out, kind, cp.output_dtype(x, self.dtype))

    def _to_numpy_result(self, out: Any) -> np.ndarray:
        return out if isinstance(out, np.ndarray) else out.get()

    def _matvec(self, x):
        V, _ = self._compute_input(x.reshape(-1, 1), self.shape[1], "the vector")
        return self._to_numpy_result(self._product(V)).reshape(-1)

    def _matmat(self, X):
        V, _ = self._compute_input(X, self.shape[1], "the matrix")
        return self._to_numpy_result(self._product(V))

    def _rmatvec(self, x):
        V, _ = self._compute_input(x.reshape(-1, 1), self.shape[0], "the vector")
        return self._to_numpy_result(self._product(V, transpose=True)).reshape(-1)

    def _rmatmat(self, X):
        V, _ = self._compute_input(X, self.shape[0], "the matrix")
        return self._to_numpy_result(self._product(V, transpose=True))

    def _check_rows(self, x: Any, transpose: bool, matrix: bool) -> None:
        """A clear ShapeError (scipy says only 'dimension mismatch')."""
        shape = getattr(x, "shape", None)
        if shape is None:
            return
        rows = self.shape[0 if transpose else 1]
        ok = len(shape) == 2 and shape[0] == rows if matrix else shape in ((rows,), (rows, 1))
        if not ok:
            want = f"({rows}, k)" if matrix else f"({rows},) or ({rows}, 1)"
            raise ShapeError(f"a {self.shape[0]}x{self.shape[1]} operator{' transposed' if transpose else ''} "
                             f"multiplies arrays of shape {want}, got {tuple(shape)}")

    # torch / CuPy in → torch / CuPy out (scipy's wrappers would turn them into NumPy arrays)
    def matvec(self, x):
        self._check_rows(x, False, False)
        return self._apply(x) if _is_foreign(x) else super().matvec(x)

    def matmat(self, X):
        self._check_rows(X, False, True)
        return self._apply(X) if _is_foreign(X) else super().matmat(X)

    def rmatvec(self, x):
        self._check_rows(x, True, False)
        return self._apply(x, transpose=True) if _is_foreign(x) else super().rmatvec(x)

    def rmatmat(self, X):
        self._check_rows(X, True, True)
        return self._apply(X, transpose=True) if _is_foreign(X) else super().rmatmat(X)

    def dot(self, x):
        if _is_foreign(x):
            return self._apply(x)
        if _is_number(x):
            return self._scaled(float(x))
        if isinstance(x, (np.ndarray, list, tuple)):
            x = np.asarray(x)
            if x.ndim not in (1, 2) or x.shape[0] != self.shape[1]:
                raise ShapeError(f"a {self.shape[0]}x{self.shape[1]} operator multiplies arrays of shape "
                                 f"({self.shape[1]},) or ({self.shape[1]}, k), got {x.shape}")
        return super().dot(x)

    def _rdot(self, x):
        if _is_foreign(x):
            if len(x.shape) == 1:
                return self._apply(x, transpose=True)
            return self._apply(x.T, transpose=True).T
        return super()._rdot(x)

    # -- transposes, scaling, shifts ------------------------------------------------------------
    def _transpose(self) -> "KernelOperator":
        return self._derived(formula=swap_ij(self._formula), cats=[_SWAP[c] for c in self._cats])

    def _adjoint(self) -> "KernelOperator":
        return self._transpose()  # real operator

    def _scaled(self, c: float) -> "KernelOperator":
        c = _finite_number(c, "the scale factor")
        return self._derived(scale=self._scale * c, shift=self._shift * c)

    def shifted(self, alpha: float) -> "KernelOperator":
        """``self + alpha · I`` (square operators only).

        >>> import numpy as np
        >>> from kernla import Vi, Vj
        >>> x = np.zeros((2, 1))
        >>> KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(x)).shifted(1.0).to_dense()
        array([[2., 1.],
               [1., 2.]])
        """
        alpha = _finite_number(alpha, "the shift alpha")
        if self.shape[0] != self.shape[1]:
            raise ShapeError(f"only a square operator can be shifted by alpha * I; this one is {self.shape}")
        return self._derived(shift=self._shift + alpha)

    def __mul__(self, x):
        if _is_number(x):
            return self._scaled(float(x))
        return self.dot(x)

    def __rmul__(self, x):
        if _is_number(x):
            return self._scaled(float(x))
        return super().__rmul__(x)

    def __truediv__(self, x):
        if not _is_number(x):
            raise TypeError("a KernelOperator can only be divided by a number")
        return self._scaled(1.0 / _finite_number(x, "the divisor"))

    def __neg__(self):
        return self._scaled(-1.0)

    def __add__(self, other):
        if isinstance(other, ScaledIdentity):
            if other.shape != self.shape:
                raise ShapeError(f"cannot add a {other.shape[0]}x{other.shape[1]} identity to a "
                                 f"{self.shape[0]}x{self.shape[1]} operator")
            return self.shifted(other.scale)
        if _is_number(other):
            raise TypeError("adding a number to a KernelOperator is ambiguous: write K + alpha * "
                            "kernla.linalg.eye(n) or K.shifted(alpha) for K + alpha·I")
        return super().__add__(other)

    def __radd__(self, other):
        return self.__add__(other)

    def __sub__(self, other):
        if isinstance(other, ScaledIdentity) or _is_number(other):
            return self.__add__(-other)
        return super().__sub__(other)

    # -- entries ---------------------------------------------------------------------------------
    def _host_values(self, cat_rows: dict[int, Optional[np.ndarray]]) -> dict[int, np.ndarray]:
        """NumPy values of each variable; i/j-variables restricted to the given row indices."""
        values = {}
        for pos, (data, cat) in enumerate(zip(self._data, self._cats)):
            if arr.kind_of(data) == "scalar":
                values[pos] = np.array([data], dtype=self.dtype)
                continue
            host = data if isinstance(data, np.ndarray) else data.get()
            if cat != CAT_PARAM and cat_rows.get(cat) is not None:
                host = host[cat_rows[cat]]
            values[pos] = host
        return values

    def _block(self, rows: Optional[np.ndarray] = None, cols: Optional[np.ndarray] = None) -> np.ndarray:
        """The dense block ``c · K[rows][:, cols]`` as a host NumPy array (no shift), evaluated in chunks."""
        values = self._host_values({CAT_I: rows, CAT_J: cols})
        n = self.shape[0] if rows is None else len(rows)
        m = self.shape[1] if cols is None else len(cols)
        widest = max(node.dim for node in self._formula.walk())
        chunk = max(1, _BLOCK_ELEMENTS // max(1, m * widest))
        out = np.empty((n, m), dtype=self.dtype)
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            local = {}
            for pos, cat in enumerate(self._cats):
                v = values[pos]
                local[pos] = v[i0:i1, None, :] if cat == CAT_I else v[None, :, :] if cat == CAT_J else v
            block = evaluate(self._formula, local, self.dtype)
            out[i0:i1] = np.broadcast_to(block, (i1 - i0, m, 1))[..., 0]
        if self._scale != 1.0:
            out *= self._scale
        return out

    def _columns(self, cols: Sequence[int], chunk: int = COLUMN_CHUNK) -> np.ndarray:
        """The columns ``c · K[:, cols]`` (no shift) as a host float64 (n, len(cols)) array, computed
        by the operator's engine (the compiled one when available), not by NumPy.

        ``chunk`` columns per call: the j-variables restricted to those points and the right-hand
        side an indicator (identity) block, ``Σ_j F(x_i, y_j) e_j`` — one kernel product with
        ``chunk`` rows on the j side, costing N·chunk kernel evaluations (and N·chunk² adds).

        >>> import numpy as np
        >>> from kernla import kernels
        >>> K = kernels.gaussian(np.linspace(0, 1, 7)[:, None], sigma=0.3)
        >>> bool(np.allclose(K._columns([5, 0]), K.to_dense()[:, [5, 0]]))
        True
        """
        cols = np.asarray(cols, dtype=np.int64).reshape(-1)
        n, m = self.shape
        if cols.size and (cols.min() < 0 or cols.max() >= m):
            raise InputValueError(f"column indices must lie in [0, {m}), got {cols.min()}..{cols.max()}")
        out = np.empty((n, cols.size))
        xp = self._ns
        for c0 in range(0, cols.size, chunk):
            sel = cols[c0:c0 + chunk]
            w = int(sel.size)
            where = xp.asarray(sel)
            data = [d[where] if c == CAT_J and arr.kind_of(d) != "scalar" else d
                    for d, c in zip(self._data, self._cats)]
            red = Reduction("Sum", call("Mult", self._formula, Var(len(data), w, CAT_J)))
            slots = self._slots + [Slot("column indicator", CAT_J, w)]
            block = reduce(red, slots, data + [xp.eye(w, dtype=self.dtype)], 1, self._backend)[0]
            out[:, c0:c0 + w] = self._to_numpy_result(block)
        if self._scale != 1.0:
            out *= self._scale
        return out

    def _diag_host(self) -> np.ndarray:
        if self.shape[0] != self.shape[1]:
            raise ShapeError(f"the diagonal is defined for square operators; this one is {self.shape}")
        values = self._host_values({})
        n = self.shape[0]
        out = np.empty(n, dtype=self.dtype)
        chunk = max(1, _BLOCK_ELEMENTS // max(1, max(node.dim for node in self._formula.walk())))
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            local = {pos: (values[pos][i0:i1] if cat != CAT_PARAM else values[pos])
                     for pos, cat in enumerate(self._cats)}
            d = evaluate(self._formula, local, self.dtype)
            out[i0:i1] = np.broadcast_to(d, (i1 - i0, 1))[:, 0]
        return out * self.dtype.type(self._scale) + self.dtype.type(self._shift)

    def diag(self) -> Any:
        """The diagonal ``c · F(x_i, y_i) + s`` (F evaluated on the pairs i = j), in the data's kind.

        >>> import numpy as np
        >>> from kernla import Vi, Vj
        >>> x = np.zeros((3, 2))
        >>> (2 * KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(x))).diag()
        array([2., 2., 2.])

        With torch data that requires grad, the diagonal is differentiable (one reduction over
        the N pairs (x_i, y_i), no matrix).
        """
        if self._records_graph():
            if self.shape[0] != self.shape[1]:
                raise ShapeError(f"the diagonal is defined for square operators; this one is {self.shape}")
            torch = sys.modules["torch"]
            ref = next(d for d in self._source if _is_torch(d))
            idx = torch.arange(self.shape[0], device=ref.device)
            out = self._torch_pairs(idx, idx)
            return out + self._shift if self._shift != 0.0 else out
        return cp.from_compute(self._diag_host(), self._kind)

    def to_dense(self, force: bool = False, max_entries: int = DENSE_LIMIT) -> Any:
        """The full matrix as a dense array of the data's kind.

        Refuses (ShapeError) beyond ``max_entries`` entries unless ``force=True``: the point of a
        KernelOperator is never to store the matrix. With torch data that requires grad, the
        result is differentiable (F evaluated on all N·M pairs through kernla reductions).

        >>> import numpy as np
        >>> from kernla import kernels
        >>> kernels.gaussian(np.zeros((2, 1)), sigma=1.0).shifted(0.5).to_dense()
        array([[1.5, 1. ],
               [1. , 1.5]])
        """
        n, m = self.shape
        if n * m > max_entries and not force:
            gb = n * m * self.dtype.itemsize / 1e9
            raise ShapeError(f"to_dense() would build a {n}x{m} matrix ({gb:.2g} GB), over the limit of "
                             f"{max_entries} entries; pass force=True if you really want it")
        if self._records_graph():  # differentiable: F on all N·M pairs, in row chunks
            torch = sys.modules["torch"]
            ref = next(d for d in self._source if _is_torch(d))
            cols = torch.arange(m, device=ref.device)
            chunk = max(1, _BLOCK_ELEMENTS // m)
            parts = [self._torch_pairs(torch.arange(i0, min(n, i0 + chunk), device=ref.device).repeat_interleave(m),
                                       cols.repeat(min(n, i0 + chunk) - i0)) for i0 in range(0, n, chunk)]
            dense = torch.cat(parts).reshape(n, m)
            if self._shift != 0.0:
                dense = dense + self._shift * torch.eye(n, dtype=dense.dtype, device=dense.device)
            return dense
        out = self._block()
        if self._shift != 0.0:
            out[np.diag_indices(n)] += self._shift
        return cp.from_compute(out, self._kind)

    # -- linear algebra --------------------------------------------------------------------------
    def solve(self, b: Any, alpha: Any = 0.0, tol: Optional[float] = None, maxiter: Optional[int] = None,
              precond: Any = None, rank: Optional[int] = None, x0: Any = None,
              callback: Optional[Callable[[int, np.ndarray], Any]] = None, return_info: bool = False,
              verbose: bool = False):
        """Solve ``(self + alpha·I) a = b`` by (preconditioned) block conjugate gradients.

        ``b`` is (N,) or (N, k): all k columns are solved together, one reduction per iteration,
        each column with its own step sizes, stopping on its own once
        ``‖b_j − A a_j‖ ≤ tol · ‖b_j‖`` (``tol`` defaults to 1e-6 for float32 data, 1e-10 for
        float64). ``precond``: None, ``"jacobi"``, ``"nystrom"`` (rank ``rank``, pivoted-Cholesky
        landmarks), ``"auto"``, a :class:`~kernla.linalg.precond.Preconditioner` or a callable
        ``R -> M⁻¹R``. The operator must be symmetric positive (semi-)definite. Beyond ``maxiter``
        iterations the best iterate is returned with a :class:`~kernla.linalg.ConvergenceWarning`.
        ``return_info=True`` returns ``(a, info)`` (see :class:`~kernla.linalg.cg.SolveInfo`).

        float32 data: block CG always runs in float64, but float32 products would leave a floor
        of about ``1e-7 · cond(A)`` under the true residual, often above the default tol of
        1e-6. On the host, the solve's products therefore run on float64 copies of the data
        (O(N·D) memory, cast once per solve; the operator itself is unchanged) and the solution
        is returned in the caller's dtype (``info.residual_norms`` are those of the float64
        solution, before that rounding). On a GPU the products stay in float32; when the true
        residual stalls at its floor above ``tol``, the solve stops there and returns its best
        iterate with a ConvergenceWarning naming the floor, instead of running to ``maxiter``.

        Differentiable with torch: when ``b``, ``alpha`` (a 0-d tensor) or the operator's torch
        data require grad, ``a`` carries a ``grad_fn`` whose backward is one more solve (the
        implicit function theorem: ``b̄ = (A + αI)⁻ᵀ ā``, ``θ̄ = −∂_θ⟨b̄, K(θ) a⟩`` by one
        differentiable product, ``ᾱ = −⟨b̄, a⟩``), with the same ``tol``, ``maxiter`` and
        preconditioner; a NumPy ``b`` is then taken as a constant torch tensor.

        >>> import numpy as np
        >>> from kernla import kernels
        >>> x = np.linspace(0, 1, 50)[:, None]
        >>> K = kernels.gaussian(x, sigma=0.2)
        >>> a, info = K.solve(np.ones(50), alpha=1e-2, precond="nystrom", return_info=True)
        >>> bool(info.converged), bool(np.linalg.norm(K @ a + 1e-2 * a - 1) < 1e-8 * np.sqrt(50))
        (True, True)
        """
        from .precond import make_preconditioner

        if self.shape[0] != self.shape[1]:
            raise ShapeError(f"solve needs a square operator; this one is {self.shape[0]}x{self.shape[1]}")
        alpha_value = _finite_number(alpha.detach() if _is_torch(alpha) else alpha, "alpha")
        if isinstance(b, (list, tuple)):
            b = np.asarray(b, dtype=self.dtype)
        grad = self._records_graph(b, alpha)
        if grad:  # check b before a preconditioner is built
            self._compute_input(b.detach() if _is_torch(b) else b, self.shape[0], "the right-hand side b")
        work = self._solver_operator()
        M = make_preconditioner(precond, work, alpha_value, rank=rank)
        options = dict(tol=tol, maxiter=maxiter, precond=M)
        if not grad:
            return self._solve_plain(b, alpha_value, x0=x0, callback=callback, return_info=return_info,
                                     verbose=verbose, work=work, **options)
        return self._solve_graph(b, alpha, alpha_value, x0=x0, callback=callback, return_info=return_info,
                                 verbose=verbose, work=work, **options)

    def _solver_operator(self) -> "KernelOperator":
        """The operator whose products a solve uses: float64 copies of float32 host data, else ``self``.

        Block CG runs in float64; with float32 products its true residual cannot go below about
        ``1e-7 · cond(A)``, often above the default tol of 1e-6. On the host the copies cost
        O(N·D) memory, made once per solve, and a float64 product about twice a float32 one.
        On a GPU the products stay in float32 (block CG stops at the floor instead).
        """
        if self._on_gpu or self.dtype != np.float32:
            return self
        variables = [(d if arr.kind_of(d) == "scalar" else np.asarray(d, dtype=np.float64), c)
                     for d, c in zip(self._data, self._cats)]
        return KernelOperator._from_parts(self._formula, variables, self._names, self._backend,
                                          self._scale, self._shift)

    def _solve_plain(self, b: Any, alpha: float, tol: Optional[float], maxiter: Optional[int], precond: Any,
                     x0: Any, callback: Optional[Callable], return_info: bool, verbose: bool,
                     work: Optional["KernelOperator"] = None):
        """Block CG on ``(self + alpha·I) a = b`` (``precond``: the callable built by make_preconditioner;
        ``work``: :meth:`_solver_operator`, made here when not given)."""
        from .cg import block_cg, default_tol

        if work is None:
            work = self._solver_operator()
        n = self.shape[0]
        kind = cp.kind_of_array(b, "the right-hand side b")
        B, vector = self._compute_input(b, n, "the right-hand side b")
        cg_dtype = np.dtype(np.float64)
        B = B.astype(cg_dtype)
        cp.check_finite(B, self._ns, "the right-hand side b")
        X0 = None
        if x0 is not None:
            X0, _ = self._compute_input(x0, n, "x0")
            if X0.shape != B.shape:
                raise ShapeError(f"x0 must have the shape of b, {tuple(b.shape)}; got {tuple(x0.shape)}")
            X0 = X0.astype(cg_dtype)
            cp.check_finite(X0, self._ns, "x0")
        op_dtype = work.dtype

        def apply(X):
            out = work._product(X.astype(op_dtype, copy=False)).astype(cg_dtype, copy=False)
            if alpha != 0.0:
                out += alpha * X
            return out

        with cp.blas_single_thread(self._backend, self._on_gpu):
            X, info = block_cg(apply, B, tol=default_tol(self.dtype) if tol is None else tol, maxiter=maxiter,
                               x0=X0, precond=precond, callback=callback, verbose=verbose, xp=self._ns)
        if vector:
            X = X.reshape(-1)
        out = cp.from_compute(X, kind, cp.output_dtype(b, self.dtype))
        return (out, info) if return_info else out

    def _solve_graph(self, b: Any, alpha: Any, alpha_value: float, tol: Optional[float], maxiter: Optional[int],
                     precond: Any, x0: Any, callback: Optional[Callable], return_info: bool, verbose: bool,
                     work: Optional["KernelOperator"] = None):
        """:meth:`solve` recorded for torch.autograd by :func:`kernla.autograd.implicit_solve`.

        The forward is the plain block CG (with ``x0``, ``callback``, ``verbose``); the backward
        solves the transposed system once with the same tolerance and preconditioner, and
        differentiates one product ``K(θ) a`` (:meth:`_torch_product`) for the operator's data.
        """
        from ..autograd import implicit_solve

        if not _is_torch(b):  # the operator's data or alpha requires grad: the solution must be a tensor
            ref = next(d for d in (alpha, *self._source) if _is_torch(d))
            b = arr.wrap(cp.to_compute(b, False, cp.output_dtype(b, self.dtype), "the right-hand side b"),
                         arr.Kind("torch", ref.device))
        targets = [k for k, d in enumerate(self._source) if _is_torch(d) and d.requires_grad]
        found: dict[str, Any] = {}

        def run(rhs: Any, transpose: bool) -> Any:
            if transpose:  # the adjoint system (the same one for a symmetric operator)
                if "T" not in found:  # (the transpose, and that of the float64 copy the forward used)
                    found["T"] = (self.T, None if work is None or work is self else work.T)
                T, work_T = found["T"]
                return T._solve_plain(rhs, alpha_value, tol, maxiter, precond, None, None, False, False, work_T)
            a, found["info"] = self._solve_plain(rhs, alpha_value, tol, maxiter, precond, x0, callback, True, verbose,
                                                 work)
            return a

        def matvec(v: Any, *params: Any) -> Any:
            sources = list(self._source)
            for k, p in zip(targets, params):
                sources[k] = p
            return self._torch_product(v, sources=sources)

        if _is_torch(alpha):
            if alpha.numel() != 1:
                raise InputValueError(f"alpha must be a number or a one-element tensor, got shape {tuple(alpha.shape)}")
            alpha = alpha.reshape(())
        else:
            alpha = alpha_value
        a = implicit_solve(run, matvec, b, [self._source[k] for k in targets], alpha)
        return (a, found["info"]) if return_info else a

    def eigsh(self, k: int = 6, which: str = "LA", tol: Optional[float] = None, maxiter: Optional[int] = None,
              ncv: Optional[int] = None, v0: Any = None, return_eigenvectors: bool = True,
              method: str = "lanczos"):
        """k eigenvalues (ascending) and eigenvectors of this symmetric operator.

        ``which``: ``"LA"`` (largest), ``"SA"`` (smallest) or ``"LM"`` (largest magnitude).
        ``method="lanczos"`` (default) is kernla's thick-restart Lanczos with full
        reorthogonalisation (:func:`kernla.linalg.lanczos.eigsh`); ``method="arpack"`` calls
        ``scipy.sparse.linalg.eigsh`` (ARPACK's implicitly restarted Lanczos) on this operator.
        Returns ``(w, v)`` like scipy (or ``w`` with ``return_eigenvectors=False``), as arrays of the
        data's kind.

        >>> import numpy as np
        >>> from kernla import kernels
        >>> x = np.linspace(0, 1, 40)[:, None]
        >>> K = kernels.gaussian(x, sigma=0.3)
        >>> w = K.eigsh(k=2, return_eigenvectors=False)
        >>> bool(np.allclose(w, np.linalg.eigvalsh(K.to_dense())[-2:]))
        True
        """
        if self.shape[0] != self.shape[1]:
            raise ShapeError(f"eigsh needs a square symmetric operator; this one is {self.shape}")
        if method == "arpack":
            from scipy.sparse.linalg import eigsh as arpack

            if which not in ("LA", "SA", "LM"):
                raise InputValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
            with cp.blas_single_thread(self._backend, self._on_gpu):
                out = arpack(self, k=k, which=which, tol=0 if tol is None else tol, maxiter=maxiter, ncv=ncv,
                             v0=None if v0 is None else arr.to_numpy(v0, self.dtype),
                             return_eigenvectors=return_eigenvectors)
        elif method == "lanczos":
            from .lanczos import eigsh as lanczos

            def apply(V):
                return self._to_numpy_result(self._product(cp.to_compute(V, self._on_gpu, self.dtype)))

            with cp.blas_single_thread(self._backend, self._on_gpu):
                out = lanczos(apply, self.shape[0], k=k, which=which, tol=tol, maxiter=maxiter, ncv=ncv,
                              v0=None if v0 is None else arr.to_numpy(v0, np.dtype(np.float64)).reshape(-1),
                              dtype=self.dtype, return_eigenvectors=return_eigenvectors)
        else:
            raise InputValueError(f"method must be 'lanczos' or 'arpack', got {method!r}")
        if return_eigenvectors:
            w, v = out
            return (cp.from_compute(np.asarray(w, dtype=self.dtype), self._kind),
                    cp.from_compute(np.asarray(v, dtype=self.dtype), self._kind))
        return cp.from_compute(np.asarray(out, dtype=self.dtype), self._kind)
