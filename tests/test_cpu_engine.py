"""The compiled CPU engine against the NumPy engine: every reduction, both axes, both dtypes."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest

import kernla
from kernla import Genred, LazyTensor
from kernla.engines.cpu import compiler, engine, source
from kernla.formula import Pm, Vi, Vj, call
from kernla.reductions import Reduction

pytestmark = pytest.mark.skipif(compiler.find_compiler() is None, reason="no C++ compiler")

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _data(rng, n, m, dtype, d=3, e=2):
    return (
        rng.normal(size=(n, d)).astype(dtype),
        rng.normal(size=(m, d)).astype(dtype),
        rng.normal(size=(m, e)).astype(dtype),
        np.array([0.7], dtype),
    )


def _close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = 1 + np.abs(b)
    assert np.all(np.isfinite(a) == np.isfinite(b))
    fin = np.isfinite(b)
    assert np.max(np.abs(a - b)[fin] / scale[fin], initial=0) <= RTOL[dtype]


REDUCTIONS = [
    ("Sum", None, None),
    ("Min", None, None),
    ("Max", None, None),
    ("ArgMin", None, None),
    ("ArgMax", None, None),
    ("Min_ArgMin", None, None),
    ("Max_ArgMax", None, None),
    ("KMin", 4, None),
    ("ArgKMin", 4, None),
    ("KMin_ArgKMin", 4, None),
    ("LogSumExp", None, None),
    ("LogSumExpWeight", None, "W"),
    ("SumSoftMaxWeight", None, "W"),
    ("Max_SumShiftExpWeight", None, "W"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name,K,weight", REDUCTIONS)
def test_reductions_match_numpy(name, K, weight, axis, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{axis}".encode()))  # hash() of a str changes per process
    x, y, b, g = _data(rng, 37, 1031, dtype)
    if axis == 0:
        x, y = y, x
    formula = "-G * SqDist(X, Y) + (X | Y)" if weight else "(X - Y) * G + Sin(X * Y)"
    aliases = ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)", "G = Pm(1)"]
    if axis == 0:
        aliases = ["X = Vi(3)", "Y = Vj(3)", "B = Vi(2)", "G = Pm(1)"]
    f2 = "Exp(B)" if weight else None
    red = Genred(formula, aliases, reduction_op=name, axis=axis, opt_arg=K, formula2=f2)
    args = (x, y, b, g)
    got, ref = red(*args, backend="cpu"), red(*args, backend="numpy")
    got = got if isinstance(got, tuple) else (got,)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for a, r in zip(got, ref):
        assert a.dtype == r.dtype and a.shape == r.shape
        if r.dtype == np.int64:
            _same_choice(red, args, a, r, dtype)
        else:
            _close(a, r, dtype)


def _same_choice(red, args, got, ref, dtype):
    """Indices agree, or point at values equal within rounding (float32 near-ties may differ)."""
    if dtype == np.float64:
        np.testing.assert_array_equal(got, ref)
        return
    from kernla.formula.evaluate import evaluate
    from kernla.formula.tree import swap_ij

    f = red.reduction.formula if red.axis == 1 else swap_ij(red.reduction.formula)
    values = {}
    for slot, (pos, a) in zip(red.slots, enumerate(args)):
        a = np.asarray(a, np.float64)
        values[pos] = (
            a[:, None, :] if slot.cat == (0 if red.axis == 1 else 1) else (a[None, :, :] if slot.cat != 2 else a)
        )
    dense = np.broadcast_to(
        evaluate(f, values),
        (got.shape[0], -1, f.dim)
        if False
        else np.broadcast_shapes(*[v.shape[:-1] for v in values.values() if v.ndim == 3]) + (f.dim,),
    )
    d = f.dim
    k = got.shape[1] // d
    rows = np.arange(got.shape[0])[:, None, None]
    comp = np.arange(d)[None, None, :]
    gv = dense[rows, got.reshape(-1, k, d), comp]
    rv = dense[rows, ref.reshape(-1, k, d), comp]
    np.testing.assert_allclose(gv, rv, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,m", [(1, 1), (1, 5003), (2003, 1), (17, 3), (101, 2049)])
def test_gaussian_product_odd_sizes(n, m):
    rng = np.random.default_rng(n * 7 + m)
    x, y, b, g = _data(rng, n, m, np.float64, e=3)
    dense = np.exp(-0.7 * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b
    K = Genred("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(3)", "G = Pm(1)"], axis=1)
    np.testing.assert_allclose(K(x, y, b, g, backend="cpu"), dense, rtol=1e-12, atol=1e-12)


def test_runtime_width_shares_one_kernel():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 2))
    x_i, x_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
    k = (-((x_i - x_j) ** 2).sum(-1)).exp()
    dense = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1))
    before = len(compiler._module_memo)
    for width in (1, 2, 7, 32):
        v = rng.normal(size=(50, width))
        np.testing.assert_allclose(
            k.__matmul__(v) if width > 1 else k @ v[:, 0], dense @ v if width > 1 else dense @ v[:, 0], rtol=1e-12
        )
    # the products of width 2, 7 and 32 reuse one compiled kernel (width 1 uses the same kernel too)
    assert len(compiler._module_memo) - before <= 1


def test_float32_sum_accuracy_large_m():
    rng = np.random.default_rng(2)
    x = rng.random((10, 3), dtype=np.float32)
    y = rng.random((1_000_000, 3), dtype=np.float32)
    K = Genred("Exp(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"], axis=1)
    got = K(x, y, backend="cpu").astype(np.float64)
    ref = K(x.astype(np.float64), y.astype(np.float64), backend="cpu")
    np.testing.assert_allclose(got, ref, rtol=1e-5)


@pytest.mark.slow
def test_every_operation_compiles_and_matches_numpy():
    """One formula per registered operation, through the compiled engine (float64)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.9, size=(13, 4))
    y = rng.uniform(0.2, 0.9, size=(29, 4))
    X, Y = Vi(0, 4), Vj(1, 4)
    s, t = call("Elem", X, params=(0,)), call("Elem", Y, params=(1,))
    formulas = {name: spec for name, spec in kernla.formula.OPS.items()}
    built = []
    for name, spec in formulas.items():
        if spec.param_names:
            params = {
                "Pow": (3,),
                "Round": (2,),
                "ClampInt": (0, 1),
                "Elem": (2,),
                "ElemT": (4, 1),
                "Extract": (1, 2),
                "ExtractT": (1, 6),
                "OneHot": (5,),
                "TensorDot": ((2, 2), (2, 2), (1,), (0,), ()),
                "Kron": ((2, 2), (2, 2)),
            }[name]
            arg = s if name in ("ElemT", "OneHot") else X
            if name == "ExtractT":
                arg = call("Extract", X, params=(0, 3))
            args = (arg, Y) if spec.arity == 2 else (arg * 3 if name == "OneHot" else arg,)
            built.append(call(name, *args, params=params))
        elif spec.arity == 1:
            built.append(call(name, X if name not in ("Acos", "Asin") else X - 0.5))
        elif spec.arity == 2:
            a, b = (X, Y)
            if name in ("MatVecMult",):
                a = call("TensorProd", X, Y)
            if name in ("VecMatMult",):
                b = call("TensorProd", X, Y)
            if name == "WeightedSqNorm":
                a, b = s, X - Y
            built.append(call(name, a, b))
        else:
            built.append(call(name, X - Y, s, t) if name != "WeightedSqDist" else call(name, s, X, Y))
    for f in built:
        red = Reduction("Sum", f)
        got = engine.run(red, [x, y], 13, 29)[0]
        from kernla.engines import numpy_engine

        ref = numpy_engine.run(red, [x, y], 13, 29)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, err_msg=str(f))


