"""Inner products by matrix-multiply tiles: find them in a formula, and prepare their operands per call.

A formula that reaches the j-variables through an inner product or a squared distance of vectors of
dimension D ≥ :data:`MIN_DIM` — ``SqDist(a, b)``, ``SqNorm2(a - b)``, ``Sum(Square(a - b))``,
``Norm2(a - b)``, ``(a | b)``, ``Sum(a * b)``, with ``a`` a function of i-variables and parameters and
``b`` of j-variables and parameters — is rewritten so that each such *site* is read from a per-pair
tile value. The CPU kernel computes the (row block × column tile) matrix of ⟨a_i, b_j⟩ with a
register-blocked micro-kernel (``kl_tiles.h``), then forms ``max(|a_i|² + |b_j|² − 2⟨a_i, b_j⟩, 0)``
for a distance, and evaluates the rest of the formula on that scalar. From D ≥ :data:`BLAS_DIM` that
matrix is one call of BLAS's ``?gemm`` per (192-row block × 1024-column tile) instead, and kernel
products of ≥ :data:`BLAS_COLUMNS` columns multiply each block of k by B with ``?gemm`` too: the BLAS
of this process's scipy (:func:`gemm`), handed to the kernel as an argument, held on one thread
per call (:func:`blas_single_thread`), as each OpenMP thread calls it on its own block.

Rounding (float32 or float64, unit roundoff u): a distance is computed on operands centred on the
mean c of the b_j (distances do not change), and the expansion's absolute error is at most about
``(D + 3) u (|a_i − c|² + |b_j − c|²)`` — relative to the squared distance it is large for two points
much closer to each other than to c (the exact per-component path has a relative error of about
``D u``). An inner product's error bound, ``D u |a_i| |b_j|``, is the one of the exact path.
``KERNLA_CPU_TILES=off`` (or ``MIN_DIM = 0`` at run time) keeps the exact path for every formula;
data with a non-finite operand value runs the exact path too.

>>> from kernla.formula import Vi, Vj, call
>>> k = call("Exp", -call("SqDist", Vi(0, 64), Vj(1, 64)))
>>> p = plan((k,), 16, 2)
>>> [s.kind for s in p.sites], str(p.formulas[0])
(['sqdist'], 'Exp((-Var(2,1,1)))')
>>> plan((call("SqDist", Vi(0, 3), Vj(1, 3)),), 16, 2) is None  # below the threshold: the exact path
True
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ...formula.evaluate import evaluate
from ...formula.tree import CAT_I, CAT_J, CAT_PARAM, Node, Var, call, free_position

#: the smallest dimension an inner product is computed by tiles at; 0: never (``KERNLA_CPU_TILES=off``,
#: else ``KERNLA_CPU_TILE_DIM``); read at each call
MIN_DIM = 0 if os.environ.get("KERNLA_CPU_TILES", "").lower() in ("off", "0", "no") else 16
if os.environ.get("KERNLA_CPU_TILE_DIM", "").isdigit():
    MIN_DIM = int(os.environ["KERNLA_CPU_TILE_DIM"])

#: the smallest dimension an inner product is computed by BLAS on the tiles at (below: the micro-kernel);
#: 0: never (``KERNLA_CPU_BLAS=off``, else ``KERNLA_CPU_BLAS_DIM``); read at each call
BLAS_DIM = 0 if os.environ.get("KERNLA_CPU_BLAS", "").lower() in ("off", "0", "no") else 256
if os.environ.get("KERNLA_CPU_BLAS_DIM", "").isdigit():
    BLAS_DIM = int(os.environ["KERNLA_CPU_BLAS_DIM"])

#: the fewest columns a kernel product multiplies by BLAS (below: the micro-kernel); read at each call
BLAS_COLUMNS = 16

#: columns of one micro-kernel panel, per value type: two 32-byte vectors
PANEL = {"float32": 16, "float64": 8}


@dataclass(frozen=True)
class Site:
    """One inner product of a formula: ``kind`` is ``"sqdist"`` (|a - b|²) or ``"dot"`` ((a|b))."""

    kind: str
    left: Node  # i-variables and parameters
    right: Node  # j-variables and parameters
    blas: bool = False  # by BLAS's ?gemm (b row-major), else by the micro-kernel (b packed in panels)

    @property
    def dim(self) -> int:
        return self.left.dim


@dataclass(frozen=True)
class TilePlan:
    """The rewritten formulas (site ``s`` read as ``Var(base + s, 1, j)``) and the sites."""

    formulas: tuple[Node, ...]
    sites: tuple[Site, ...]
    base: int

    def is_tile_value(self, var: Node) -> bool:
        return var.params[0] >= self.base


def _side(node: Node) -> int | None:
    """CAT_I or CAT_J when ``node``'s variables are of that category (and parameters), else None."""
    cats = {v.params[2] for v in node.variables()} - {CAT_PARAM}
    return cats.pop() if len(cats) == 1 else None


