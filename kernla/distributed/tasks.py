"""What runs on a Dask worker: a block's kernel rebuilt from its arrays, its products, k-selections and merges.

A :class:`KernelSpec` is a kernel without its point data: the formula, the category of each
variable, the parameters (small) and the engine. It pickles in a few hundred bytes, so every task
carries it; the point data arrive as the task's dependencies (blocks already on the workers).
:meth:`KernelSpec.kernel` rebuilds a local :class:`~kernla.linalg.kernel.Kernel` on a block of
rows and a block of columns, on which the worker's own engine (compiled CPU, or CUDA for CuPy
blocks) computes.

>>> import numpy as np
>>> from kernla import kernels
>>> x = np.linspace(0, 1, 6)[:, None]
>>> spec = KernelSpec.of(kernels.gaussian(x, sigma=0.5).kernel)
>>> top = block_product(spec, [x[:2]], [x], np.ones((6, 1)))      # rows 0-1 against every column
>>> bool(np.allclose(top, kernels.gaussian(x, sigma=0.5).to_dense()[:2].sum(1, keepdims=True)))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import arrays as arr
from ..core import Slot
from ..errors import BackendError
from ..formula import CAT_I, CAT_J, CAT_PARAM
from ..formula.tree import Node, swap_ij
from ..genred import reduce
from ..linalg import _compute as compute
from ..linalg.kernel import Kernel
from ..reductions import Reduction

_SWAP = {CAT_I: CAT_J, CAT_J: CAT_I, CAT_PARAM: CAT_PARAM}

#: the k-selection that a distributed kNN runs on each block: values and indices, merged exactly
KMIN = "KMin_ArgKMin"


@dataclass(frozen=True)
class KernelSpec:
    """A kernel's formula, variable categories, parameters and engine: everything but the points.

    ``params[pos]`` is the value of parameter ``pos`` (None for point variables); ``dtype`` is the
    precision the worker computes in (the data's, or float64 for a float32 solve).
    """

    formula: Node
    names: tuple
    cats: tuple
    params: tuple
    backend: str | None
    dtype: np.dtype

    @classmethod
    def of(cls, kernel: Kernel) -> KernelSpec:
        """The spec of a local kernel (its parameters copied, its points left out)."""
        return cls.build(
            kernel.formula, list(zip(kernel.data, kernel.cats)), kernel.names, kernel.backend, kernel.dtype
        )

    @classmethod
    def build(cls, formula: Node, variables: Sequence, names: Sequence, backend: str | None, dtype: Any) -> KernelSpec:
        """The spec of ``formula`` on ``variables`` ((data, category) pairs; only the parameters' data kept).

        The formula may be vector-valued (:func:`block_pair_sum`); :meth:`kernel` needs a scalar one.
        """
        params = tuple(d if c == CAT_PARAM else None for d, c in variables)
        return cls(formula, tuple(names), tuple(c for _, c in variables), params, backend, np.dtype(dtype))

    def positions(self, cat: int) -> list[int]:
        """Positions of the variables of category ``cat`` (the order of a block's arrays)."""
        return [k for k, c in enumerate(self.cats) if c == cat]

    def dims(self) -> dict[int, int]:
        """The dimension of each variable the formula uses, by position."""
        return {node.params[0]: node.dim for node in self.formula.walk() if node.is_var}

    def transposed(self) -> KernelSpec:
        """The spec of Kᵀ: i and j exchanged."""
        return replace(self, formula=swap_ij(self.formula), cats=tuple(_SWAP[c] for c in self.cats))

    def with_dtype(self, dtype: Any) -> KernelSpec:
        return replace(self, dtype=np.dtype(dtype))

    def variables(self, rows: Sequence[Any], cols: Sequence[Any]) -> list[tuple[Any, int]]:
        """``(data, category)`` of each variable: the parameters, and the arrays of one block of rows
        (i-variables, in order) and one block of columns, in the spec's dtype."""
        it_rows, it_cols = iter(rows), iter(cols)
        variables = []
        for pos, cat in enumerate(self.cats):
            if cat == CAT_PARAM:
                variables.append((self.params[pos], cat))
                continue
            data = next(it_rows) if cat == CAT_I else next(it_cols)
            variables.append((data if arr.dtype_of(data) == self.dtype else data.astype(self.dtype), cat))
        return variables

    def kernel(self, rows: Sequence[Any], cols: Sequence[Any]) -> Kernel:
        """The local kernel of one block of rows (i-variables, in order) and one block of columns."""
        return Kernel.build(self.formula, self.variables(rows, cols), self.names, self.backend)


def as_local(K: Kernel, V: np.ndarray) -> Any:
    """A host block of vectors in the kernel's namespace and dtype (a CuPy array for a GPU block)."""
    return K.xp.asarray(V, dtype=K.dtype)


def block_product(spec: KernelSpec, rows: Sequence, cols: Sequence, V: np.ndarray, transpose: bool = False):
    """``K_ab @ V`` (or ``K_abᵀ @ V``) for one block of rows and one of columns, as a host array."""
    K = spec.kernel(rows, cols)
    return compute.to_host(K.product(as_local(K, V), transpose))


def blocks_product(spec: KernelSpec, blocks: Sequence[Sequence], cols: Sequence, V: np.ndarray, acc: Any = None):
    """``acc[a] + K(rows_a, cols) @ V`` for each of a worker's row blocks (``acc=None``: from zero)."""
    out = [block_product(spec, rows, cols, V) for rows in blocks]
    return out if acc is None else [a + o for a, o in zip(acc, out)]


def block_kmin(spec: KernelSpec, rows: Sequence, cols: Sequence, k: int, offset: int = 0):
    """The ``k`` smallest values of F per row over one column block, sorted, with global column indices.

    A block with fewer than ``k`` columns pads with (inf, -1), which every merge puts last.
    """
    K = spec.kernel(rows, cols)
    n, m = K.shape
    kk = min(k, m)
    red = Reduction(KMIN, K.formula, K=kk)
    vals, idx = (compute.to_host(o) for o in reduce(red, list(K.slots), list(K.data), 1, K.backend))
    vals, idx = vals.astype(spec.dtype, copy=False), idx + offset
    if kk < k:
        vals = np.concatenate([vals, np.full((n, k - kk), np.inf, spec.dtype)], axis=1)
        idx = np.concatenate([idx, np.full((n, k - kk), -1, np.int64)], axis=1)
    return vals, idx


def merge_kmin(a: tuple, b: tuple, k: int) -> tuple:
    """The ``k`` best of two candidate lists ``(values, indices)``, sorted by value, then by index.

    Exactly the single-pass selection, whatever the order the column blocks come in: equal
    values keep the smaller column index, and padding (index -1) goes last.

    >>> a = (np.array([[1.0, 5.0]]), np.array([[7, 8]]))
    >>> b = (np.array([[1.0, 2.0]]), np.array([[0, 1]]))
    >>> merge_kmin(a, b, 3)
    (array([[1., 1., 2.]]), array([[0, 7, 1]]))
    """
    vals = np.concatenate([a[0], b[0]], axis=1)
    idx = np.concatenate([a[1], b[1]], axis=1)
    order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), vals), axis=1)[:, :k]
    return np.take_along_axis(vals, order, 1), np.take_along_axis(idx, order, 1)


