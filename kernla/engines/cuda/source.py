"""CUDA source of one reduction: the shared formula body in the tiled templates of ``cuda_templates/``.

This module needs neither CuPy nor a GPU: :func:`build_plan` returns the complete, self-contained
CUDA source of a reduction (prelude + kernels, template text inlined) together with what the engine
needs to launch it. The formula body comes from the one C generator
(:mod:`kernla.formula.codegen`), the accumulators from :meth:`Reduction.c_accumulator`.

Kernels in a plan (all ``extern "C"``):

- ``<prefix>_reduce[_zK]`` — each thread owns one row i (two for light formulas), j tiles are
  staged in shared memory by the whole block, accumulators live in registers; with
  ``gridDim.y > 1`` (split-j scheme) it writes partial accumulators that ``<prefix>_merge[_zK]``
  folds with the reduction's ``merge`` snippet. A formula whose accumulator would not fit in
  registers is cut into component chunks ``_z0, _z1, …`` (one kernel each).
- kernel products Σ_j k_ij B_j (:meth:`kernla.reductions.Reduction.kernel_product`): ``_w1`` for one
  column and ``_w8`` for any other width (8 columns per ``blockIdx.z``), the width being a run-time
  argument, so matvec and matmat with any number of columns share one compiled module.

>>> from kernla.formula import Vi, Vj, Pm, call
>>> from kernla.reductions import Reduction
>>> k = call("Exp", -Pm(2, 1) * call("SqDist", Vi(0, 3), Vj(1, 3)))
>>> plan = build_plan(Reduction("Sum", k * Vj(3, 1)), "float32")
>>> [x.name for x in plan.kernels], plan.product
(['kl_reduce_w1', 'kl_reduce_w8'], True)
>>> "kl_exp2f" in plan.source and "#include" not in plan.source
True

For float data the Gaussian's exp is one ``kl_exp2f`` of the distance times -G·log2(e), computed once
(the ``fast`` option of the one generator, :mod:`kernla.formula.codegen`):

>>> [line.strip() for line in plan.source.splitlines() if line.strip().startswith(("T t0 =", "T t1 ", "T t6"))][:3]
['T t0 = (-kl_p2_0);', 'T t1 = (t0 * T(1.4426950408889634));', 'T t6 = kl_exp2f(t1 * t5);']
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import DTypeError
from ...formula.codegen import drop_unused, emit_bodies
from ...formula.tree import CAT_I, CAT_J, CAT_PARAM, Node, Vj, call, free_position
from ...reductions import CAccumulator, Reduction
from .._template import fill, indent
from . import tiles
from .tiles import BLOCK_ROWS, TILE_SHAPE, Gram, gram_plan, tile_cols

if TYPE_CHECKING:  # importlib.resources.abc from Python 3.11 on
    from importlib.abc import Traversable

#: threads per block of the reduction kernels, and of the merge kernels
BLOCK = BLOCK_ROWS
MERGE_BLOCK = 128
#: columns per z-chunk of the kernel-product kernels (one-column kernel, any-width kernel)
PRODUCT_WIDTHS = (1, 8)
#: at most this many i-variable (resp. parameter) components are kept in registers; beyond, they
#: are read from global memory (L1-cached) where used, so large vector dimensions do not spill
I_REGISTERS = 64
P_REGISTERS = 64
#: 32-bit registers an accumulator may take before the formula is cut into component chunks
STATE_REGISTERS = 48
#: shared memory for one j tile: preferred size, hard limit (static shared memory)
TILE_BYTES = 16 * 1024
TILE_BYTES_MAX = 48 * 1024

_DTYPES = {"float16": "F16", "float32": "F32", "float64": "F64"}


def template_dir() -> Traversable:
    """Where the CUDA templates are: ``kernla/cuda_templates`` in an installed wheel (setup.py maps the
    repository's top-level ``cuda_templates/`` there), else that top-level folder of a source checkout.

    >>> sorted(t.name for t in template_dir().iterdir() if t.name.endswith(".cu"))
    ['merge.cu', 'prelude.cu', 'product.cu', 'reduce.cu', 'tiles.cu']
    """
    installed = importlib.resources.files("kernla") / "cuda_templates"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[3] / "cuda_templates"


@functools.cache
def template(name: str) -> str:
    """The text of ``cuda_templates/<name>`` (read once)."""
    path = template_dir() / name
    try:
        return path.read_text()
    except OSError as err:  # a broken installation, not a user error
        raise FileNotFoundError(f"kernla's CUDA template {path} is missing: {err}") from None


def dtype_name(dtype) -> str:
    """'float16', 'float32' or 'float64' from a NumPy dtype or a name ('half', 'float', 'double' too).

    >>> dtype_name("float"), dtype_name(np.float16)
    ('float32', 'float16')
    """
    aliases = {"half": "float16", "float": "float32", "double": "float64"}
    if isinstance(dtype, str) and dtype in aliases:
        return aliases[dtype]
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _DTYPES:
        raise DTypeError(f"the cuda engine works on float16, float32 and float64 data, not {dtype!r}")
    return name


@dataclass(frozen=True)
class KernelInfo:
    """One reduction kernel of a plan and its merge kernel.

    ``words``: 8-byte words of partial state per row (split-j scratch); ``tj``: j tile length;
    ``cw``: columns per z-chunk for kernel products (0 otherwise); ``rows``: rows per thread.
    """

    name: str
    merge: str
    words: int
    tj: int
    cw: int
    rows: int = 1


@dataclass(frozen=True)
class Plan:
    """Everything the engine needs: the CUDA source and how to launch its kernels.

    ``positions``: argument positions passed to the kernels, in order; ``outputs``: the
    reduction's ``output_dims()`` (for products, the width is B's run-time width);
    ``b_pos``: position of B for kernel products; ``gram``: the tile path's inner product (its operands
    are the last positions, see :func:`kernla.engines.cuda.tiles.operands`), None for the exact path.
    """

    dtype: str
    source: str
    kernels: tuple[KernelInfo, ...]
    positions: tuple[int, ...]
    outputs: tuple[tuple[int, str], ...]
    product: bool
    b_pos: int | None
    gram: Gram | None = None


# ---------------------------------------------------------------------------------------------
# pieces of one kernel
# ---------------------------------------------------------------------------------------------
def _save_state(acc: CAccumulator) -> tuple[str, int]:
    """Code writing the accumulator's variables to ``kl_st`` (one 8-byte word each), and the word count."""
    lines, off = [], 0
    for field in acc.fields:
        typ, n = field.ctype, field.words
        ref = functools.partial(field.ref, acc.prefix)
        if n > 8:
            lhs = (
                f"((kl_i64*)kl_st)[({off} + kl_w) * kl_stride + kl_slot]"
                if typ == "int64_t"
                else f"kl_st[({off} + kl_w) * kl_stride + kl_slot]"
            )
            rhs = ref("kl_w") if typ == "int64_t" else f"(double)({ref('kl_w')})"
            lines.append(f"for (int kl_w = 0; kl_w < {n}; kl_w++) {lhs} = {rhs};")
        else:
            for w in range(n):
                if typ == "int64_t":
                    lines.append(f"((kl_i64*)kl_st)[{off + w} * kl_stride + kl_slot] = {ref(w)};")
                else:
                    lines.append(f"kl_st[{off + w} * kl_stride + kl_slot] = (double)({ref(w)});")
        off += n
    return "\n".join(lines), off


