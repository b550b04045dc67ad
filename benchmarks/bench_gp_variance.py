"""Fast predictive variances of a Gaussian process: accuracy against dense Cholesky, and time, one table.

Hyper-parameters are learned as ``bench_gp.py`` learns them above N = 5000: exactly (L-BFGS-B) on a
seeded random ``--subset``-point subset of the standardised targets (on Friedman #1 the amplitude ends at
its 1e5 bound and the posterior variance is ~1e-8 of the prior; the 2-D function is benign). Then, at
N = ``--check-size`` training points, the std at ``--points`` test points from

- the projection cache (``LowRankVarianceCache``, S = orth([L, K L])) at ``--projection-ranks``;
- the Nyström variances (``NystromVariance``, with its ‖R‖₂ estimate) at ``--ranks``: the exact-cross
  form (K replaced by L Lᵀ inside A only; one-sided, too small by at most τ(1 + τ), τ = ‖R‖₂/σ²) and
  the DTC form (``cross=False``: no pass over the training points per call);
- ``variance_cache``, what ``GaussianProcessRegressor.predict`` uses (default rank),

each against the dense float64 Cholesky std: median and largest relative error, build and call time
(wall, and CPU seconds: the 2-core box is shared). ``--time-size N`` (e.g. 100000) then times the
DTC form at ``--time-points`` test points for N training points at ``--ranks`` (no dense reference at
that size: the errors are against the exact-cross form of the highest rank at ``--time-check`` points).

    python benchmarks/bench_gp_variance.py                                   # N = 1e4, both data sets
    python benchmarks/bench_gp_variance.py --datasets friedman1 --check-size 0 --time-size 100000 \\
        --time-points 10000 --ranks 400,800,1200                             # the N = 1e5 timing
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_json_option, machine, table, write_json  # noqa: E402
from bench_gp import DATASETS, kernel  # noqa: E402

from kernla.models import GaussianProcessRegressor  # noqa: E402
from kernla.models.gp_predict import (  # noqa: E402
    CholeskyPosterior,
    LowRankVarianceCache,
    NystromVariance,
    variance_cache,
)


def learned(name: str, n: int, subset: int):
    """``(X, kernel_, noise_, y_std)``: N points, hyper-parameters learned exactly on a seeded subset."""
    X, y, _ = DATASETS[name](n, 0)
    Y = (y - y.mean()) / y.std()
    rows = np.random.default_rng(0).choice(n, min(subset, n), replace=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp = GaussianProcessRegressor(kernel(X.shape[1]), random_state=0).fit(X[rows], Y[rows])
    print(f"# {name}: learned on {len(rows)} points in {time.perf_counter() - t0:.0f} s: {gp.kernel_}", flush=True)
    return X, gp.kernel_, gp.noise_


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def errors(var: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    e = np.abs(np.sqrt(np.maximum(var, 0.0) / ref) - 1)
    return float(np.median(e)), float(e.max())


def accuracy_rows(name: str, X, k, noise, Xs, args) -> list[list]:
    ref, t, c = timed(lambda: CholeskyPosterior(k, X, noise).variance(Xs))
    n, m = len(X), len(Xs)
    print(
        f"# {name} N={n}: dense Cholesky reference {t:.0f} s; prior / posterior variance "
        f"{np.median(k.diag(Xs) / ref):.2g} (median)",
        flush=True,
    )
    rows = []

    def add(method, rank, tau, var, build, call):
        rows.append([name, n, m, method, rank, tau, *errors(var, ref), build[0], build[1], call[0], call[1]])
        print(" | ".join(str(v if not isinstance(v, float) else f"{v:.3g}") for v in rows[-1]), flush=True)

    for r in args.projection_ranks:
        cache, *build = timed(lambda: LowRankVarianceCache(k, X, noise, rank=r))
        var, *call = timed(lambda: cache.variance(Xs))
        add("projection", r, float("nan"), var, build, call)
    for r in args.ranks:
        nv, *build = timed(lambda: NystromVariance(k, X, noise, rank=r, tol=0.0))
        tau = nv.residual_norm() / noise
        for cross in (True, False):
            nv.cross = cross
            var, *call = timed(lambda: nv.variance(Xs))
            add("Nyström exact cross" if cross else "Nyström DTC", nv.rank, tau, var, build, call)
    cache, *build = timed(lambda: variance_cache(k, X, noise))
    var, *call = timed(lambda: cache.variance(Xs))
    add(f"variance_cache → {type(cache).__name__}", getattr(cache, "rank", 0), float("nan"), var, build, call)
    return rows


def timing_rows(name: str, n: int, args) -> list[list]:
    X, k, noise = learned(name, n, args.subset)
    Xs, _, _ = DATASETS[name](args.time_points, 3)
    top, *build = timed(lambda: NystromVariance(k, X, noise, rank=max(args.ranks), tol=0.0))
    print(f"# {name} N={n}: rank-{top.rank} factor built in {build[0]:.0f} s ({build[1]:.0f} CPU s)", flush=True)
    ref = top.variance(Xs[: args.time_check])
    rows = []
    for r in sorted(args.ranks):
        nv, *cut = timed(lambda: top.truncated(r))
        nv.cross = False
        var, *call = timed(lambda: nv.variance(Xs))
        med, worst = errors(var[: args.time_check], ref)
        rows.append([name, n, len(Xs), "Nyström DTC", r, nv.residual_trace / noise, med, worst, *cut, *call])
        print(" | ".join(str(v if not isinstance(v, float) else f"{v:.3g}") for v in rows[-1]), flush=True)
    rows.append(
        [name, n, len(Xs), "(rank-max build)", top.rank, float("nan"), float("nan"), float("nan"), *build, 0.0, 0.0]
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="friedman1,2-D")
    ap.add_argument("--check-size", type=int, default=10000, help="N of the accuracy table (0: none)")
    ap.add_argument("--points", type=int, default=300, help="test points of the accuracy table")
    ap.add_argument("--subset", type=int, default=2000, help="hyper-parameters learned exactly on this many")
    ap.add_argument("--ranks", default="200,400,800,1600")
    ap.add_argument("--projection-ranks", default="100,300")
    ap.add_argument("--time-size", type=int, default=0, help="N of the timing rows (0: none)")
    ap.add_argument("--time-points", type=int, default=10000)
    ap.add_argument("--time-check", type=int, default=200, help="points of the timing rows' error column")
    add_json_option(ap)
    args = ap.parse_args()
    args.ranks = [int(r) for r in args.ranks.split(",")]
    args.projection_ranks = [int(r) for r in args.projection_ranks.split(",") if r]
    print(f"# bench_gp_variance: {machine()}; load average {os.getloadavg()[0]:.1f} at start (a shared box)")
    rows, timing = [], []
    for name in args.datasets.split(","):
        if args.check_size:
            X, k, noise = learned(name, args.check_size, args.subset)
            Xs, _, _ = DATASETS[name](args.points, 3)
            rows += accuracy_rows(name, X, k, noise, Xs, args)
        if args.time_size:
            timing += timing_rows(name, args.time_size, args)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")
    cols = ["data", "N", "M", "method", "rank", "‖R‖₂/σ² (estimate)", "std err median", "std err max"]
    if rows:
        print(table([*cols, "build s", "build CPU s", "call s", "call CPU s"], rows, "predictive std accuracy"))
    if timing:
        cols[5] = "tr R/σ²"
        print(table([*cols, "build s", "build CPU s", "call s", "call CPU s"], timing, "predictive std time"))
    write_json(args.json, note="Errors against dense float64 Cholesky (timing rows: against the top-rank cross form).")


if __name__ == "__main__":
    main()
