"""The CUDA kernels run on the CPU: index arithmetic, tiles, splits and merges checked without a GPU.

The generated CUDA text is compiled as host C++ (g++ -O0, AddressSanitizer) under a small emulation
header (``tests/cuda_emulator/``): a block is KL_BLOCK fibers (ucontext) run one at a time in one OS
thread, each until its next ``__syncthreads()`` or its end; ``__shared__`` arrays are static (shared by the block's
fibers), ``threadIdx.x`` is the running fiber. The launches come from
:func:`kernla.engines.cuda.source.launches`, as in the engine, with forced j splits as well, and the
results are compared with the NumPy engine on odd sizes (N=1, M=1, partial tiles and blocks,
N << M). A barrier that some threads of a block skip stops the run with a message, an
out-of-bounds read or write stops ASan, and a missing barrier shows up as wrong results, every
time (a fiber runs on into the next tile before the others have staged or used the current one).
All launches of a test go to a few emulator processes (one per CPU). Float arithmetic is the
host's (exp2f, logf, ... from libm) — the GPU's numerics are checked by benchmarks/gpu_check.py on
a GPU.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kernla.engines import numpy_engine
from kernla.engines.cuda import source as cs
from kernla.engines.cuda import tiles as cs_tiles
from kernla.formula import CAT_I, CAT_J, parse, parse_aliases
from kernla.reductions import KINDS, REDUCTIONS, Reduction

CXX = shutil.which("g++")
_RUNS = itertools.count()

EMULATOR = Path(__file__).parent / "cuda_emulator"
EMU_HEADER = (EMULATOR / "emulator.h").read_text()  # CUDA built-ins, fibers, the grid loop
EMU_MAIN = (EMULATOR / "script_main.inc").read_text()  # main(): the launch-script interpreter


def _wrapper(name: str, n_in: int, out_kinds: list[str], merge: bool) -> str:
    """A context struct and a team body calling kernel ``name`` with arguments from the script."""
    outs = [("TIO*" if k == "float" else "kl_i64*") for k in out_kinds]
    if merge:
        call = ", ".join(
            ["c->s[0]", "c->s[1]", "c->s[2]"]
            + [f"({t})c->a[{k}]" for k, t in enumerate(outs)]
            + [f"(const double*)c->a[{len(outs)}]"]
        )
        threads = "KL_MBLOCK"
    else:
        ins = [f"kl_any{{c->a[{k}]}}" for k in range(n_in)]
        call = ", ".join(
            ["c->s[0]", "c->s[1]", "c->s[2]", "c->s[3]"]
            + ins
            + [f"({t})c->a[{n_in + k}]" for k, t in enumerate(outs)]
            + [f"(double*)c->a[{n_in + len(outs)}]"]
        )
        threads = "KL_BLOCK"
    return (
        f"static void body_{name}(void* p) {{ struct C {{ long long* s; void** a; }}; C* c = (C*)p; "
        f"{name}({call}); }}\n",
        f'    if (!strcmp(name, "{name}")) {{ struct {{ long long* s; void** a; }} c = {{s, args}}; '
        f"emu_grid(gx, gy, gz, {threads}, body_{name}, &c); return 1; }}\n",
    )


def _program(cases: list[tuple[str, Reduction]], dtype: str, **options) -> tuple[str, dict]:
    """The emulator's source for ``cases`` (``options``: those of ``kernels_source``, e.g. the tile paths)."""
    parts = [EMU_HEADER, cs.prelude(dtype)]
    bodies, dispatch, plans = [], [], {}
    for n, (label, red) in enumerate(cases):
        text, plan = cs.kernels_source(red, dtype, prefix=f"e{n}", **options)
        parts.append(text)
        plans[label] = plan
        kinds = ["float"] if plan.product else [k for _, k in plan.outputs]
        for info in plan.kernels:
            b, d = _wrapper(info.name, len(plan.positions), kinds, False)
            bodies.append(b)
            dispatch.append(d)
            b, d = _wrapper(info.merge, len(plan.positions), kinds, True)
            bodies.append(b)
            dispatch.append(d)
    parts += bodies
    parts.append(
        "static int emu_dispatch(const char* name, unsigned gx, unsigned gy, unsigned gz, "
        "long long* s, void** args) {\n" + "".join(dispatch) + "    return 0;\n}\n"
    )
    parts.append(EMU_MAIN)
    return "\n".join(parts), plans