def _state_word(typ: str, off: int, w: int | str) -> str:
    """Word ``off + w`` of ``kl_st`` read back as a value of C type ``typ`` (int64 bit-cast, others converted)."""
    index = f"({off} + {w}) * kl_stride + kl_slot"
    return f"((const kl_i64*)kl_st)[{index}]" if typ == "int64_t" else f"{typ}(kl_st[{index}])"


def _load_state(acc: CAccumulator) -> str:
    """Code reading an accumulator's variables back from ``kl_st`` (inverse of :func:`_save_state`)."""
    lines, off = [], 0
    for field in acc.fields:
        typ, n = field.ctype, field.words
        ref = functools.partial(field.ref, acc.prefix)
        src = functools.partial(_state_word, typ, off)
        if n > 8:
            lines.append(f"for (int kl_w = 0; kl_w < {n}; kl_w++) {ref('kl_w')} = {src('kl_w')};")
        else:
            lines.extend(f"{ref(w)} = {src(w)};" for w in range(n))
        off += n
    return "\n".join(lines)


@dataclass
class _Out:
    """How one kernel stores its outputs: names/kinds of the output arguments and the column map."""

    args: list[tuple[str, str]]  # (argument name, 'float' | 'index') in output order
    local: dict[str, int]  # kind -> local width (finalize writes kl_vf / kl_vi)
    column: Callable[[int], int | str]  # local index -> column in the full output row (number or C expression)
    row: str  # full row width (C expression)
    guard: Callable[[int], str] | None = None  # local index -> C condition for storing


def _final_code(acc, out: _Out) -> str:
    """Finalize into local arrays, then convert and store the row's outputs."""
    wf, wi = out.local.get("float", 0), out.local.get("index", 0)
    lines = [
        (f"T kl_vf[{wf}];" if wf else "") + (" " if wf and wi else "") + (f"kl_i64 kl_vi[{wi}];" if wi else ""),
        acc.finalize("kl_vf", "kl_vi"),
    ]
    for arg, kind in out.args:
        width = wf if kind == "float" else wi
        for c in range(width):
            val = f"kl_cv(kl_vf[{c}])" if kind == "float" else f"kl_vi[{c}]"
            store = f"{arg}[i * {out.row} + {out.column(c)}] = {val};"
            if out.guard is not None:
                store = f"if ({out.guard(c)}) {store}"
            lines.append(store)
    return "{\n" + indent("\n".join(lines), 4) + "\n}"


