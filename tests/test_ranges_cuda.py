"""The block-sparse CUDA kernels without a GPU: they compile with nvcc, and run right under the emulator.

The kernels of ``build_plan(..., ranges=True)`` are compiled as host C++ under the emulation header of
``tests/cuda_emulator/`` (fibers for threads, AddressSanitizer; see ``tests/test_cuda_emulation.py``),
launched as :func:`kernla.engines.cuda.source.ranges_launches` says with the block tables of
:meth:`kernla.engines.ranges.Blocks.tiles`, and compared with the NumPy engine run on the same ranges
(itself checked against masked dense references in ``tests/test_ranges.py``): every registered
reduction in float32, a few in float64 and float16, kernel products of several widths, two rows per
thread, component chunks, and empty rows and uncovered rows. Separately, the same sources compile
with ``nvcc -cubin -arch=sm_90``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kernla.core import block_sparsity
from kernla.engines import numpy_engine
from kernla.engines.cuda import source as cs
from kernla.engines.cuda import tiles as cs_tiles
from kernla.formula import CAT_I, CAT_J, Var, parse, parse_aliases
from kernla.reductions import KINDS, REDUCTIONS, Reduction

CXX = shutil.which("g++")
NVCC = shutil.which("nvcc")
EMULATOR = Path(__file__).parent / "cuda_emulator"


def _red(formula, aliases, op, opt=None, formula2=None) -> Reduction:
    al = parse_aliases(aliases)
    return Reduction(op, parse(formula, al), parse(formula2, al) if formula2 else None, opt)


GAUSS = ("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"])
SCALAR = ("Exp(-G * SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(2)"])


def _cases() -> dict[str, list[tuple[str, Reduction]]]:
    f32 = [("gauss", _red(*GAUSS, "Sum"))]
    for op in REDUCTIONS:  # every registered reduction
        kind = KINDS[op]
        f32.append((f"scalar_{op}", _red(*SCALAR, op, 3 if kind.needs_k else None, "B" if kind.needs_weight else None)))
    f32 += [
        ("vector_Sum", _red("(X - Y) * Exp(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"], "Sum")),
        ("wide_sum", _red("X * Y * Exp(-SqNorm2(X - Y))", ["X = Vi(40)", "Y = Vj(40)"], "Sum")),  # z-chunks
        ("gauss_axis0", _red(*GAUSS, "Sum").swap_ij()),
    ]
    f64 = [("gauss", _red(*GAUSS, "Sum")), ("scalar_KMin_ArgKMin", _red(*SCALAR, "KMin_ArgKMin", 3))]
    f16 = [("gauss", _red(*GAUSS, "Sum")), ("scalar_LogSumExp", _red(*SCALAR, "LogSumExp"))]
    # the tile paths (kernels_source(..., **TILES)): Gram tiles of D = 33 and 40, the k tile x B tile product
    tile_gauss = ("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(33)", "Y = Vj(33)", "B = Vj(1)", "G = Pm(1)"])
    tile_lse = ("-SqDist(X, Y) * G", ["X = Vi(33)", "Y = Vj(33)", "G = Pm(1)"], "LogSumExp")
    f32 += [
        ("tile_gauss", _red(*tile_gauss, "Sum")),
        ("tile_knn", _red("SqDist(X, Y)", ["X = Vi(40)", "Y = Vj(40)"], "ArgKMin", 3)),
        ("tile_lse", _red(*tile_lse)),
    ]
    f64 += [("tile_gauss", _red(*tile_gauss, "Sum"))]
    f16 += [("tile_lse", _red(*tile_lse))]
    return {"float32": f32, "float64": f64, "float16": f16}


#: the options of the tile cases' kernels
TILES = {"tile_dim": 32, "product_tiles": True}


CASES = _cases()


def _wrapper(name: str, n_in: int, out_kinds: list[str]) -> tuple[str, str]:
    """The emulator's call of one block-sparse kernel: scalars, inputs, outputs, scratch, the three tables."""
    n_out = len(out_kinds)
    args = ["c->s[0]", "c->s[1]", "c->s[2]", "c->s[3]"]
    args += [f"kl_any{{c->a[{k}]}}" for k in range(n_in)]
    args += [f"({'TIO*' if kind == 'float' else 'kl_i64*'})c->a[{n_in + k}]" for k, kind in enumerate(out_kinds)]
    args += [f"(double*)c->a[{n_in + n_out}]"] + [f"(const kl_i64*)c->a[{n_in + n_out + t}]" for t in (1, 2, 3)]
    body = (
        f"static void body_{name}(void* p) {{ struct C {{ long long* s; void** a; }}; C* c = (C*)p; "
        f"{name}({', '.join(args)}); }}\n"
    )
    dispatch = (
        f'    if (!strcmp(name, "{name}")) {{ struct {{ long long* s; void** a; }} c = {{s, args}}; '
        f"emu_grid(gx, gy, gz, KL_BLOCK, body_{name}, &c); return 1; }}\n"
    )
    return body, dispatch


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """One emulator executable per dtype, holding the block-sparse kernels of its cases."""
    if CXX is None:
        pytest.skip("g++ is not installed")
    root = tmp_path_factory.mktemp("ranges_emu")
    flags = ["-std=c++17", "-O0", "-fno-strict-aliasing", "-w"]
    probe = root / "probe.cpp"
    probe.write_text("#include <ucontext.h>\nint main() { ucontext_t c; return getcontext(&c); }\n")
    asan = ["-fsanitize=address", "-fno-omit-frame-pointer"]
    if subprocess.run([CXX, *flags, *asan, str(probe), "-o", str(root / "p")], capture_output=True).returncode == 0:
        flags += asan
    elif subprocess.run([CXX, *flags, str(probe), "-o", str(root / "p")], capture_output=True).returncode != 0:
        pytest.skip("g++ cannot build ucontext programs here")
    procs, plans = {}, {}
    for dtype, cases in CASES.items():
        parts = [(EMULATOR / "emulator.h").read_text(), cs.prelude(dtype)]
        bodies, dispatch = [], []
        for n, (label, red) in enumerate(cases):
            options = TILES if label.startswith("tile_") else {}
            text, plan = cs.kernels_source(red, dtype, prefix=f"e{n}", ranges=True, **options)
            parts.append(text)
            plans[dtype, label] = plan
            kinds = ["float"] if plan.product else [k for _, k in plan.outputs]
            for info in plan.kernels:
                b, d = _wrapper(info.name, len(plan.positions), kinds)
                bodies.append(b)
                dispatch.append(d)
        parts += bodies
        parts.append(
            "static int emu_dispatch(const char* name, unsigned gx, unsigned gy, unsigned gz, "
            "long long* s, void** args) {\n" + "".join(dispatch) + "    return 0;\n}\n"
        )
        parts.append((EMULATOR / "script_main.inc").read_text())
        src = root / f"emu_{dtype}.cpp"
        src.write_text("\n".join(parts))
        exe = root / f"emu_{dtype}"
        compile_cmd = [CXX, *flags, str(src), "-o", str(exe)]
        procs[dtype] = exe, subprocess.Popen(compile_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exes = {}
    for dtype, (exe, proc) in procs.items():
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"host compile of the {dtype} block-sparse kernels failed:\n{log[-8000:]}"
        exes[dtype] = exe
    return root, exes, plans


def _ranges(nx: int, ny: int, rng) -> tuple:
    """Random blocks: clusters of rows (one in no range, one with no column range) and of columns."""

    def cuts(n):
        c = np.unique(np.concatenate([[0, n], rng.integers(1, n, size=4)])) if n > 1 else np.array([0, n])
        return np.stack([c[:-1], c[1:]], 1)

    ri, rj = cuts(nx), cuts(ny)
    ri = ri[rng.permutation(len(ri))][: max(1, len(ri) - 1)]  # some rows in no range
    keep = rng.random((len(ri), len(rj))) < 0.6
    if len(ri) > 1:
        keep[1] = False
    redj = np.array([rj[c] for a in range(len(ri)) for c in range(len(rj)) if keep[a, c]], np.int64).reshape(-1, 2)
    redi = np.array([ri[a] for c in range(len(rj)) for a in range(len(ri)) if keep[a, c]], np.int64).reshape(-1, 2)
    return ri, np.cumsum(keep.sum(1)), redj, rj, np.cumsum(keep.sum(0)), redi


def _inputs(red: Reduction, nx: int, ny: int, dtype: str, rng, width: int = 1, unit: bool = False) -> list[np.ndarray]:
    """Normal points (``unit``: divided by sqrt(D), distances of order 1 whatever D), positive parameters."""
    arrays = {}
    product = red.kernel_product()
    for f in red.formulas:
        for v in f.variables():
            pos, dim, cat = v.params
            shape = (nx, dim) if cat == CAT_I else (ny, dim) if cat == CAT_J else (dim,)
            arrays[pos] = rng.normal(size=shape) if cat in (CAT_I, CAT_J) else np.abs(rng.normal(size=shape)) + 0.5
            arrays[pos] /= np.sqrt(dim) if unit and cat in (CAT_I, CAT_J) else 1
    if product:
        arrays[product[1].params[0]] = rng.normal(size=(ny, width))
    return [arrays.get(p, np.zeros(1)).astype(dtype) for p in range(max(arrays) + 1)]


def _emulate(programs, dtype: str, runs: list) -> list[list[np.ndarray]]:
    """Run ``(label, arrays, nx, ny, blocks)`` launches in one emulator process; the outputs of each."""
    root, exes, plans = programs
    folder = root / f"runs_{dtype}_{len(list(root.iterdir()))}"
    folder.mkdir()
    lines, outs = [], []
    for run, (label, arrays, nx, ny, blocks) in enumerate(runs):
        plan = plans[dtype, label]
        width = int(arrays[plan.b_pos].shape[1]) if plan.product else 0
        lines.append(f"run {run} {dtype} {label} N={nx} M={ny} width={width}")
        ids: dict = {}

        def buf(data: np.ndarray | None, nbytes: int = 0) -> int:
            k = len(ids)
            ids[k] = True
            if data is None:
                lines.append(f"buf {k} {nbytes} -")
            else:
                path = folder / f"r{run}_b{k}.bin"
                np.ascontiguousarray(data).tofile(path)
                lines.append(f"buf {k} {data.nbytes} {path}")
            return k

        if plan.gram is not None:  # the tile path's operands, as the engine makes them
            extra = dict(zip(plan.gram.operands, cs_tiles.operands(plan.gram, arrays, dtype, nx, ny)))
            arrays = [extra.get(p, arrays[p] if p < len(arrays) else None) for p in range(max(extra) + 1)]
        ins = [buf(arrays[p]) for p in plan.positions]
        dims = [(width, "float")] if plan.product else list(plan.outputs)
        item = np.dtype(dtype).itemsize
        out_ids = [buf(None, nx * w * (item if kind == "float" else 8)) for w, kind in dims]
        slices, cols = buf(blocks.slices), buf(blocks.cols if len(blocks.cols) else np.zeros((1, 2), np.int64))
        scratch = buf(None, 8)
        for launch, rows in cs.ranges_launches(plan, width, lambda rows: len(blocks.tiles(cs.BLOCK * rows))):
            table = buf(blocks.tiles(cs.BLOCK * rows))
            args = [*ins, *out_ids, scratch, table, slices, cols]
            lines.append(
                f"main {launch.kernel} {' '.join(map(str, launch.grid))} {nx} {ny} {launch.width} 0 "
                f"{len(args)} {' '.join(map(str, args))}"
            )
        assert len(ids) <= 64, "the emulator holds 64 buffers a run"
        files = []
        for k, (w, kind) in zip(out_ids, dims):
            path = folder / f"r{run}_out{k}.bin"
            lines.append(f"dump {k} {nx * w * (item if kind == 'float' else 8)} {path}")
            files.append((path, nx, w, kind))
        outs.append(files)
    script = folder / "script.txt"
    script.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [str(exes[dtype]), str(script)],
        capture_output=True,
        text=True,
        env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"),
    )
    assert proc.returncode == 0, f"emulator failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return [
        [np.fromfile(p, dtype=dtype if kind == "float" else np.int64).reshape(n, w) for p, n, w, kind in files]
        for files in outs
    ]


