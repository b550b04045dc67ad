"""``KernelOperator``: an N×M kernel matrix as a ``scipy.sparse.linalg.LinearOperator``.

The matrix ``K_ij = F(x_i, y_j, params)`` is given by a scalar formula and its data; it is never
stored. Every product is one kernla ``Sum`` reduction: ``K @ B`` is ``Σ_j F_ij B_j`` (the formula
``F * Vj(B)``, one reduction for all columns of B), ``K.T @ U`` the same formula reduced over i.

The operator is a :class:`~kernla.linalg.kernel.Kernel` K (formula and data) and one
:class:`~kernla.linalg.affine.Affine` map ``scale · K + shift · I``; scaling, shifting and
transposing make new operators that share or transpose K. Solving and eigenvalues live in
:mod:`kernla.linalg.operator_solve` and :mod:`kernla.linalg.lanczos`, the products recorded for
torch.autograd in :mod:`kernla.linalg.torch_graph`.

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

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import arrays as arr
from ..errors import ArgumentTypeError, ShapeError
from ..formula.tree import Node
from ..lazy import LazyTensor
from . import _compute as compute
from . import torch_graph
from .affine import Affine
from .array_kinds import ArrayKindOperator
from .bindings import from_lazy, from_string
from .identity import ScaledIdentity
from .kernel import COLUMN_CHUNK, Kernel
from .lanczos import operator_eigsh
from .operator_solve import operator_solve
from .truncation import Truncation, TruncationInfo, sort_variables

#: to_dense() refuses matrices with more entries than this unless forced (2**26 ≈ 67 M: 512 MB in float64)
DENSE_LIMIT = 2**26


class KernelOperator(ArrayKindOperator):
    """The matrix ``scale · K + shift · I`` with ``K_ij = F(x_i, y_j, params)``, never stored.

    Build it from a formula string and keyword bindings — ``X=Vi(x)`` (an (N, D) array that
    follows the row index i), ``Y=Vj(y)`` (an (M, D) array that follows the column index j),
    numbers and 1-D arrays (parameters) — or from a scalar symbolic :class:`~kernla.LazyTensor`.
    ``backend`` ('auto', 'numpy', 'cpu', 'cuda') picks the engine of every product.

    It is a ``scipy.sparse.linalg.LinearOperator`` (``matvec``, ``matmat``, ``rmatvec``,
    ``rmatmat``, ``.T``, ``.H``, ``@``) usable by scipy's solvers and eigensolvers; torch tensors
    and CuPy arrays go through the same methods and come back as their own kind. Products with
    any number of columns are a single reduction. ``ranges`` (pykeops' block-sparse 6-tuple, or a
    LazyTensor's ``ranges``) keeps only some blocks of K (the others are zero) and products visit
    only those (transposed products use the transposed ranges; solves and ``eigsh`` follow).
    ``truncate`` (a :func:`kernla.linalg.truncation.truncate` result for these points; or
    ``kernla.kernels.<name>(..., truncate=eps)``) drops the blocks where the kernel is at most eps,
    with the certified bound ``‖K b − K_t b‖_∞ ≤ eps · ‖b‖_1`` (``truncation_info``); the points are
    stored sorted by cluster, and every method takes and gives the caller's order.

    >>> import numpy as np
    >>> from kernla import Vi, Vj
    >>> x = np.linspace(0, 1, 5)[:, None]
    >>> K = KernelOperator("Exp(-SqDist(X, Y) / S)", X=Vi(x), Y=Vj(x), S=0.1)
    >>> a = K.solve(np.ones(5), alpha=0.1)
    >>> bool(np.allclose(K @ a + 0.1 * a, 1.0))
    True
    """

    def __init__(
        self,
        formula: str | LazyTensor,
        /,
        *,
        backend: str | None = None,
        ranges: Any = None,
        truncate: Truncation | None = None,
        **bindings: Any,
    ):
        if isinstance(formula, LazyTensor):
            ranges = formula.ranges if ranges is None else ranges
            if bindings:
                raise ArgumentTypeError(
                    f"bindings are only taken with a formula string; got a LazyTensor and {', '.join(bindings)}"
                )
            node, variables, names = from_lazy(formula)
        elif isinstance(formula, str):
            node, variables, names = from_string(formula, bindings)
        else:
            raise ArgumentTypeError(
                f"KernelOperator takes a formula string or a LazyTensor, got {type(formula).__name__}"
            )
        order = None
        if truncate is not None:  # sorted by cluster, with the truncation's ranges; products keep the caller's order
            if ranges is not None:
                raise ArgumentTypeError("give ranges= or truncate=, not both (a truncation brings its own ranges)")
            variables, ranges, order = sort_variables(variables, truncate)
        self._init(Kernel.build(node, variables, names, backend, ranges, order), Affine())

    @classmethod
    def from_kernel(cls, kernel: Kernel, affine: Affine | None = None) -> KernelOperator:
        """The operator ``affine(kernel)``: ``scale · K + shift · I`` (``affine=None``: K itself).

        >>> import numpy as np
        >>> from kernla import kernels
        >>> K = kernels.gaussian(np.zeros((2, 1)))
        >>> KernelOperator.from_kernel(K.kernel, Affine(2.0, 0.0)).to_dense()
        array([[2., 2.],
               [2., 2.]])
        """
        obj = cls.__new__(cls)
        obj._init(kernel, Affine() if affine is None else affine)
        return obj

    def _init(self, kernel: Kernel, affine: Affine) -> None:
        if affine.shift != 0.0 and kernel.shape[0] != kernel.shape[1]:
            raise ShapeError(f"a shift s · I needs a square kernel; this one is {kernel.shape}")
        # scipy's LinearOperator sets attributes of its own (newer versions: an array namespace ``_xp``):
        # initialise it first so that nothing of ours is overwritten
        super().__init__(kernel.dtype, kernel.shape)
        self._kernel = kernel
        self._affine = affine

    # -- description ---------------------------------------------------------------------------
    @property
    def kernel(self) -> Kernel:
        """K: the formula and its data (without the scale and shift)."""
        return self._kernel

    @property
    def truncation_info(self) -> TruncationInfo | None:
        """What ``truncate=`` kept and the bound it certifies (``‖K b − K_t b‖_∞ ≤ bound · ‖b‖_1``), or None."""
        return None if self._kernel.order is None else self._kernel.order.info

    @property
    def affine(self) -> Affine:
        """The scale and shift of ``scale · K + shift · I``."""
        return self._affine

    @property
    def formula(self) -> Node:
        """The scalar formula F (without the scale and shift)."""
        return self._kernel.formula

    @property
    def scale(self) -> float:
        """The factor c of ``c · K + s · I``."""
        return self._affine.scale

    @property
    def shift(self) -> float:
        """The diagonal shift s of ``c · K + s · I``."""
        return self._affine.shift

    @property
    def backend(self) -> str | None:
        return self._kernel.backend

    @property
    def xp(self) -> Any:
        """The array namespace products compute in: NumPy, or CuPy for data on a GPU."""
        return self._kernel.xp

    @property
    def on_gpu(self) -> bool:
        """Whether the data (and the products) live on a GPU."""
        return self._kernel.on_gpu

    @property
    def kind(self) -> arr.Kind:
        """The array kind (NumPy, torch and its device, CuPy) results come back as."""
        return self._kernel.kind

    def __repr__(self) -> str:
        n, m = self.shape
        return f"<{n}x{m} KernelOperator {self._affine.describe(str(self.formula))}, dtype={self.dtype}>"

    # -- products ------------------------------------------------------------------------------
    def product(self, V: Any, transpose: bool = False) -> Any:
        """``(c·K + s·I) @ V`` (or with Kᵀ) for an (n, w) array V of the namespace :attr:`xp`; one reduction.

        >>> import numpy as np
        >>> from kernla import kernels
        >>> (2 * kernels.gaussian(np.zeros((2, 1)))).product(np.ones((2, 1))).ravel()
        array([4., 4.])
        """
        return self._affine.product(self._kernel.product(V, transpose), V)

    def _apply(self, x: Any, transpose: bool = False) -> Any:
        """The product with any array kind; the result has x's kind, device and (float) dtype."""
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        if compute.is_torch(x) and torch_graph.records_graph(self._kernel, x):  # torch.autograd sees the reduction
            return torch_graph.product(self._kernel, self._affine, x, transpose)
        kind = compute.kind_of_array(x, "the vector")
        V, vector = self._columns_of(x, transpose, "the vector")
        out = self.product(V, transpose)
        if vector:
            out = out.reshape(-1)
        return compute.from_compute(out, kind, compute.output_dtype(x, self.dtype))

    def _columns_of(self, x: Any, transpose: bool, what: str) -> tuple[Any, bool]:
        rows = self.shape[0 if transpose else 1]
        return compute.as_columns(x, rows, self.on_gpu, self.dtype, what, self.shape)

    def _host_product(self, X: Any, transpose: bool, what: str) -> np.ndarray:
        V, _ = self._columns_of(X, transpose, what)
        return compute.to_host(self.product(V, transpose))

    def _matvec(self, x):
        return self._host_product(x.reshape(-1, 1), False, "the vector").reshape(-1)

    def _matmat(self, X):
        return self._host_product(X, False, "the matrix")

    def _rmatvec(self, x):
        return self._host_product(x.reshape(-1, 1), True, "the vector").reshape(-1)

    def _rmatmat(self, X):
        return self._host_product(X, True, "the matrix")

    def dot(self, x):
        if compute.is_number(x):
            return self._scaled(float(x))
        return super().dot(x)

    # -- transposes, scaling, shifts ------------------------------------------------------------
    def _transpose(self) -> KernelOperator:
        return KernelOperator.from_kernel(self._kernel.transposed(), self._affine)

    def _adjoint(self) -> KernelOperator:
        return self._transpose()  # real operator

    def _scaled(self, c: float) -> KernelOperator:
        c = compute.finite_number(c, "the scale factor")
        return KernelOperator.from_kernel(self._kernel, self._affine.times(c))

    def shifted(self, alpha: float) -> KernelOperator:
        """``self + alpha · I`` (square operators only).

        >>> import numpy as np
        >>> from kernla import Vi, Vj
        >>> x = np.zeros((2, 1))
        >>> KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(x)).shifted(1.0).to_dense()
        array([[2., 1.],
               [1., 2.]])
        """
        alpha = compute.finite_number(alpha, "the shift alpha")
        if self.shape[0] != self.shape[1]:  # even for alpha = 0
            raise ShapeError(f"only a square operator can be shifted by alpha * I; this one is {self.shape}")
        return KernelOperator.from_kernel(self._kernel, self._affine.plus(alpha))

    def __mul__(self, x):
        if compute.is_number(x):
            return self._scaled(float(x))
        return self.dot(x)

    def __rmul__(self, x):
        if compute.is_number(x):
            return self._scaled(float(x))
        return super().__rmul__(x)

    def __truediv__(self, x):
        if not compute.is_number(x):
            raise ArgumentTypeError("a KernelOperator can only be divided by a number")
        return self._scaled(1.0 / compute.finite_number(x, "the divisor"))

    def __neg__(self):
        return self._scaled(-1.0)

    def __add__(self, other):
        if isinstance(other, ScaledIdentity):
            if other.shape != self.shape:
                raise ShapeError(
                    f"cannot add a {other.shape[0]}x{other.shape[1]} identity to a "
                    f"{self.shape[0]}x{self.shape[1]} operator"
                )
            return self.shifted(other.scale)
        if compute.is_number(other):
            raise ArgumentTypeError(
                "adding a number to a KernelOperator is ambiguous: write K + alpha * "
                "kernla.linalg.eye(n) or K.shifted(alpha) for K + alpha·I"
            )
        return super().__add__(other)

    def __radd__(self, other):
        return self.__add__(other)

    def __sub__(self, other):
        if isinstance(other, ScaledIdentity) or compute.is_number(other):
            return self.__add__(-other)
        return super().__sub__(other)

    # -- entries ---------------------------------------------------------------------------------
    def columns(self, cols: Sequence[int], chunk: int = COLUMN_CHUNK) -> np.ndarray:
        """The columns ``c · K[:, cols]`` (no shift) as a host float64 (n, len(cols)) array, computed
        by the operator's engine (the compiled one when available), not by NumPy; ``chunk``
        columns per engine call (see :meth:`kernla.linalg.kernel.Kernel.columns`).

        >>> import numpy as np
        >>> from kernla import kernels
        >>> K = kernels.gaussian(np.linspace(0, 1, 7)[:, None], sigma=0.3)
        >>> bool(np.allclose(K.columns([5, 0]), K.to_dense()[:, [5, 0]]))
        True
        """
        return self._affine.entries(self._kernel.columns(cols, chunk))

    def host_diagonal(self) -> np.ndarray:
        """The diagonal ``c · F(x_i, y_i) + s`` as a host NumPy array of the operator's dtype.

        >>> import numpy as np
        >>> from kernla import kernels
        >>> kernels.gaussian(np.zeros((2, 1))).shifted(0.5).host_diagonal()
        array([1.5, 1.5])
        """
        return self._affine.product(self._kernel.diagonal(), 1.0)

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
        if torch_graph.records_graph(self._kernel):
            return self._affine.product(torch_graph.diagonal(self._kernel), 1.0)
        return compute.from_compute(self.host_diagonal(), self.kind)

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
            raise ShapeError(
                f"to_dense() would build a {n}x{m} matrix ({gb:.2g} GB), over the limit of "
                f"{max_entries} entries; pass force=True if you really want it"
            )
        if torch_graph.records_graph(self._kernel):  # differentiable: F on all N·M pairs, in row chunks
            dense = torch_graph.dense(self._kernel)
            return self._affine.dense(dense, lambda: dense.new_ones(n).diag())
        dense = self._affine.dense(self._kernel.block(), lambda: np.eye(n, dtype=self.dtype))
        return compute.from_compute(dense, self.kind)

    # -- linear algebra (see kernla.linalg.operator_solve and kernla.linalg.lanczos) ---------------
    solve = operator_solve
    eigsh = operator_eigsh