def blocks_kmin(spec: KernelSpec, blocks: Sequence[Sequence], cols: Sequence, k: int, offset: int, acc: Any = None):
    """Each row block's candidates against one column block, merged into ``acc`` (earlier columns)."""
    out = [block_kmin(spec, rows, cols, k, offset) for rows in blocks]
    return out if acc is None else [merge_kmin(a, o, k) for a, o in zip(acc, out)]


def chain_product(spec: KernelSpec, blocks: Sequence[Sequence], piece: tuple, offset: int, acc: Any = None):
    """One step of a worker's partitioned product: its row blocks against a streamed ``(columns, V)`` piece."""
    cols, V = piece
    return blocks_product(spec, blocks, cols, V, acc)


def chain_kmin(spec: KernelSpec, blocks: Sequence[Sequence], piece: tuple, k: int, offset: int, acc: Any = None):
    """One step of a worker's partitioned k-selection: its candidates merged with a streamed column block's."""
    cols, _ = piece
    return blocks_kmin(spec, blocks, cols, k, offset, acc)


def block_pair_sum(spec: KernelSpec, rows: Sequence, cols: Sequence, U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``Σ_i Σ_j F(rows_i, U_i; cols_j, V_j)`` over one block of rows and one of columns, for a vector
    formula F whose last i-variable is U and last j-variable V (host arrays, sent with the task).

    >>> from kernla.formula import Var, call
    >>> x, u = np.arange(3.0)[:, None], np.ones((3, 1))
    >>> f = call("Mult", Var(0, 1, CAT_I) - Var(1, 1, CAT_J), Var(2, 1, CAT_I) * Var(3, 1, CAT_J))
    >>> spec = KernelSpec.build(f, [(x, CAT_I), (x, CAT_J), (u, CAT_I), (u, CAT_J)], "abcd", None, np.float64)
    >>> block_pair_sum(spec, [x[:2]], [x], u[:2], u)  # Σ over i < 2, j < 3 of x_i - x_j
    array([-3.])
    """
    xp = compute.namespace(not all(isinstance(a, np.ndarray) for a in rows))[0]  # CuPy blocks: CuPy vectors
    variables = spec.variables([*rows, xp.asarray(U)], [*cols, xp.asarray(V)])
    slots = [
        Slot(n, c, 1 if arr.kind_of(d) == "scalar" else int(d.shape[-1])) for n, (d, c) in zip(spec.names, variables)
    ]
    out = reduce(Reduction("Sum", spec.formula), slots, [d for d, _ in variables], 1, spec.backend)[0]
    return compute.to_host(out).sum(axis=0)


def blocks_pair_sum(spec: KernelSpec, blocks: Sequence, cols: Sequence, U: Sequence, V: np.ndarray, acc: Any = None):
    """:func:`block_pair_sum` of each of a worker's row blocks (with its rows of U), added to ``acc``."""
    out = sum(block_pair_sum(spec, rows, cols, u, V) for rows, u in zip(blocks, U))
    return out if acc is None else acc + out


def chain_pair_sum(spec: KernelSpec, blocks: Sequence, piece: tuple, U: Sequence, offset: int, acc: Any = None):
    """One step of a worker's partitioned pair sum: its row blocks against a streamed ``(columns, V)`` piece."""
    cols, V = piece
    return blocks_pair_sum(spec, blocks, cols, U, V, acc)


def block_diagonal(spec: KernelSpec, rows: Sequence, cols: Sequence, lo: int, hi: int) -> np.ndarray:
    """``F(x_i, y_i)`` for the rows ``lo:hi`` of a square kernel; ``cols`` hold (at least) those columns."""
    cut = [c[lo:hi] for c in cols]
    return spec.kernel(rows, cut).diagonal()


def block_columns(spec: KernelSpec, rows: Sequence, cols: Sequence, index: np.ndarray) -> np.ndarray:
    """The columns ``index`` of one row block, ``K(x_a, y_index)``, taken from the worker's copy of the columns."""
    return block_product(spec, rows, take_rows(cols, index), np.eye(index.size, dtype=spec.dtype))


def take_rows(block: Sequence, index: np.ndarray) -> list:
    """The rows ``index`` of each array of a block, as host arrays (a CuPy block is indexed on its GPU)."""
    on_gpu = not all(isinstance(a, np.ndarray) for a in block)
    where = compute.namespace(on_gpu)[0].asarray(index)
    return [compute.to_host(a[where]) for a in block]


def with_vector(block: Any, V: np.ndarray) -> tuple:
    """A column block and its slice of the vectors, as one (short-lived) piece for another worker."""
    return block, V


def identity(x: Any) -> Any:
    """The value itself: a new key for the same data (a per-worker copy, a short-lived piece)."""
    return x


def to_device(arrays: Sequence[np.ndarray], device: str) -> list:
    """A block's arrays where the worker computes: host NumPy, or CuPy on the worker's GPU."""
    if device != "cuda":
        return [np.ascontiguousarray(a) for a in arrays]
    try:
        import cupy  # optional dependency: only on workers asked to compute on their GPU
    except ImportError as err:
        raise BackendError(
            "device='cuda' needs CuPy and a GPU on every worker (one GPU per worker: dask-cuda's "
            f"LocalCUDACluster); this worker cannot import cupy ({err})"
        ) from err

    return [cupy.ascontiguousarray(cupy.asarray(a)) for a in arrays]


def concat_rows(blocks: Sequence[Sequence]) -> list:
    """The arrays of consecutive row blocks joined (a whole side from its Dask chunks)."""
    return [np.concatenate([compute.to_host(b[k]) for b in blocks]) for k in range(len(blocks[0]))]