def _check(got, want, dtype, label):
    tol = {"float16": 2e-2, "float32": 2e-4, "float64": 1e-10}[dtype]
    for g, r in zip(got, want):
        if r.dtype == np.int64:
            np.testing.assert_array_equal(g, r, err_msg=label)
        else:
            scale = 1 + np.nanmax(np.abs(np.where(np.isinf(r), 0, r)), initial=0)
            np.testing.assert_allclose(g.astype(np.float64), r.astype(dtype).astype(np.float64), rtol=tol,
                                       atol=tol * scale, err_msg=label)  # fmt: skip


SIZES = [(1, 1), (300, 257), (600, 611), (37, 1500)]


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_emulated_block_sparse_kernels_match_numpy(programs, dtype):
    rng = np.random.default_rng(17)
    runs, checks = [], []
    for label, red in CASES[dtype]:
        sizes = SIZES if label in ("gauss", "scalar_ArgKMin", "scalar_SumSoftMaxWeight") else SIZES[1:3]
        for nx, ny in sizes:
            widths = (
                (1, 3, 9) if label == "gauss" and dtype == "float32" else (1, 9, 20) if label == "tile_gauss" else (1,)
            )
            for width in widths:
                arrays = _inputs(red, nx, ny, dtype, rng, width, unit=label.startswith("tile_"))
                blocks = block_sparsity(_ranges(nx, ny, rng), nx, ny).over_j[0]
                ref_arrays = [a.astype(np.float32 if dtype == "float16" else dtype) for a in arrays]
                product = red.kernel_product()
                ref = red if product is None else Reduction("Sum", product[0] * Var(product[1].params[0], width, CAT_J))
                want = numpy_engine.run(ref, ref_arrays, nx, ny, ranges=blocks)
                runs.append((label, arrays, nx, ny, blocks))
                checks.append((want, f"{dtype} {label} N={nx} M={ny} width={width}"))
    for got, (want, label) in zip(_emulate(programs, dtype, runs), checks):
        _check(got, want, dtype, label)


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_block_sparse_sources_compile_with_nvcc(tmp_path):
    """The sources the engine gives NVRTC (ranges=True) compile for sm_90 with CuPy's flags."""
    flags = ["-cubin", "-arch=sm_90", "-std=c++17", "-ftz=true", "-diag-suppress=177,550"]
    procs = []
    for dtype, cases in CASES.items():
        text = [cs.prelude(dtype)]
        for n, (label, red) in enumerate(cases):
            options = TILES if label.startswith("tile_") else {}
            text.append(cs.kernels_source(red, dtype, prefix=f"c{n}", ranges=True, **options)[0])
        src = tmp_path / f"ranges_{dtype}.cu"
        src.write_text("\n".join(text))
        procs.append(
            (
                dtype,
                subprocess.Popen(
                    [NVCC, *flags, str(src), "-o", str(src.with_suffix(".cubin"))],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
            )  # fmt: skip
        )
    for dtype, proc in procs:
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"nvcc failed on the {dtype} block-sparse kernels:\n{log[-6000:]}"
