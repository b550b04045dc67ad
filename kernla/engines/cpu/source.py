"""C++ source of one CPU reduction kernel: the shared formula body in a tiled, OpenMP template.

Layout the kernel expects (the engine prepares it): i-variables row-major (nx, D); j-variables
*transposed* (D, ny) so the innermost j loop reads contiguous memory and vectorises; parameters
(D,). Rows are processed in blocks of ``IB`` against tiles of ``TJ`` columns (the tile stays in
cache while every row of the block uses it); for each (row, tile) the formula fills a small
buffer in a ``#pragma omp simd`` loop, then the reduction folds the buffer. Sum and LogSumExp
fold inside the vector loop; the kernel product Σ_j k_ij B_j takes B's width at run time, and
multiplies a block of k by B's rows with the micro-kernel of ``kl_tiles.h`` when B has several
columns (or with BLAS's ``?gemm``, when the engine passes its address). With a
:class:`~kernla.engines.cpu.tiles.TilePlan`, the inner products it found are computed for the whole
(block × tile) by that micro-kernel (or ``?gemm``, for the plan's BLAS sites) first, and the formula
reads them as scalars.

>>> from kernla.formula import Vi, Vj, call
>>> from kernla.reductions import Reduction
>>> src = kernel_source(Reduction("Sum", call("SqDist", Vi(0, 3), Vj(1, 3))), "float32")
>>> "kl_reduce" in src and "#pragma omp simd" in src
True
"""

from __future__ import annotations

from pathlib import Path

from ...formula.codegen import emit_bodies
from ...formula.tree import CAT_I, CAT_J, Node
from ...reductions import Reduction
from .._template import fill, indent
from .tiles import TilePlan, gemm_slot

_HERE = Path(__file__).resolve().parent
MATH_HEADER = (_HERE / "kl_math.h").read_text()
TEMPLATE = (_HERE / "template.cpp").read_text()
TILES_HEADER = (_HERE / "kl_tiles.h").read_text()
#: the block-sparse driver (``kl_reduce_ranges``), appended to every kernel's translation unit
RANGES_DRIVER = (_HERE / "ranges_driver.cpp").read_text()

_CTYPES = {"float32": ("float", "double"), "float64": ("double", "double")}


def _loader(ctx: dict, tiles: TilePlan | None):
    """Variable reads: i-variables and parameters from preloaded scalars, j-variables from tiles,
    tile values from the row's block of inner products."""

    def load(var: Node, k: int) -> str:
        pos, dim, cat = var.params
        if tiles is not None and tiles.is_tile_value(var):
            name = f"g{pos - tiles.base}"
            ctx[name] = (pos - tiles.base, 1, "tile", 0)
            return f"{name}[j - j0]"
        if cat == CAT_J:
            return f"a{pos}[(int64_t){k} * ny + j]"
        name = f"x{pos}_{k}" if cat == CAT_I else f"p{pos}_{k}"
        ctx[name] = (pos, dim, cat, k)
        return name

    return load


def _preloads(ctx: dict) -> str:
    lines = []
    for name, (pos, dim, cat, k) in sorted(ctx.items()):
        if cat == "tile":
            lines.append(f"const T* __restrict {name} = buf + BUF_G + ({pos} * IB + i - ibeg) * LDG + j0 % KL_NR;")
            continue
        src = f"a{pos}[i * {dim} + {k}]" if cat == CAT_I else f"a{pos}[{k}]"
        lines.append(f"const T {name} = {src};")
    return "\n".join(lines)


