"""Kernel ridge systems ``(K + alpha I) a = b``: kernla plain CG, kernla Nyström-PCG, pykeops
KernelSolve and a dense scipy solve, side by side — one table for all sizes.

The system: N points uniform in [0, 1]², Gaussian kernel exp(-|x-y|²/(2σ²)) with σ = 0.1,
alpha = 1e-2, b = sin(6 x₁) cos(4 x₂) + 0.1·noise, float64. Reported per method: CG iterations,
kernel products (each one reduction over all N² pairs), the time of one product (kernla's or
pykeops'; medians, with host BLAS on one thread as inside kernla's solvers), set-up time (Nyström
landmarks, dense matrix), solve time, total, the number of timed runs, and the true relative
residual ‖(K + αI) a − b‖ / ‖b‖ (computed afterwards with one more kernla product, outside the
timings).

Times are medians (``_common.measure``) for methods whose single run takes under ``--repeat-below``
seconds (5 by default: Nyström-PCG, the small dense solve, products); longer ones (plain CG,
pykeops) run once. A method whose products would not fit in ``--budget`` seconds is stopped at the
iteration count that fits (plain CG, marked as not converged) or skipped with its estimated time
(pykeops, whose CG has no iteration limit, estimated from plain CG's product count); the dense
solve runs only where the N×N matrix fits in half the memory and its estimated time in the budget.

    python benchmarks/bench_solve.py                        # N = 5000 and 50000: about 7 min
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
from _common import add_json_option, machine, measure, optional, plot, table, write_json  # noqa: E402

import kernla  # noqa: E402
from kernla.engines import resolve_backend  # noqa: E402
from kernla.linalg import ConvergenceWarning, Nystrom  # noqa: E402
from kernla.linalg._compute import blas_single_thread  # noqa: E402

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


def run_cg(K, b, precond, tol, maxiter, repeat_below):
    """(a, info, total seconds, runs): one solve, repeated for a median when it is quick."""

    def once():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return K.solve(b, alpha=ALPHA, tol=tol, maxiter=maxiter, precond=precond, return_info=True)

    t0 = time.perf_counter()
    a, info = once()
    total = time.perf_counter() - t0
    if total >= repeat_below:
        return a, info, total, 1, info.time
    solves = []  # CG time of every run, for its median too

    def again():
        solves.append(once()[1].time)

    t = measure(again, repeat=5, warmup=0, budget=4 * repeat_below)
    return a, info, t.wall, t.runs, float(np.median(solves))


def dense_rate() -> float:
    """Flop rate of this machine's Cholesky solve (from a 1500×1500 one)."""
    m = 1500
    A = np.random.default_rng(1).standard_normal((m, m))
    A = A @ A.T + m * np.eye(m)
    t = measure(lambda: scipy.linalg.solve(A, np.ones(m), assume_a="pos"), repeat=3, budget=5)
    return (m**3 / 3) / t.wall