def _out_args(outputs: Sequence[tuple[int, str]]) -> tuple[list[tuple[str, str]], str]:
    args, decl = [], []
    for n, (_, kind) in enumerate(outputs):
        name = f"kl_out{n}"
        args.append((name, kind))
        decl.append(f"{'TIO' if kind == 'float' else 'kl_i64'}* __restrict__ {name}")
    return args, ",\n".join(f"       {d}" for d in decl) + ","


class _Loader:
    """Variable reads for the body of row ``row``: registers, shared-memory tile or global memory."""

    def __init__(self, layout: _Layout, row: int, pre: dict[str, str]):
        self.L, self.row, self.pre = layout, row, pre

    def __call__(self, var: Node, k: int) -> str:
        pos, dim, cat = var.params
        L, r = self.L, self.row
        if cat == CAT_J:
            return L.j(pos, dim, k)
        if cat == CAT_I:
            if L.i_in_regs:
                name = f"kl_x{pos}_{k}_{r}"
                self.pre[name] = f"const T {name} = kl_ld(a{pos} + kl_ii{r} * {dim} + {k});"
                return name
            return f"kl_ld(a{pos} + kl_ii{r} * {dim} + {k})"
        if L.p_in_regs:
            name = f"kl_p{pos}_{k}"
            self.pre[name] = f"const T {name} = kl_ld(a{pos} + {k});"
            return name
        return f"kl_ld(a{pos} + {k})"


@dataclass
class _Layout:
    """Where a kernel reads its variables: j tile layout, registers or global memory."""

    jvars: dict[int, int]  # j-variable position -> components staged (B: columns per chunk)
    offsets: dict[int, int]  # position -> offset in a tile record
    rec: int  # T values per record (one record per j), a multiple of 16 bytes
    tj: int  # j per tile
    shared: bool  # tile staged in shared memory (else j-variables read from global)
    i_in_regs: bool
    p_in_regs: bool
    product: tuple[int, int] | None  # (B position, columns per chunk) for kernel products
    gram: Gram | None = None  # the tile path: its site value is read from the Gram tile kl_g

    def j(self, pos: int, dim: int, k: int) -> str:
        if self.gram is not None and pos == self.gram.value:
            return self.gram.read("kl_g")
        if self.shared:
            return f"kl_y[{self.offsets[pos] + k}]"
        if self.product and pos == self.product[0]:
            return f"(kl_c0 + {k} < width ? kl_ld(a{pos} + j * width + kl_c0 + {k}) : T(0))"
        return f"kl_ld(a{pos} + j * {dim} + {k})"

    def tile_code(self) -> str:
        """Cooperative, coalesced staging of one j tile: every thread of the block takes part."""
        out, rec = [], self.rec
        for pos, dim in self.jvars.items():
            off = self.offsets[pos]
            if self.product and pos == self.product[0]:
                src = f"(kl_c0 + kl_c < width) ? kl_ld(a{pos} + (kl_j0 + kl_r) * width + kl_c0 + kl_c) : T(0)"
            elif dim == 1:
                out.append(
                    f"for (int kl_e = threadIdx.x; kl_e < kl_cnt; kl_e += KL_BLOCK)\n"
                    f"    kl_sh[kl_e * {rec} + {off}] = kl_ld(a{pos} + kl_j0 + kl_e);"
                )
                continue
            else:
                src = f"kl_ld(a{pos} + (kl_j0 + kl_r) * {dim} + kl_c)"
            out.append(
                f"for (int kl_e = threadIdx.x; kl_e < kl_cnt * {dim}; kl_e += KL_BLOCK) {{\n"
                f"    const int kl_r = kl_e / {dim}, kl_c = kl_e - kl_r * {dim};\n"
                f"    kl_sh[kl_r * {rec} + {off} + kl_c] = {src};\n}}"
            )
        return "\n".join(out)


def _dims(formulas: Sequence[Node], cat: int) -> int:
    return sum(v.params[1] for v in {v for f in formulas for v in f.variables()} if v.params[2] == cat)