def _pair(a: Node, b: Node) -> tuple[Node, Node] | None:
    """(i-side, j-side) of two operands of one dimension, in either order."""
    if a.dim != b.dim:
        return None
    sides = (_side(a), _side(b))
    if sides == (CAT_I, CAT_J):
        return a, b
    if sides == (CAT_J, CAT_I):
        return b, a
    return None


#: the formula operation Sum (the sum of a vector's components, not the reduction)
_SUM_OP = "Sum"


def _match(node: Node) -> tuple[str, tuple[Node, Node] | None, bool]:
    """(kind, operands, root is a norm) of the inner product ``node`` computes, or ("", None, False)."""
    op, args = node.op, node.args
    if op == "SqDist":
        return "sqdist", _pair(*args), False
    if op == "Scalprod":
        return "dot", _pair(*args), False
    inner = args[0] if len(args) == 1 else None
    if op in ("SqNorm2", "Norm2") and inner is not None and inner.op == "Subtract":
        return "sqdist", _pair(*inner.args), op == "Norm2"
    if op == _SUM_OP and inner is not None and inner.op == "Square" and inner.args[0].op == "Subtract":
        return "sqdist", _pair(*inner.args[0].args), False
    if op == _SUM_OP and inner is not None and inner.op == "Mult":
        return "dot", _pair(*inner.args), False
    return "", None, False


def plan(formulas: Sequence[Node], min_dim: int, base: int, blas_dim: int = 0) -> TilePlan | None:
    """The tile plan of ``formulas`` for inner products of dimension ≥ ``min_dim`` (None: nothing to tile).

    ``base``: a position above every variable of the reduction (the tile values take ``base + s``);
    ``blas_dim``: sites of that dimension or more are computed by BLAS (0: none).
    """
    if min_dim <= 0:
        return None
    nodes = [n for f in formulas for n in f.walk()]
    sites: list[Site] = []
    mapping: dict[Node, Node] = {}
    for node in nodes:
        kind, pair, norm = _match(node)
        if pair is None or pair[0].dim < min_dim or node in mapping:
            continue
        site = Site(kind, *pair, 0 < blas_dim <= pair[0].dim)
        if site not in sites:
            sites.append(site)
        value = Var(base + sites.index(site), 1, CAT_J)
        mapping[node] = call("Sqrt", value) if norm else value
    if not sites:
        return None
    return TilePlan(tuple(f.replace(mapping) for f in formulas), tuple(sites), base)


def _operand(node: Node, arrays: Sequence[np.ndarray], rows: int, dtype: np.dtype) -> np.ndarray:
    """``node`` evaluated on every row, (rows, D) in ``dtype``."""
    if node.is_var:
        return np.asarray(arrays[node.params[0]], dtype)
    value = evaluate(node, {v.params[0]: arrays[v.params[0]] for v in node.variables()}, dtype)
    return np.broadcast_to(value, (rows, node.dim))


