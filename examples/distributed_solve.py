"""Kernel ridge regression solved on a Dask cluster: the points in blocks on the workers, CG on the client.

Runs as is on a LocalCluster of worker processes on this machine::

    python examples/distributed_solve.py                      # 2 worker processes, N = 20000
    python examples/distributed_solve.py --workers 4 --n 100000

Against a real cluster: start a scheduler and workers (one process per node or per socket; a
worker's OpenMP threads are its ``--nthreads``; Dask sets OMP_NUM_THREADS to 1 unless told)::

    dask scheduler                                            # on the head node: tcp://HEAD:8786
    OMP_NUM_THREADS=32 dask worker tcp://HEAD:8786 --nworkers 1 --nthreads 1 --memory-limit 200GB
    python examples/distributed_solve.py --scheduler tcp://HEAD:8786 --n 10000000

On multi-GPU nodes, one worker per GPU with dask-cuda (``pip install dask-cuda``), the blocks kept
as CuPy arrays on each GPU::

    dask cuda worker tcp://HEAD:8786                          # on each GPU node: one worker per GPU
    python examples/distributed_solve.py --scheduler tcp://HEAD:8786 --device cuda --n 100000000
    python examples/distributed_solve.py --cuda-local --device cuda   # LocalCUDACluster on this node

The Dask dashboard (printed below; http://HEAD:8787 on a real cluster) shows the kernla tasks
(``kernla-matvec-…``, ``kernla-step-…``) as they run; ``--verbose`` adds kernla's CG progress bar.
Writes ``distributed_solve.png`` (the data, the fitted function, the CG residuals) next to this script
(or into ``$KERNLA_FIGURES``, or ``--out``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import figure_path, scaled
from distributed import Client, LocalCluster

from kernla import kernels
from kernla.distributed import distribute
from kernla.linalg import Nystrom


def cluster_client(args: argparse.Namespace) -> Client:
    if args.scheduler:
        return Client(args.scheduler)
    if args.cuda_local:
        from dask_cuda import LocalCUDACluster  # optional dependency: only for --cuda-local

        return Client(LocalCUDACluster())
    return Client(LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=scaled(20000), help="number of points (default 20000)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    parser.add_argument("--cuda-local", action="store_true", help="a dask-cuda LocalCUDACluster (one worker per GPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the workers compute")
    parser.add_argument("--partitioned", action="store_true", help="stream the columns instead of one copy per worker")
    parser.add_argument("--check", type=int, default=5000, help="compare with a single-process solve up to this N")
    parser.add_argument("--verbose", action="store_true", help="kernla's progress bar for the solve")
    parser.add_argument("--out", default=None, help="PNG file to write")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.n, 2))
    y = np.sin(6 * x[:, 0]) * np.cos(4 * x[:, 1]) + 0.1 * rng.normal(size=args.n)
    K = kernels.gaussian(x, sigma=0.05)

    with cluster_client(args) as client:
        print(f"cluster: {len(client.scheduler_info()['workers'])} workers, dashboard {client.dashboard_link}")
        t0 = time.perf_counter()
        D = distribute(K, client, device=args.device, broadcast_bytes=0 if args.partitioned else None)
        print(f"{D}\nplaced in {time.perf_counter() - t0:.2f} s; rows per worker now: {D.held_rows()}")
        t0 = time.perf_counter()
        # random landmarks: one batch of column products (pivoted ones would be one round trip per pivot)
        precond = Nystrom(rank=200, landmarks="random", seed=0)
        a, info = D.solve(y, alpha=0.1, precond=precond, tol=1e-8, return_info=True, verbose=args.verbose)
        print(
            f"solve: {info.iterations} CG iterations, {info.kernel_products} distributed products, "
            f"{time.perf_counter() - t0:.2f} s, relative residual {info.residual_norms.max():.2e}"
        )
        fit = D @ a
        print(f"training RMSE {np.sqrt(np.mean((fit - y) ** 2)):.4f} (noise level 0.1)")
        if args.n <= args.check:
            ref = K.solve(y, alpha=0.1, precond=precond, tol=1e-8)
            print(f"largest difference from the single-process solve: {np.abs(a - ref).max():.2e}")
        workers = len(client.scheduler_info()["workers"])
    figure(figure_path("distributed_solve.png", args.out), x, y, a, info, workers)


def figure(path, x, y, a, info, workers: int) -> None:
    """The noisy data, the fitted function on a grid (a local kernla product) and the CG residual history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = np.linspace(0, 1, 120)
    grid = np.stack(np.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
    fit = (kernels.gaussian(grid, x, sigma=0.05) @ a).reshape(120, 120)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    shown = np.random.default_rng(1).choice(len(x), size=min(len(x), 3000), replace=False)
    sc = axes[0].scatter(x[shown, 0], x[shown, 1], c=y[shown], s=4, cmap="viridis")
    axes[0].set_title(f"noisy data ({len(shown)} of {len(x)} shown)")
    axes[1].imshow(fit, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", clim=sc.get_clim())
    axes[1].set_title("kernel ridge regression fit")
    for ax in axes[:2]:
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        ax.set_aspect("equal")
    fig.colorbar(sc, ax=axes[:2], shrink=0.85, label="y")
    axes[2].semilogy(np.asarray(info.history).max(axis=-1) if np.ndim(info.history) > 1 else info.history, ".-")
    axes[2].set_xlabel("CG iteration")
    axes[2].set_ylabel("relative residual ‖b − A x‖ / ‖b‖")
    axes[2].set_title(f"conjugate gradients with {workers} Dask workers")
    fig.suptitle(f"Kernel ridge regression, N = {len(x)}, solved on a Dask cluster")
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