def _layout(
    formulas: Sequence[Node], size: int, product: tuple[int, int] | None, gram: Gram | None = None, tj: int = 0
) -> _Layout:
    """``tj``: the j tile length the kernel needs (the tile kernels), else chosen from the record size."""
    jvars: dict[int, int] = {}
    for f in formulas:
        for v in f.variables():
            pos, dim, cat = v.params
            if cat == CAT_J and not (gram is not None and pos == gram.value):
                jvars[pos] = dim
    if product:
        jvars[product[0]] = product[1]
    jvars = {p: jvars[p] for p in sorted(jvars)}
    offsets, rec = {}, 0
    for pos, dim in jvars.items():
        offsets[pos] = rec
        rec += dim
    quantum = 16 // size
    rec = max(quantum, -(-rec // quantum) * quantum)  # 16-byte records: vector shared loads
    per_j = rec * size
    forced = tj > 0
    if not forced:
        tj = BLOCK if per_j * BLOCK <= TILE_BYTES else max(32, 1 << max(0, (TILE_BYTES // per_j).bit_length() - 1))
    shared = bool(jvars) and tj * per_j <= TILE_BYTES_MAX
    return _Layout(
        jvars,
        offsets,
        rec,
        tj if shared or forced else BLOCK,
        shared,
        _dims(formulas, CAT_I) <= I_REGISTERS,
        _dims(formulas, CAT_PARAM) <= P_REGISTERS,
        product,
        gram,
    )


def _rows_for(
    red: Reduction, layout: _Layout, formulas: Sequence[Node], nvalues: int, body_size: int, single: bool
) -> int:
    """Rows per thread: 2 for light formulas (a j record read from shared memory serves two rows)."""
    if single or red.kind.k_selection or not layout.shared:
        return 1
    regs = _dims(formulas, CAT_I) + nvalues * red.kind.registers(red, single)
    return 2 if body_size <= 40 and regs <= 16 else 1


def _kernel(
    red: Reduction,
    dtype: str,
    name: str,
    merge_name: str,
    arg_decl: str,
    out: _Out,
    product: tuple[Node, int, int] | None = None,
    ranges: bool = False,
    gram: Gram | None = None,
) -> tuple[str, KernelInfo]:
    """Source of one reduction kernel and its merge kernel.

    ``red`` is the (chunk of the) reduction this kernel computes; for a kernel product,
    ``product = (k, B position, columns)`` and ``red`` is the Sum over those columns. ``ranges``:
    the block-sparse variant (its blocks and column segments come from three more arguments).
    ``gram``: the tile path (one row per thread, j tiles of the Gram tile's width).
    """
    single = dtype == "float64"
    formulas = (product[0],) if product else red.formulas
    if gram is not None:
        formulas = gram.rewrite(formulas)
    L = _layout(
        formulas, 8 if single else 4, (product[1], product[2]) if product else None, gram, gram.tj if gram else 0
    )
    nvalues = product[2] if product else (red.weight.dim if red.weight is not None else red.formula.dim)

    def row_code(r: int, rows: int, pre: dict) -> tuple[list[str], list[str], list[str] | None]:
        load = _Loader(L, r, pre)
        lines, outs = emit_bodies(formulas, load, "tuvw"[r] if rows > 1 else "t", fast=not single, prune=True)
        if product:
            kx = outs[0][0]
            return lines, [f"({kx} * {L.j(product[1], product[2], c)})" for c in range(product[2])], None
        return lines, outs[0], (outs[1] if len(outs) > 1 else None)

    rows = 1 if gram else _rows_for(red, L, formulas, nvalues, len(row_code(0, 1, {})[0]), single)
    two_level = red.kind.two_level and not single
    pre: dict[str, str] = {}
    body, update, decl, init, tile_begin, tile_end, final, save, row_defs = ([] for _ in range(9))
    words = 0
    for r in range(rows):
        acc = red.c_accumulator(f"acc{r}" if rows > 1 else "acc")
        lines, values, weights = row_code(r, rows, pre)
        if two_level:
            inner = red.c_accumulator(f"kl_in{r}")
            tile_begin += [inner.decl, inner.init]
            update.append(inner.update(values, weights, "j"))
            tile_end.append(acc.merge(f"kl_in{r}"))
        else:
            update.append(acc.update(values, weights, "j"))
        body += lines
        decl.append(acc.decl)
        init.append(acc.init)
        if r == 0:
            row_defs.append("const kl_i64 kl_ii0 = kl_active ? kl_i0 : 0;")
        else:
            row_defs.append(f"const kl_i64 kl_i{r} = kl_i0 + {r} * KL_BLOCK;")
            row_defs.append(f"const kl_i64 kl_ii{r} = kl_i{r} < kl_iend ? kl_i{r} : kl_ii0;")
        st, words = _save_state(acc)
        final.append(
            f"{{\n    const kl_i64 i = kl_i{r};\n    if (i < kl_iend) "
            + _final_code(acc, out).replace("\n", "\n    ")
            + "\n}"
        )
        save.append(
            f"{{\n    const kl_i64 i = kl_i{r};\n    if (i < kl_iend) {{\n"
            f"        const kl_i64 kl_slot = (kl_i64)blockIdx.y * nx + i;\n" + indent(st, 8) + "\n    }\n}"
        )
    update_text = "\n".join(update)
    body = drop_unused(body, update_text)
    if two_level:
        tile_begin.insert(0, "typedef KL_TACC_IN TACC;")
        tile_end = ["{", "    typedef double TACC;"] + [indent(t, 4) for t in tile_end] + ["}"]
    body_size = len(body) // rows
    unroll = _unroll(body_size)
    if red.kind.k_selection:
        unroll = min(unroll, 2)
    preload = row_defs + [pre[k] for k in sorted(pre)]
    slots = {
        "NAME": name,
        "ARGS": arg_decl,
        "ROWS": str(rows),
        "SHARED": _shared(L, gram, gram.gram_words(gram.tj) if gram else 0),
        "GRAM": indent(gram.call("kl_g"), 8) if gram else "",
        "CW": str(product[2] if product else 0),
        "PRELOAD": indent("\n".join(preload), 4),
        "DECL": indent("\n".join(decl), 4),
        "INIT": indent("\n".join(init), 4),
        "TJ": str(L.tj),
        "TILE": indent(L.tile_code(), 8) if L.shared else "",
        "TILE_BEGIN": indent("\n".join(tile_begin), 12),
        "UNROLL": str(unroll),
        "ROW": f"                const T* kl_y = kl_sh + kl_jj * {L.rec};" if L.shared else "",
        "BODY": indent("\n".join(body), 16),
        "UPDATE": indent(update_text, 16),
        "TILE_END": indent("\n".join(tile_end), 12),
        "FINAL": indent("\n".join(final), 8),
        "WORDS": str(words),
        "SAVE": indent("\n".join(save), 8),
        **_block_slots(rows, ranges),
    }
    main = fill(template("reduce.cu"), slots)
    merge = _merge(red, name, merge_name, out, product[2] if product else 0, words)
    tj = L.tj if L.shared or gram else 0
    info = KernelInfo(name, merge_name, words, tj, product[2] if product else 0, rows)
    return main + "\n" + merge, info


def _shared(L: _Layout, gram: Gram | None, gram_words: int) -> str:
    """The shared arrays of a kernel: its j tile, and on the tile path the Gram tile (``gram_words`` values,
    none when the kernel declares it itself) and the staged operand chunks."""
    out = [f"    __shared__ __align__(16) T kl_sh[{L.tj * L.rec}];"] if L.shared else []
    if gram is not None:
        kc = gram.shape[2]
        if gram_words:
            out.append(f"    __shared__ __align__(16) T kl_g[{gram_words}];")
        out.append(f"    __shared__ __align__(16) T kl_xs[{kc * (BLOCK + 1)}];")
        out.append(f"    __shared__ __align__(16) T kl_ys[{kc * gram.tj}];")
    return "\n".join(out)


def _merge(red: Reduction, name: str, merge_name: str, out: _Out, cw: int, words: int) -> str:
    """The split-j merge kernel of ``red``'s kernel ``name`` (``cw``: columns per z-chunk of a product)."""
    acc = red.c_accumulator("acc")
    q = red.c_accumulator("kl_q")
    return fill(
        template("merge.cu"),
        {
            "NAME": merge_name,
            "MAIN": name,
            "ARGS": _out_args([(0, k) for _, k in out.args])[1],
            "CW": str(cw),
            "WORDS": str(words),
            "DECL": indent(acc.decl, 4),
            "INIT": indent(acc.init, 4),
            "QDECL": indent(q.decl, 8),
            "QLOAD": indent(_load_state(q), 8),
            "MERGE": indent(acc.merge("kl_q"), 8),
            "FINAL": indent(_final_code(acc, out), 4),
        },
    )


def _block_slots(rows: int, ranges: bool) -> dict[str, str]:
    """The template slots that differ between the dense kernel (its j split) and the block-sparse one."""
    if not ranges:
        return {
            "RANGE_ARGS": "",
            "BLOCK_ROWS": indent(
                f"const kl_i64 kl_i0 = (kl_i64)blockIdx.x * (KL_BLOCK * {rows}) + threadIdx.x;\n"
                "const kl_i64 kl_iend = nx;\nconst kl_i64 kl_s0 = 0, kl_s1 = 1;  // one segment: the j split",
                4,
            ),
            "SEGMENT": indent(
                "(void)kl_seg;\nconst kl_i64 kl_jb = (kl_i64)blockIdx.y * jper;\n"
                "const kl_i64 kl_je = (ny - kl_jb < jper) ? ny : kl_jb + jper;",
                4,
            ),
        }
    return {
        "RANGE_ARGS": (
            ",\n       const kl_i64* __restrict__ kl_blocks, const kl_i64* __restrict__ kl_slices,"
            "\n       const kl_i64* __restrict__ kl_cols"
        ),
        "BLOCK_ROWS": indent(
            "const kl_i64* kl_blk = kl_blocks + 3 * (kl_i64)blockIdx.x;\n"
            "const kl_i64 kl_i0 = kl_blk[1] + threadIdx.x;\nconst kl_i64 kl_iend = kl_blk[2];\n"
            "const kl_i64 kl_s0 = kl_blk[0] ? kl_slices[kl_blk[0] - 1] : 0, kl_s1 = kl_slices[kl_blk[0]];",
            4,
        ),
        "SEGMENT": indent("const kl_i64 kl_jb = kl_cols[2 * kl_seg], kl_je = kl_cols[2 * kl_seg + 1];", 4),
    }


def _chunks(red: Reduction, single: bool) -> list[tuple[Reduction, int, int]]:
    """(sub-reduction, first component, number of components) covering the output in chunks."""
    full = red.weight.dim if red.weight is not None else red.formula.dim
    size = max(1, STATE_REGISTERS // red.kind.registers(red, single))
    if full <= size or not red.kind.splits_components:
        return [(red, 0, full)]
    out = []
    for s in range(0, full, size):
        n = min(size, full - s)
        if red.weight is not None:
            sub = dataclasses.replace(red, weight=call("Extract", red.weight, params=(s, n)))
        else:
            sub = dataclasses.replace(red, formula=call("Extract", red.formula, params=(s, n)))
        out.append((sub, s, n))
    return out


# ---------------------------------------------------------------------------------------------
# launches
# ---------------------------------------------------------------------------------------------
#: at most this many j splits (the merge kernel reads them one after another)
MAX_SPLITS = 128
#: scratch memory for split-j partial accumulators, per launch
MAX_SCRATCH_BYTES = 256 << 20


def choose_splits(blocks: int, resident: int, ny: int, tile: int, max_splits: int) -> int:
    """Number of j splits: blocks spread over the GPU in as few uneven waves as possible.

    The cost model is (waves of ``resident`` blocks) × (work per block ∝ 1/splits); the smallest
    split count within 5% of the best is taken (each split costs merge work).

    >>> choose_splits(3907, 660, 10**6, 256, 128)    # enough rows: the 1-D scheme
    1
    >>> choose_splits(196, 660, 10**5, 256, 128)     # 1e5 rows: split j ten ways
    10
    """
    top = max(1, min(max_splits, ny // (2 * tile)))
    if top == 1:
        return 1
    cost = {s: math.ceil(blocks * s / resident) / s for s in range(1, top + 1)}
    best = min(cost.values())
    return next(s for s in range(1, top + 1) if cost[s] <= best * 1.05)


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a reduction (and the merge launch of the split-j scheme).

    Main kernel arguments: ``(nx, ny, width, jper, inputs…, outputs…, scratch)``; merge kernel:
    ``(nx, splits, width, outputs…, scratch)``; ``scratch_words``: float64 words of scratch
    (0: the 1-D scheme, no merge).
    """

    kernel: str
    grid: tuple[int, int, int]
    jper: int
    width: int
    scratch_words: int
    merge: str
    merge_grid: tuple[int, int, int]

    @property
    def splits(self) -> int:
        return self.grid[1]


def launches(
    plan: Plan, nx: int, ny: int, width: int, resident: Callable[[KernelInfo], int], splits: int | None = None
) -> list[Launch]:
    """The launches computing ``plan`` for ``nx`` rows and ``ny`` columns.

    ``width``: B's number of columns for kernel products (ignored otherwise); ``resident(info)``:
    how many blocks of that kernel the whole GPU holds at once (SMs × blocks per SM);
    ``splits`` forces the number of j splits (tests).

    >>> from kernla.formula import Vi, Vj, call
    >>> plan = build_plan(Reduction("ArgMin", call("SqDist", Vi(0, 3), Vj(1, 3))), "float32")
    >>> [(l.grid, l.jper) for l in launches(plan, 10**6, 10**6, 0, lambda k: 660)]  # 1-D scheme
    [((1954, 1, 1), 1000192)]
    >>> [(l.grid, l.jper) for l in launches(plan, 100, 10**6, 0, lambda k: 660)]    # split j
    [((1, 119, 1), 8448)]
    """
    if nx == 0:
        return []
    infos, width = _launched(plan, width)
    out = []
    for info in infos:
        z = -(-width // info.cw) if info.cw else 1
        bx = -(-nx // (BLOCK * info.rows))
        tile = info.tj or BLOCK
        top = min(MAX_SPLITS, max(1, MAX_SCRATCH_BYTES // max(1, 8 * info.words * nx * z)))
        s = splits if splits is not None else choose_splits(bx * z, max(1, resident(info)), ny, tile, top)
        jper = -(-max(-(-max(ny, 1) // max(1, s)), 1) // tile) * tile
        s = max(1, -(-ny // jper))
        words = info.words * s * nx * z if s > 1 else 0
        out.append(Launch(info.name, (bx, s, z), jper, width, words, info.merge, (-(-nx // MERGE_BLOCK), 1, z)))
    return out


def _launched(plan: Plan, width: int) -> tuple[list[KernelInfo], int]:
    """The kernels a call runs (a kernel product: the one for its width) and the width they get."""
    if plan.product:
        tiled = len(plan.kernels) > 2 and width >= tiles.PRODUCT_TILE_MIN  # read per call
        return [plan.kernels[0] if width == 1 else plan.kernels[2] if tiled else plan.kernels[1]], width
    return list(plan.kernels), 0


def ranges_launches(plan: Plan, width: int, blocks: Callable[[int], int]) -> list[tuple[Launch, int]]:
    """The launches of a block-sparse plan (``build_plan(..., ranges=True)``), each with its rows per thread.

    One block per entry of the block table for ``BLOCK · rows`` rows
    (:meth:`kernla.engines.ranges.Blocks.tiles`); ``blocks(rows)`` is that table's length. No j
    split: a block runs its column segments one after the other; the kernel arguments are those of
    :class:`Launch` followed by the block table, the slices and the column ranges.

    >>> from kernla.formula import Vi, Vj, call
    >>> plan = build_plan(Reduction("ArgMin", call("SqDist", Vi(0, 3), Vj(1, 3))), "float32", ranges=True)
    >>> [(l.grid, rows) for l, rows in ranges_launches(plan, 0, lambda rows: 7)]  # two rows per thread
    [((7, 1, 1), 2)]
    """
    infos, width = _launched(plan, width)
    out = []
    for info in infos:
        z = -(-width // info.cw) if info.cw else 1
        out.append((Launch(info.name, (blocks(info.rows), 1, z), 0, width, 0, info.merge, (1, 1, z)), info.rows))
    return out


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
def _header(dtype: str) -> str:
    return (
        f"// kernla CUDA source ({dtype}); generated, self-contained (templates inlined)\n"
        f"#define KL_DTYPE_{_DTYPES[dtype]} 1\n#define KL_BLOCK {BLOCK}\n#define KL_MBLOCK {MERGE_BLOCK}\n"
    )


def prelude(dtype: str) -> str:
    """The dtype header, ``cuda_templates/prelude.cu`` and ``tiles.cu``: what every kernel text needs first."""
    return _header(dtype_name(dtype)) + template("prelude.cu") + template("tiles.cu")


def _tile_path(red: Reduction, dtype: str, tile_dim: int, tf32: bool) -> Gram | None:
    """The tile path of ``red`` for inner products of dimension ≥ ``tile_dim``, when its kernels' shared
    arrays fit (None: the exact path); ``tf32``: on TF32 tensor cores for float32 data."""
    if tile_dim <= 0:
        return None
    product = red.kernel_product()
    gram = gram_plan((product[0],) if product else red.formulas, free_position(*red.formulas), tile_dim, dtype, tf32)
    if gram is None:
        return None
    size = 8 if dtype == "float64" else 4
    extra = (max(PRODUCT_WIDTHS), tile_cols(dtype) ** 2) if product else (0, 0)
    jvars = {v for f in gram.rewrite(red.formulas) for v in f.variables() if v.params[2] == CAT_J}
    staged = {gram.value, product[1].params[0]} if product else {gram.value}  # B: a chunk's columns, in extra
    record = sum(v.params[1] for v in jvars if v.params[0] not in staged) + extra[0] + 16 // size
    words = record * gram.tj + gram.shared_words() + extra[1]
    return gram if words * size <= TILE_BYTES_MAX else None


def _product_tile_kernel(
    k: Node, b_pos: int, dtype: str, name: str, merge_name: str, arg_decl: str, out: _Out, ranges: bool, gram
) -> tuple[str, KernelInfo]:
    """Source of the kernel product Σ_j k_ij B_j by k tile × B tile products (``product.cu``), and its merge."""
    single = dtype == "float64"
    rm, rn, _ = TILE_SHAPE[dtype]
    tj = rm * rn
    formulas = gram.rewrite((k,)) if gram else (k,)
    L = _layout(formulas, 8 if single else 4, None, gram, tj)
    pre: dict[str, str] = {}
    lines, outs = emit_bodies(formulas, _Loader(L, 0, pre), "t", fast=not single, prune=True)
    slots = {
        "NAME": name,
        "ARGS": arg_decl,
        "SHARED": _shared(L, gram, 0),
        "PRELOAD": indent("\n".join(pre[key] for key in sorted(pre)), 4),
        "TJ": str(tj),
        "RM": str(rm),
        "RN": str(rn),
        "TILE": indent(L.tile_code(), 8) if L.shared else "",
        "GRAM": indent(gram.call("kl_g"), 8) if gram else "",
        "BPOS": str(b_pos),
        "UNROLL": str(_unroll(len(lines))),
        "ROW": f"                    const T* kl_y = kl_sh + kl_jj * {L.rec};" if L.shared else "",
        "BODY": indent("\n".join(lines), 20),
        "KVALUE": outs[0][0],
        **_block_slots(1, ranges),
    }
    sub = Reduction("Sum", Vj(b_pos, tj))
    words = _save_state(sub.c_accumulator("acc"))[1]
    merge = _merge(sub, name, merge_name, out, tj, words)
    return fill(template("product.cu"), slots) + "\n" + merge, KernelInfo(name, merge_name, words, tj, tj, 1)


def _unroll(body_size: int) -> int:
    """How far the loop over one j tile is unrolled, from the size of the formula's body."""
    return 8 if body_size <= 16 else 4 if body_size <= 40 else 2 if body_size <= 160 else 1


def kernels_source(
    red: Reduction,
    dtype: str,
    prefix: str = "kl",
    ranges: bool = False,
    tile_dim: int = 0,
    product_tiles: bool = False,
    tf32: bool = False,
) -> tuple[str, Plan]:
    """The kernels of ``red`` (without the prelude), names prefixed ``prefix``, and their plan.

    Several reductions of one dtype can share one translation unit: one :func:`prelude`, then
    each one's kernels with distinct prefixes (the compile tests batch them this way).
    ``ranges``: the block-sparse kernels (see :func:`ranges_launches`) instead of the dense ones.
    ``tile_dim``: inner products of that dimension or more by Gram tiles (:mod:`kernla.engines.cuda.tiles`;
    0: the exact path); ``product_tiles``: kernel products also get a third kernel, ``_wt``, k tile × B tile
    products for widths of :data:`~kernla.engines.cuda.tiles.PRODUCT_TILE_MIN` columns or more; ``tf32``: the
    Gram tiles of float32 data on TF32 tensor cores (opt-in, see :mod:`kernla.engines.cuda.tiles`).
    """
    dtype = dtype_name(dtype)
    single = dtype == "float64"
    product = red.kernel_product()
    gram = _tile_path(red, dtype, tile_dim, tf32)
    formulas = gram.rewrite(red.formulas) if gram else red.formulas
    used = {v.params[0] for f in formulas for v in f.variables()} - ({gram.value} if gram else set())
    positions = sorted(used) + list(gram.operands if gram else ())
    in_args = ",\n".join(
        f"       const {'T' if gram and p in gram.operands else 'TIO'}* __restrict__ a{p}" for p in positions
    )
    texts, infos = [], []
    if product:
        k, b = product
        b_pos = b.params[0]
        outputs: tuple[tuple[int, str], ...] = ((b.params[1], "float"),)
        args, out_decl = _out_args(outputs)
        widths = PRODUCT_WIDTHS + ((tile_cols(dtype),) if product_tiles else ())
        for cw in widths:
            out = _Out(args, {"float": cw}, lambda c: f"kl_c0 + {c}", "width", guard=lambda c: f"kl_c0 + {c} < width")
            if cw in PRODUCT_WIDTHS:
                text, info = _kernel(
                    Reduction("Sum", Vj(b_pos, cw)),
                    dtype,
                    f"{prefix}_reduce_w{cw}",
                    f"{prefix}_merge_w{cw}",
                    in_args + ",\n" + out_decl,
                    out,
                    (k, b_pos, cw),
                    ranges,
                    gram,
                )
            else:
                text, info = _product_tile_kernel(
                    k,
                    b_pos,
                    dtype,
                    f"{prefix}_reduce_wt",
                    f"{prefix}_merge_wt",
                    in_args + ",\n" + out_decl,
                    out,
                    ranges,
                    gram,
                )
            texts.append(text)
            infos.append(info)
    else:
        b_pos = None
        outputs = tuple(red.output_dims())
        args, out_decl = _out_args(outputs)
        chunks = _chunks(red, single)
        full = red.weight.dim if red.weight is not None else red.formula.dim
        kmin = red.kind.k_selection
        row = str(outputs[0][0])
        for z, (sub, s, n) in enumerate(chunks):
            suffix = f"_z{z}" if len(chunks) > 1 else ""
            widths_of = {kind: w for w, kind in sub.output_dims()}
            if kmin:
                column = (lambda s, n: lambda c: (c // n) * full + s + c % n)(s, n)
            else:
                column = (lambda s: lambda c: s + c)(s)
            out = _Out(args, widths_of, column, row)
            text, info = _kernel(
                sub,
                dtype,
                f"{prefix}_reduce{suffix}",
                f"{prefix}_merge{suffix}",
                (in_args + ",\n" if positions else "") + out_decl,
                out,
                ranges=ranges,
                gram=gram,
            )
            texts.append(text)
            infos.append(info)
    body = "\n".join(texts)
    plan = Plan(dtype, "", tuple(infos), tuple(positions), outputs, bool(product), b_pos, gram)
    return body, plan


@functools.lru_cache(maxsize=256)
def build_plan(
    red: Reduction, dtype: str, ranges: bool = False, tile_dim: int = 0, product_tiles: bool = False, tf32: bool = False
) -> Plan:
    """The complete source (prelude + kernels) of ``red`` for ``dtype``, and its launch plan
    (``ranges``: the block-sparse kernels; ``tile_dim``, ``product_tiles``: the tile paths, see
    :func:`kernels_source`)."""
    dtype = dtype_name(dtype)
    body, plan = kernels_source(red, dtype, ranges=ranges, tile_dim=tile_dim, product_tiles=product_tiles, tf32=tf32)
    src = prelude(dtype) + "\n" + body
    return dataclasses.replace(plan, source=src)
