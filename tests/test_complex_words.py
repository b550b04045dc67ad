"""pykeops' Complex* formula words (kernla/formula/complex_words.py) against dense complex128 NumPy and torch.

Values on the NumPy engine for random shapes (hypothesis), values and gradients on the NumPy and CPU
engines through torch autograd, and the CUDA sources: compiled by nvcc and run by the CUDA emulator
of tests/test_cuda_emulation.py (both skipped without their compilers).
"""

import importlib.util
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernla import FormulaError, Genred
from kernla.engines.cuda import source as cs
from kernla.formula import parse, parse_aliases
from kernla.reductions import Reduction

torch = pytest.importorskip("torch")

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _conj(z):
    return z.conj()


#: word applied to X, Y (complex vectors of d components), Z (one complex), R (real, d), S (real scalar)
#: -> the same with complex arrays (NumPy or torch: xp is the module)
WORDS = {
    "ComplexReal(X)": lambda xp, X, Y, Z, R, S: X.real,
    "ComplexImag(Y)": lambda xp, X, Y, Z, R, S: Y.imag,
    "Real2Complex(R)": lambda xp, X, Y, Z, R, S: R + 0j,
    "Imag2Complex(R)": lambda xp, X, Y, Z, R, S: R * 1j,
    "Conj(X)": lambda xp, X, Y, Z, R, S: _conj(X),
    "ComplexAdd(X, Y)": lambda xp, X, Y, Z, R, S: X + Y,
    "ComplexAdd(Z, Y)": lambda xp, X, Y, Z, R, S: Z + Y,
    "ComplexSubtract(X, Z)": lambda xp, X, Y, Z, R, S: X - Z,
    "ComplexMult(X, Y)": lambda xp, X, Y, Z, R, S: X * Y,
    "ComplexMult(Z, Y)": lambda xp, X, Y, Z, R, S: Z * Y,
    "ComplexRealScal(S, Y)": lambda xp, X, Y, Z, R, S: S * Y,
    "ComplexRealScal(X, S)": lambda xp, X, Y, Z, R, S: S * X,
    "ComplexSquareAbs(X - Y)": lambda xp, X, Y, Z, R, S: abs(X - Y) ** 2,
    "ComplexAbs(X - Y)": lambda xp, X, Y, Z, R, S: abs(X - Y),
    "ComplexAngle(ComplexMult(X, Y))": lambda xp, X, Y, Z, R, S: xp.angle(X * Y),
    "ComplexDivide(X, Y)": lambda xp, X, Y, Z, R, S: X / Y,
    "ComplexDivide(Y, Z)": lambda xp, X, Y, Z, R, S: Y / Z,
    "ComplexExp(ComplexMult(X, Conj(Y)))": lambda xp, X, Y, Z, R, S: xp.exp(X * _conj(Y)),
    "ComplexExp1j(R * S)": lambda xp, X, Y, Z, R, S: xp.exp(1j * R * S),
    "ComplexSum(ComplexMult(X, Y))": lambda xp, X, Y, Z, R, S: (
        (X * Y).sum(-1, keepdims=True) if xp is np else (X * Y).sum(-1, keepdim=True)
    ),
    "ComplexSumT(ComplexSum(X), 4)": lambda xp, X, Y, Z, R, S: (
        X.sum(-1, keepdims=True).repeat(2, -1) if xp is np else X.sum(-1, keepdim=True).repeat(1, 1, 2)
    ),
}


def _aliases(d):
    return [f"X = Vi({2 * d})", f"Y = Vj({2 * d})", "Z = Vi(2)", f"R = Vj({d})", "S = Pm(1)"]


def _interleaved(z):
    """complex (..., d) -> real (..., 2d), (re, im) pairs"""
    if isinstance(z, np.ndarray):
        return np.stack([z.real, z.imag], -1).reshape(*z.shape[:-1], -1)
    return torch.view_as_real(z).reshape(*z.shape[:-1], -1)


def _data(rng, n, m, d):
    x = rng.normal(size=(n, 2 * d))
    y = rng.normal(size=(m, 2 * d)) + 0.5  # away from 0: Y divides
    z = rng.normal(size=(n, 2)) + 1.0
    r, s = rng.normal(size=(m, d)), rng.normal(size=(1,))
    return x, y, z, r, s


def _complex(a):
    return a[..., 0::2] + 1j * a[..., 1::2]


def _reference(xp, word, x, y, z, r, s):
    """The word on complex (n, m, d) arrays, summed over j, interleaved back when complex."""
    X, Y, Z = _complex(x)[:, None], _complex(y)[None], _complex(z)[:, None]
    out = WORDS[word](xp, X, Y, Z, r[None], s[0]) + xp.zeros((x.shape[0], y.shape[0], 1), dtype=xp.float64)
    summed = out.sum(1)
    is_complex = torch.is_complex(summed) if xp is torch else np.iscomplexobj(summed)
    return _interleaved(summed) if is_complex else summed


