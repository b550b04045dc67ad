"""Precompiled preludes (kernla.engines.cpu.compiler): built once, used, and refused like planted libraries.

A planted precompiled header is code the compiler would put in every kernel, so each case plants one
that would make ``twice`` return 3 x instead of 2 x (a precompiled header of another prelude, with a
sidecar that matches it) and checks that the kernel still returns 2 x. The same for the object of a
prelude's out-of-line part, which every kernel links.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from kernla import Genred
from kernla.engines.cpu import compiler
from kernla.engines.cpu.compiler import PRELUDE_END, clear_cache, compile_module, find_compiler
from kernla.engines.cpu.source import kernel_source
from kernla.formula import Vi, Vj, call
from kernla.reductions import Reduction

pytestmark = pytest.mark.skipif(
    "Free Software Foundation" not in (compiler._compiler_version(find_compiler() or "") or ""),
    reason="precompiled preludes are gcc's",
)

PRELUDE = "#include <cmath>\nstatic inline double kl_twice(double x) {{ return {k} * x; }}  // {tag}\n"


#: a prelude with an out-of-line part: kl_twice defined in the object its kernels link
LINKED_PRELUDE = """#include <cmath>
#if defined(KL_PRELUDE_OBJECT) || defined(KL_PRELUDE_LINKED)
#define KL_FN __attribute__((visibility("hidden")))
#else
#define KL_FN static
#endif
KL_FN double kl_twice(double x);
#if !defined(KL_PRELUDE_LINKED)
KL_FN double kl_twice(double x) {{ return {k} * x; }}  // {tag}
#endif
"""


def prelude(k: int = 2, tag: str = "fixed", linked: bool = False) -> str:
    return (LINKED_PRELUDE if linked else PRELUDE).format(k=k, tag=tag)


def source(pre: str | None = None) -> str:
    """A new kernel (never compiled before) after the prelude ``pre``."""
    body = f'extern "C" double twice(double x) {{ return kl_twice(x); }}  // {uuid.uuid4().hex}\n'
    return (pre or prelude()) + PRELUDE_END + "\n" + body


def twice(src: str) -> float:
    """Compile ``src`` as a new process would (nothing remembered in memory) and call ``twice(1.5)``."""
    compiler._module_memo.clear()
    compiler._pch_digests.clear()
    fn = compile_module(src).twice
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_double]
    return fn(1.5)


def calls(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if ln.strip() != "--version"] if log.exists() else []


@pytest.fixture
def logging_cxx(tmp_path, monkeypatch):
    """CXX = a wrapper that logs each invocation (one line of arguments) and runs the real one."""
    log, wrapper = tmp_path / "cxx.log", tmp_path / "logging-cxx"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{find_compiler()}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CXX", str(wrapper))
    return log


def the_pch(cache: Path, suffix: str = ".gch") -> Path:
    (gch,) = cache.glob(f"kl_pch_*{suffix}")
    return gch


def evil_pch(tmp_path: Path, flags: tuple[str, ...], suffix: str = ".gch") -> bytes:
    """A precompiled header (``suffix`` ".o": an object of the out-of-line part), built with ``flags``, of a
    prelude whose kl_twice triples."""
    folder = tmp_path / f"evil-{uuid.uuid4().hex}"
    folder.mkdir()
    (folder / "kl_prelude.h").write_text(prelude(3, linked=suffix == ".o"))
    if suffix == ".o":
        cmd = [find_compiler(), *flags, "-DKL_PRELUDE_OBJECT", "-c", "-x", "c++", "kl_prelude.h", "-o", "out"]
    else:
        cmd = [find_compiler(), *flags, "-x", "c++-header", "kl_prelude.h", "-o", "out"]
    subprocess.run(cmd, cwd=folder, check=True)
    return (folder / "out").read_bytes()


def plant(gch: Path, data: bytes, sidecar: bytes | None = None) -> None:
    """``data`` in place of ``gch``, with a sidecar matching ``sidecar`` (default: ``data``)."""
    gch.unlink(missing_ok=True)
    gch.write_bytes(data)
    Path(f"{gch}.sha256").write_text(hashlib.sha256(data if sidecar is None else sidecar).hexdigest() + "\n")


FLAGS = compiler.DEFAULT_FLAGS + compiler.REQUIRED_FLAGS


def test_prelude_is_precompiled_once_and_used(cache, logging_cxx, tmp_path):
    assert twice(source()) == 3.0
    first = calls(logging_cxx)
    assert len(first) == 2 and "c++-header" in first[0] and "-include kl_prelude.h" in first[1]
    gch = the_pch(cache)
    assert gch.stat().st_mode & 0o077 == 0
    assert hashlib.sha256(gch.read_bytes()).hexdigest() == Path(f"{gch}.sha256").read_text().strip()
    assert twice(source()) == 3.0
    assert calls(logging_cxx)[2:] == [calls(logging_cxx)[2]] and "-include" in calls(logging_cxx)[2]
    # in a new process too
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parents[1])!r}); from kernla.engines.cpu import compiler"
    )
    code += f"\ncompiler.compile_module({source()!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    assert len(calls(logging_cxx)) == 4 and "c++-header" not in calls(logging_cxx)[3]
    # another prelude: another precompiled header; clear_cache removes them all
    assert twice(source(prelude(2, "other"))) == 3.0
    assert len(list(cache.glob("kl_pch_*.gch"))) == 2
    clear_cache()
    assert not list(cache.glob("kl_pch_*"))


def test_source_without_a_prelude_makes_no_precompiled_header(cache):
    lib = compile_module(f'extern "C" int three() {{ return 3; }}  // {uuid.uuid4().hex}\n')
    assert lib.three() == 3 and not list(cache.glob("kl_pch_*"))


def test_compile_errors_name_the_source_line(cache):
    src = source().replace("return kl_twice(x);", "return kl_twice(x) +;")
    with pytest.raises(compiler.CompileError) as err:
        compile_module(src)
    line = src[: src.index("+;")].count("\n") + 1
    assert f".cpp:{line}:" in err.value.stderr


def test_out_of_line_part_is_compiled_once_and_linked(cache, logging_cxx):
    pre = prelude(linked=True)
    assert twice(source(pre)) == 3.0
    first = calls(logging_cxx)
    assert len(first) == 3 and "c++-header" in first[0] and "-DKL_PRELUDE_OBJECT -c" in first[1]
    assert "-DKL_PRELUDE_LINKED" in first[2] and first[2].endswith(" kl_prelude.o")
    obj = the_pch(cache, ".o")
    assert obj.stat().st_mode & 0o077 == 0 and obj.name == the_pch(cache).name.replace(".gch", ".o")
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == Path(f"{obj}.sha256").read_text().strip()
    assert twice(source(pre)) == 3.0 and len(calls(logging_cxx)) == 4  # the kernel only
    obj.unlink()  # a header without its object: both built again
    assert twice(source(pre)) == 3.0 and "c++-header" in calls(logging_cxx)[4] and obj.is_file()
    clear_cache()
    assert not list(cache.glob("kl_pch_*"))


@pytest.mark.parametrize("suffix", [".gch", ".o"])
@pytest.mark.parametrize("how", ["other user", "group-writable", "symlink", "tampered"])
def test_planted_precompiled_header_is_refused_and_rebuilt(cache, tmp_path, how, suffix):
    if how == "other user" and os.geteuid() != 0:
        pytest.skip("switching a file's owner needs root")
    linked = suffix == ".o"
    assert twice(source(prelude(linked=linked))) == 3.0
    gch = the_pch(cache, suffix)
    good = gch.read_bytes()
    evil = evil_pch(tmp_path, FLAGS, suffix)
    if how == "symlink":
        elsewhere = tmp_path / "elsewhere.gch"
        elsewhere.write_bytes(evil)
        gch.unlink()
        gch.symlink_to(elsewhere)
        Path(f"{gch}.sha256").write_text(hashlib.sha256(evil).hexdigest() + "\n")
    else:
        plant(gch, evil, good if how == "tampered" else None)
    if how == "other user":
        for p in (gch, Path(f"{gch}.sha256")):
            os.chown(p, 65534, 65534)
    elif how == "group-writable":
        gch.chmod(0o664)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert twice(source(prelude(linked=linked))) == 3.0, "the planted precompiled header was used"
    refused = [str(w.message) for w in caught if "precompiled header" in str(w.message)]
    assert bool(refused) == (how != "tampered"), refused  # a corrupt one is only logged
    assert gch.is_file() and not gch.is_symlink() and gch.stat().st_uid == os.getuid()
    assert gch.read_bytes() != evil
    assert hashlib.sha256(gch.read_bytes()).hexdigest() == Path(f"{gch}.sha256").read_text().strip()


@pytest.mark.parametrize("linked", [False, True])
@pytest.mark.parametrize("how", ["stale", "truncated"])
def test_precompiled_header_the_compiler_rejects_is_dropped(cache, tmp_path, logging_cxx, how, linked):
    """One gcc does not use (built with other flags) or cannot read: the kernel is still right (compiled from
    its whole text), then rebuilt, with the object of the out-of-line part where the prelude has one."""
    pre = prelude(linked=linked)
    assert twice(source(pre)) == 3.0
    gch = the_pch(cache)
    if how == "stale":  # what a key missing a flag would give: gcc refuses it (_OPENMP differs)
        plant(gch, evil_pch(tmp_path, tuple(f for f in FLAGS if f != "-fopenmp")))
    else:
        plant(gch, gch.read_bytes()[: gch.stat().st_size // 3])
    assert twice(source(pre)) == 3.0
    assert not list(cache.glob("kl_pch_*")), "a rejected precompiled header (or its object) stays in the cache"
    before = len(calls(logging_cxx))
    assert twice(source(pre)) == 3.0
    assert "c++-header" in calls(logging_cxx)[before] and gch.is_file()
    assert len(list(cache.glob("kl_pch_*.o"))) == linked


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_match_the_numpy_engine(cache, dtype):
    """Kernels compiled against the precompiled prelude: same results as the NumPy engine."""
    rng = np.random.default_rng(11)
    src = kernel_source(Reduction("Sum", call("SqDist", Vi(0, 3), Vj(1, 3))), dtype)
    assert PRELUDE_END in src
    cases = [
        ("Exp(-SqDist(X, Y)) * B", "Sum", 3, 2),
        ("Exp(-SqDist(X, Y) * 0.01) * B", "Sum", 37, 5),  # D above the tiles' threshold, 5 columns
        ("SqDist(X, Y)", "ArgKMin", 19, 1),
        ("-SqDist(X, Y) * 0.1 + B", "LogSumExp", 17, 1),
    ]
    for formula, op, d, e in cases:
        x, y = rng.standard_normal((29, d)).astype(dtype), rng.standard_normal((41, d)).astype(dtype)
        b = rng.standard_normal((41, e)).astype(dtype)
        k = 3 if op == "ArgKMin" else None
        g = Genred(formula, [f"X = Vi({d})", f"Y = Vj({d})", f"B = Vj({e})"], op, axis=1, opt_arg=k)
        got, want = g(x, y, b, backend="cpu"), g(x, y, b, backend="numpy")
        tol = 2e-4 if dtype == "float32" else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()), err_msg=formula)
    assert len(list(cache.glob("kl_pch_*.gch"))) == 1  # one prelude per dtype, every kernel used it
    assert len(list(cache.glob("kl_pch_*.o"))) == 1  # with the object of its tile routines
