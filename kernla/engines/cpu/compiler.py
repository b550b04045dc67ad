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

A source with a line starting with :data:`PRELUDE_END` has a *prelude*, the text above that line
(standard headers and fixed helpers): with gcc it is compiled once into a precompiled header
``kl_pch_<key>.gch`` (keyed like a library, over the prelude instead of the source) and every
later source with the same prelude is compiled against it, which skips parsing the headers
(about a third of a small kernel's compile). A precompiled header is code the compiler loads, so
it obeys the libraries' rules: it is used only when it is a regular file of the user's that no
one else can write, matching its ``.sha256`` sidecar, checked on the very file the compiler reads
(a hard link in the private build folder); anything else is rebuilt, and one the compiler rejects
is rebuilt the next time (the kernel then compiles from the prelude's text, with the same result).
A prelude that names the macro ``KL_PRELUDE_LINKED`` also has an out-of-line part, the code it keeps
for ``#if !defined(KL_PRELUDE_LINKED)``: that part is compiled once (``-DKL_PRELUDE_OBJECT``) into an
object ``kl_pch_<key>.o`` beside the header, under the same rules, and its kernels are compiled with
``-DKL_PRELUDE_LINKED`` (declarations only) and linked with that object, so code that does not depend
on the kernel is optimised once instead of in every kernel; a kernel compiled from its whole text
defines neither macro and keeps its own copy.

Environment:
    ``CXX``              compiler to use (else ``g++``, else ``clang++``)
    ``KERNLA_CXXFLAGS``  replaces the optimisation flags (``-shared -fPIC`` are always added)
    ``KERNLA_CACHE_DIR`` cache folder
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

from ..._version import __version__
from ...errors import BackendError, KernlaError

__all__ = [
    "CompileError",
    "CompilerUnavailableError",
    "UnsafeCacheDirError",
    "DEFAULT_FLAGS",
    "PRELUDE_END",
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

#: a source line starting with this ends its prelude, the text compiled once into a precompiled header
PRELUDE_END = "// kernla: end of the prelude"

_COMPILE_TIMEOUT_S = 600
_STALE_TMP_S = 24 * 3600
_PREFIX = "kl_"


class CompilerUnavailableError(BackendError):
    """No working C++ compiler (or no usable cache folder): the compiled CPU engine cannot run.

    A :class:`kernla.errors.BackendError` (so a ``RuntimeError``): callers fall back to the NumPy engine.
    """


class UnsafeCacheDirError(CompilerUnavailableError):
    """The cache folder exists but belongs to another user or is not a folder."""


class CompileError(KernlaError, RuntimeError):
    """The compiler rejected a source. ``stderr``, ``command`` and ``source`` hold the details."""

    def __init__(self, message: str, *, stderr: str = "", command: list[str] | None = None, source: str = ""):
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
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
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
                "set KERNLA_CACHE_DIR to a folder of your own"
            )
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
#: descriptors of the loaded libraries (kept open: see _load_verified)
_loaded_fds: list[int] = []
#: one lock per cache key: a thread needing one kernel never waits behind another kernel's build
_key_locks: dict[str, threading.Lock] = {}
#: process groups of compilers running now, killed if the interpreter exits first
_running: set[int] = set()
#: seconds to wait for another process's build of the same kernel before giving up
LOCK_TIMEOUT_S = float(os.environ.get("KERNLA_LOCK_TIMEOUT", 2 * _COMPILE_TIMEOUT_S))
#: errno values that mean "the cache folder cannot hold more": the engine falls back, it does not fail
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class CacheFullError(CompilerUnavailableError):
    """The cache folder is full (or read-only): compiled kernels cannot be stored."""


class CacheLockTimeout(CompilerUnavailableError):
    """Another process held the build lock of a kernel for longer than :data:`LOCK_TIMEOUT_S`."""


def _owned_fd(name: str, dir_fd: int, regular: bool = True) -> int | None:
    """An fd on ``name`` in the folder ``dir_fd`` if it is ours: not a link, owned by us, writable by no one else.

    The checks run on the opened file (``fstat``), so what is checked is what is read or loaded.
    Returns None when the entry is missing; raises :class:`_Untrusted` when it is not ours.
    """
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if regular else os.O_DIRECTORY), dir_fd=dir_fd
        )
    except FileNotFoundError:
        return None
    except OSError as exc:  # a link (ELOOP), a folder in place of a file, ...
        raise _Untrusted(f"{name} cannot be opened safely ({exc.strerror})") from None
    st = os.fstat(fd)
    problem = _not_ours(st, regular)
    if problem:
        os.close(fd)
        raise _Untrusted(f"{name} {problem}")
    return fd