def _tile_size(formulas: tuple) -> int:
    jdim = sum(v.dim for f in formulas for v in f.variables() if v.params[2] == CAT_J) or 1
    width = sum(f.dim for f in formulas)
    tj = 16384 // max(jdim + width, 1)
    return max(64, min(1024, tj // 64 * 64))


def _blas(tiles: TilePlan | None) -> bool:
    return tiles is not None and any(s.blas for s in tiles.sites)


def _rows(tiles: TilePlan | None, product: bool) -> int:
    """Rows per block: BLAS's calls want many (a kernel product's too: its wide products call BLAS with
    k = this many rows); the micro-kernel 48; the per-component path 16. Measured on 2 Zen 4 cores (loaded):
    the 200-column float64 product at N = 4000 took 0.20 CPU-s with 48 rows, 0.165 with 192 (numpy's
    matmul on the precomputed K: 0.155)."""
    return 192 if _blas(tiles) or (product and tiles is None) else 48 if tiles is not None or product else 16


def _columns(formulas: tuple, tiles: TilePlan | None) -> int:
    """Columns per tile: BLAS's calls 1024 (fewer repacked operands), else what keeps a tile in L1."""
    if _blas(tiles):
        return 1024
    return min(_tile_size(formulas), 256) if tiles else _tile_size(formulas)


def _tile_code(tiles: TilePlan | None) -> tuple[str, str, int]:
    """(once per block: each site's rows packed; per (block, tile): its inner products or squared
    distances into its block of ``buf``; the sum of the sites' dimensions)."""
    if tiles is None:
        return "", "", 0
    pack, fill, offset = [], [], 0
    for s, site in enumerate(tiles.sites):
        a, b, na, nb = (f"(const T*)args[{tiles.base + 4 * s + q}]" for q in range(4))
        norms = f"{na}, {nb}" if site.kind == "sqdist" else "nullptr, nullptr"
        block = f"buf + BUF_G + {s} * IB * LDG"
        if site.blas:  # BLAS reads a's rows where they are
            fill.append(f"kl_gram_blas(gemm, {site.dim}, {a}, {b}, {norms}, ibeg, iend, j0, tj, {block}, LDG);")
            continue
        packed = f"buf + BUF_A + IB * {offset}"
        pack.append(f"kl_pack_rows(iend - ibeg, {site.dim}, {a} + ibeg * {site.dim}, {site.dim}, {packed});")
        fill.append(f"kl_gram({site.dim}, {packed}, {b}, {norms}, ibeg, iend, j0, tj, {block}, LDG);")
        offset += site.dim
    return "\n".join(pack), "\n".join(fill), offset


def kernel_source(red: Reduction, dtype: str, tiles: TilePlan | None = None) -> str:
    """The complete C++ translation unit for ``red`` on ``dtype`` ('float32' or 'float64').

    ``tiles``: the plan (from :func:`kernla.engines.cpu.tiles.plan`) whose sites this kernel computes
    by matrix-multiply tiles; its formulas replace the reduction's (or the kernel product's k).
    """
    T, TACC = _CTYPES[dtype]
    product = red.kernel_product()
    formulas = (product[0],) if product else red.formulas
    if tiles is not None:
        formulas = tiles.formulas
    ctx: dict = {}
    body, outs = emit_bodies(formulas, _loader(ctx, tiles))
    tile_pack, tile_fill, tile_dims = _tile_code(tiles)
    positions = sorted({v.params[0] for f in formulas for v in f.variables() if not (tiles and tiles.is_tile_value(v))})
    unpack = "\n".join(f"const T* __restrict a{p} = (const T*)args[{p}];" for p in positions)
    flat = [x for o in outs for x in o]
    width = len(flat)
    store = "\n".join(f"buf[{c} * TJ + jj] = {x};" for c, x in enumerate(flat))

    if product:  # Σ_j k_ij B_j, B of run-time width (the kernel product)
        b_pos = product[1].params[0]
        mode = "PRODUCT"
        fold = ""
        b_ptr = f"(const T*)args[{b_pos}]"
        decl, init, merge, final = "double acc_s[1];", "", "", ""  # Acc unused: E sums per row
    else:
        b_ptr = "nullptr"
        acc = red.c_accumulator("A.acc")
        decl = red.c_accumulator("acc").decl
        init, merge = acc.init, acc.merge("B.acc")
        final = acc.finalize("of", "oi")
        mode = {"sum": "SUM", "logsumexp": "LSE"}.get(red.kind.vector_fold or "", "GENERIC")
        fold = ""
        if mode == "GENERIC":
            vals = [f"buf[{c} * TJ + jj]" for c in range(red.formula.dim)]
            wts = [f"buf[{red.formula.dim + c} * TJ + jj]" for c in range(red.weight.dim)] if red.weight else None
            fold = acc.update(vals, wts, "(j0 + jj)")

    # a kernel product's source depends on k only: its width E is a run-time argument
    out_wf = 0 if product else sum(w for w, kind in red.output_dims() if kind == "float")
    out_wi = sum(w for w, kind in red.output_dims() if kind == "index")
    sum_vars = ", ".join(f"s{c}" for c in range(width))
    sum_init = " ".join(f"T s{c} = T(0);" for c in range(width))
    sum_add = "\n".join(f"s{c} += {x};" for c, x in enumerate(flat))
    sum_store = "\n".join(f"A.acc_s[{c}] += TACC(s{c});" for c in range(width))

    slots = {
        "T": T,
        "TACC": TACC,
        "MODE": mode,
        "WIDTH": str(width),
        "TJ": str(_columns(formulas, tiles)),
        "IB": str(_rows(tiles, bool(product))),
        "NSITES": str(len(tiles.sites) if tiles else 0),
        "GEMM_ARG": str(gemm_slot(red.formulas, tiles)),
        "TILE_PACK": indent(tile_pack, 4),
        "TILE_FILL": indent(tile_fill, 8),
        "TILE_DIMS": str(tile_dims),
        "TILES": TILES_HEADER,
        "MATH": MATH_HEADER,
        "ACC_DECL": decl,
        "ACC_INIT": indent(init, 4),
        "ACC_MERGE": indent(merge, 4),
        "ACC_FINAL": indent(final, 4),
        "UNPACK": indent(unpack, 4),
        "PRELOAD": indent(_preloads(ctx), 8),
        "BODY": indent("\n".join(body), 12),
        "STORE": indent(store, 12),
        "FOLD": indent(fold, 12),
        "SUM_VARS": sum_vars,
        "SUM_INIT": sum_init,
        "SUM_ADD": indent(sum_add, 12),
        "SUM_STORE": indent(sum_store, 12),
        "B_PTR": b_ptr,
        "STORE_K": flat[0],
        "IS_PRODUCT": "true" if product else "false",
        "OUT_WF": str(out_wf),
        "OUT_WI": str(out_wi),
    }
    return fill(TEMPLATE + RANGES_DRIVER, slots)
