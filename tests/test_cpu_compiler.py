"""kernla.engines.cpu.compiler: build, disk cache, atomicity, corruption, errors."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from kernla.engines.cpu import compiler
from kernla.engines.cpu.compiler import (
    CompileError,
    CompilerUnavailableError,
    UnsafeCacheDirError,
    cache_dir,
    clear_cache,
    compile_module,
    find_compiler,
)

ROOT = Path(__file__).resolve().parents[1]
needs_compiler = pytest.mark.skipif(find_compiler() is None, reason="no C++ compiler")


def unique_source(body: str = "") -> str:
    """A source no other test (or earlier run) has compiled."""
    tag = uuid.uuid4().hex
    return f'// {tag}\nextern "C" int add(int a, int b) {{ return a + b; }}\n{body}'


@pytest.fixture
def logging_cxx(tmp_path, monkeypatch):
    """CXX = a wrapper that logs each invocation (one line of arguments) and runs the real one."""
    real = find_compiler()
    if real is None:
        pytest.skip("no C++ compiler")
    log = tmp_path / "cxx.log"
    wrapper = tmp_path / "logging-cxx"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CXX", str(wrapper))
    return log


def compile_calls(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [ln for ln in log.read_text().splitlines() if ln.strip() != "--version"]


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from kernla.engines.cpu.compiler import compile_module
    dt = 0.0
    for path in sys.argv[1:]:
        src = open(path).read()
        t0 = time.perf_counter()
        lib = compile_module(src)
        dt += time.perf_counter() - t0
        assert lib.add(20, 22) == 42
    print(f"ok {{dt:.4f}}")
""").format(root=str(ROOT))


def run_child(*src_files: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, src_files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        **popen,
    )


def finish(proc: subprocess.Popen) -> float:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("ok"), out + err
    return float(out.split()[1])


@needs_compiler
def test_compile_load_call(cache):
    src = unique_source('extern "C" double twice(double x) { return 2 * x; }')
    lib = compile_module(src)
    assert lib.add(2, 3) == 5
    lib.twice.restype, lib.twice.argtypes = ctypes.c_double, [ctypes.c_double]
    assert lib.twice(1.25) == 2.5
    assert compile_module(src) is lib  # in-process table: same object, no disk access
    names = sorted(p.name for p in cache.iterdir() if p.name.startswith("kl_"))
    assert len(names) == 3 and {Path(n).suffix for n in names} == {".cpp", ".so", ".sha256"}
    so = next(cache.glob("kl_*.so"))
    assert (cache / (so.name + ".sha256")).read_text().strip() == hashlib.sha256(so.read_bytes()).hexdigest()
    assert not list(cache.glob(".tmp-*"))  # temporary build folder removed
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


@needs_compiler
def test_compile_error_carries_stderr(cache):
    with pytest.raises(CompileError) as info:
        compile_module(unique_source("int broken( { return 0; }"))
    assert "error" in info.value.stderr.lower()
    assert "error" in str(info.value).lower()
    assert isinstance(info.value, RuntimeError)
    assert not list(cache.glob("kl_*")) and not list(cache.glob(".tmp-*"))


@needs_compiler
def test_flags_and_env_flags(cache, monkeypatch):
    src = unique_source(
        textwrap.dedent("""
        extern "C" int optimised() {
        #ifdef __OPTIMIZE__
            return 1;
        #else
            return 0;
        #endif
        }
        extern "C" int openmp() {
        #ifdef _OPENMP
            return 1;
        #else
            return 0;
        #endif
        }
    """)
    )
    lib = compile_module(src)
    assert lib.optimised() == 1 and lib.openmp() == 1  # defaults: -O3 ... -fopenmp
    assert compile_module(src, flags=("-O0",)).optimised() == 0
    monkeypatch.setenv("KERNLA_CXXFLAGS", "-O0 -std=c++17")
    lib0 = compile_module(src)
    assert lib0.optimised() == 0 and lib0.openmp() == 0
    assert len(list(cache.glob("kl_*.so"))) == 3  # default, flags=("-O0",), $KERNLA_CXXFLAGS


@needs_compiler
def test_cache_hit_in_new_process_does_not_compile(cache, logging_cxx, tmp_path):
    src_file = tmp_path / "k.cpp"
    src_file.write_text(unique_source())
    finish(run_child(src_file))
    assert len(compile_calls(logging_cxx)) == 1
    finish(run_child(src_file))
    assert len(compile_calls(logging_cxx)) == 1, "a cache hit must not run the compiler"


@needs_compiler
def test_concurrent_processes_same_new_source(cache, logging_cxx, tmp_path):
    src_file = tmp_path / "k.cpp"
    src_file.write_text(unique_source())
    procs = [run_child(src_file) for _ in range(3)]
    for p in procs:
        finish(p)
    assert 1 <= len(compile_calls(logging_cxx)) <= 3
    assert len(list(cache.glob("kl_*.so"))) == 1
    assert not list(cache.glob(".tmp-*"))


@needs_compiler
def test_concurrent_builds_without_lock(cache):
    """Where flock is unavailable, racing builds still leave one valid entry (os.replace)."""
    import threading

    src = unique_source()
    key_parts = (
        src,
        find_compiler(),
        compiler._compiler_version(find_compiler()),
        compiler._optimisation_flags(None) + compiler.REQUIRED_FLAGS,
    )
    key = compiler._cache_key(src, *key_parts[1:])
    folder = cache_dir()
    errors = []

    def build():
        try:
            compiler._build(src, key_parts[1], key_parts[3], folder, key)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert compiler._verified(folder / f"kl_{key}.so", folder / f"kl_{key}.so.sha256")
    assert compile_module(src).add(1, 2) == 3


