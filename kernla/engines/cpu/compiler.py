"""Compile C++ source to a shared library with the system compiler, cached on disk.

The compiled CPU engine generates one C++ translation unit per (formula, reduction, dtype)
and hands it to :func:`compile_module`, which returns the loaded library:

>>> from kernla.engines.cpu.compiler import compile_module
>>> lib = compile_module('extern "C" int add(int a, int b) { return a + b; }')  # doctest: +SKIP
>>> lib.add(2, 3)                                                               # doctest: +SKIP
5

Compiled libraries live in :func:`cache_dir` (``$KERNLA_CACHE_DIR``, else
``$XDG_CACHE_HOME/kernla``, else ``~/.cache/kernla``), a folder private to the user (mode
0700). Each entry ``kl_<key>.so`` is keyed by a SHA-256 over the source, the compiler's path
and ``--version`` output, the flags, the CPU's feature flags and kernla's version, so a cache
hit in a new process runs no compilation. Entries are written atomically (compiled in a
private temporary folder inside the cache, then ``os.replace``-d into place), carry a
``.sha256`` sidecar that detects truncated or corrupt files (those are rebuilt), and
concurrent processes compiling the same source all succeed (an advisory file lock, where the
platform has one, makes all but one of them wait for the first build instead of repeating it).

Environment:
    ``CXX``              compiler to use (else ``g++``, else ``clang++``)
    ``KERNLA_CXXFLAGS``  replaces the optimisation flags (``-shared -fPIC`` are always added)
    ``KERNLA_CACHE_DIR`` cache folder
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ..._version import __version__

try:  # the rest of kernla's errors, when available; this module must not depend on them
    from kernla.errors import BackendError as _UnavailableBase
    from kernla.errors import KernlaError as _KernlaError
except Exception:  # pragma: no cover - kernla.errors missing or broken
    _UnavailableBase = RuntimeError

    class _KernlaError(Exception):  # type: ignore[no-redef]
        pass


__all__ = [
    "CompileError",
    "CompilerUnavailableError",
    "UnsafeCacheDirError",
    "DEFAULT_FLAGS",
    "cache_dir",
    "clear_cache",
    "compile_module",
    "find_compiler",
]

log = logging.getLogger(__name__)

#: Optimisation flags used unless ``flags=`` or ``$KERNLA_CXXFLAGS`` replace them. Not
#: ``-ffast-math``: generated kernels must keep inf/NaN semantics.
DEFAULT_FLAGS: tuple[str, ...] = (
    "-O3",
    "-march=native",
    "-fopenmp",
    "-std=c++17",
    "-fno-math-errno",
    "-fno-trapping-math",
)
#: Always passed, whatever the optimisation flags.
REQUIRED_FLAGS: tuple[str, ...] = ("-shared", "-fPIC")

_COMPILE_TIMEOUT_S = 600
_STALE_TMP_S = 24 * 3600
_PREFIX = "kl_"


class CompilerUnavailableError(_UnavailableBase):
    """No working C++ compiler (or no usable cache folder): the compiled CPU engine cannot run.

    A subclass of ``RuntimeError`` (and of :class:`kernla.errors.BackendError` when that
    module imports), so callers can fall back to the NumPy engine.
    """


class UnsafeCacheDirError(CompilerUnavailableError):
    """The cache folder exists but belongs to another user or is not a folder."""


class CompileError(_KernlaError, RuntimeError):
    """The compiler rejected a source. ``stderr``, ``command`` and ``source`` hold the details."""

    def __init__(self, message: str, *, stderr: str = "", command: list[str] | None = None,
                 source: str = ""):
        super().__init__(message)
        self.stderr = stderr
        self.command = command or []
        self.source = source


# --------------------------------------------------------------------------------------
# compiler discovery
# --------------------------------------------------------------------------------------

_compiler_memo: dict[tuple[str | None, str | None], str | None] = {}
_version_memo: dict[str, str | None] = {}
_memo_lock = threading.Lock()


def _compiler_version(path: str) -> str | None:
    """``path --version`` output, or None if it does not run; computed once per process."""
    with _memo_lock:
        if path in _version_memo:
            return _version_memo[path]
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        version = proc.stdout + proc.stderr if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        version = None
    with _memo_lock:
        _version_memo[path] = version
    return version


def find_compiler() -> str | None:
    """The C++ compiler to use: ``$CXX`` if set and working, else ``g++``, else ``clang++``.

    Returns the compiler's full path, or None when none of them runs. The result is memoised
    per value of ``$CXX`` and ``$PATH``.

    >>> find_compiler()          # doctest: +SKIP
    '/usr/bin/g++'
    """
    env_key = (os.environ.get("CXX"), os.environ.get("PATH"))
    with _memo_lock:
        if env_key in _compiler_memo:
            return _compiler_memo[env_key]
    candidates = []
    if env_key[0]:
        candidates.append(env_key[0].strip())
    candidates += ["g++", "clang++"]
    found = None
    for name in candidates:
        path = shutil.which(name)
        if path and _compiler_version(path) is not None:
            found = os.path.abspath(path)
            break
        if name == env_key[0]:
            log.warning("kernla: CXX=%r does not run; trying g++ / clang++", name)
    with _memo_lock:
        _compiler_memo[env_key] = found
    return found


# --------------------------------------------------------------------------------------
# cache folder
# --------------------------------------------------------------------------------------

def _cache_path() -> Path:
    env = os.environ.get("KERNLA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kernla"


def cache_dir() -> Path:
    """The folder holding compiled kernels, created private (mode 0700) if missing.

    An existing folder owned by the user but open to others is made private again; one owned
    by another user (or not a folder) raises :class:`UnsafeCacheDirError` rather than loading
    code others could have planted.

    >>> cache_dir()              # doctest: +SKIP
    PosixPath('/home/me/.cache/kernla')
    """
    path = _cache_path()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise CompilerUnavailableError(f"kernla cannot create its cache folder {path}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeCacheDirError(f"kernla's cache path {path} is not a folder")
    if hasattr(os, "getuid"):
        if st.st_uid != os.getuid():
            raise UnsafeCacheDirError(
                f"kernla's cache folder {path} belongs to another user (uid {st.st_uid}); "
                "set KERNLA_CACHE_DIR to a folder of your own")
        if stat.S_IMODE(st.st_mode) != 0o700:
            try:
                os.chmod(path, 0o700)
            except OSError as exc:
                raise UnsafeCacheDirError(f"cannot make kernla's cache folder {path} private: {exc}") from exc
    return path


def clear_cache() -> None:
    """Delete every compiled kernel (and leftover temporary file) from :func:`cache_dir`.

    Only kernla's own files are removed, never the folder itself or other content; libraries
    already loaded in this process stay usable, and the in-process table of loaded libraries
    is emptied so that the next :func:`compile_module` call looks at the disk again.
    """
    with _memo_lock:
        _module_memo.clear()
    path = _cache_path()
    if not path.is_dir():
        return
    for entry in path.iterdir():
        name = entry.name
        try:
            if name.startswith(".tmp-") and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            elif name.startswith((_PREFIX, ".lock-")) and not entry.is_dir():
                entry.unlink()
        except OSError:  # pragma: no cover - e.g. removed concurrently
            pass


# --------------------------------------------------------------------------------------
# cache key
# --------------------------------------------------------------------------------------

_cpu_features: str | None = None


def _cpu_id() -> str:
    """The CPU's feature flags (``flags``/``Features`` line of /proc/cpuinfo), else the arch."""
    global _cpu_features
    if _cpu_features is None:
        features = ""
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    key, _, value = line.partition(":")
                    if key.strip() in ("flags", "Features"):
                        features = value.strip()
                        break
        except OSError:
            pass
        _cpu_features = platform.machine() + "|" + features
    return _cpu_features


