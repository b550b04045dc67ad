"""GPU check of kernla.linalg: KernelOperator, solve and eigsh with torch-CUDA and CuPy data.

Correctness against the same operator on host data (N = 3000), then timings of a Gaussian kernel
ridge system (2-D, σ = 0.1, α = 1e-2, tol 1e-6) at N = 50000 on the GPU: one product, Nyström-PCG
and plain CG. Prints what it could not run (no CUDA, no CuPy) instead of failing.

    python benchmarks/gpu_linalg_check.py [--n 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import host  # noqa: E402

from kernla import KernelSolve, kernels
from kernla.linalg import ConvergenceWarning


def sync():
    try:
        import cupy

        cupy.cuda.runtime.deviceSynchronize()
    except Exception:  # no CuPy: torch-only synchronisation below
        pass
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except Exception:
        pass


def makers():
    out = {}
    try:
        import torch

        if torch.cuda.is_available():
            out["torch-cuda"] = lambda a: torch.tensor(a, device="cuda")
        else:
            print("torch: no CUDA device")
    except ImportError:
        print("torch: not installed")
    try:
        import cupy

        cupy.zeros(1)
        out["cupy"] = cupy.asarray
    except Exception as err:
        print(f"cupy: unavailable ({type(err).__name__}: {err})")
    return out


def check(name, to_dev, n=3000):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 2))
    b = np.sin(6 * x[:, :1]) * np.cos(4 * x[:, 1:]) + 0.1 * rng.standard_normal((n, 1))
    Kh = kernels.gaussian(x, sigma=0.1, backend="cpu")
    Kd = kernels.gaussian(to_dev(x), sigma=0.1)
    bd = to_dev(b)
    ok = True

    def report(what, err, tol):
        nonlocal ok
        good = err <= tol
        ok &= good
        print(f"  {name:<11} {what:<34} {'ok ' if good else 'BAD'} {err:.2e}")

    out = Kd @ bd
    assert type(out) is type(bd), (type(out), type(bd))
    report("K @ b vs host", np.abs(host(out) - Kh @ b).max() / np.abs(Kh @ b).max(), 1e-12)
    report("K.T @ b vs host", np.abs(host(Kd.T @ bd) - Kh.T @ b).max() / np.abs(Kh @ b).max(), 1e-12)
    report("K @ numpy b (host result)", np.abs((Kd @ b) - Kh @ b).max() / np.abs(Kh @ b).max(), 1e-12)
    report("diag", np.abs(host(Kd.diag()) - 1).max(), 1e-14)
    for pc in (None, "nystrom", "jacobi"):
        a, info = Kd.solve(bd, alpha=1e-2, precond=pc, tol=1e-8, return_info=True)
        assert type(a) is type(bd)
        a = host(a)
        res = np.linalg.norm(Kh @ a + 1e-2 * a - b) / np.linalg.norm(b)
        report(f"solve precond={pc} ({info.iterations} its)", res, 1e-7)
    w_d, v_d = Kd.eigsh(k=4)
    w_h = Kh.eigsh(k=4, return_eigenvectors=False)
    report("eigsh vs host", np.abs(host(w_d) - w_h).max() / w_h.max(), 1e-9)
    Kinv = KernelSolve("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(1)", "G = Pm(1)"], "B")
    a = Kinv(to_dev(x), to_dev(x), bd, to_dev(np.array([50.0])), alpha=1e-2, precond="nystrom")
    a = host(a)
    report("KernelSolve nystrom", np.linalg.norm(Kh @ a + 1e-2 * a - b) / np.linalg.norm(b), 1e-9)
    return ok


def timings(name, to_dev, n, dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(n, 2)).astype(dtype)
    b = (np.sin(6 * x[:, :1]) * np.cos(4 * x[:, 1:]) + 0.1 * rng.standard_normal((n, 1))).astype(dtype)
    K = kernels.gaussian(to_dev(x), sigma=0.1)
    bd = to_dev(b)
    K @ bd
    sync()
    t0 = time.perf_counter()
    for _ in range(5):
        K @ bd
    sync()
    t_prod = (time.perf_counter() - t0) / 5
    print(
        f"  {name} {np.dtype(dtype).name} N={n}: one product {t_prod * 1e3:.2f} ms "
        f"({n * n / t_prod / 1e9:.0f} G pairs/s)"
    )
    for pc, maxiter in (("nystrom", 200), (None, 3000)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sync()
            t0 = time.perf_counter()
            a, info = K.solve(
                bd, alpha=1e-2, tol=1e-6, precond=pc, rank=250 if pc else None, maxiter=maxiter, return_info=True
            )
            sync()
            total = time.perf_counter() - t0
        print(
            f"    precond={str(pc):<8} {info.iterations:>5} its {info.kernel_products:>5} products "
            f"{total:8.2f} s  residual {info.residual_norms.max():.1e}  converged={info.converged}"
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50000)
    args = p.parse_args()
    devs = makers()
    if not devs:
        print("no GPU array library available: nothing to check")
        return
    ok = True
    for name, to_dev in devs.items():
        try:
            ok &= check(name, to_dev)
        except Exception:
            ok = False
            print("\n".join(traceback.format_exc().splitlines()[-10:]))
    print("correctness:", "all ok" if ok else "FAILURES")
    name, to_dev = next(iter(devs.items()))
    for dtype in (np.float32, np.float64):
        try:
            timings(name, to_dev, args.n, dtype)
        except Exception:
            print("\n".join(traceback.format_exc().splitlines()[-10:]))


if __name__ == "__main__":
    main()
