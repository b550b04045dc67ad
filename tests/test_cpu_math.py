"""kl_math.h (inline math of the generated CPU kernels) against NumPy, float32 and float64.

The functions run inside `#pragma omp simd` loops, as in generated kernels (odd lengths, so the
scalar/masked remainder runs too); accuracy is measured in ulps of the result's type, against
float64 NumPy (float32 functions) or long double NumPy where it is wider (float64 functions).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kernla.engines.cpu import compiler

HEADER = Path(__file__).resolve().parents[1] / "kernla" / "engines" / "cpu" / "kl_math.h"
pytestmark = pytest.mark.skipif(compiler.find_compiler() is None, reason="no C++ compiler")

UNARY = ["exp", "log", "sqrt", "rsqrt", "sin", "cos", "asin", "acos", "atan", "floor", "abs", "sign"]
BINARY = ["atan2", "pow", "min", "max"]
POWI_CONST = [0, 1, 2, 3, 5, -1, -2, -3, 7, 63, 64, -100]
TYPES = {"f": ("float", np.float32), "d": ("double", np.float64)}


def _source() -> str:
    parts = [HEADER.read_text(), 'extern "C" {']
    for sfx, (ct, _) in TYPES.items():
        for fn in UNARY:
            parts.append(
                f"void v_{fn}_{sfx}(const {ct}* x, {ct}* y, long n) {{\n#pragma omp simd\n"
                f"  for (long i = 0; i < n; i++) y[i] = kl_{fn}(x[i]);\n}}"
            )
        for fn in BINARY:
            parts.append(
                f"void v_{fn}_{sfx}(const {ct}* a, const {ct}* b, {ct}* y, long n) {{\n"
                f"#pragma omp simd\n  for (long i = 0; i < n; i++) y[i] = kl_{fn}(a[i], b[i]);\n}}"
            )
        parts.append(
            f"void v_powi_{sfx}(const {ct}* x, {ct}* y, long n, int k) {{\n#pragma omp simd\n"
            f"  for (long i = 0; i < n; i++) y[i] = kl_powi(x[i], k);\n}}"
        )
        for k in POWI_CONST:
            name = f"v_powi{k}_{sfx}".replace("-", "m")
            parts.append(
                f"void {name}(const {ct}* x, {ct}* y, long n) {{\n#pragma omp simd\n"
                f"  for (long i = 0; i < n; i++) y[i] = kl_powi(x[i], {k});\n}}"
            )
        # scalar entry points: one value per call, no vectorisation involved
        parts.append(f"{ct} s_exp_{sfx}({ct} x) {{ return kl_exp(x); }}")
        parts.append(f"{ct} s_log_{sfx}({ct} x) {{ return kl_log(x); }}")
    parts.append("}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("KERNLA_CACHE_DIR", str(tmp_path_factory.mktemp("kl-math-cache")))
    mp.delenv("KERNLA_CXXFLAGS", raising=False)
    try:
        lib = compiler.compile_module(_source())
    finally:
        mp.undo()
    for sfx, (_, dt) in TYPES.items():
        c = ctypes.c_float if dt == np.float32 else ctypes.c_double
        for f in ("s_exp", "s_log"):
            fn = getattr(lib, f"{f}_{sfx}")
            fn.restype, fn.argtypes = c, [c]
    return lib


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def call(lib, name, *args, k=None):
    args = [np.ascontiguousarray(a) for a in args]
    y = np.empty_like(args[0])
    sfx = "f" if y.dtype == np.float32 else "d"
    extra = [ctypes.c_int(k)] if k is not None else []
    getattr(lib, f"v_{name}_{sfx}")(*map(_ptr, args), _ptr(y), ctypes.c_long(y.size), *extra)
    return y


def ref_dtype(dt):
    if dt == np.float32:
        return np.float64
    return np.longdouble if np.finfo(np.longdouble).nmant >= 63 else np.float64


def ulp_error(res, ref, dt):
    """|res - ref| in ulps of dt at ref (subnormal ulp below the normal range); inf where the
    special values disagree (nan vs number, inf vs finite, wrong sign of inf)."""
    fi = np.finfo(dt)
    ref_t = ref.astype(dt)  # correctly rounded
    err = np.zeros(res.shape)
    fin = np.isfinite(ref_t) & np.isfinite(res)
    _, e = np.frexp(np.abs(ref[fin]))
    ulp_exp = np.maximum(e.astype(np.int64) - 1 - fi.nmant, fi.minexp - fi.nmant)
    ulp = np.ldexp(np.ones(ulp_exp.shape, dtype=ref.dtype), ulp_exp)
    err[fin] = np.abs(res[fin].astype(ref.dtype) - ref[fin]) / ulp
    same_special = (np.isnan(res) & np.isnan(ref_t)) | (res == ref_t)
    err[~fin & ~same_special] = np.inf
    return err


def check_ulp(res, ref, x, dt, limit, what):
    with np.errstate(over="ignore"):
        err = ulp_error(res, ref, dt)
    worst = int(np.argmax(err))
    assert err[worst] <= limit, (
        f"{what}: {err[worst]:.3g} ulp at x={x[worst]!r}: got {res[worst]!r}, expected {ref[worst]!r}"
    )


RNG = np.random.default_rng(20240611)
N = 200_001  # odd: the vector loop's remainder runs too


def exp_inputs(dt):
    if dt == np.float32:
        wide, lo, hi = (-110, 95), (-104, -87), (88, 89)
    else:
        wide, lo, hi = (-760, 720), (-746, -707), (709, 710)
    x = np.concatenate(
        [
            RNG.uniform(*wide, N),
            RNG.uniform(-1, 1, N),
            RNG.uniform(*lo, N),
            RNG.uniform(*hi, N),
            np.exp(RNG.uniform(-200, 0, N)) * RNG.choice([-1, 1], N),  # tiny, incl. subnormal
            [
                0.0,
                -0.0,
                np.inf,
                -np.inf,
                np.nan,
                -np.nan,
                1.0,
                -1.0,
                np.finfo(dt).max,
                -np.finfo(dt).max,
                np.finfo(dt).tiny,
                np.finfo(dt).smallest_subnormal,
                np.log(np.finfo(dt).max),
                np.log(np.finfo(dt).tiny),
            ],
        ]
    ).astype(dt)
    return x


def log_inputs(dt):
    if dt == np.float32:
        bits = RNG.integers(0, 0x7F800000, 3 * N, dtype=np.uint32)  # every positive finite
    else:
        bits = RNG.integers(0, 0x7FF0000000000000, 3 * N, dtype=np.uint64)
    x = np.concatenate(
        [
            bits.view(dt),
            RNG.uniform(0.5, 2, N).astype(dt),
            (1 + RNG.uniform(-1e-3, 1e-3, N)).astype(dt),
            RNG.uniform(0, np.finfo(dt).tiny, N).astype(dt),  # subnormal
            [
                0.0,
                -0.0,
                np.inf,
                -np.inf,
                np.nan,
                -1.0,
                -np.finfo(dt).smallest_subnormal,
                1.0,
                np.finfo(dt).max,
                np.finfo(dt).tiny,
                np.finfo(dt).smallest_subnormal,
                2.0,
                0.5,
                np.nextafter(dt(1), dt(2)),
                np.nextafter(dt(1), dt(0)),
            ],
        ]
    ).astype(dt)
    return x


LIMIT = {np.float32: 2.0, np.float64: 4.0}


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_exp_accuracy_and_special_values(lib, dt):
    x = exp_inputs(dt)
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(ref_dtype(dt)))
    check_ulp(call(lib, "exp", x), ref, x, dt, LIMIT[dt], f"exp {np.dtype(dt)}")
    sp = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, 1e4, -1e4, np.finfo(dt).max, -np.finfo(dt).max], dt)
    y = call(lib, "exp", sp)
    np.testing.assert_array_equal(y, np.array([0, np.inf, np.nan, 1, 1, np.inf, 0, np.inf, 0], dt))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_log_accuracy_and_special_values(lib, dt):
    x = log_inputs(dt)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = np.log(x.astype(ref_dtype(dt)))
    check_ulp(call(lib, "log", x), ref, x, dt, LIMIT[dt], f"log {np.dtype(dt)}")
    sp = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, 1.0], dt)
    np.testing.assert_array_equal(
        call(lib, "log", sp), np.array([-np.inf, -np.inf, np.inf, np.nan, np.nan, np.nan, 0], dt)
    )
    # log of the smallest subnormal, exactly representable inputs 2^k
    k = np.arange(np.finfo(dt).minexp - np.finfo(dt).nmant, np.finfo(dt).maxexp)
    p2 = np.ldexp(np.ones(k.size, dt), k)
    check_ulp(call(lib, "log", p2), k * np.log(ref_dtype(dt)(2)), p2, dt, LIMIT[dt], "log 2^k")


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_scalar_and_vector_paths_agree_bitwise(lib, dt):
    sfx = "f" if dt == np.float32 else "d"
    for name, x in (("exp", exp_inputs(dt)), ("log", log_inputs(dt))):
        x = RNG.choice(x[np.isfinite(x)], 500)
        scalar = np.array([getattr(lib, f"s_{name}_{sfx}")(float(v)) for v in x], dt)
        np.testing.assert_array_equal(scalar.view(f"u{dt().itemsize}"), call(lib, name, x).view(f"u{dt().itemsize}"))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_wrappers(lib, dt):
    n = 10_001
    wide = np.concatenate([RNG.normal(size=n) * 10, [0.0, -0.0, 1.0, -1.0, 0.5, np.inf, -np.inf, 3.0]]).astype(dt)
    unit = np.concatenate([RNG.uniform(-1, 1, n), [0.0, 1.0, -1.0]]).astype(dt)
    pos = np.concatenate([np.abs(wide), [np.finfo(dt).smallest_subnormal]]).astype(dt)
    rtol = 4 * np.finfo(dt).eps
    with np.errstate(all="ignore"):
        cases = {
            "sqrt": (pos, np.sqrt),
            "sin": (wide[np.isfinite(wide)], np.sin),
            "cos": (wide[np.isfinite(wide)], np.cos),
            "asin": (unit, np.arcsin),
            "acos": (unit, np.arccos),
            "atan": (wide, np.arctan),
            "floor": (wide, np.floor),
            "abs": (wide, np.abs),
            "rsqrt": (pos, lambda v: np.where(v == 0, 0, 1 / np.sqrt(v))),
        }
        for name, (x, f) in cases.items():
            np.testing.assert_allclose(
                call(lib, name, x), f(x.astype(np.float64)).astype(dt), rtol=rtol, atol=0, err_msg=name
            )
    assert call(lib, "rsqrt", np.array([0.0, -0.0, np.inf], dt)).tolist() == [0, 0, 0]
    np.testing.assert_array_equal(
        call(lib, "sign", np.array([3, -2, 0, -0.0, np.inf, -np.inf, np.nan], dt)),
        np.array([1, -1, 0, 0, 1, -1, np.nan], dt),
    )

    a, b = RNG.normal(size=(2, n)).astype(dt) * 5
    np.testing.assert_allclose(call(lib, "atan2", a, b), np.arctan2(a, b), rtol=rtol)
    base = np.abs(a) + 0.1
    np.testing.assert_allclose(call(lib, "pow", base, b), (base.astype(np.float64) ** b).astype(dt), rtol=rtol)
    np.testing.assert_array_equal(call(lib, "min", a, b), np.minimum(a, b))
    np.testing.assert_array_equal(call(lib, "max", a, b), np.maximum(a, b))
    nan = np.array([np.nan, 1.0, np.nan], dt)
    one = np.array([1.0, np.nan, np.nan], dt)
    for fn in ("min", "max"):  # NaN from either side propagates (as np.minimum / np.maximum)
        assert np.isnan(call(lib, fn, nan, one)).all() and np.isnan(call(lib, fn, one, nan)).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_powi(lib, dt):
    x = np.concatenate([RNG.uniform(-2, 2, 4001), [0.0, -0.0, 1.0, -1.0, 2.0, np.inf, -np.inf]]).astype(dt)
    for k in POWI_CONST:
        # square-and-multiply: rounding errors grow like |n| ulp (squaring doubles them)
        rtol = (abs(k) + 1) * np.finfo(dt).eps
        with np.errstate(all="ignore"):
            ref = np.power(x.astype(np.float64), float(k)).astype(dt)
            ok = (np.abs(ref) < np.finfo(dt).max / 2) & (np.abs(ref) > 2 * np.finfo(dt).tiny) | ~np.isfinite(ref)
        for y in (call(lib, f"powi{k}".replace("-", "m"), x), call(lib, "powi", x, k=k)):
            fin = ok & np.isfinite(ref)
            np.testing.assert_allclose(y[fin], ref[fin], rtol=rtol, err_msg=f"powi {k}")
            spec = ok & ~np.isfinite(ref)
            np.testing.assert_array_equal(y[spec], ref[spec], err_msg=f"powi {k} special")


def test_loops_vectorise(tmp_path):
    """gcc reports the Gaussian-kernel loops (float and double) and the exp/log loops vectorised."""
    cxx = compiler.find_compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    if "clang" in version or ("GCC" not in version and "g++" not in os.path.basename(cxx)):
        pytest.skip("-fopt-info is gcc's")
    body = """
    extern "C" T gauss_T(T x0, T x1, T x2, const T* __restrict y0, const T* __restrict y1,
                         const T* __restrict y2, const T* __restrict b, T g, long m) {
        T acc = 0;
    #pragma omp simd reduction(+ : acc)
        for (long j = 0; j < m; j++) {  // LOOP-gauss
            T d0 = x0 - y0[j], d1 = x1 - y1[j], d2 = x2 - y2[j];
            acc += kl_exp(-g * (d0 * d0 + d1 * d1 + d2 * d2)) * b[j];
        }
        return acc;
    }
    extern "C" void explog_T(const T* __restrict x, T* __restrict y, long n) {
    #pragma omp simd
        for (long i = 0; i < n; i++) y[i] = kl_log(kl_exp(x[i]) + kl_sqrt(x[i]));  // LOOP-explog
    }
    """
    src = HEADER.read_text() + "".join(body.replace("_T", "_" + t).replace("T", t) for t in ("float", "double"))
    path = tmp_path / "vec.cpp"
    path.write_text(src)
    flags = compiler.DEFAULT_FLAGS + compiler.REQUIRED_FLAGS
    proc = subprocess.run(
        [cxx, *flags, "-fopt-info-vec-optimized", "-o", str(tmp_path / "vec.so"), str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    lines = src.splitlines()
    marked = {i + 1: ln.split("// LOOP-")[1] for i, ln in enumerate(lines) if "// LOOP-" in ln}
    reported = {int(ln.split(":")[1]) for ln in proc.stderr.splitlines() if "loop vectorized" in ln}
    # gcc names the loop's `#pragma omp simd` line or a statement of its body
    vectorised = {m for m in marked if reported & set(range(m - 2, m + 4))}
    assert vectorised == set(marked), f"not vectorised: {[marked[i] for i in set(marked) - vectorised]}\n{proc.stderr}"
