"""The two ``kl_*`` maths preludes (CPU ``kl_math.h``, CUDA ``prelude.cu``) agree with each other and with NumPy.

Every ``kl_*`` function the operations' C emitters write must exist, for float and double, in both
engines' maths (those of fast emitters, ``OpSpec.c_fast``, in the CUDA prelude: only that engine asks
for them). Both preludes are compiled into one host library (the CUDA text under a few macros, as in
``tests/test_cuda_emulation.py``) and compared: ``kl_powi`` and ``kl_round`` bit for bit and against
NumPy (negative exponents, 0^0, infinities, NaN), the other functions to a few ulps with the same
special values. The CPU engine runs ``Pow`` and ``Round`` formulas against NumPy as well.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kernla
from kernla.engines.cpu import compiler
from kernla.errors import FormulaError
from kernla.formula import OPS, Vi, call
from kernla.formula.codegen import emit_bodies

ROOT = Path(__file__).resolve().parents[1]
CPU_MATH = ROOT / "kernla" / "engines" / "cpu" / "kl_math.h"
CUDA_PRELUDE = ROOT / "cuda_templates" / "prelude.cu"
CXX = shutil.which("g++")
_CALLED = re.compile(r"\b(kl_[a-z0-9_]+)\(")

UNARY = ["exp", "log", "sqrt", "rsqrt", "sin", "cos", "asin", "acos", "atan", "floor", "abs", "sign"]
BINARY = ["atan2", "pow", "min", "max"]
EXACT = {"sqrt", "floor", "abs", "sign", "min", "max"}  # the same IEEE operation in both preludes
TYPES = {"f": ("float", np.float32), "d": ("double", np.float64)}
#: exponents of kl_powi: small, the last unrolled bit (63), the std::pow fallback (64, -100), extremes
POWERS = [0, 1, 2, 3, 5, -1, -2, -3, 7, 31, 63, -63, 64, -100, 2**31 - 1, -(2**31)]


PARAMS = {
    "Pow": (3,),
    "Round": (2,),
    "ClampInt": (0, 1),
    "Elem": (1,),
    "ElemT": (2, 1),
    "Extract": (0, 1),
    "ExtractT": (0, 2),
    "OneHot": (2,),
    "TensorDot": ((2,), (2,), (0,), (0,), ()),
    "Kron": ((2,), (2,)),
}


def _sample(name: str):
    """The operation ``name`` applied to variables of dimensions it accepts."""
    spec = OPS[name]
    for dims in ((2,) * spec.arity, (1,) * spec.arity, (4, 2), (2, 4)):
        try:
            return call(name, *(Vi(k, d) for k, d in enumerate(dims)), params=PARAMS.get(name, ()))
        except FormulaError:
            continue
    raise AssertionError(f"no sample arguments for {name}")


def _emitted() -> tuple[set[str], set[str]]:
    """kl_* functions in the C the generator writes for each operation: (always, only with ``fast``)."""
    nodes = [_sample(name) for name in OPS]

    def called(fast: bool) -> set[str]:
        lines, outs = emit_bodies(nodes, lambda v, k: f"v{v.params[0]}_{k}", fast=fast)
        return set(_CALLED.findall("\n".join(lines + [x for o in outs for x in o])))

    plain = called(False)
    return plain, called(True) - plain


def _defined(text: str, name: str) -> set[str]:
    """The scalar types for which ``text`` defines ``name`` (``float name(`` / ``double name(``)."""
    return set(re.findall(r"\b(float|double) " + name + r"\(", text))


def test_every_emitted_kl_function_is_in_both_preludes():
    plain, fast = _emitted()
    assert {"kl_exp", "kl_powi", "kl_round", "kl_rsqrt"} <= plain and fast == {"kl_exp2f"}
    cpu, cuda = CPU_MATH.read_text(), CUDA_PRELUDE.read_text()
    for name in sorted(plain):
        assert _defined(cpu, name) == {"float", "double"}, f"{name} missing from kl_math.h"
        assert _defined(cuda, name) == {"float", "double"}, f"{name} missing from prelude.cu"
    for name in sorted(fast):
        assert _defined(cuda, name) == {"float", "double"}, f"{name} missing from prelude.cu"


def _source() -> str:
    """Both preludes in one translation unit, in namespaces ``cpu`` and ``cu``, with C entry points."""
    cuda_host = (
        "#define KL_DTYPE_F32 1\n#define __device__\n#define __forceinline__ inline\n"
        "static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }\n"
        "static inline double rsqrt(double x) { return 1.0 / sqrt(x); }\n"
        "static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }\n"
        "static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }\n"
    )
    parts = [
        "#include <cmath>\n#include <cstdint>\n#include <cstring>\n#include <math.h>",
        "namespace cpu {\n" + CPU_MATH.read_text() + "\n}",
        cuda_host,
        "namespace cu {\n" + CUDA_PRELUDE.read_text() + "\n}",
        'extern "C" {',
    ]
    for ns in ("cpu", "cu"):
        for sfx, (ct, _) in TYPES.items():
            for fn in UNARY:
                parts.append(
                    f"void {ns}_{fn}_{sfx}(const {ct}* x, {ct}* y, long n) "
                    f"{{ for (long i = 0; i < n; i++) y[i] = {ns}::kl_{fn}(x[i]); }}"
                )
            for fn in BINARY:
                parts.append(
                    f"void {ns}_{fn}_{sfx}(const {ct}* a, const {ct}* b, {ct}* y, long n) "
                    f"{{ for (long i = 0; i < n; i++) y[i] = {ns}::kl_{fn}(a[i], b[i]); }}"
                )
            for fn in ("powi", "round"):
                parts.append(
                    f"void {ns}_{fn}_{sfx}(const {ct}* x, {ct}* y, long n, int k) "
                    f"{{ for (long i = 0; i < n; i++) y[i] = {ns}::kl_{fn}(x[i], k); }}"
                )
    parts.append("}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if CXX is None:
        pytest.skip("g++ is not installed")
    root = tmp_path_factory.mktemp("kl_math")
    (root / "both.cpp").write_text(_source())
    # -O2 without -ffast-math, as the engines' IEEE semantics; no FMA contraction across the two
    cmd = [
        CXX,
        "-std=c++17",
        "-O2",
        "-ffp-contract=off",
        "-shared",
        "-fPIC",
        str(root / "both.cpp"),
        "-o",
        str(root / "both.so"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return ctypes.CDLL(str(root / "both.so"))


def _call(lib, ns: str, fn: str, sfx: str, *arrays, k=None) -> np.ndarray:
    dt = TYPES[sfx][1]
    arrays = [np.ascontiguousarray(a, dtype=dt) for a in arrays]
    out = np.empty_like(arrays[0])
    ptrs = [a.ctypes.data_as(ctypes.c_void_p) for a in (*arrays, out)]
    extra = [ctypes.c_int(k)] if k is not None else []
    getattr(lib, f"{ns}_{fn}_{sfx}")(*ptrs, ctypes.c_long(out.size), *extra)
    return out


SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, np.inf, -np.inf, np.nan, 1e-30, 1e30]


def _grid(dt) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.uniform(-3, 3, 500), rng.normal(0, 30, 200), SPECIAL]).astype(dt)


def _same_each(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(_same_each(a, b)))


@pytest.mark.parametrize("sfx", ["f", "d"])
def test_powi_same_in_both_and_as_numpy(lib, sfx):
    dt = TYPES[sfx][1]
    x = _grid(dt)
    for k in POWERS:
        cpu, cuda = _call(lib, "cpu", "powi", sfx, x, k=k), _call(lib, "cu", "powi", sfx, x, k=k)
        assert _same(cpu, cuda), f"kl_powi(x, {k}) differs between the engines"
        with np.errstate(all="ignore"):  # the reference semantics: kernla's Pow in NumPy
            ref = OPS["Pow"].numpy(x, k)
        exact = np.isin(x, np.array([0.0, 1.0, -1.0, np.inf, -np.inf], dt))  # 0^n, (±1)^n, (±inf)^n: exact
        assert _same(cpu[exact], ref[exact]), f"kl_powi special values, n = {k}"
        fin = np.isfinite(ref) & (np.abs(ref) > 2 * np.finfo(dt).tiny) & (np.abs(ref) < np.finfo(dt).max / 4)
        # square-and-multiply: rounding errors grow like |n| ulp; libm pow beyond |n| = 63
        rtol = (min(abs(k), 64) + 1) * np.finfo(dt).eps
        np.testing.assert_allclose(cpu[fin], ref[fin], rtol=rtol, err_msg=f"kl_powi(x, {k})")
    with np.errstate(all="ignore"):
        zero, nan = np.array([0.0, -0.0], dt), np.array([np.nan], dt)
        assert _call(lib, "cu", "powi", sfx, zero, k=0).tolist() == [1.0, 1.0]  # 0^0 = 1, as NumPy
        assert _call(lib, "cu", "powi", sfx, nan, k=0).tolist() == [1.0]
        assert _call(lib, "cu", "powi", sfx, zero, k=-1).tolist() == [np.inf, -np.inf]
        assert _call(lib, "cu", "powi", sfx, zero, k=-2).tolist() == [np.inf, np.inf]


@pytest.mark.parametrize("sfx", ["f", "d"])
def test_round_same_in_both_and_close_to_numpy(lib, sfx):
    dt = TYPES[sfx][1]
    x = _grid(dt)
    for d in (-300, -40, -20, -3, -1, 0, 1, 2, 3, 7, 12, 22, 23, 40, 300):
        cpu, cuda = _call(lib, "cpu", "round", sfx, x, k=d), _call(lib, "cu", "round", sfx, x, k=d)
        assert _same(cpu, cuda), f"kl_round(x, {d}) differs between the engines"
        ref = OPS["Round"].numpy(x, d)
        spacing = np.abs(np.spacing(np.where(np.isfinite(ref), ref, 0).astype(dt)))
        # a tie may round the other way where NumPy's 10^d differs in its last bit (|d| > 22)
        step = np.asarray(10.0, np.float64) ** -d
        with np.errstate(invalid="ignore"):  # inf - inf where both are infinite
            ok = _same_each(cpu, ref) | (np.abs(cpu - ref) <= 4 * spacing) | (np.abs(cpu - ref) <= step * 1.0001)
        bad = ~ok
        assert not bad.any(), (d, x[bad][:5], cpu[bad][:5], ref[bad][:5])


@pytest.mark.parametrize("sfx", ["f", "d"])
def test_wrappers_agree(lib, sfx):
    dt = TYPES[sfx][1]
    rtol = {"f": 4e-6, "d": 1e-14}[sfx]
    x = _grid(dt)
    with np.errstate(all="ignore"):
        for fn in UNARY:
            a = x if fn not in ("asin", "acos") else np.clip(x, -1, 1)
            a = np.abs(a) if fn in ("log", "sqrt", "rsqrt") else a
            a = np.clip(a, -80, 80) if fn == "exp" else a  # float exp2f(x log2 e): error grows with |x|
            cpu, cuda = _call(lib, "cpu", fn, sfx, a), _call(lib, "cu", fn, sfx, a)
            _compare(cpu, cuda, fn, rtol, fn in EXACT)
        b = np.roll(x, 7)
        for fn in BINARY:
            cpu, cuda = _call(lib, "cpu", fn, sfx, x, b), _call(lib, "cu", fn, sfx, x, b)
            _compare(cpu, cuda, fn, rtol, fn in EXACT)


def _compare(cpu, cuda, fn, rtol, exact):
    special = ~np.isfinite(cpu) | ~np.isfinite(cuda) | (cpu == 0) | (cuda == 0)
    assert _same(cpu[special], cuda[special]), f"kl_{fn}: special values differ"
    if exact:
        assert _same(cpu, cuda), f"kl_{fn} differs"
    else:
        np.testing.assert_allclose(cpu[~special], cuda[~special], rtol=rtol, err_msg=f"kl_{fn}")


@pytest.mark.skipif(compiler.find_compiler() is None, reason="no C++ compiler")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pow_and_round_through_the_cpu_engine(dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, (50, 1)).astype(dtype)
    x[:4, 0] = [0.0, -0.0, 1.0, -1.0]
    y = rng.uniform(0.5, 2, (30, 1)).astype(dtype)
    aliases = ["X = Vi(1)", "Y = Vj(1)"]
    for f in (
        "Pow(X, 0) * Y",
        "Pow(X, 5) * Y",
        "Pow(Y, -3) + Pow(X, 2)",
        "Pow(X - Y, -2)",
        "Round(X * Y, 2)",
        "Round(X * Y, -1) + Round(X, 7)",
    ):
        got = kernla.Genred(f, aliases, reduction_op="Sum", axis=1)(x, y, backend="cpu")
        ref = kernla.Genred(f, aliases, reduction_op="Sum", axis=1)(x, y, backend="numpy")
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=f)