def bench(n: int, args) -> tuple[list, dict]:
    x, b = problem(n)
    K = kernla.kernels.gaussian(x, sigma=SIGMA, backend=args.backend)
    with blas_single_thread(args.backend, False):  # as inside the solvers (see kernla/linalg/_compute.py)
        t_prod = measure(lambda: K @ b, repeat=5, warmup=1, budget=args.repeat_below).wall
    fits = max(1, int(args.budget / max(t_prod, 1e-9)))
    rows, figures = [], {"product_s": t_prod}

    def row(
        method,
        its="-",
        products="-",
        per_product="-",
        setup="-",
        solve="-",
        total="-",
        runs="-",
        resid="-",
        converged="-",
        note="",
    ):
        rows.append([n, method, its, products, per_product, setup, solve, total, runs, resid, converged, note])

    # kernla, plain CG
    maxiter = min(fits, 10 * n)
    a, info, total, runs, cg = run_cg(K, b, None, args.tol, maxiter, args.repeat_below)
    note = "" if info.converged else f"stopped: {maxiter} its fit the {args.budget:g} s budget"
    row(
        "kernla CG",
        info.iterations,
        info.kernel_products,
        t_prod,
        0.0,
        cg,
        total,
        runs,
        residual(K, a, b),
        info.converged,
        note,
    )
    figures["plain"] = info

    # kernla, Nyström-preconditioned CG
    pc = Nystrom(rank=args.rank, landmarks=args.landmarks, seed=0)
    a, info, total, runs, cg = run_cg(K, b, pc, args.tol, min(fits, 10 * n), args.repeat_below)
    row(
        f"kernla Nyström-PCG (rank {args.rank}, {args.landmarks})",
        info.iterations,
        info.kernel_products,
        t_prod,
        total - cg,
        cg,
        total,
        runs,
        residual(K, a, b),
        info.converged,
    )
    figures["nystrom"] = info

    # pykeops
    pk = optional("pykeops.numpy")
    if pk is None:
        row("pykeops KernelSolve", note="not installed")
    else:
        g = np.array([1 / (2 * SIGMA**2)])
        formula, aliases = "Exp(-G * SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(1)", "G = Pm(1)"]
        Kinv = pk.KernelSolve(formula, aliases, "B", axis=1)
        Kinv(x[:50], x[:50], b[:50, None], g, alpha=ALPHA, eps=args.tol)  # compiles (or loads) its kernel
        prod = pk.Genred(formula, aliases, reduction_op="Sum", axis=1)
        with blas_single_thread(args.backend, False):
            t_pk = measure(lambda: prod(x, x, b[:, None], g), repeat=5, warmup=1, budget=args.repeat_below).wall
        # pykeops' CG has no iteration limit: estimate it from plain CG's product count
        estimate = t_pk * figures["plain"].kernel_products
        if not figures["plain"].converged or estimate > args.budget:
            row(
                "pykeops KernelSolve",
                per_product=t_pk,
                note=f"skipped: ~{estimate:.0f}+ s ({figures['plain'].kernel_products}+ products) > budget",
            )
        else:
            t0 = time.perf_counter()
            a = Kinv(x, x, b[:, None], g, alpha=ALPHA, eps=args.tol)[:, 0]
            total = time.perf_counter() - t0
            row(
                "pykeops KernelSolve",
                per_product=t_pk,
                setup=0.0,
                solve=total,
                total=total,
                runs=1,
                resid=residual(K, a, b),
                note="no iteration count exposed",
            )

    # scipy dense Cholesky solve
    need = 2 * n * n * 8
    estimate = (n**3 / 3) / args.dense_rate + n * n * 2e-8
    if need > total_memory() // 2:
        row("scipy dense solve (Cholesky)", note=f"N×N matrix needs {need / 2**30:.0f} GiB")
    elif estimate > args.budget:
        row("scipy dense solve (Cholesky)", note=f"skipped: ~{estimate:.0f} s > budget")
    else:
        parts = {}

        def dense():
            t0 = time.perf_counter()
            A = K.to_dense(force=True)
            A[np.diag_indices(n)] += ALPHA
            t1 = time.perf_counter()
            parts["a"] = scipy.linalg.solve(A, b, assume_a="pos", overwrite_a=True)
            parts.setdefault("setup", []).append(t1 - t0)
            parts.setdefault("solve", []).append(time.perf_counter() - t1)

        t0 = time.perf_counter()
        dense()
        if time.perf_counter() - t0 < args.repeat_below:
            measure(dense, repeat=4, warmup=0, budget=4 * args.repeat_below)
        setup, solve = float(np.median(parts["setup"])), float(np.median(parts["solve"]))
        row(
            "scipy dense solve (Cholesky)",
            setup=setup,
            solve=solve,
            total=setup + solve,
            runs=len(parts["solve"]),
            resid=residual(K, parts["a"], b),
            converged=True,
        )
    return rows, figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--tol", type=float, default=1e-6, help="relative residual per column (default 1e-6)")
    p.add_argument("--rank", type=int, default=250, help="Nyström rank (default 250)")
    p.add_argument("--landmarks", choices=["pivoted", "random"], default="pivoted")
    p.add_argument("--budget", type=float, default=200.0, help="seconds allowed per method and size (default 200)")
    p.add_argument(
        "--repeat-below",
        type=float,
        default=5.0,
        help="repeat a method for a median when one run takes less than this (seconds, default 5)",
    )
    p.add_argument("--backend", default=None, help="kernla engine (default: automatic)")
    add_json_option(p)
    args = p.parse_args()
    start = time.perf_counter()
    args.dense_rate = dense_rate()
    rows, verdicts = [], []
    for n in args.sizes:
        r, fig = bench(n, args)
        rows += r
        plain, nys = fig["plain"], fig["nystrom"]
        ratio = plain.kernel_products / max(nys.kernel_products, 1)
        if plain.converged and nys.converged:
            verdicts.append(
                f"N = {n}: Nyström target (>= 10x fewer kernel products than plain CG) "
                f"{'met' if ratio >= 10 else 'NOT met'} — {plain.kernel_products} vs "
                f"{nys.kernel_products} products ({ratio:.0f}x)"
            )
        else:
            verdicts.append(
                f"N = {n}: {plain.kernel_products} vs {nys.kernel_products} products (plain CG "
                f"{'converged' if plain.converged else 'stopped by the time budget'}, Nyström "
                f"{'converged' if nys.converged else 'did not converge'})"
            )
    headers = [
        "N",
        "method",
        "iterations",
        "kernel products",
        "s per product",
        "setup s",
        "solve s",
        "total s",
        "runs",
        "rel. residual",
        "converged",
        "note",
    ]
    title = (
        f"bench_solve — {machine()}; 2-D, Gaussian σ = {SIGMA}, alpha = {ALPHA}, tol = {args.tol:g}, "
        f"float64, engine {resolve_backend(args.backend, False)}; times: medians over 'runs'"
    )
    print(table(headers, rows, title))
    print()
    for v in verdicts:
        print(v)
    print(f"\n(whole run: {time.perf_counter() - start:.0f} s)")
    spec = plot(
        0,
        "N",
        "total s",
        "kernel ridge solve, float64",
        series="method",
        skip_if={"converged": False},
        xlabel="N (points)",
        ylabel="seconds to the tolerance (set-up + solve, median)",
    )
    write_json(args.json, [spec])


if __name__ == "__main__":
    main()