def _not_ours(st: os.stat_result, regular: bool = True) -> str:
    """Why a file or folder with status ``st`` may hold code we did not build ('' when it is ours)."""
    if regular and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"belongs to another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return ""


class _Untrusted(Exception):
    """A cache entry that is not certainly ours: never loaded, replaced by a fresh build."""


def _read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _checked_fd(dir_fd: int, so_name: str) -> int | None:
    """A descriptor on the cached library ``so_name`` if it is ours and matches its checksum sidecar, else None.

    Ownership and permissions (:func:`_owned_fd`) decide trust; the checksum detects corruption.
    The bytes are hashed through the descriptor returned, so what was checked is what gets loaded.
    """
    so_fd = sum_fd = None
    try:
        so_fd = _owned_fd(so_name, dir_fd)
        sum_fd = _owned_fd(so_name + ".sha256", dir_fd)
        if so_fd is None or sum_fd is None:
            if so_fd is not None or sum_fd is not None:
                log.warning("kernla: cached %s is incomplete; rebuilding", so_name)
            return None
        expected = _read_fd(sum_fd).decode("ascii", "replace").strip()
        if not expected or hashlib.sha256(_read_fd(so_fd)).hexdigest() != expected:
            log.warning("kernla: cached %s is corrupt or incomplete; rebuilding", so_name)
            return None
        so_fd, checked = None, so_fd
        return checked
    except _Untrusted as exc:
        warnings.warn(f"kernla: not loading the cached kernel {exc}; rebuilding it", RuntimeWarning, stacklevel=5)
        return None
    finally:
        for fd in (so_fd, sum_fd):
            if fd is not None:
                os.close(fd)


def _load_verified(dir_fd: int, folder: Path, so_name: str) -> ctypes.CDLL | None:
    """Load the cached library ``so_name`` if :func:`_checked_fd` accepts it, else None.

    The library is loaded through ``/proc/self/fd/N``, the descriptor that was checked, so no other
    file can be swapped in between the check and the load. That descriptor stays open for the
    life of the process: the dynamic loader recognises libraries by name, and a reused number
    would make it hand back an earlier library. Where ``/proc`` is missing the library is loaded
    by name from the folder, which only its owner can write.
    """
    fd = _checked_fd(dir_fd, so_name)
    if fd is None:
        return None
    proc_path = f"/proc/self/fd/{fd}"
    via_fd = os.path.exists(proc_path)
    try:
        lib = ctypes.CDLL(proc_path if via_fd else str(folder / so_name))
    except OSError as exc:
        log.warning("kernla: cached %s does not load (%s); rebuilding", so_name, exc)
        via_fd = False
        lib = None
    if via_fd:
        _loaded_fds.append(fd)
    else:
        os.close(fd)
    return lib


def _verified(so_path: Path, sum_path: Path) -> bool:
    """Whether ``so_path`` (with its sidecar ``sum_path``) would be loaded from the cache as it is."""
    if sum_path.name != so_path.name + ".sha256" or sum_path.parent != so_path.parent:
        return False
    try:
        dir_fd = _open_folder(so_path.parent)
    except CompilerUnavailableError:
        return False
    try:
        fd = _checked_fd(dir_fd, so_path.name)
    finally:
        os.close(dir_fd)
    if fd is None:
        return False
    os.close(fd)
    return True


