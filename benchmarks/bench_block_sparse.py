"""Block-sparse Gaussian products K b with a certified truncation error, side by side.

Peers in the same run, on the same points (uniform in the unit square), the same b, and the same
guarantee ``‖K b − K_t b‖_∞ ≤ eps · ‖b‖_1`` (every dropped pair has ``k ≤ eps``):

- kernla dense: the full N² reduction (above ``--dense-max`` points: timed on a slice of rows and
  scaled to all of them, marked ``~``);
- kernla truncated: ``kernla.linalg.truncation.truncate`` (grids, bounding boxes, exact block test)
  and a ``KernelOperator(..., truncate=...)`` product where this kernla has one;
- pykeops: its own helpers (``grid_cluster``, ``sort_clusters``, ``cluster_ranges_centroids``, a dense
  centroid-distance test ``d_c < r + 2√D·h`` for cells of side h, ``from_matrix``), its CPU backend;
- scipy: ``cKDTree.sparse_distance_matrix`` within the cutoff radius, then a CSR product.

Errors are measured against an exact float64 NumPy product on ``--rows`` random rows, divided by
``eps · ‖b‖_1`` (the certified bound: at most 1). ``--moonshot`` adds the clustering of 1e7 points
(unit square σ = 0.002, unit cube σ = 0.01, eps = 1e-6): time, pairs kept and the ideal count
``N² · P(|x − y| < r)`` (the exact distance law of the unit square / cube), with the product when
kernla has ``truncate=`` and ``--moonshot-product`` is given (``--dtype``: its points and b in float64
or float32; the certificate is on the given points, the engine's rounding is measured beside it).
``--moonshot-n 1e6`` runs the same problems at fewer points with σ scaled by ``(1e7 / n)^(1/D)``, so
that each point has as many neighbours within the cutoff radius and each cell as many points as at
1e7 (a quick extrapolation: about a tenth of the pairs). The box may be shared: the moonshot reports
wall seconds beside process CPU seconds (``getrusage`` of the process and its children, all
threads) and the load average, and a quiet-box estimate ``clustering CPU + operator CPU + product
CPU / threads``.

Run: ``python benchmarks/bench_block_sparse.py [--sizes 1e5 1e6] [--moonshot] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import resource
import time
from collections.abc import Callable

import numpy as np
from _common import add_json_option, machine, optional, table, write_json

from kernla import Vi, Vj
from kernla.linalg import KernelOperator
from kernla.linalg.truncation import cutoff_radius, profile, truncate

EPS = 1e-6
FORMULA = "Exp(-G * SqDist(X, Y))"


def ball_fraction(r: float, dim: int) -> float:
    """P(|x − y| < r) for x, y uniform in the unit square (dim 2) or cube (dim 3), r ≤ 1."""
    if dim == 2:
        return math.pi * r**2 - 8 / 3 * r**3 + r**4 / 2
    return 4 * math.pi / 3 * r**3 - 1.5 * math.pi * r**4 + 1.6 * r**5 - r**6 / 6


def exact_rows(x: np.ndarray, b: np.ndarray, rows: np.ndarray, sigma: float) -> np.ndarray:
    """The float64 product's entries at ``rows``, a few rows at a time (at most ~2e7 pairs in memory)."""
    out = np.empty(len(rows))
    x, b = x.astype(np.float64), b.astype(np.float64)
    step = max(1, min(16, 20_000_000 // len(x)))
    for k0 in range(0, len(rows), step):
        sel = rows[k0 : k0 + step]
        d2 = ((x[sel, None, :] - x[None, :, :]) ** 2).sum(-1)
        out[k0 : k0 + step] = np.exp(-d2 / (2 * sigma**2)) @ b
    return out


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and its children, user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def clocked(fn: Callable[[], object]) -> tuple[object, float, float]:
    """``fn()``, its wall seconds and its CPU seconds."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, cpu_seconds() - c0


def has_truncate() -> bool:
    return "truncate" in inspect.signature(KernelOperator.__init__).parameters


def kernla_op(x: np.ndarray, y: np.ndarray, sigma: float, truncation=None) -> KernelOperator:
    extra = {} if truncation is None else {"truncate": truncation}
    return KernelOperator(FORMULA, X=Vi(x), Y=Vj(y), G=1 / (2 * sigma**2), **extra)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def row(method, n, pairs, prep, product, total, err, note=""):
    return [method, f"{n:.0e}", pairs, prep, product, total, err, note]


def bench_dense(x, b, sigma, rows, ref, bound, dense_max):
    n = len(x)
    if n <= dense_max:
        out, dt = timed(lambda: kernla_op(x, x, sigma) @ b)
        err = np.abs(out[rows] - ref).max() / bound
        return row("kernla dense", n, f"{n * n:.2e}", 0.0, dt, dt, f"{err:.1e}")
    size = max(len(rows), dense_max**2 // (10 * n))
    part = np.sort(np.random.default_rng(1).choice(n, size=size, replace=False))
    part = np.union1d(part, rows)
    out, dt = timed(lambda: kernla_op(x[part], x, sigma) @ b)
    err = np.abs(out[np.searchsorted(part, rows)] - ref).max() / bound
    scaled = dt * n / len(part)
    return row("kernla dense", n, f"{n * n:.2e}", 0.0, f"~{scaled:.0f}", f"~{scaled:.0f}", f"{err:.1e}", "rows slice")


def bench_truncated(x, b, sigma, rows, ref, bound):
    n = len(x)
    t, prep = timed(lambda: truncate(x, sigma=sigma, eps=EPS))
    pairs = f"{t.info.pairs_kept:.2e}"
    if not has_truncate():
        return row("kernla truncated", n, pairs, prep, "-", "-", "-", "no truncate= in this kernla")
    op = kernla_op(x, x, sigma, t)
    out, dt = timed(lambda: op @ b)
    err = np.abs(out[rows] - ref).max() / bound
    return row("kernla truncated", n, pairs, prep, dt, prep + dt, f"{err:.1e}")


def bench_pykeops(x, b, sigma, rows, ref, bound, radius, max_clusters, max_pairs):
    n, dim = x.shape
    pk = optional("pykeops.numpy")
    if pk is None:
        return row("pykeops ranges", n, "-", "-", "-", "-", "-", "pykeops not installed")
    from pykeops.numpy.cluster import (  # optional peer
        cluster_ranges_centroids,
        from_matrix,
        grid_cluster,
        sort_clusters,
    )

    h = max(radius / 4, max_clusters ** (-1 / dim))  # the dense C×C centroid test caps C

    def prepare():
        lab = grid_cluster(x, h)
        ranges, centroids, _ = cluster_ranges_centroids(x, lab)
        (xs, order), _ = sort_clusters((x, np.arange(n)), lab)
        d2 = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
        keep = d2 < (radius + 2 * math.sqrt(dim) * h) ** 2
        return xs, order, from_matrix(ranges, ranges, keep)

    (xs, order, ranges), prep = timed(prepare)
    r_i, s_i, red_j = ranges[:3]
    owner = np.repeat(np.arange(len(r_i)), np.diff(np.concatenate([[0], s_i])))
    pairs = int(((red_j[:, 1] - red_j[:, 0]) * (r_i[owner, 1] - r_i[owner, 0])).sum())
    note = f"{len(r_i)} cells, h={h:.2g}"
    if pairs > max_pairs:
        return row(
            "pykeops ranges", n, f"{pairs:.2e}", prep, "-", "-", "-", note + ": product skipped (--pykeops-max-pairs)"
        )
    try:
        X, Y = pk.LazyTensor(xs[:, None, :]), pk.LazyTensor(xs[None, :, :])
        K = (-((X - Y) ** 2).sum(-1) / (2 * sigma**2)).exp()
        K.ranges = ranges
        K @ b[order][:, None]  # compile (cached after the first run)
        out_sorted, dt = timed(lambda: K @ b[order][:, None])
    except Exception as exc:  # pykeops compiles at run time: any failure there means "not available here"
        return row("pykeops ranges", n, "-", "-", "-", "-", "-", f"failed: {type(exc).__name__}")
    out = np.empty(n)
    out[order] = np.asarray(out_sorted).ravel()
    err = np.abs(out[rows] - ref).max() / bound
    return row("pykeops ranges", n, f"{pairs:.2e}", prep, dt, prep + dt, f"{err:.1e}", note)


def bench_scipy(x, b, sigma, rows, ref, bound, radius):
    n = len(x)
    spatial, sparse = optional("scipy.spatial"), optional("scipy.sparse")

    def prepare():
        tree = spatial.cKDTree(x)
        pairs = tree.sparse_distance_matrix(tree, radius, output_type="ndarray")
        values = np.exp(-(pairs["v"] ** 2) / (2 * sigma**2))
        return sparse.csr_matrix((values, (pairs["i"], pairs["j"])), shape=(n, n))

    S, prep = timed(prepare)
    out, dt = timed(lambda: S @ b)
    err = np.abs(out[rows] - ref).max() / bound
    return row("scipy cKDTree", n, f"{S.nnz:.2e}", prep, dt, prep + dt, f"{err:.1e}")


def side_by_side(sizes, n_rows, dense_max, neighbours, pykeops_max_pairs):
    rows_out = []
    for n in sizes:
        rng = np.random.default_rng(n)
        x = rng.uniform(size=(n, 2))
        b = rng.normal(size=n)
        # σ so that each point has about `neighbours` points within the cutoff radius
        sigma = math.sqrt(neighbours / (math.pi * n)) / math.sqrt(2 * math.log(1 / EPS))
        radius = cutoff_radius(profile("gaussian", sigma), EPS, sigma)
        rows = np.sort(rng.choice(n, size=n_rows, replace=False))
        ref = exact_rows(x, b, rows, sigma)
        bound = EPS * np.abs(b).sum()
        rows_out.append(bench_dense(x, b, sigma, rows, ref, bound, dense_max))
        rows_out.append(bench_truncated(x, b, sigma, rows, ref, bound))
        rows_out.append(bench_pykeops(x, b, sigma, rows, ref, bound, radius, 6000, pykeops_max_pairs))
        rows_out.append(bench_scipy(x, b, sigma, rows, ref, bound, radius))
        ideal = n * n * ball_fraction(radius, 2)
        rows_out.append(row("ideal (pairs with k > eps)", n, f"{ideal:.2e}", "", "", "", "", f"sigma={sigma:.2g}"))
    headers = ["method", "N", "pairs", "prep s", "product s", "total s", "max err / (eps |b|_1)", "note"]
    print(table(headers, rows_out, "Gaussian K b, unit square, eps = 1e-6"))


def moonshot(with_product: bool, n: int, dims: list[int], dtype: str, n_rows: int):
    threads = os.cpu_count() or 1
    rows_out = []
    for dim in dims:
        sigma = {2: 0.002, 3: 0.01}[dim] * (1e7 / n) ** (1 / dim)  # neighbours and cell occupancy of 1e7
        rng = np.random.default_rng(dim)
        x = rng.uniform(size=(n, dim))
        t, wall, cpu = clocked(lambda: truncate(x, sigma=sigma, eps=EPS))
        ideal = n * n * ball_fraction(t.info.radius, dim)
        build = product = err = "-"
        estimate = cpu
        if with_product and has_truncate():
            xd, b = x.astype(dtype), rng.normal(size=n).astype(dtype)
            op, w_op, c_op = clocked(lambda: kernla_op(xd, xd, sigma, t))
            out, w_p, c_p = clocked(lambda: op @ b)
            rows = np.sort(rng.choice(n, size=n_rows, replace=False))
            ref = exact_rows(xd, b, rows, sigma)
            worst = np.abs(np.asarray(out, np.float64)[rows] - ref).max()
            err = f"{worst / (EPS * np.abs(b.astype(np.float64)).sum()):.1e}"
            build, product = f"{w_op:.1f} / {c_op:.1f}", f"{w_p:.1f} / {c_p:.1f}"
            estimate = cpu + c_op + c_p / threads
        rows_out.append(
            [
                f"{dim}-D, sigma={sigma:.3g}",
                f"{n:.0e}",
                f"{wall:.1f} / {cpu:.1f}",
                f"{t.info.pairs_kept:.3e}",
                f"{ideal:.3e}",
                f"{t.info.pairs_kept / ideal:.2f}",
                f"{t.info.blocks_kept:.2e}",
                f"{t.info.clusters[0]}",
                build,
                product,
                round(estimate, 1),
                err,
                f"{os.getloadavg()[0]:.1f}",
            ]
        )
    headers = [
        "problem",
        "N",
        "clustering wall / CPU s",
        "pairs kept",
        "ideal",
        "kept/ideal",
        "blocks",
        "cells",
        "operator wall / CPU s",
        f"product ({dtype}) wall / CPU s",
        "quiet-box estimate s",
        "max err / (eps |b|_1)",
        "load",
    ]
    print(table(headers, rows_out, f"Moonshot: eps = 1e-6, {dtype} product, {threads} threads"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="*", default=[1e5, 1e6])
    p.add_argument("--rows", type=int, default=200, help="rows checked against the exact product")
    p.add_argument("--dense-max", type=float, default=3e4, help="above this, dense is timed on a slice of rows")
    p.add_argument("--pykeops-max-pairs", type=float, default=3e8, help="skip pykeops' product beyond this")
    p.add_argument("--neighbours", type=float, default=64, help="points within the cutoff radius of each point")
    p.add_argument("--moonshot", action="store_true")
    p.add_argument("--moonshot-product", action="store_true")
    p.add_argument("--moonshot-n", type=float, default=1e7, help="points of the moonshot problems (σ scaled)")
    p.add_argument("--moonshot-dims", type=int, nargs="*", default=[2, 3], choices=[2, 3])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="of the moonshot's product")
    add_json_option(p)
    args = p.parse_args()
    print(machine())
    if args.sizes:
        side_by_side(
            [int(s) for s in args.sizes], args.rows, int(args.dense_max), args.neighbours, args.pykeops_max_pairs
        )
    if args.moonshot:
        moonshot(args.moonshot_product, int(args.moonshot_n), args.moonshot_dims, args.dtype, min(args.rows, 20))
    plots = [{"table": 0, "x": "N", "y": "total s", "series": "method", "title": "block-sparse Gaussian K b"}]
    write_json(args.json, plots if args.sizes else [])


if __name__ == "__main__":
    main()