def test_hot_loop_is_vectorised(tmp_path):
    """The compiler reports the Gaussian kernel's inner loop vectorised (checked on the real source)."""
    red = Reduction("Sum", call("Exp", -Pm(3, 1) * call("SqDist", Vi(0, 3), Vj(1, 3))) * Vj(2, 1))
    src = tmp_path / "k.cpp"
    src.write_text(source.kernel_source(red, "float32"))
    cxx = compiler.find_compiler()
    proc = subprocess.run(
        [
            cxx,
            *compiler.DEFAULT_FLAGS,
            "-shared",
            "-fPIC",
            "-fopt-info-vec-optimized",
            "-c",
            str(src),
            "-o",
            str(tmp_path / "k.o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(n for n, text in enumerate(src.read_text().splitlines(), 1) if "s0 += " in text)
    loop = line - 1
    while "for (int64_t jj" not in src.read_text().splitlines()[loop - 1]:
        loop -= 1
    # gcc names the loop by its line or by its `#pragma omp simd` line
    reported = [ln for ln in proc.stderr.splitlines() if "loop vectorized" in ln]
    assert any(f"k.cpp:{loop}:" in ln or f"k.cpp:{loop - 1}:" in ln for ln in reported), proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["LogSumExp", "Min_ArgMin", "ArgKMin", "SumSoftMaxWeight", "product"])
def test_tile_evaluation_loop_is_vectorised(tmp_path, name):
    """The loop that evaluates the formula into the tile buffer (every reduction but Sum and the
    one-column kernel product) is vectorised too, and so are LogSumExp's fold over the buffer and
    the many-column product's kernel sub-tile (its products by B are written with vector types)."""
    g = call("Exp", -Pm(3, 1) * call("SqDist", Vi(0, 3), Vj(1, 3)))
    red = {
        "LogSumExp": Reduction("LogSumExp", -call("SqDist", Vi(0, 3), Vj(1, 3))),
        "Min_ArgMin": Reduction("Min_ArgMin", call("SqDist", Vi(0, 3), Vj(1, 3))),
        "ArgKMin": Reduction("ArgKMin", call("SqDist", Vi(0, 3), Vj(1, 3)), K=5),
        "SumSoftMaxWeight": Reduction("SumSoftMaxWeight", -call("SqDist", Vi(0, 3), Vj(1, 3)), Vj(2, 2)),
        "product": Reduction("Sum", g * Vj(2, 4)),
    }[name]
    src = tmp_path / "k.cpp"
    src.write_text(source.kernel_source(red, "float64"))
    lines = src.read_text().splitlines()
    proc = subprocess.run(
        [
            compiler.find_compiler(),
            *compiler.DEFAULT_FLAGS,
            "-shared",
            "-fPIC",
            "-fopt-info-vec-optimized",
            "-c",
            str(src),
            "-o",
            str(tmp_path / "k.o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    reported = {int(ln.split(":")[1]) for ln in proc.stderr.splitlines() if "k.cpp:" in ln and "loop vectorized" in ln}
    marks = {
        "LogSumExp": ["buf[0 * TJ + jj] = ", "s += (v[jj] == mt)"],
        "product": ["kb[jj] = "],  # its products by B: the explicit-vector micro-kernel of kl_tiles.h
    }.get(name, ["buf[0 * TJ + jj] = "])
    for mark in marks:
        loop = next(n for n, text in enumerate(lines, 1) if mark in text)
        while "for (int64_t jj" not in lines[loop - 1]:
            loop -= 1
        # gcc names the loop by its `#pragma omp simd` line, its own line or its first statement's
        assert {loop - 1, loop, loop + 1} & reported, (
            f"{mark!r} loop (line {loop}) not vectorised:\n{proc.stderr[-2000:]}"
        )


def test_missing_compiler_falls_back_to_numpy(monkeypatch):
    monkeypatch.setattr(engine, "_kernels", {})
    monkeypatch.setattr(engine, "_warned", False)

    def no_compiler(*a, **k):
        raise compiler.CompilerUnavailableError("no compiler (test)")

    monkeypatch.setattr(engine, "compile_module", no_compiler)
    x = np.random.default_rng(4).normal(size=(20, 2))
    red = Reduction("ArgMin", call("SqDist", Vi(0, 2), Vj(1, 2)))
    with pytest.warns(RuntimeWarning, match="NumPy engine"):
        got = engine.run(red, [x, x], 20, 20)[0]
    np.testing.assert_array_equal(got.ravel(), np.arange(20))


def test_cached_kernel_in_new_process_does_not_compile(tmp_path):
    """A kernel compiled in one process loads from the disk cache in the next, with no compiler run."""
    code = (
        "import sys, numpy as np; from kernla import Genred; import kernla.engines.cpu.compiler as c\n"
        "if sys.argv[1] == 'forbid':\n"
        "    def boom(*a, **k): raise AssertionError('compiled again')\n"
        "    c._build = boom\n"
        "g = Genred('Exp(-SqDist(X,Y)*G)*B', ['X=Vi(3)','Y=Vj(3)','B=Vj(1)','G=Pm(1)'], axis=1)\n"
        "x = np.ones((5, 3), np.float32)\n"
        "print(g(x, x, x[:, :1], np.float32(1.), backend='cpu').sum())\n"
    )
    env = {"KERNLA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for mode in ("allow", "forbid"):
        proc = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert float(proc.stdout) == 25.0