def _optimisation_flags(flags: tuple[str, ...] | None) -> tuple[str, ...]:
    if flags is not None:
        return tuple(flags)
    env = os.environ.get("KERNLA_CXXFLAGS")
    if env is not None:
        return tuple(shlex.split(env))
    return DEFAULT_FLAGS


def _cache_key(source: str, compiler: str, version: str, cmd_flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for part in (source, compiler, version, "\0".join(cmd_flags), _cpu_id(), __version__):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# compile + load
# --------------------------------------------------------------------------------------

_module_memo: dict[tuple, ctypes.CDLL] = {}
_build_lock = threading.RLock()


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _verified(so_path: Path, sum_path: Path) -> bool:
    """True if the library exists and matches the digest in its sidecar."""
    try:
        expected = sum_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return expected != "" and _file_sha256(so_path) == expected


class _FileLock:
    """Advisory inter-process lock (flock); a no-op where unavailable."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.locked = False

    def __enter__(self):
        try:
            import fcntl  # POSIX only: the lock degrades to none elsewhere

            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.locked = True
        except (ImportError, OSError):
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
            self.locked = False


def _remove_stale_tmp(folder: Path) -> None:
    now = time.time()
    try:
        for entry in folder.iterdir():
            if entry.name.startswith(".tmp-") and now - entry.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(entry, ignore_errors=True)
    except OSError:  # pragma: no cover
        pass


def _build(source: str, compiler: str, cmd_flags: tuple[str, ...], folder: Path, key: str) -> None:
    """Compile ``source`` and install ``kl_<key>.so`` + its sidecar atomically in ``folder``."""
    _remove_stale_tmp(folder)
    stem = _PREFIX + key
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        src_name, so_name = stem + ".cpp", stem + ".so"
        (tmp / src_name).write_text(source, encoding="utf-8")
        # relative names, run inside the temporary folder: the output does not depend on it
        cmd = [compiler, *cmd_flags, "-o", so_name, src_name]
        log.debug("kernla: compiling %s", " ".join(cmd))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                                  timeout=_COMPILE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise CompileError(f"compiler timed out after {_COMPILE_TIMEOUT_S} s: {' '.join(cmd)}",
                               command=cmd, source=source) from exc
        except OSError as exc:
            raise CompilerUnavailableError(f"cannot run the compiler {compiler}: {exc}") from exc
        if proc.returncode != 0 or not (tmp / so_name).is_file():
            stderr = (proc.stderr or "") + (proc.stdout or "")
            raise CompileError(
                f"C++ compilation failed (exit status {proc.returncode}): {' '.join(cmd)}\n"
                f"{stderr.strip()}", stderr=stderr, command=cmd, source=source)
        log.debug("kernla: compiled %s in %.2f s", stem, time.perf_counter() - t0)
        digest = _file_sha256(tmp / so_name)
        (tmp / (so_name + ".sha256")).write_text(digest + "\n", encoding="ascii")
        # library first, then the sidecar that marks it complete, then the source (for humans)
        os.replace(tmp / so_name, folder / so_name)
        os.replace(tmp / (so_name + ".sha256"), folder / (so_name + ".sha256"))
        os.replace(tmp / src_name, folder / src_name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def compile_module(source: str, *, flags: tuple[str, ...] | None = None) -> ctypes.CDLL:
    """Compile a C++ translation unit (exporting ``extern "C"`` functions) and load it.

    ``flags`` replaces the optimisation flags (default :data:`DEFAULT_FLAGS`, or
    ``$KERNLA_CXXFLAGS`` when set); ``-shared -fPIC`` are always added. The first call for a
    source compiles it (a few tenths of a second for a small kernel); later calls in the same
    process return the same library object at once, and later processes load it from the
    disk cache without compiling.

    Raises :class:`CompilerUnavailableError` when no compiler works and :class:`CompileError`
    (whose ``stderr`` holds the compiler's messages) when the source does not compile.

    >>> import ctypes
    >>> lib = compile_module('extern "C" double twice(double x) { return 2 * x; }')  # doctest: +SKIP
    >>> lib.twice.restype, lib.twice.argtypes = ctypes.c_double, [ctypes.c_double]   # doctest: +SKIP
    >>> lib.twice(1.5)                                                               # doctest: +SKIP
    3.0
    """
    if flags is not None:
        flags = tuple(flags)
    memo_key = (source, flags, os.environ.get("KERNLA_CXXFLAGS"), os.environ.get("CXX"))
    lib = _module_memo.get(memo_key)
    if lib is not None:
        return lib
    with _build_lock:  # one build at a time within a process; other processes: the file lock
        lib = _module_memo.get(memo_key)
        if lib is not None:
            return lib
        compiler = find_compiler()
        if compiler is None:
            raise CompilerUnavailableError(
                "kernla's compiled CPU engine needs a C++ compiler: none of $CXX, g++, clang++ "
                "runs on this machine (install g++ or set CXX)")
        version = _compiler_version(compiler) or ""
        cmd_flags = _optimisation_flags(flags) + REQUIRED_FLAGS
        key = _cache_key(source, compiler, version, cmd_flags)
        folder = cache_dir()
        so_path = folder / f"{_PREFIX}{key}.so"
        sum_path = folder / f"{_PREFIX}{key}.so.sha256"

        lib = None
        if _verified(so_path, sum_path):
            lib = _try_load(so_path)
        if lib is None:
            with _FileLock(folder / f".lock-{key[:2]}") as lock:
                # someone may have built it while we waited for the lock
                if _verified(so_path, sum_path):
                    lib = _try_load(so_path)
                    if lib is None:  # verified but unloadable: rebuild once
                        log.warning("kernla: cached %s does not load; rebuilding", so_path.name)
                elif so_path.exists() or sum_path.exists():
                    log.warning("kernla: cached %s is corrupt or incomplete; rebuilding", so_path.name)
                if lib is None:
                    if lock.locked:  # without the lock, os.replace alone swaps the bad entry out
                        _unlink(sum_path, so_path)
                    _build(source, compiler, cmd_flags, folder, key)
                    try:
                        lib = ctypes.CDLL(str(so_path))
                    except OSError as exc:
                        raise CompileError(f"compiled library {so_path} does not load: {exc}",
                                           command=[compiler, *cmd_flags], source=source) from exc
        _module_memo[memo_key] = lib
        return lib


def _try_load(path: Path) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(str(path))
    except OSError as exc:
        log.debug("kernla: loading %s failed: %s", path, exc)
        return None
