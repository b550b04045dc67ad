"""The compiled CPU engine under attack or accident: planted libraries, runaway compilers, locks held
by stopped processes, full disks, entries replaced by folders, forked children.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from kernla import Genred
from kernla.engines.cpu import compiler, engine
from kernla.engines.cpu.compiler import (
    CacheFullError,
    CacheLockTimeout,
    CompileError,
    CompilerUnavailableError,
    compile_module,
    find_compiler,
)

pytestmark = pytest.mark.skipif(find_compiler() is None or not hasattr(os, "fork"), reason="needs g++ and POSIX")
ROOT = Path(__file__).resolve().parents[1]


def unique_source(value: str = "a + b") -> str:
    return f'// {uuid.uuid4().hex}\nextern "C" int add(int a, int b) {{ return {value}; }}\n'


def entry(source: str) -> Path:
    """The path of ``source``'s library in the cache (it need not exist)."""
    cxx = find_compiler()
    key = compiler._cache_key(
        source, cxx, compiler._compiler_version(cxx) or "", compiler._optimisation_flags(None) + compiler.REQUIRED_FLAGS
    )
    return compiler.cache_dir() / f"kl_{key}.so"


def planted_library(tmp_path: Path, marker: Path) -> bytes:
    """A library whose constructor writes ``marker`` and whose ``add`` answers 42."""
    src = tmp_path / "evil.cpp"
    src.write_text(
        textwrap.dedent(f"""
        #include <cstdio>
        __attribute__((constructor)) static void planted() {{
            FILE* f = std::fopen("{marker}", "w"); if (f) std::fclose(f);
        }}
        extern "C" int add(int a, int b) {{ return 42; }}
    """)
    )
    out = tmp_path / "evil.so"
    subprocess.run([find_compiler(), "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out.read_bytes()


def plant(so: Path, data: bytes) -> None:
    """Put ``data`` in place of ``so`` with a sidecar that matches it."""
    so.unlink(missing_ok=True)
    so.write_bytes(data)
    Path(str(so) + ".sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")


def reload(source: str):
    """compile_module as a new process would run it: nothing remembered in memory."""
    compiler._module_memo.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib = compile_module(source)
    return lib, [str(w.message) for w in caught]


# ---------------------------------------------------------------------------------------------
# 1. only libraries we built and own are loaded
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["other user", "group-writable", "symlink", "open folder"])
def test_planted_library_is_never_loaded(cache, tmp_path, how):
    if how == "other user" and os.geteuid() != 0:
        pytest.skip("switching a file's owner needs root")
    src = unique_source()
    assert compile_module(src).add(1, 2) == 3
    so = entry(src)
    marker = tmp_path / "constructor-ran"
    evil = planted_library(tmp_path, marker)
    if how == "symlink":
        elsewhere = tmp_path / "elsewhere.so"
        elsewhere.write_bytes(evil)
        so.unlink()
        so.symlink_to(elsewhere)
        Path(str(so) + ".sha256").write_text(hashlib.sha256(evil).hexdigest() + "\n")
    else:
        plant(so, evil)
    if how == "other user":
        for p in (so, Path(str(so) + ".sha256")):
            os.chown(p, 65534, 65534)
    elif how == "group-writable":
        so.chmod(0o664)
    elif how == "open folder":  # cache_dir() makes an open folder of ours private again, but files
        so.chmod(0o666)  # planted while it was open stay suspicious
        cache.chmod(0o777)
    lib, messages = reload(src)
    assert lib.add(1, 2) == 3, "the planted library was loaded"
    assert not marker.exists(), "the planted library's constructor ran"
    assert any("not loading the cached kernel" in m for m in messages), messages
    assert so.is_file() and not so.is_symlink() and so.stat().st_uid == os.getuid()
    assert compiler._verified(so, Path(str(so) + ".sha256"))


def test_swapped_library_with_rewritten_checksum_in_a_shared_folder_is_refused(tmp_path, monkeypatch):
    """A folder others can write is not a cache at all: nothing in it is loaded."""
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("KERNLA_CACHE_DIR", str(shared))
    src = unique_source()
    compile_module(src)
    dir_fd = os.open(shared, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chmod(shared, 0o777)  # opened, then opened up: the check is on the opened folder
        with pytest.raises(compiler.UnsafeCacheDirError, match="writable by other users"):
            compiler._open_folder(shared)
    finally:
        os.close(dir_fd)


def test_checksum_is_checked_on_what_is_loaded(cache):
    src = unique_source()
    compile_module(src)
    so = entry(src)
    corrupt = so.read_bytes()[:-7]  # sidecar unchanged; a new file, as the loaded one stays mapped here
    so.unlink()
    so.write_bytes(corrupt)
    lib, _ = reload(src)
    assert lib.add(2, 2) == 4 and compiler._verified(so, Path(str(so) + ".sha256"))


# ---------------------------------------------------------------------------------------------
# 2. no compiler outlives a timeout or an interrupt
# ---------------------------------------------------------------------------------------------
def slow_compiler(tmp_path: Path) -> tuple[Path, Path]:
    """A CXX that starts a grandchild, writes both pids, and waits: (script, pid file)."""
    pids = tmp_path / "pids"
    script = tmp_path / "slow-cxx"
    real = find_compiler()
    script.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in *--version*) exec "{real}" "$@";; esac
        sleep 300 &
        echo "$$ $!" > "{pids}"
        wait
    """)
    )
    script.chmod(0o755)
    return script, pids


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_for(predicate, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_compiler_group_is_killed_on_timeout(cache, tmp_path, monkeypatch):
    script, pids = slow_compiler(tmp_path)
    monkeypatch.setenv("CXX", str(script))
    monkeypatch.setattr(compiler, "_COMPILE_TIMEOUT_S", 1)
    with pytest.raises(CompileError, match="timed out"):
        compile_module(unique_source())
    shell, grandchild = map(int, pids.read_text().split())
    assert wait_for(lambda: gone(shell) and gone(grandchild)), "a compiler process survived the timeout"


def test_compiler_group_is_killed_on_keyboard_interrupt(cache, tmp_path):
    script, pids = slow_compiler(tmp_path)
    code = f"from kernla.engines.cpu.compiler import compile_module\ncompile_module({unique_source()!r})\n"
    env = dict(os.environ, CXX=str(script), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2), "the compiler never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err
    shell, grandchild = map(int, pids.read_text().split())
    assert wait_for(lambda: gone(shell) and gone(grandchild)), "a compiler process survived the interrupt"


# ---------------------------------------------------------------------------------------------
# 6. locks: per kernel, with a timeout, and recovered from stopped holders
# ---------------------------------------------------------------------------------------------
def test_cached_kernel_does_not_wait_behind_another_kernels_build(cache, tmp_path, monkeypatch):
    ready = unique_source()
    compile_module(ready)
    compiler._module_memo.clear()
    gate, started = tmp_path / "go", tmp_path / "started"
    real = find_compiler()
    script = tmp_path / "gated-cxx"
    script.write_text(
        f'#!/bin/sh\ncase "$*" in *--version*) exec "{real}" "$@";; esac\n'
        f'touch "{started}"\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done\nexec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    slow = unique_source()
    result = {}

    def build_slow():
        result["slow"] = compile_module(slow).add(2, 5)

    monkeypatch.setattr(compiler, "find_compiler", lambda: str(script))  # for the slow build only:

    t = threading.Thread(target=build_slow)
    t.start()
    try:
        assert wait_for(started.exists), "the gated build never started"
        monkeypatch.setattr(compiler, "find_compiler", lambda: real)  # the cached kernel keeps its key
        t2 = threading.Thread(target=lambda: result.setdefault("ready", compile_module(ready).add(1, 1)))
        t2.start()
        t2.join(60)  # a bound, not a timing: without per-kernel locks it waits for the gate forever
        assert not t2.is_alive(), "loading a cached kernel waited behind another kernel's build"
        assert result["ready"] == 2
        assert t.is_alive(), "the other build finished first: the test proves nothing"
    finally:
        gate.touch()
        t.join(120)
    assert result["slow"] == 7


HOLDER = """
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
if sys.argv[2] == "stop":
    os.kill(os.getpid(), signal.SIGSTOP)
time.sleep(300)
"""


def hold_lock(lock: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_held_by_a_stopped_process_is_taken_over(cache):
    src = unique_source()
    lock = compiler.cache_dir() / f".lock-{entry(src).stem[3:]}"
    holder = hold_lock(lock, "stop")
    try:
        assert wait_for(lambda: compiler._stale(str(holder.pid)))
        assert compile_module(src).add(3, 4) == 7
    finally:
        holder.kill()
        holder.wait()


def test_lock_held_too_long_is_a_clear_error(cache, monkeypatch):
    src = unique_source()
    lock = compiler.cache_dir() / f".lock-{entry(src).stem[3:]}"
    monkeypatch.setattr(compiler, "LOCK_TIMEOUT_S", 0.3)
    holder = hold_lock(lock, "run")
    try:
        with pytest.raises(CacheLockTimeout, match=f"pid {holder.pid}.*KERNLA_LOCK_TIMEOUT"):
            compile_module(src)
        assert issubclass(CacheLockTimeout, CompilerUnavailableError)  # the engine falls back on it
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------------------------
# 7. full disks fall back to NumPy; an entry replaced by a folder recovers
# ---------------------------------------------------------------------------------------------
def fresh_genred():
    """A formula no other test compiled (a distinct constant)."""
    c = 1 + uuid.uuid4().int % 1000 / 1e4
    return Genred(f"Exp(-SqDist(X, Y) * {c})", ["X = Vi(2)", "Y = Vj(2)"], reduction_op="Sum", axis=1)


@pytest.mark.parametrize("where", ["compiler output", "temporary folder"])
def test_full_disk_falls_back_to_numpy_with_a_warning(cache, monkeypatch, where):
    if where == "compiler output":

        def run(cmd, cwd, source):
            return subprocess.CompletedProcess(cmd, 1, "", "cc1plus: fatal error: No space left on device")

        monkeypatch.setattr(compiler, "_run_compiler", run)
    else:

        def mkdtemp(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(compiler.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(engine, "_warned", False)
    f = fresh_genred()
    x, y = np.random.default_rng(0).random((31, 2)), np.random.default_rng(1).random((45, 2))
    with pytest.warns(RuntimeWarning, match="full"):
        got = f(x, y, backend="cpu")
    np.testing.assert_allclose(got, f(x, y, backend="numpy"), rtol=1e-12)
    with pytest.raises(CacheFullError):
        compile_module(unique_source())


def test_entry_replaced_by_a_folder_is_recovered(cache):
    src = unique_source()
    compile_module(src)
    so = entry(src)
    so.unlink()
    (so / "junk").mkdir(parents=True)
    lib, _ = reload(src)
    assert lib.add(5, 6) == 11 and so.is_file()


# ---------------------------------------------------------------------------------------------
# 4. a child forked after the parent ran OpenMP code does not hang
# ---------------------------------------------------------------------------------------------
def _child_product(queue, x, b):
    g = Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)
    queue.put(g(x, x, b, backend="cpu"))


def test_forked_child_runs_the_cpu_engine():
    rng = np.random.default_rng(2)
    x, b = rng.random((4000, 3)), rng.random((4000, 1))
    g = Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"], axis=1)
    expected = g(x, x, b, backend="cpu")  # the parent's OpenMP threads exist from here on
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_product, args=(queue, x, b))
    child.start()
    try:
        got = queue.get(timeout=120)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    np.testing.assert_allclose(got, expected, rtol=1e-12)