def operands(
    tiles: TilePlan, arrays: Sequence[np.ndarray], nx: int, ny: int, dtype: np.dtype
) -> list[np.ndarray] | None:
    """The kernel's extra arrays, four per site (None when an operand is not finite: the exact path).

    ``a`` (nx, D) row-major; ``b`` packed in panels of :data:`PANEL` columns, (panels, D, PANEL),
    zero-padded; ``|a|²`` (nx,) and ``|b|²`` (ny,), both operands centred for a distance.
    """
    width = PANEL[dtype.name]
    out: list[np.ndarray] = []
    for site in tiles.sites:
        a, b = _operand(site.left, arrays, nx, dtype), _operand(site.right, arrays, ny, dtype)
        same = a is b  # one array on both sides (K(x, x)): checked, centred and normed once
        if not (np.isfinite(b).all() and (same or np.isfinite(a).all())):
            return None
        if site.kind == "sqdist":
            centre = b.mean(axis=0, dtype=np.float64).astype(dtype)
            b = b - centre
            a = b if same else a - centre
        norms_b = np.einsum("ij,ij->i", b, b) if site.kind == "sqdist" else np.zeros(1, dtype)
        norms_a = norms_b if same or site.kind != "sqdist" else np.einsum("ij,ij->i", a, a)
        out += [np.ascontiguousarray(a), np.ascontiguousarray(b) if site.blas else _panels(b, width), norms_a, norms_b]
    return out


def _panels(b: np.ndarray, width: int) -> np.ndarray:
    """``b`` (ny, D) packed in panels of ``width`` columns, (panels, D, width), zero-padded."""
    panels = -(-len(b) // width)
    packed = np.zeros((panels * width, b.shape[1]), b.dtype)
    packed[: len(b)] = b
    return np.ascontiguousarray(packed.reshape(panels, width, b.shape[1]).transpose(0, 2, 1))


def gemm_slot(formulas: Sequence[Node], tiles: TilePlan | None) -> int:
    """The kernel argument that holds BLAS's ?gemm: after the variables and the tile operands."""
    if tiles is not None:
        return tiles.base + 4 * len(tiles.sites)
    return free_position(*formulas)


_GEMM = {"float32": "sgemm", "float64": "dgemm"}


@functools.cache
def gemm(dtype: str) -> int:
    """The address of scipy's BLAS ?gemm for ``dtype`` (from ``scipy.linalg.cython_blas``), 0 if none.

    The compiled kernels never link a BLAS: they call the one of the scipy this process imported
    through this pointer, on one thread per OpenMP thread (:func:`blas_single_thread`).

    >>> gemm("float64") != 0, gemm("int8")
    (True, 0)
    """
    if dtype not in _GEMM:
        return 0
    try:
        from scipy.linalg import cython_blas  # deferred heavy import: only kernels that use BLAS need it
    except ImportError:  # pragma: no cover - scipy is a dependency
        return 0
    capsule = cython_blas.__pyx_capi__[_GEMM[dtype]]
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    return get(capsule, name(capsule)) or 0


_blas_libraries: list | None = None


@contextlib.contextmanager
def blas_single_thread() -> Iterator[None]:
    """A context in which scipy's (and numpy's) OpenBLAS runs each call on the calling thread only.

    The kernel calls ?gemm from each of its OpenMP threads; OpenBLAS, asked for several threads,
    would serialise those calls on its own thread pool. Needs threadpoolctl (a dependency); sets
    and restores the libraries' thread counts directly (threadpoolctl's ``limit`` costs ~40 µs).

    >>> with blas_single_thread():
    ...     pass
    """
    global _blas_libraries
    if _blas_libraries is None:
        import threadpoolctl  # deferred: only kernels that use BLAS need it

        _blas_libraries = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    before = [lib.get_num_threads() for lib in _blas_libraries]
    for lib, n in zip(_blas_libraries, before):
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(_blas_libraries, before):
            if n != 1:
                lib.set_num_threads(n)