class _FileLock:
    """Advisory inter-process lock (flock) on one cache key, with a timeout and stale-holder recovery.

    The holder writes its pid into the lock file. A waiter that sees the holder dead (its lock
    is then already free) or stopped (``SIGSTOP``: it would hold the lock forever) takes over by
    replacing the lock file with a new one; after :data:`LOCK_TIMEOUT_S` it raises
    :class:`CacheLockTimeout`. Where ``flock`` does not exist the lock is a no-op (builds are
    atomic anyway; only duplicate work is lost).
    """

    def __init__(self, path: Path, timeout: float | None = None):
        self.path = path
        self.timeout = LOCK_TIMEOUT_S if timeout is None else timeout
        self.fd: int | None = None
        self.locked = False

    def __enter__(self) -> _FileLock:
        try:
            import fcntl  # POSIX only: the lock degrades to none elsewhere
        except ImportError:
            return self
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError:
                return self  # no lock file possible (full disk, ...): build without it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_fd(fd).decode("ascii", "replace").strip()
                os.close(fd)
                if _stale(holder):
                    log.warning(
                        "kernla: lock %s is held by a stopped process (%s); taking it over", self.path.name, holder
                    )
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                    continue
                if time.monotonic() > deadline:
                    raise CacheLockTimeout(
                        f"kernla waited {self.timeout:.0f} s for another process (pid {holder or '?'}) to finish "
                        f"compiling the same kernel (lock {self.path}); set KERNLA_LOCK_TIMEOUT to wait longer, "
                        "or end that process"
                    ) from None
                time.sleep(0.05)
                continue
            except OSError:
                os.close(fd)
                return self
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self.fd, self.locked = fd, True
            return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
            self.locked = False