def _al(*names):
    return parse_aliases(list(names))


def _red(formula, aliases, op, opt=None, formula2=None):
    al = parse_aliases(aliases)
    return Reduction(op, parse(formula, al), parse(formula2, al) if formula2 else None, opt)


GAUSS = ("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"])
SCALAR = ("Exp(-G * SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(2)"])
VECTOR = ("(X - Y) * Exp(-SqDist(X, Y) / S)", ["X = Vi(3)", "Y = Vj(3)", "S = Pm(1)"])
OPS_ALL = (
    "Sin(X) * Cos(Y) + Atan2(X, Y) + Powf(Abs(X) + 1.5, Y) + Pow(X, 3) + Round(X, 2) + Floor(Y)"
    " + Sign(X - Y) + Rsqrt(SqNorm2(X)) + Log(1 + Abs(X)) + XLogX(Abs(Y)) + SinXDivX(X)"
    " + Mod(X, Y + 3, 0.5) + ClampInt(X, -1, 1) + IfElse(X - Y, Asin(Clamp(X, -1, 1)), Acos(Clamp(Y, -1, 1)))"
    " + Max(Concat(X, Y)) + ArgMin(Concat(X, Y)) + WeightedSqDist(W, Concat(X, X), Concat(Y, Y))"
)

#: kl_powi (negative exponents, 0 and a large one through pow) and kl_round, against NumPy's Pow and Round
POWERS = (
    "Pow(Abs(X) + 0.5, -3) + Pow(X - Y, 5) + Pow(Y, 0) + Pow(Abs(Y) + 0.9, 70) * 1e-5 + Round(X * Y, 3) + Round(X, -1)",
    ["X = Vi(2)", "Y = Vj(2)"],
)


def _cases():
    scalar_ops = list(REDUCTIONS)  # every registered reduction, new ones included
    f32 = [("gauss", _red(*GAUSS, "Sum"))]
    for op in scalar_ops:
        opt = 3 if KINDS[op].needs_k else None
        f2 = "B" if KINDS[op].needs_weight else None
        f32.append((f"scalar_{op}", _red(*SCALAR, op, opt, f2)))
    f32 += [
        ("vector_Sum", _red(*VECTOR, "Sum")),
        ("vector_ArgKMin", _red(*VECTOR, "KMin_ArgKMin", 2)),
        ("vector_LSE", _red(*VECTOR, "LogSumExp")),
        ("knn_d50", _red("SqDist(X, Y)", ["X = Vi(50)", "Y = Vj(50)"], "ArgKMin", 10)),
        ("wide_sum", _red("X * Y * Exp(-SqNorm2(X - Y))", ["X = Vi(40)", "Y = Vj(40)"], "Sum")),
        ("wide_kmin", _red("Abs(X - Y)", ["X = Vi(20)", "Y = Vj(20)"], "KMin_ArgKMin", 2)),
        ("d100", _red("SqDist(X, Y)", ["X = Vi(100)", "Y = Vj(100)"], "Min_ArgMin")),
        ("d400", _red("Exp(-SqDist(X, Y) * G) * B", ["X = Vi(400)", "Y = Vj(400)", "B = Vj(2)", "G = Pm(1)"], "Sum")),
        ("params80", _red("Scalprod(P, X) * Scalprod(P, Y)", ["X = Vi(80)", "Y = Vj(80)", "P = Pm(80)"], "Max_ArgMax")),
        ("ops", _red(OPS_ALL, ["X = Vi(1)", "Y = Vj(1)", "W = Pm(4)"], "Sum")),
        ("gauss_axis0", _red(*GAUSS, "Sum").swap_ij()),
        ("powers", _red(*POWERS, "Sum")),
    ]
    f64 = [
        ("gauss", _red(*GAUSS, "Sum")),
        ("scalar_LogSumExp", _red(*SCALAR, "LogSumExp")),
        ("scalar_SumSoftMaxWeight", _red(*SCALAR, "SumSoftMaxWeight", None, "B")),
        ("scalar_Min_ArgMin", _red(*SCALAR, "Min_ArgMin")),
        ("vector_Sum", _red(*VECTOR, "Sum")),
        ("powers", _red(*POWERS, "Sum")),
    ]
    f16 = [
        ("gauss", _red(*GAUSS, "Sum")),
        ("scalar_ArgKMin", _red(*SCALAR, "ArgKMin", 4)),
        ("scalar_LogSumExp", _red(*SCALAR, "LogSumExp")),
        ("vector_Sum", _red(*VECTOR, "Sum")),
    ]
    return {"float32": f32, "float64": f64, "float16": f16}