@needs_compiler
def test_truncated_library_is_rebuilt(cache, logging_cxx, tmp_path):
    src_file = tmp_path / "k.cpp"
    src = unique_source()
    src_file.write_text(src)
    finish(run_child(src_file))  # built by another process: never mapped into this one
    so = next(cache.glob("kl_*.so"))
    good = so.read_bytes()
    with open(so, "r+b") as fh:
        fh.truncate(len(good) // 2)
    lib = compile_module(src)
    assert lib.add(1, 1) == 2
    assert so.read_bytes() == good or compiler._verified(so, Path(str(so) + ".sha256"))
    assert len(compile_calls(logging_cxx)) == 2


@needs_compiler
def test_missing_sidecar_and_unloadable_library_are_rebuilt(cache, logging_cxx, tmp_path):
    src_a, src_b = unique_source(), unique_source()
    (tmp_path / "a.cpp").write_text(src_a)
    (tmp_path / "b.cpp").write_text(src_b)
    finish(run_child(tmp_path / "a.cpp", tmp_path / "b.cpp"))
    so_a, so_b = sorted(cache.glob("kl_*.so"), key=lambda p: p.stat().st_mtime)
    # (a) sidecar missing
    Path(str(so_a) + ".sha256").unlink()
    # (b) garbage that matches its sidecar: the digest passes but dlopen fails
    so_b.write_bytes(b"not an ELF file")
    Path(str(so_b) + ".sha256").write_text(hashlib.sha256(b"not an ELF file").hexdigest())
    assert compile_module(src_a).add(2, 2) == 4
    assert compile_module(src_b).add(3, 3) == 6
    assert len(compile_calls(logging_cxx)) == 4
    for so in (so_a, so_b):
        assert compiler._verified(so, Path(str(so) + ".sha256"))


def test_missing_compiler_raises(cache, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv("PATH", str(empty))
    assert find_compiler() is None
    with pytest.raises(CompilerUnavailableError) as info:
        compile_module(unique_source())
    assert isinstance(info.value, RuntimeError)
    assert "compiler" in str(info.value)


def test_missing_compiler_monkeypatched(cache, monkeypatch):
    monkeypatch.setattr(compiler, "find_compiler", lambda: None)
    with pytest.raises(CompilerUnavailableError):
        compile_module(unique_source())


def test_cxx_env_var_is_used_first(tmp_path, monkeypatch):
    real = find_compiler()
    if real is None:
        pytest.skip("no C++ compiler")
    alias = tmp_path / "my-c++"
    alias.symlink_to(real)
    monkeypatch.setenv("CXX", str(alias))
    assert find_compiler() == str(alias)


def test_cache_dir_created_private(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "kernla"
    monkeypatch.setenv("KERNLA_CACHE_DIR", str(target))
    old = os.umask(0)
    try:
        assert cache_dir() == target
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700


def test_cache_dir_default_locations(tmp_path, monkeypatch):
    monkeypatch.delenv("KERNLA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compiler._cache_path() == tmp_path / "xdg" / "kernla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compiler._cache_path() == tmp_path / "home" / ".cache" / "kernla"


def test_open_cache_dir_is_made_private(tmp_path, monkeypatch):
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(0o777)
    monkeypatch.setenv("KERNLA_CACHE_DIR", str(target))
    cache_dir()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_cache_dir_of_another_user_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    os.chown(target, 54321, -1)
    monkeypatch.setenv("KERNLA_CACHE_DIR", str(target))
    with pytest.raises(UnsafeCacheDirError):
        cache_dir()


def test_cache_path_that_is_a_file_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "file"
    target.write_text("")
    monkeypatch.setenv("KERNLA_CACHE_DIR", str(target))
    with pytest.raises(CompilerUnavailableError):
        cache_dir()


@needs_compiler
def test_clear_cache_removes_only_kernla_files(cache):
    compile_module(unique_source())
    (cache / "notes.txt").write_text("keep me")
    clear_cache()
    assert sorted(p.name for p in cache.iterdir()) == ["notes.txt"]
    compile_module(unique_source())  # still usable afterwards
    assert len(list(cache.glob("kl_*.so"))) == 1


def test_cache_key_covers_every_input():
    base = ("src", "/usr/bin/g++", "g++ 12", ("-O3", "-shared"))
    k0 = compiler._cache_key(*base)
    assert len(k0) == 64 and k0 == compiler._cache_key(*base)
    for i, other in enumerate(("src2", "/usr/bin/clang++", "g++ 13", ("-O2", "-shared"))):
        changed = list(base)
        changed[i] = other
        assert compiler._cache_key(*changed) != k0
    # no ambiguity between parts
    assert compiler._cache_key("ab", "c", "v", ()) != compiler._cache_key("a", "bc", "v", ())


def test_find_compiler_skips_broken_cxx(tmp_path, monkeypatch):
    real = find_compiler()
    if real is None or shutil.which("g++") is None:
        pytest.skip("needs g++")
    monkeypatch.setenv("CXX", str(tmp_path / "missing-compiler"))
    assert find_compiler() == os.path.abspath(shutil.which("g++"))