def _stale(holder: str) -> bool:
    """Whether the process ``holder`` (a pid) is gone or stopped, so that its lock will never be released."""
    if not holder.isdigit():
        return False
    try:
        with open(f"/proc/{holder}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc, or a pid we cannot see: assume it is working
        return False
    return state in ("T", "t", "Z", "X")


def _remove_stale_tmp(folder: Path) -> None:
    now = time.time()
    try:
        for entry in folder.iterdir():
            if entry.name.startswith(".tmp-") and now - entry.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(entry, ignore_errors=True)
    except OSError:  # pragma: no cover
        pass


def _run_compiler(cmd: list[str], cwd: Path, source: str) -> subprocess.CompletedProcess:
    """Run the compiler in its own process group; the whole group dies on a timeout, an interrupt or exit."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _running.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=_COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CompileError(
            f"compiler timed out after {_COMPILE_TIMEOUT_S} s: {' '.join(cmd)}", command=cmd, source=source
        ) from None
    except BaseException:  # KeyboardInterrupt, SystemExit: no compiler outlives its caller
        _kill_group(proc)
        raise
    finally:
        _running.discard(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=10)


@atexit.register
def _kill_running() -> None:
    for pgid in list(_running):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _clear_entry(folder: Path, name: str) -> None:
    """Remove whatever stands at ``folder/name`` (a file, a link or a folder put there by mistake)."""
    path = folder / name
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _build(source: str, compiler: str, cmd_flags: tuple[str, ...], folder: Path, key: str) -> None:
    """Compile ``source`` and install ``kl_<key>.so`` + its sidecar atomically in ``folder``."""
    _remove_stale_tmp(folder)
    stem = _PREFIX + key
    src_name, so_name = stem + ".cpp", stem + ".so"
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        try:
            (tmp / src_name).write_text(source, encoding="utf-8")
            # relative names, run inside the temporary folder: the output does not depend on it
            cmd = [compiler, *cmd_flags, "-o", so_name, src_name]
            pch = _with_prelude(source, compiler, cmd_flags, folder, tmp, stem)
            proc = _compile(pch or cmd, tmp, source, compiler)
            if pch and (proc.returncode != 0 or "-Winvalid-pch" in proc.stderr):
                _drop_rejected_pch(proc, source, compiler, cmd_flags, folder)
                if proc.returncode != 0:  # compiled again without it: the messages are the source's own
                    proc = _compile(cmd, tmp, source, compiler)
            if proc.returncode != 0 or not (tmp / so_name).is_file():
                stderr = (proc.stderr or "") + (proc.stdout or "")
                if "No space left on device" in stderr or "Disk quota exceeded" in stderr:
                    raise CacheFullError(f"kernla's cache folder {folder} is full: {stderr.strip()[-300:]}")
                raise CompileError(
                    f"C++ compilation failed (exit status {proc.returncode}): {' '.join(cmd)}\n{stderr.strip()}",
                    stderr=stderr,
                    command=cmd,
                    source=source,
                )
            _write_sidecar(tmp, so_name)
            # library first, then the sidecar that marks it complete, then the source (for humans)
            _install(
                tmp, folder, [(so_name, so_name), (so_name + ".sha256", so_name + ".sha256"), (src_name, src_name)]
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        if exc.errno in _FULL:
            raise CacheFullError(f"kernla cannot store compiled kernels in {folder}: {exc}") from exc
        raise


def _compile(cmd: list[str], tmp: Path, source: str, compiler: str) -> subprocess.CompletedProcess:
    """Run one compiler command in ``tmp`` (OSError: the compiler cannot run, or the folder is full)."""
    log.debug("kernla: compiling %s", " ".join(cmd))
    t0 = time.perf_counter()
    try:
        proc = _run_compiler(cmd, tmp, source)
    except OSError as exc:
        if exc.errno in _FULL:
            raise
        raise CompilerUnavailableError(f"cannot run the compiler {compiler}: {exc}") from exc
    log.debug("kernla: compiled in %.2f s (exit status %d)", time.perf_counter() - t0, proc.returncode)
    return proc


def _write_sidecar(tmp: Path, name: str) -> None:
    """Write ``tmp/name``'s checksum sidecar ``tmp/name.sha256`` (integrity, not origin)."""
    with open(tmp / name, "rb") as fh:
        digest = _sha256_fd(fh.fileno())
    (tmp / (name + ".sha256")).write_text(f"{digest}\n", encoding="ascii")


def _clear_with_sidecar(folder: Path, name: str) -> None:
    """Remove the cache entry ``name`` and its sidecar, the sidecar first (a bad entry goes before a new one comes)."""
    for entry in (name + ".sha256", name):
        _clear_entry(folder, entry)


def _install(tmp: Path, folder: Path, names: list[tuple[str, str]]) -> None:
    """Move each ``tmp/src`` to ``folder/dst`` atomically, in order."""
    for src, dst in names:
        if (folder / dst).is_dir():  # an entry replaced by a folder: os.replace cannot go over it
            _clear_entry(folder, dst)
        os.replace(tmp / src, folder / dst)


# --------------------------------------------------------------------------------------
# precompiled preludes (gcc)
# --------------------------------------------------------------------------------------

#: the prelude's name in a build folder (its precompiled header beside it, ``kl_prelude.h.gch``)
_PRELUDE_H = "kl_prelude.h"
#: a prelude naming this macro has an out-of-line part, compiled once into an object its kernels link
_LINKED = "KL_PRELUDE_LINKED"
#: the macro defined while that object is compiled
_OBJECT = "KL_PRELUDE_OBJECT"
#: the object's name in a build folder
_PRELUDE_O = "kl_prelude.o"
#: digests of precompiled headers already checked in this process, by (device, inode, size, mtime)
_pch_digests: dict[tuple[int, int, int, int], str] = {}


def _split_prelude(source: str) -> tuple[str, str]:
    """(the prelude, the rest) of ``source``; ('', source) when it has no :data:`PRELUDE_END` line."""
    at = source.find("\n" + PRELUDE_END) + 1
    return (source[:at], source[at:]) if at else ("", source)


def _pch_name(prelude: str, compiler: str, cmd_flags: tuple[str, ...]) -> str:
    key = _cache_key("precompiled prelude\0" + prelude, compiler, _compiler_version(compiler) or "", cmd_flags)
    return f"{_PREFIX}pch_{key}.gch"


def _prelude_files(prelude: str, name: str) -> list[tuple[str, str]]:
    """(name in the cache, name in the build folder) of what ``prelude`` compiles into: the precompiled
    header ``name``, then the object of its out-of-line part if it has one."""
    files = [(name, _PRELUDE_H + ".gch")]
    if _LINKED in prelude:
        files.append((name.removesuffix(".gch") + ".o", _PRELUDE_O))
    return files


def _with_prelude(
    source: str, compiler: str, cmd_flags: tuple[str, ...], folder: Path, tmp: Path, stem: str
) -> list[str] | None:
    """The command compiling ``source`` against its precompiled prelude, set up in ``tmp``; None without one.

    Only for gcc (another compiler's precompiled headers differ); a prelude that does not
    precompile leaves the source to compile whole (its messages are then the usual ones).
    """
    prelude, rest = _split_prelude(source)
    if not prelude or "Free Software Foundation" not in (_compiler_version(compiler) or ""):
        return None
    (tmp / _PRELUDE_H).write_text(prelude, encoding="utf-8")  # the fallback gcc reads: ours, never the cache's
    files = _prelude_files(prelude, _pch_name(prelude, compiler, cmd_flags))
    dir_fd = _open_folder(folder)
    try:
        if not _link_checked_pch(dir_fd, folder, files, tmp):
            with _FileLock(folder / f".lock-{files[0][0]}"):
                if not _link_checked_pch(dir_fd, folder, files, tmp) and not _build_pch(
                    prelude, compiler, cmd_flags, folder, files, tmp
                ):
                    return None
    finally:
        os.close(dir_fd)
    body = stem + ".body.cpp"  # line numbers (and the file's name) as in the whole source
    (tmp / body).write_text(f'#line {prelude.count(chr(10)) + 1} "{stem}.cpp"\n{rest}', encoding="utf-8")
    linked = [f"-D{_LINKED}"] if len(files) > 1 else []
    cmd = [compiler, *cmd_flags, *linked, "-Winvalid-pch", "-include", _PRELUDE_H, "-o", stem + ".so", body]
    return cmd + [local for _, local in files[1:]]


def _link_checked_pch(dir_fd: int, folder: Path, files: list[tuple[str, str]], tmp: Path) -> bool:
    """Whether the cached precompiled header and object ``files`` (:func:`_prelude_files`) are ours and intact,
    each hard-linked (or copied) into ``tmp``.

    The checks run on the files in ``tmp``, the private folder the compiler reads them from, so no other
    file can be swapped in after them; a link planted in the cache is linked as a link, and refused.
    """
    targets = [tmp / local for _, local in files]
    for target in targets:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
    if all(_checked_link(dir_fd, folder, name, target) for (name, _), target in zip(files, targets)):
        return True
    for target in targets:  # nothing refused stays where the compiler would use it
        with contextlib.suppress(FileNotFoundError):  # (or write through it: a planted link would be
            target.unlink()  # followed by the compiler's output)
    return False


def _checked_link(dir_fd: int, folder: Path, name: str, target: Path) -> bool:
    """:func:`_link_checked_pch`'s link (or copy) and checks, on ``target``."""
    tmp_fd = fd = sum_fd = None
    try:
        sum_fd = _owned_fd(name + ".sha256", dir_fd)
        if sum_fd is None:
            return False
        try:
            os.link(folder / name, target, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError:  # no hard links here (or not to that file): a copy of the checked bytes
            src_fd = _owned_fd(name, dir_fd)
            if src_fd is None:
                return False
            dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(src_fd, "rb") as src, os.fdopen(dst_fd, "wb") as dst:
                shutil.copyfileobj(src, dst)
        tmp_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = _owned_fd(target.name, tmp_fd)
        expected = _read_fd(sum_fd).decode("ascii", "replace").strip()
        if fd is None or not expected or _pch_digest(fd) != expected:
            log.warning("kernla: cached precompiled header %s is corrupt or incomplete; rebuilding", name)
            return False
        return True
    except _Untrusted as exc:
        warnings.warn(
            f"kernla: not using the cached precompiled header {exc}; rebuilding it", RuntimeWarning, stacklevel=2
        )
        return False
    finally:
        for f in (tmp_fd, fd, sum_fd):
            if f is not None:
                os.close(f)


def _pch_digest(fd: int) -> str:
    """SHA-256 of the file open as ``fd``, hashed once per process for one unchanged file."""
    st = os.fstat(fd)
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _pch_digests.get(ident)
    if digest is None:
        digest = _pch_digests[ident] = _sha256_fd(fd)
    return digest


def _sha256_fd(fd: int) -> str:
    """SHA-256 of what ``fd`` reads from its start, in chunks (a precompiled header is tens of MB)."""
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 22, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def _build_pch(
    prelude: str, compiler: str, cmd_flags: tuple[str, ...], folder: Path, files: list[tuple[str, str]], tmp: Path
) -> bool:
    """Precompile ``tmp``'s prelude beside it (and compile its out-of-line part into an object) and install a
    copy of each of ``files`` in ``folder``; False if one fails to build."""
    for name, _ in files:
        _clear_with_sidecar(folder, name)
    linked = [f"-D{_LINKED}"] if len(files) > 1 else []
    cmds = [[compiler, *cmd_flags, *linked, "-x", "c++-header", _PRELUDE_H, "-o", files[0][1]]]
    cmds += [
        [compiler, *cmd_flags, f"-D{_OBJECT}", "-c", "-x", "c++", _PRELUDE_H, "-o", local] for _, local in files[1:]
    ]
    for cmd, (_, local) in zip(cmds, files):
        proc = _compile(cmd, tmp, prelude, compiler)
        if proc.returncode != 0 or not (tmp / local).is_file():
            log.debug("kernla: the prelude does not compile (%s):\n%s", local, proc.stderr)
            return False
    for name, local in files:
        os.chmod(tmp / local, 0o600)  # whatever the umask: a file others can write would never be used
        try:
            os.link(tmp / local, tmp / name)
        except OSError:  # no hard links here
            shutil.copyfile(tmp / local, tmp / name)
        _write_sidecar(tmp, name)
    # the object first: a header is only used with its object beside it
    _install(tmp, folder, [(n, n) for name, _ in reversed(files) for n in (name, name + ".sha256")])
    return True


def _drop_rejected_pch(
    proc: subprocess.CompletedProcess, source: str, compiler: str, cmd_flags: tuple[str, ...], folder: Path
) -> None:
    """Forget a precompiled header gcc did not use (or failed on), and its object: the next build makes new ones."""
    prelude = _split_prelude(source)[0]
    files = _prelude_files(prelude, _pch_name(prelude, compiler, cmd_flags))
    log.warning("kernla: the compiler rejected the precompiled header %s; rebuilding it next time", files[0][0])
    log.debug("kernla: %s", proc.stderr)
    for name, _ in files:
        _clear_with_sidecar(folder, name)


def compile_module(source: str, *, flags: tuple[str, ...] | None = None) -> ctypes.CDLL:
    """Compile a C++ translation unit (exporting ``extern "C"`` functions) and load it.

    ``flags`` replaces the optimisation flags (default :data:`DEFAULT_FLAGS`, or
    ``$KERNLA_CXXFLAGS`` when set); ``-shared -fPIC`` are always added. The first call for a
    source compiles it (a few tenths of a second for a small kernel); later calls in the same
    process return the same library object at once, and later processes load it from the
    disk cache without compiling. Only libraries that are regular files owned by the user, in a
    folder of the user's that no one else can write, are ever loaded; anything else in their
    place is rebuilt (with a warning).

    Raises :class:`CompilerUnavailableError` when no compiler works (:class:`CacheFullError`
    when the cache folder is full, :class:`CacheLockTimeout` when another process holds the
    kernel's build lock too long) and :class:`CompileError` (whose ``stderr`` holds the
    compiler's messages) when the source does not compile.

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
    compiler = find_compiler()
    if compiler is None:
        raise CompilerUnavailableError(
            "kernla's compiled CPU engine needs a C++ compiler: none of $CXX, g++, clang++ "
            "runs on this machine (install g++ or set CXX)"
        )
    version = _compiler_version(compiler) or ""
    cmd_flags = _optimisation_flags(flags) + REQUIRED_FLAGS
    key = _cache_key(source, compiler, version, cmd_flags)
    with _memo_lock:
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # one build per kernel within a process; other processes: the file lock
        lib = _module_memo.get(memo_key)
        if lib is None:
            lib = _load_or_build(source, compiler, cmd_flags, key)
            _module_memo[memo_key] = lib
        return lib


def _open_folder(folder: Path) -> int:
    """An fd on the cache folder, checked on the opened folder itself (ours, writable by no one else)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise CompilerUnavailableError(f"kernla cannot open its cache folder {folder}: {exc}") from exc
    problem = _not_ours(os.fstat(fd), regular=False)
    if problem:
        os.close(fd)
        raise UnsafeCacheDirError(f"kernla's cache folder {folder} {problem}; set KERNLA_CACHE_DIR to a private folder")
    return fd


def _load_or_build(source: str, compiler: str, cmd_flags: tuple[str, ...], key: str) -> ctypes.CDLL:
    folder = cache_dir()
    so_name = f"{_PREFIX}{key}.so"
    dir_fd = _open_folder(folder)
    try:
        lib = _load_verified(dir_fd, folder, so_name)
        if lib is not None:
            return lib
        with _FileLock(folder / f".lock-{key}"):
            lib = _load_verified(dir_fd, folder, so_name)  # someone may have built it while we waited
            if lib is not None:
                return lib
            _clear_with_sidecar(folder, so_name)
            _build(source, compiler, cmd_flags, folder, key)
            lib = _load_verified(dir_fd, folder, so_name)
            if lib is None:
                raise CompileError(
                    f"compiled library {folder / so_name} does not load", command=[compiler, *cmd_flags], source=source
                )
            return lib
    finally:
        os.close(dir_fd)