CASES = _cases()


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """One emulator executable per dtype, compiled in parallel, at -O0: unoptimised ASan code
    checks every access, and compiles four times faster than -O1 for a small cost at run time."""
    return _programs(tmp_path_factory.mktemp("cuda_emu"), CASES)


def _programs(root: Path, cases_by_dtype: dict, **options):
    """(root, executables, plans) of one emulator per dtype of ``cases_by_dtype`` (``options``: see _program)."""
    if CXX is None:
        pytest.skip("g++ is not installed")
    procs, plans = {}, {}
    flags = ["-std=c++17", "-O0", "-fno-strict-aliasing", "-w"]
    probe = root / "probe.cpp"
    probe.write_text("#include <ucontext.h>\nint main() { ucontext_t c; return getcontext(&c); }\n")
    asan = ["-fsanitize=address", "-fno-omit-frame-pointer"]
    if subprocess.run([CXX, *flags, *asan, str(probe), "-o", str(root / "probe")], capture_output=True).returncode == 0:
        flags += asan  # out-of-bounds reads and writes stop the run
    elif subprocess.run([CXX, *flags, str(probe), "-o", str(root / "probe")], capture_output=True).returncode != 0:
        pytest.skip("g++ cannot build ucontext programs here")
    for dtype, cases in cases_by_dtype.items():
        text, plans[dtype] = _program(cases, dtype, **options)
        src = root / f"emu_{dtype}.cpp"
        src.write_text(text)
        exe = root / f"emu_{dtype}"
        procs[dtype] = (
            exe,
            subprocess.Popen(
                [CXX, *flags, str(src), "-o", str(exe)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ),
        )
    exes = {}
    for dtype, (exe, proc) in procs.items():
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"host compile of the {dtype} kernels failed:\n{log[-8000:]}"
        exes[dtype] = exe
    return root, exes, plans


def _inputs(red: Reduction, nx: int, ny: int, dtype: str, rng, width: int = 0) -> list[np.ndarray]:
    arrays = {}
    for f in red.formulas:
        for v in f.variables():
            pos, dim, cat = v.params
            shape = (nx, dim) if cat == CAT_I else (ny, dim) if cat == CAT_J else (dim,)
            a = rng.normal(size=shape)
            if cat not in (CAT_I, CAT_J):
                a = np.abs(a) + 0.5
            arrays[pos] = a
    n = max(arrays) + 1
    out = [arrays.get(p, np.zeros(1)) for p in range(n)]
    return [a.astype(dtype) for a in out]


class Batch:
    """Emulated launches collected, then run in one emulator process (one per dtype).

    ``add`` writes a run's inputs and launch script and returns its index; ``run`` executes the
    whole script and returns, per run, the output arrays. A failing run is named in the message
    (the emulator prints each run's label before it starts).
    """

    def __init__(self, programs, dtype: str):
        self.root, self.exes, self.plans = programs
        self.dtype = dtype
        self.dir = self.root / f"batch{next(_RUNS)}_{dtype}"
        self.dir.mkdir()
        self.scripts: list[str] = []  # one per run
        self.outs: list[list[tuple[Path, int, int, str]]] = []

    def add(self, label: str, arrays: list[np.ndarray], nx: int, ny: int, splits=None, resident: int = 8) -> int:
        dtype = self.dtype
        plan = self.plans[dtype][label]
        width = int(arrays[plan.b_pos].shape[1]) if plan.product else 0
        if plan.gram is not None:  # the tile path's operands, as the engine makes them
            extra = cs_tiles.operands(plan.gram, arrays, dtype, nx, ny)
            assert extra is not None, label
            arrays = list(arrays) + [np.zeros(1)] * (max(plan.gram.operands) + 1 - len(arrays))
            for pos, a in zip(plan.gram.operands, extra):
                arrays[pos] = a
        run = len(self.outs)
        lines, ids = [f"run {run} {dtype} {label} N={nx} M={ny} splits={splits} width={width}"], {}
        for pos in plan.positions:
            path = self.dir / f"r{run}_a{pos}.bin"
            np.ascontiguousarray(arrays[pos]).tofile(path)
            ids[pos] = len(ids)
            lines.append(f"buf {ids[pos]} {arrays[pos].nbytes} {path}")
        dims = [(width, "float")] if plan.product else list(plan.outputs)
        out_ids, out_bytes = [], []
        for k, (w, kind) in enumerate(dims):
            nbytes = nx * w * (np.dtype(dtype).itemsize if kind == "float" else 8)
            out_ids.append(len(ids) + k)
            out_bytes.append(nbytes)
            lines.append(f"buf {out_ids[-1]} {nbytes} -")
        next_id = len(ids) + len(dims)
        launches = cs.launches(plan, nx, ny, width, lambda info: resident, splits)
        for ln in launches:
            sid = next_id
            next_id += 1
            lines.append(f"buf {sid} {max(1, ln.scratch_words) * 8} -")
            args = [ids[p] for p in plan.positions] + out_ids + [sid]
            lines.append(
                f"main {ln.kernel} {' '.join(map(str, ln.grid))} {nx} {ny} {ln.width} {ln.jper} "
                f"{len(args)} {' '.join(map(str, args))}"
            )
            if ln.scratch_words:
                args = out_ids + [sid]
                lines.append(
                    f"merge {ln.merge} {' '.join(map(str, ln.merge_grid))} {nx} {ln.splits} {ln.width} 0 "
                    f"{len(args)} {' '.join(map(str, args))}"
                )
        assert next_id <= 64, "the emulator holds 64 buffers a run"
        outs = []
        for k, (w, kind) in enumerate(dims):
            path = self.dir / f"r{run}_out{k}.bin"
            lines.append(f"dump {out_ids[k]} {out_bytes[k]} {path}")
            outs.append((path, nx, w, kind))
        self.scripts.append("\n".join(lines) + "\n")
        self.outs.append(outs)
        return run

    def run(self) -> list[list[np.ndarray]]:
        """Run every launch; the runs are dealt round-robin to one emulator process per CPU."""
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        procs = []
        for p in range(min(len(self.scripts), os.cpu_count() or 1)):
            script = self.dir / f"script{p}.txt"
            script.write_text("".join(self.scripts[p :: os.cpu_count() or 1]))
            procs.append(
                subprocess.Popen(
                    [str(self.exes[self.dtype]), str(script)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        for proc in procs:
            _, log = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"emulator failed ({proc.returncode}):\n{log[-6000:]}"
        return [
            [
                np.fromfile(path, dtype=self.dtype if kind == "float" else np.int64).reshape(nx, w)
                for path, nx, w, kind in outs
            ]
            for outs in self.outs
        ]


def _emulate(
    programs, dtype: str, label: str, arrays: list[np.ndarray], nx: int, ny: int, splits=None, resident: int = 8
) -> list[np.ndarray]:
    """One emulated reduction (a batch of one run)."""
    batch = Batch(programs, dtype)
    batch.add(label, arrays, nx, ny, splits, resident)
    return batch.run()[0]


def _check(red, got, arrays, nx, ny, dtype, label):
    ref = numpy_engine.run(red, [a.astype(np.float32 if dtype == "float16" else dtype) for a in arrays], nx, ny)
    tol = {"float16": 2e-2, "float32": 2e-4, "float64": 1e-10}[dtype]
    assert len(got) == len(ref), label
    for g, r in zip(got, ref):
        assert g.shape == r.shape, (label, g.shape, r.shape)
        if r.dtype == np.int64:
            np.testing.assert_array_equal(g, r, err_msg=label)
        else:
            r = r.astype(dtype).astype(np.float64)
            np.testing.assert_allclose(
                g.astype(np.float64),
                r,
                rtol=tol,
                atol=tol * (1 + np.nanmax(np.abs(np.where(np.isinf(r), 0, r)), initial=0)),
                err_msg=label,
            )


SIZES = [(1, 1), (1, 700), (513, 1), (300, 257), (37, 1500), (600, 611)]


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_emulated_kernels_match_numpy(programs, dtype):
    full = ("gauss", "scalar_ArgKMin", "scalar_KMin_ArgKMin", "scalar_LogSumExp")
    emulate_cases(programs, dtype, CASES[dtype], lambda label: SIZES if label in full else SIZES[3:5], _inputs, _check)


def emulate_cases(programs, dtype: str, cases, sizes, make_inputs, check, widths=lambda red: (0,), seed: int = 7):
    """Every case at its sizes (``sizes(label)``) and B widths (``widths(red)``), with and without forced j
    splits, in one batch; then ``check(red, outputs, arrays, nx, ny, dtype, name)`` on each run.
    ``make_inputs(red, nx, ny, dtype, rng, width)`` makes a run's arrays."""
    rng = np.random.default_rng(seed)
    batch, checks = Batch(programs, dtype), []
    for label, red in cases:
        for nx, ny in sizes(label):
            if red.K is not None and red.K > ny:
                continue
            for width in widths(red):
                arrays = make_inputs(red, nx, ny, dtype, rng, width)
                for splits in (None, 3):
                    run = batch.add(label, arrays, nx, ny, splits=splits)
                    name = f"{dtype} {label} N={nx} M={ny} width={width} splits={splits}"
                    checks.append((run, red, arrays, nx, ny, name))
    results = batch.run()
    for run, red, arrays, nx, ny, name in checks:
        check(red, results[run], arrays, nx, ny, dtype, name)


@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
def test_emulated_kernel_product_any_width(programs):
    """Σ_j k_ij B_j with B of 1, 3, 8, 9 and 17 columns: one compiled plan, guards on the last chunk."""
    rng = np.random.default_rng(3)
    red = _red(*GAUSS, "Sum")
    batch, checks = Batch(programs, "float32"), []
    for width in (1, 3, 8, 9, 17):
        for nx, ny, splits in ((300, 257, None), (37, 1500, 4), (1, 1, None)):
            arrays = _inputs(red, nx, ny, "float32", rng)
            arrays[2] = rng.normal(size=(ny, width)).astype(np.float32)
            checks.append((batch.add("gauss", arrays, nx, ny, splits=splits), arrays, f"width={width} N={nx} M={ny}"))
    results = batch.run()
    for run, arrays, name in checks:
        k = np.exp(-arrays[3][0] * ((arrays[0][:, None, :] - arrays[1][None, :, :]) ** 2).sum(-1))
        np.testing.assert_allclose(results[run][0], k @ arrays[2], rtol=2e-4, atol=2e-4, err_msg=name)


@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
def test_emulated_infinities_and_ties(programs):
    """Min/ArgMin: ties keep the smallest index across tiles and splits; +inf rows give index -1."""
    nx, ny = 5, 1200
    x = np.zeros((nx, 3), np.float32)
    y = np.zeros((ny, 3), np.float32)
    y[:, 0] = np.tile(np.arange(4, dtype=np.float32), ny // 4)  # exp(-g d) ties every 4 columns
    g = np.array([1.0], np.float32)
    for splits in (None, 3, 5):
        got = _emulate(
            programs, "float32", "scalar_Min_ArgMin", [x, y, g, np.zeros((ny, 2), np.float32)], nx, ny, splits=splits
        )
        np.testing.assert_array_equal(got[1].ravel(), np.full(nx, 3))
    g = np.array([-np.inf], np.float32)  # exp(+inf * d) = +inf everywhere: no finite candidate
    y[:, :] = 1.0
    for splits in (None, 3):
        got = _emulate(
            programs, "float32", "scalar_Min_ArgMin", [x, y, g, np.zeros((ny, 2), np.float32)], nx, ny, splits=splits
        )
        np.testing.assert_array_equal(got[1].ravel(), np.full(nx, -1))
        assert np.isposinf(got[0]).all()