@SETTINGS
@given(st.sampled_from(sorted(WORDS)), st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(0, 2**32))
def test_words_on_the_numpy_engine(word, d, n, m, seed):
    if "SumT" in word and d != 2:
        d = 2  # ComplexSumT(., 4): the sum of two complex components, repeated twice
    x, y, z, r, s = _data(np.random.default_rng(seed), n, m, d)
    out = Genred(word, _aliases(d), axis=1)(x, y, z, r, s, backend="numpy")
    np.testing.assert_allclose(out, _reference(np, word, x, y, z, r, s), rtol=1e-10, atol=1e-10)


#: the words whose gradients compile on the CPU engine too (each formula and its gradients compile: seconds)
ON_CPU = [
    "ComplexMult(Z, Y)",
    "ComplexDivide(X, Y)",
    "ComplexExp(ComplexMult(X, Conj(Y)))",
    "ComplexAngle(ComplexMult(X, Y))",
]
CASES = [(w, "numpy") for w in sorted(WORDS)] + [pytest.param(w, "cpu", marks=pytest.mark.slow) for w in ON_CPU]


@pytest.mark.parametrize("word, backend", CASES)
def test_words_values_and_gradients_against_torch_complex(word, backend):
    d = 2
    rng = np.random.default_rng(zlib.crc32(word.encode()))
    arrays = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in _data(rng, 13, 17, d)]
    out = Genred(word, _aliases(d), axis=1)(*arrays, backend=backend)
    ref = _reference(torch, word, *arrays)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.tensor(rng.normal(size=tuple(ref.shape)), dtype=torch.float64)
    ours = torch.autograd.grad((out * w).sum(), arrays, allow_unused=True)
    theirs = torch.autograd.grad((ref * w).sum(), arrays, allow_unused=True)
    for a, g_ours, g_ref in zip(arrays, ours, theirs):
        zero = torch.zeros_like(a)
        torch.testing.assert_close(zero if g_ours is None else g_ours, zero if g_ref is None else g_ref)


@pytest.mark.parametrize(
    "formula, aliases",
    [
        ("ComplexMult(X, Y)", ["X = Vi(3)", "Y = Vj(4)"]),
        ("ComplexMult(X, Y)", ["X = Vi(4)", "Y = Vj(6)"]),
        ("ComplexRealScal(X, Y)", ["X = Vi(2)", "Y = Vj(4)"]),
        ("ComplexSumT(X, 5)", ["X = Vi(2)"]),
        ("ComplexReal(X)", ["X = Vi(3)"]),
    ],
)
def test_bad_dimensions_are_refused(formula, aliases):
    with pytest.raises(FormulaError):
        parse(formula, parse_aliases(aliases))


# -- the CUDA engine's sources, without a GPU -------------------------------------------------
CUDA_CASES = ["ComplexExp(ComplexMult(X, Conj(Y)))", "ComplexDivide(Y, Z)", "ComplexAbs(X - Y)"]


def _suite_module(name):
    """Another test module of the suite, for its nvcc / CUDA-emulator helpers (the suite imports by path)."""
    spec = importlib.util.spec_from_file_location(f"_complex_{name}", Path(__file__).parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reductions():
    al = parse_aliases(_aliases(2))
    return [(f"c{k}", Reduction("Sum", parse(w, al))) for k, w in enumerate(CUDA_CASES)]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    cc = _suite_module("test_cuda_compile")
    for dtype in ("float32", "float64"):
        parts = [cs.prelude(dtype)] + [cs.kernels_source(red, dtype, prefix=p)[0] for p, red in _reductions()]
        path = tmp_path / f"complex_{dtype}.cu"
        path.write_text("\n".join(parts))
        results = cc._compile_all([(dtype, path, "sm_90", [])])
        code, log = results[dtype]
        assert code == 0, log[-4000:]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_cuda_kernels_emulated_match_the_numpy_engine(tmp_path):
    emu = _suite_module("test_cuda_emulation")

    text, plans = emu._program(_reductions(), "float64")
    (tmp_path / "emu.cpp").write_text(text)
    build = [shutil.which("g++"), "-std=c++17", "-O0", "-fno-strict-aliasing", "-w", "emu.cpp", "-o", "emu"]
    subprocess.run(build, cwd=tmp_path, check=True)
    programs = (tmp_path, {"float64": tmp_path / "emu"}, {"float64": plans})
    rng = np.random.default_rng(5)
    for label, red in _reductions():
        for nx, ny in [(1, 1), (37, 300), (300, 257)]:
            arrays = emu._inputs(red, nx, ny, "float64", rng)
            got = emu._emulate(programs, "float64", label, arrays, nx, ny, splits=3)
            emu._check(red, got, arrays, nx, ny, "float64", f"{label} N={nx} M={ny}")
