"""Kernel ridge systems ``(K + alpha I) a = b``: kernla plain CG, kernla Nyström-PCG, pykeops
KernelSolve and a dense scipy solve, side by side in one table per run.

The system: N points uniform in [0, 1]², Gaussian kernel exp(-|x-y|²/(2σ²)) with σ = 0.1,
alpha = 1e-2, b = sin(6 x₁) cos(4 x₂) + 0.1·noise, float64. Reported per method: CG iterations,
kernel products (each one kernla reduction over all N² pairs), set-up time (Nyström landmarks,
dense matrix), solve time, total, and the true relative residual ‖(K + αI) a − b‖ / ‖b‖
(computed afterwards with one more kernla product, outside the timings).

Plain CG can need hundreds of products: a method whose products would not fit in ``--budget``
seconds is stopped at the iteration count that fits (and marked as not converged); the dense
solve runs only where the N×N matrix fits in memory.

    python benchmarks/bench_solve.py                        # N = 5000 and 50000
    python benchmarks/bench_solve.py --sizes 5000 --tol 1e-10
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, optional, table  # noqa: E402

import kernla  # noqa: E402
from kernla.engines import resolve_backend  # noqa: E402
from kernla.linalg import ConvergenceWarning, Nystrom  # noqa: E402

SIGMA, ALPHA = 0.1, 1e-2


def problem(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2))
    b = np.sin(6 * x[:, 0]) * np.cos(4 * x[:, 1]) + 0.1 * rng.standard_normal(n)
    return x, b


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 8 << 30


def residual(K, a, b) -> float:
    return float(np.linalg.norm(K @ a + ALPHA * a - b) / np.linalg.norm(b))


def run_cg(K, b, precond, tol, maxiter):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, info = K.solve(b, alpha=ALPHA, tol=tol, maxiter=maxiter, precond=precond, return_info=True)
    total = time.perf_counter() - t0
    return a, info, total


def bench(n: int, args) -> tuple[str, dict]:
    x, b = problem(n)
    K = kernla.kernels.gaussian(x, sigma=SIGMA, backend=args.backend)
    K @ b  # warm-up (a compiled engine builds or loads its kernel here)
    t0 = time.perf_counter()
    K @ b
    t_prod = time.perf_counter() - t0
    fits = max(1, int(args.budget / max(t_prod, 1e-9)))
    rows, figures = [], {"product_s": t_prod}

    # kernla, plain CG
    maxiter = min(fits, 10 * n)
    a, info, total = run_cg(K, b, None, args.tol, maxiter)
    note = "" if info.converged else f"stopped: {maxiter} its fit the {args.budget:g} s budget"
    rows.append(["kernla CG", info.iterations, info.kernel_products, 0.0, info.time, total, residual(K, a, b),
                 info.converged, note])
    figures["plain"] = info

    # kernla, Nyström-preconditioned CG
    pc = Nystrom(rank=args.rank, landmarks=args.landmarks, seed=0)
    a, info, total = run_cg(K, b, pc, args.tol, min(fits, 10 * n))
    rows.append([f"kernla Nyström-PCG (rank {args.rank}, {args.landmarks})", info.iterations, info.kernel_products,
                 total - info.time, info.time, total, residual(K, a, b), info.converged, ""])
    figures["nystrom"] = info

    # pykeops
    pk = optional("pykeops.numpy")
    if pk is None:
        rows.append(["pykeops KernelSolve", "-", "-", "-", "-", "-", "-", "-", "not installed"])
    else:
        g = np.array([1 / (2 * SIGMA ** 2)])
        formula, aliases = "Exp(-G * SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(1)", "G = Pm(1)"]
        Kinv = pk.KernelSolve(formula, aliases, "B", axis=1)
        Kinv(x[:50], x[:50], b[:50, None], g, alpha=ALPHA, eps=args.tol)  # compiles (or loads) its kernel
        prod = pk.Genred(formula, aliases, reduction_op="Sum", axis=1)
        t0 = time.perf_counter()
        prod(x, x, b[:, None], g)
        t_pk = time.perf_counter() - t0
        # pykeops' CG has no iteration limit: estimate it from plain CG's product count
        estimate = t_pk * figures["plain"].kernel_products
        if not figures["plain"].converged or estimate > args.budget:
            rows.append(["pykeops KernelSolve", "-", "-", "-", "-", "-", "-", "-",
                         f"skipped: ~{estimate:.0f}+ s ({t_pk:.3g} s per product) > budget"])
        else:
            t0 = time.perf_counter()
            a = Kinv(x, x, b[:, None], g, alpha=ALPHA, eps=args.tol)[:, 0]
            total = time.perf_counter() - t0
            rows.append(["pykeops KernelSolve", "-", f"({t_pk:.3g} s each)", 0.0, total, total, residual(K, a, b),
                         "-", "no iteration count exposed"])

    # scipy dense Cholesky solve
    need = 2 * n * n * 8
    if need > total_memory() // 2:
        rows.append(["scipy dense solve", "-", "-", "-", "-", "-", "-", "-",
                     f"N×N matrix needs {need / 2**30:.0f} GiB"])
    else:
        t0 = time.perf_counter()
        A = K.to_dense(force=True)
        A[np.diag_indices(n)] += ALPHA
        t_setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        a = scipy.linalg.solve(A, b, assume_a="pos", overwrite_a=True)
        t_solve = time.perf_counter() - t1
        del A
        rows.append(["scipy dense solve (Cholesky)", "-", "-", t_setup, t_solve, t_setup + t_solve,
                     residual(K, a, b), True, ""])
    headers = ["method", "iterations", "kernel products", "setup s", "solve s", "total s", "rel. residual",
               "converged", "note"]
    title = (f"N = {n}, 2-D, Gaussian σ = {SIGMA}, alpha = {ALPHA}, tol = {args.tol:g}, "
             f"engine {resolve_backend(args.backend, False)}, one product {t_prod:.3g} s")
    return table(headers, rows, title), figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--tol", type=float, default=1e-6, help="relative residual per column (default 1e-6)")
    p.add_argument("--rank", type=int, default=250, help="Nyström rank (default 250)")
    p.add_argument("--landmarks", choices=["pivoted", "random"], default="pivoted")
    p.add_argument("--budget", type=float, default=600.0,
                   help="seconds of kernel products allowed per method and size (default 600)")
    p.add_argument("--backend", default=None, help="kernla engine (default: automatic)")
    args = p.parse_args()
    print(f"# bench_solve — {machine()}")
    for n in args.sizes:
        text, fig = bench(n, args)
        print(text)
        plain, nys = fig["plain"], fig["nystrom"]
        if plain.converged and nys.converged:
            ratio = plain.kernel_products / max(nys.kernel_products, 1)
            verdict = "met" if ratio >= 10 else "NOT met"
            print(f"\nNyström target (>= 10x fewer kernel products than plain CG): {verdict} — "
                  f"{plain.kernel_products} vs {nys.kernel_products} products ({ratio:.0f}x)")
        else:
            print(f"\nNyström vs plain CG: {plain.kernel_products} vs {nys.kernel_products} products "
                  f"(plain CG {'converged' if plain.converged else 'stopped by the time budget'})")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
