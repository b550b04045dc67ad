"""Strong scaling of kernla.distributed on this machine: 1 vs 2 Dask worker processes, same problem.

For a Gaussian kernel (float64, D = 3) on N points: the median time of one product K @ v, its
rate in pairs per second, and the time and communication volume of one block-CG iteration
(measured: bytes the workers sent, to each other and to the client, from Dask's own counters;
computed: the vectors the client sends with the tasks), and the busiest worker's CPU time per
product, which says what the wall time would be on otherwise idle cores. Each worker is one process with one
thread (Dask sets OMP_NUM_THREADS=1), so "2 workers" is 2 cores; the single-process row is the
plain KernelOperator using both cores through OpenMP.

A second table times one evaluation of a Gaussian process's BBMM marginal likelihood and
gradient (what one Adam step of ``GaussianProcessRegressor(method="iterative")`` costs: pivoted
Cholesky of rank r, block CG/Lanczos on [y, probes], the gradient's pair sums) in one process and
through ``client=`` on 1 and 2 workers (``--gp-n 0`` skips it).

    python benchmarks/bench_distributed.py                # N = 20000 and 40000, about 4 minutes
    python benchmarks/bench_distributed.py --n 10000 --iterations 5 --gp-n 5000
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from _common import measure
from distributed import Client, LocalCluster

from kernla import kernels
from kernla.distributed import distribute
from kernla.linalg import ConvergenceWarning
from kernla.models import gp_kernels as gk
from kernla.models.gp_cluster import ClusterProducts
from kernla.models.gp_evidence import LocalProducts, iterative_evidence


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def worker_cpu(client: Client) -> dict[str, float]:
    return client.run(time.process_time)


def product_cpu(D, v: np.ndarray, repeat: int) -> float:
    """The busiest worker's process CPU seconds per product (what the time would be on free cores)."""
    before = worker_cpu(D.client)
    for _ in range(repeat):
        D @ v
    after = worker_cpu(D.client)
    return max(after[w] - before.get(w, 0.0) for w in after) / repeat


def sent_by_workers(client: Client) -> int:
    return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())


def cg_iteration(D, b: np.ndarray, iterations: int) -> tuple[float, float]:
    """(seconds, bytes sent by the workers) per CG iteration over ``iterations`` forced iterations."""
    before = sent_by_workers(D.client)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, info = D.solve(b, alpha=1e-2, tol=1e-30, maxiter=iterations, return_info=True)
    seconds = time.perf_counter() - t0
    return seconds / info.iterations, (sent_by_workers(D.client) - before) / info.kernel_products


def row(
    label: str,
    n: int,
    workers: int,
    product: float,
    cpu: float,
    base: tuple | None,
    it: float,
    sent: float,
    client_mb: float,
):
    speedup = f"{base[0] / product:.2f}× (CPU {base[1] / cpu:.2f}×)" if base else "—"
    print(
        f"| {label} | {n:,} | {workers} | {product * 1e3:.0f} ms | {cpu * 1e3:.0f} ms | {n * n / product / 1e9:.2f} | "
        f"{speedup} | {it * 1e3:.0f} ms | {sent / 1e6:.2f} MB + {client_mb:.2f} MB |"
    )


def gp_table(n: int, clusters: dict[int, Client], rank: int = 50, probes: int = 8) -> None:
    """One BBMM evidence evaluation (value and gradient), here and on the clusters, with the same seed."""
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(n, 3))
    Y = (np.sin(6 * X[:, :1]) + 0.1 * rng.normal(size=(n, 1))).astype(np.float64)
    kernel = gk.ConstantKernel(1.0) * gk.RBF([0.2, 0.3, 0.4]) + gk.WhiteKernel(0.01)
    print(f"\nGP evidence and gradient (ARD RBF + white noise, D = 3, rank {rank}, {probes} probes), {load()}\n")
    print("| where | N | wall | client CPU | busiest worker's CPU | CG iterations | kernel products | LML |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    places = {"one process": None, **{f"{w} worker(s)": c for w, c in clusters.items()}}
    for label, client in places.items():
        products = LocalProducts(X) if client is None else ClusterProducts(client, X)
        if client is not None:
            products.operator(kernel)  # the points placed once, before the timing (as a fit does)
        before = worker_cpu(client) if client is not None else {}
        w0, c0 = time.perf_counter(), time.process_time()
        ev = iterative_evidence(kernel, X, Y, 0.0, num_probes=probes, rank=rank, products=products)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        busiest = "—"
        if client is not None:
            after = worker_cpu(client)
            busiest = f"{max(after[w] - before.get(w, 0.0) for w in after):.2f} s"
        print(
            f"| {label} | {n:,} | {wall:.2f} s | {cpu:.2f} s | {busiest} | {ev.info['cg_iterations']} | "
            f"{ev.info['kernel_products']} | {ev.value:.10g} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="*", default=[20000, 40000])
    parser.add_argument("--iterations", type=int, default=10, help="CG iterations timed per configuration")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gp-n", type=int, default=5000, help="points of the GP evidence table (0: none)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores ({os.uname().machine}); start: {load()}\n")
    print(
        "| configuration | N | workers | K @ v (wall) | busiest worker's CPU | G pairs/s (wall) | "
        "speed-up vs 1 worker: wall (CPU) | CG iteration | sent per iteration (workers + client) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    data = {n: rng.uniform(size=(n, 3)) for n in args.n}
    clusters = {
        w: Client(LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0"))
        for w in (1, 2)
    }
    try:
        for n, x in data.items():
            K = kernels.gaussian(x, sigma=0.1)
            v = rng.normal(size=n)
            timing = measure(lambda: K @ v, repeat=args.repeat)
            local = timing.wall
            print(
                f"| single process (OpenMP, 2 threads) | {n:,} | — | {local * 1e3:.0f} ms | "
                f"{timing.cpu * 1e3:.0f} ms (process) | {n * n / local / 1e9:.2f} | — | — | — |"
            )
            base = None
            for workers, partitioned in ((1, False), (2, False), (2, True)):
                client = clusters[workers]
                D = distribute(K, client, broadcast_bytes=0 if partitioned else None)
                product = measure(lambda: D @ v, repeat=args.repeat).wall
                cpu = product_cpu(D, v, args.repeat)
                base = (product, cpu) if workers == 1 else base
                it, sent = cg_iteration(D, v, args.iterations)
                # the vectors the client sends with the tasks per product: once (broadcast) or per worker chain
                client_mb = n * 8 * (workers if partitioned else 1) / 1e6
                label = f"distributed, columns {'partitioned' if partitioned else 'broadcast'}"
                row(label, n, workers, product, cpu, base, it, sent, client_mb)
        if args.gp_n:
            gp_table(args.gp_n, clusters)
    finally:
        for c in clusters.values():
            c.close()
            c.cluster.close()
    print(f"\nend: {load()}")


if __name__ == "__main__":
    main()
