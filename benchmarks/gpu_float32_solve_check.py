"""GPU check: float32 solves stop at their rounding floor instead of running to maxiter.

On a GPU, KernelOperator.solve keeps float32 products (float64 CG vectors): the true residual
then has a floor of about 1e-7·cond(K + αI). Block CG computes the true residual every 10
iterations inside its own products and stops a column whose true residual has stalled there,
returning its best iterate with a ConvergenceWarning that names the floor. This script runs the
Gaussian kernel ridge system of bench_solve.py (2-D, σ = 0.1, α = 1e-2, tol 1e-6) with torch-CUDA
float32 data — plain CG and Nyström-PCG — and float64 for comparison, printing iterations, time,
residuals and the warnings (which must point at this file, not at kernla or torch).

    python benchmarks/gpu_float32_solve_check.py [--n 50000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50000)
    args = p.parse_args()
    import torch

    import kernla
    from kernla.linalg import ConvergenceWarning

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    print(torch.cuda.get_device_name(0))
    rng = np.random.default_rng(0)
    n = args.n
    x = rng.uniform(size=(n, 2))
    b = np.sin(6 * x[:, 0]) * np.cos(4 * x[:, 1]) + 0.1 * rng.standard_normal(n)
    K64 = kernla.kernels.gaussian(torch.tensor(x, device="cuda"), sigma=0.1)
    b64 = torch.tensor(b, device="cuda")
    for dtype in (torch.float32, torch.float64):
        K = kernla.kernels.gaussian(torch.tensor(x, device="cuda", dtype=dtype), sigma=0.1)
        bt = b64.to(dtype)
        K @ bt  # compile / load
        for precond in (None, "nystrom"):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                a, info = K.solve(bt, alpha=1e-2, precond=precond, rank=250 if precond else None, return_info=True)
            torch.cuda.synchronize()
            el = time.perf_counter() - t0
            true = ((K64 @ a.double() + 1e-2 * a.double() - b64).norm() / b64.norm()).item()
            print(
                f"{str(dtype):14s} {str(precond):8s} iterations {info.iterations:5d} products "
                f"{info.kernel_products:5d} time {el:7.3f} s converged {info.converged} "
                f"info residual {info.residual_norms.max():.3g} float64 residual {true:.3g} "
                f"stalled {bool(info.column_stalled is not None and info.column_stalled.any())} "
                f"out {a.dtype} {a.device}"
            )
            for w in caught:
                if issubclass(w.category, ConvergenceWarning):
                    here = w.filename == __file__
                    print(f"    warning ({'points here' if here else 'points at ' + w.filename}): {w.message}")


if __name__ == "__main__":
    main()
