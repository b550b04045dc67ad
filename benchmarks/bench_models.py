"""kernla.models against their peers: neighbours, RBF interpolation, Gaussian processes — one run, three tables.

- **k nearest neighbours** (k = 10, D = 16, float32, uniform data): kernla ``NearestNeighbors``
  against scikit-learn's brute force and faiss-cpu's exact ``IndexFlatL2``; the share of
  identical neighbour lists against scikit-learn's.
- **thin-plate-spline interpolation** in 2-D (scipy's default kernel and degree, smoothing 0,
  y = sin(6x₁)cos(4x₂)): kernla ``KernelInterpolation`` (projected CG, two-level
  preconditioner) against scipy's ``RBFInterpolator`` (dense LU) where it fits; CG iterations,
  the whole system's relative residual, and the largest prediction difference relative to
  max |f| at 1000 new points; kernla's CPU time (both cores: up to 2× the wall time) beside its
  wall time. Beyond, kernla alone: N = 2·10⁴ and 10⁵ (scipy's dense matrix would need 80 GB there).
- **Gaussian-process regression** (Gaussian kernel σ = 0.2, noise 1e-2, 2-D): kernla against
  scikit-learn's ``GaussianProcessRegressor(optimizer=None)``: fit, posterior mean at 1000
  points and std at 200; the largest mean and std differences.

Every timing is one run (wall clock, seconds) after a warm-up of the compiled kernels on small
data. A peer is skipped (marked "—") where its dense N×N matrix or its O(N³) time would not
fit this machine in 10 minutes.

    python benchmarks/bench_models.py            # about 10 minutes on 2 quiet cores (N = 10⁵: 3-4)
    python benchmarks/bench_models.py --quick    # smaller sizes, a smoke test
    python benchmarks/bench_models.py --json benchmarks/results/bench_models.json   # also the tables, for the plots
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_json_option, machine, optional, plot, table, write_json  # noqa: E402

from kernla.models import GaussianProcessRegressor, KernelInterpolation, NearestNeighbors  # noqa: E402

sk_neighbors = optional("sklearn.neighbors")
sk_gp = optional("sklearn.gaussian_process")
faiss = optional("faiss")
scipy_interpolate = optional("scipy.interpolate")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def knn_rows(sizes, queries, k=10, dim=16):
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        X = rng.uniform(size=(n, dim)).astype(np.float32)
        Q = rng.uniform(size=(queries, dim)).astype(np.float32)
        (_, idx), t_k = timed(lambda: NearestNeighbors(n_neighbors=k).fit(X).kneighbors(Q))
        t_sk = t_f = same = "—"
        if sk_neighbors is not None:
            (_, ref), t_sk = timed(
                lambda: sk_neighbors.NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X).kneighbors(Q)
            )
            same = f"{np.mean((idx == ref).all(axis=1)):.4f}"
        if faiss is not None:

            def run_faiss():
                index = faiss.IndexFlatL2(dim)
                index.add(X)
                return index.search(Q, k)

            _, t_f = timed(run_faiss)
        rows.append([n, queries, t_k, t_sk, t_f, same])
    return rows


def _tps_data(n, rng):
    x = rng.uniform(size=(n, 2))
    return x, np.sin(6 * x[:, 0]) * np.cos(4 * x[:, 1])


def rbf_rows(peer_sizes, alone_sizes):
    rows = []
    rng = np.random.default_rng(1)
    xn = rng.uniform(size=(1000, 2))
    for n in [*peer_sizes, *alone_sizes]:
        x, y = _tps_data(n, rng)
        cpu = time.process_time()
        model, t_k = timed(lambda: KernelInterpolation().fit(x, y))
        cpu = time.process_time() - cpu
        pred = model.predict(xn)
        info = model.solve_info_
        t_s = diff = "—"
        if n in peer_sizes and scipy_interpolate is not None:
            ref, t_s = timed(lambda: scipy_interpolate.RBFInterpolator(x, y)(xn))
            diff = f"{np.abs(pred - ref).max() / np.abs(ref).max():.1e}"
        rows.append([n, t_k, cpu, info.iterations, f"{info.residual_norms.max():.1e}", t_s, diff])
    return rows


def gp_rows(peer_sizes, alone_sizes, sigma=0.2, noise=1e-2):
    rows = []
    rng = np.random.default_rng(2)
    xm, xs = rng.uniform(size=(1000, 2)), rng.uniform(size=(200, 2))
    for n in [*peer_sizes, *alone_sizes]:
        X = rng.uniform(size=(n, 2))
        y = np.sin(6 * X[:, 0]) * np.cos(4 * X[:, 1]) + 0.1 * rng.normal(size=n)
        gp, t_fit = timed(lambda: GaussianProcessRegressor(sigma=sigma, noise=noise).fit(X, y))
        mean, t_mean = timed(lambda: gp.predict(xm))
        (_, std), t_std = timed(lambda: gp.predict(xs, return_std=True))
        t_sk = dm = ds = "—"
        if n in peer_sizes and sk_gp is not None:
            kern = sk_gp.kernels.RBF(sigma)

            def run_sklearn():
                ref = sk_gp.GaussianProcessRegressor(kern, alpha=noise, optimizer=None).fit(X, y)
                return ref.predict(xm), ref.predict(xs, return_std=True)[1]

            (m_ref, s_ref), t_sk = timed(run_sklearn)
            dm, ds = f"{np.abs(mean - m_ref).max():.0e}", f"{np.abs(std / s_ref - 1).max():.0e}"
        rows.append([n, t_fit, t_mean, t_std, t_fit + t_mean + t_std, t_sk, dm, ds])
    return rows


def warm_up():
    """Compile (or load) the kernels every section uses, on small data."""
    rng = np.random.default_rng(3)
    NearestNeighbors(n_neighbors=10).fit(rng.uniform(size=(50, 16)).astype(np.float32)).kneighbors(
        rng.uniform(size=(20, 16)).astype(np.float32)
    )
    x, y = _tps_data(600, rng)
    KernelInterpolation().fit(x, y).predict(x[:10])
    GaussianProcessRegressor(sigma=0.2).fit(x, y).predict(x[:10], return_std=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, ~30 s)")
    add_json_option(parser)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"machine: {machine()}")
    print(
        f"peers: scikit-learn {'yes' if sk_neighbors else 'no'}, faiss-cpu "
        f"{getattr(faiss, '__version__', 'no')}, scipy {'yes' if scipy_interpolate else 'no'}"
    )
    warm_up()
    if args.quick:
        knn, rbf, gp = knn_rows([20_000], 1000), rbf_rows([1000], []), gp_rows([1000], [])
    else:
        knn = knn_rows([10_000, 100_000, 1_000_000], 2000)
        rbf = rbf_rows([1000, 2000, 5000], [20_000, 100_000])
        gp = gp_rows([1000, 2000, 4000], [20_000])
    print(
        table(
            ["N points", "queries", "kernla s", "sklearn brute s", "faiss Flat s", "same lists"],
            knn,
            "k nearest neighbours (k=10, D=16, float32)",
        )
    )
    print(
        table(
            ["N", "kernla fit s", "kernla CPU s", "CG its", "residual", "scipy RBFInterpolator s", "max rel diff"],
            rbf,
            "thin-plate-spline interpolation, 2-D (fit + 1000 predictions for scipy)",
        )
    )
    print(
        table(
            [
                "N",
                "fit s",
                "mean(1000) s",
                "std(200) s",
                "kernla total s",
                "sklearn total s",
                "max Δmean",
                "max Δstd/std",
            ],
            gp,
            "Gaussian-process regression, 2-D",
        )
    )

    kernla_peers = "kernla against its peers (one run each, seconds)"
    write_json(
        args.json,
        [
            plot(
                0,
                "N points",
                ["kernla s", "sklearn brute s", "faiss Flat s"],
                "k nearest neighbours, k = 10, D = 16, float32: " + kernla_peers,
                labels={"kernla s": "kernla", "sklearn brute s": "scikit-learn brute", "faiss Flat s": "faiss Flat"},
                xlabel="N (points searched; 2000 queries)",
                ylabel="wall seconds (one run)",
            ),
            plot(
                1,
                "N",
                ["kernla fit s", "scipy RBFInterpolator s"],
                "thin-plate-spline interpolation, 2-D: " + kernla_peers,
                labels={
                    "kernla fit s": "kernla KernelInterpolation",
                    "scipy RBFInterpolator s": "scipy RBFInterpolator",
                },
                xlabel="N (interpolation points)",
                ylabel="wall seconds (one run)",
            ),
            plot(
                2,
                "N",
                ["kernla total s", "sklearn total s"],
                "Gaussian-process regression, 2-D (fit, mean, std): " + kernla_peers,
                labels={"kernla total s": "kernla", "sklearn total s": "scikit-learn"},
                xlabel="N (training points)",
                ylabel="wall seconds (one run)",
            ),
        ],
        "Every timing is one run after a warm-up of the compiled kernels; a peer is left out where its dense "
        "N × N matrix or O(N³) time would not fit here.",
    )


if __name__ == "__main__":
    main()
