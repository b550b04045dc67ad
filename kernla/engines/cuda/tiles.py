"""The CUDA tile path: which inner product of a formula the kernels compute by Gram tiles, and its operands.

The sites are those of the CPU engine (:func:`kernla.engines.cpu.tiles.plan`: ``SqDist``, ``(a | b)``,
``Norm2(a - b)``, … of dimension D ≥ :data:`MIN_DIM`), restricted to what one kernel holds in shared memory:
one site, whose operands are an i-variable and a j-variable. Each block computes the (BLOCK rows × TJ
columns) Gram tile of that site with a register-blocked product of shared-memory tiles
(``cuda_templates/tiles.cu``) and forms ``max(|a_i − c|² + |b_j − c|² − 2⟨a_i − c, b_j − c⟩, 0)`` for a
distance, with c the mean of the b_j; the rest of the formula and the reduction read that value.

Rounding (the compute type's unit roundoff u: 2⁻²⁴ for float16 and float32 data, 2⁻⁵³ for float64): the
distance's absolute error is at most about ``(D + 3) u (|a_i − c|² + |b_j − c|²)``, the CPU tile path's bound
(the exact path's relative error is about ``D u``); an inner product's, ``D u |a_i| |b_j|``, is the exact
path's. Data with a non-finite operand value runs the exact path (the engine checks per call), and so does
every formula when ``KERNLA_CUDA_TILES=off``. By default float32 stays in float32 FMAs.

Opt-in, float32 data only (:data:`TF32`, ``KERNLA_CUDA_TF32=1``): the Gram tile by TF32 tensor cores
(``mma.sync.m16n8k8``, operands rounded to 10-bit mantissas, float32 sums, sm_80 and later). Each operand
component's relative rounding error is at most 2⁻¹¹, so an inner product's error is at most about
``(2⁻¹⁰ + D u) |a| |b|``, a distance's about ``2⁻¹⁰ (|a − c|² + |b − c|²)`` plus the float32 bound above —
three decimal digits of the centred norms, enough to rank well-separated neighbours or to evaluate a smooth
kernel, not to resolve near-duplicates. float16 data keeps the float32 path (its centred operands are not
float16 values, so half-precision ``mma`` would round them again); the engine has no bfloat16 dtype.

>>> from kernla.formula import Vi, Vj, call
>>> g = gram_plan((call("Exp", -call("SqDist", Vi(0, 64), Vj(1, 64))),), 2, 32, "float32")
>>> g.site.kind, g.operands, g.tj, str(g.tiles.formulas[0])
('sqdist', (3, 4, 5, 6), 32, 'Exp((-Var(2,1,1)))')
>>> print(g.call("kl_g"))
kl_gram_tile<8, 4, 8>(a3, a4, a5, a6, 64, kl_i0 - threadIdx.x, kl_iend, kl_j0, kl_cnt, kl_xs, kl_ys, kl_g);
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ShapeError
from ...formula.tree import Node
from ..cpu.tiles import Site, TilePlan
from ..cpu.tiles import plan as find_sites

#: the smallest dimension an inner product is computed by Gram tiles at; 0: never (``KERNLA_CUDA_TILES=off``,
#: else ``KERNLA_CUDA_TILE_DIM``). Not measured on a GPU yet: the exact path keeps x_i in registers up to 64
#: components and reads every y_j component from shared memory once per row, the tiles reuse both.
MIN_DIM = 0 if os.environ.get("KERNLA_CUDA_TILES", "").lower() in ("off", "0", "no") else 32
if os.environ.get("KERNLA_CUDA_TILE_DIM", "").isdigit():
    MIN_DIM = int(os.environ["KERNLA_CUDA_TILE_DIM"])

#: per dtype: a thread's register block, RM rows × RN columns, of a tile of BLOCK rows × TJ = RM·RN columns,
#: and the components KC a Gram tile stages per pass (float16 data is computed in float)
TILE_SHAPE = {"float16": (8, 4, 8), "float32": (8, 4, 8), "float64": (4, 4, 4)}

#: the Gram tiles of float32 data on TF32 tensor cores (opt-in: ``KERNLA_CUDA_TF32=1``; see the bound above)
TF32 = os.environ.get("KERNLA_CUDA_TF32", "").lower() in ("1", "on", "yes")

#: kernel products Σ_j k_ij B_j of at least this many columns run as k tile × B tile products
#: (``cuda_templates/product.cu``); not measured on a GPU yet
PRODUCT_TILE_MIN = 16


def tile_cols(dtype: str) -> int:
    """TJ, the columns of one tile (and of one z-chunk of a tiled kernel product) for ``dtype``.

    >>> tile_cols("float32"), tile_cols("float64")
    (32, 16)
    """
    rm, rn, _ = TILE_SHAPE[dtype]
    return rm * rn


def compute_dtype(dtype: str) -> np.dtype:
    """The type the kernels compute in (and the tile operands' type): float64 for float64 data, else float32."""
    return np.dtype(np.float64 if dtype == "float64" else np.float32)


@dataclass(frozen=True)
class Gram:
    """The tile path of a reduction: the rewritten formulas, the one site (read as ``Var(base, 1, j)``),
    the tile shape; its operands are passed at the positions :attr:`operands` (a, b, and for a distance
    the squared norms |a|², |b|²)."""

    tiles: TilePlan
    shape: tuple[int, int, int]
    tf32: bool = False  # the Gram tile on TF32 tensor cores (float32 data, shape (8, 4, 8))

    @property
    def site(self) -> Site:
        return self.tiles.sites[0]

    @property
    def value(self) -> int:
        return self.tiles.base

    @property
    def operands(self) -> tuple[int, ...]:
        n = 4 if self.site.kind == "sqdist" else 2
        return tuple(range(self.value + 1, self.value + 1 + n))

    @property
    def tj(self) -> int:
        return self.shape[0] * self.shape[1]

    def shared_words(self) -> int:
        """T values of shared memory the Gram tile needs: the tile itself and the staged operand chunks."""
        kc = self.shape[2]
        return self.gram_words(self.tj) + kc * (BLOCK_ROWS + 1) + kc * self.tj

    @staticmethod
    def gram_words(tj: int) -> int:
        """T values of a (BLOCK rows × tj) tile with rows tj + 1 apart (no bank conflict on a column)."""
        return BLOCK_ROWS * (tj + 1)

    def rewrite(self, formulas: Sequence[Node]) -> tuple[Node, ...]:
        """``formulas`` (this plan's, or a component chunk of them) with the site read from the tile."""
        found = find_sites(formulas, self.site.dim, self.value)
        assert found is not None and found.sites == self.tiles.sites, "a chunk of the formula lost its site"
        return found.formulas

    def call(self, tile: str) -> str:
        """The C call filling the Gram tile ``tile`` for the current j tile (every thread of the block runs it)."""
        rm, rn, kc = self.shape
        ops = [f"a{p}" for p in self.operands] + ["nullptr", "nullptr"][: 4 - len(self.operands)]
        name = "kl_gram_tile_tf32" if self.tf32 else f"kl_gram_tile<{rm}, {rn}, {kc}>"
        return (
            f"{name}({', '.join(ops)}, {self.site.dim}, kl_i0 - threadIdx.x, kl_iend, "
            f"kl_j0, kl_cnt, kl_xs, kl_ys, {tile});"
        )

    def read(self, tile: str) -> str:
        """The C expression of this thread's site value at column ``kl_jj`` of the tile."""
        return f"{tile}[threadIdx.x * {self.tj + 1} + kl_jj]"


#: rows of a block (the kernels' BLOCK; kept here so that this module does not import the source generator)
BLOCK_ROWS = 256


def gram_plan(formulas: Sequence[Node], base: int, min_dim: int, dtype: str, tf32: bool = False) -> Gram | None:
    """The tile path of ``formulas`` (None: the exact path). ``base``: a position above every variable;
    ``tf32``: TF32 tensor cores for float32 data (ignored for the other dtypes)."""
    tiles = find_sites(formulas, min_dim, base)
    if tiles is None or len(tiles.sites) != 1:
        return None
    site = tiles.sites[0]
    if not (site.left.is_var and site.right.is_var):
        return None
    return Gram(tiles, TILE_SHAPE[dtype], tf32 and dtype == "float32")


def operands(gram: Gram, arrays: Sequence[Any], dtype: str, nx: int, ny: int, xp: Any = np) -> list[Any] | None:
    """The kernel's extra arrays at :attr:`Gram.operands`, in the compute type (None when an operand value is
    not finite: run the exact path). ``xp``: the array module of ``arrays`` (NumPy, or CuPy in the engine).

    For a distance, both operands are centred on the mean of the b_j, and their squared norms follow.
    """
    work = compute_dtype(dtype)
    a, b = (_operand(arrays, var, rows, work, xp) for var, rows in ((gram.site.left, nx), (gram.site.right, ny)))
    if not bool(xp.isfinite(a).all()) or not bool(xp.isfinite(b).all()):
        return None
    if gram.site.kind != "sqdist":
        return [xp.ascontiguousarray(a), xp.ascontiguousarray(b)]
    centre = b.mean(axis=0, dtype=np.float64).astype(work) if len(b) else xp.zeros(gram.site.dim, work)
    a, b = a - centre, b - centre
    return [xp.ascontiguousarray(a), xp.ascontiguousarray(b), (a * a).sum(axis=1), (b * b).sum(axis=1)]


def _operand(arrays: Sequence[Any], var: Node, rows: int, work: np.dtype, xp: Any) -> Any:
    """The variable's (rows, D) array in ``work``, its shape checked."""
    pos, dim, _ = var.params
    if pos >= len(arrays):
        raise ShapeError(f"the formula uses argument {pos} but only {len(arrays)} arrays were given")
    a = xp.asarray(arrays[pos])
    if a.size != rows * dim:
        raise ShapeError(f"argument {pos} must have shape {(rows, dim)}, got {a.shape}")
    return a.astype(work).reshape(rows, dim)
