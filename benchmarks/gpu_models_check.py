"""GPU check of kernla.models with torch-CUDA (and CuPy, if installed) data.

Correctness: the same models on host NumPy data and on GPU data (float64) must agree — kNN
indices exactly, interpolation and GP means to 1e-8, GP stds to 1e-6. Then timings on the GPU: kNN
(1e5 queries × 1e6 points, D = 16, k = 10, float32) and a GP at N = 1e5 (2-D, float64: fit, mean
at 1e4 points, std at 64 points, SLQ log marginal likelihood). Prints what it could not run.

    python benchmarks/gpu_models_check.py [--device cuda] [--small]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import host  # noqa: E402

from kernla.models import GaussianProcessRegressor, KernelInterpolation, KNeighborsClassifier, NearestNeighbors

FAILED = []


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        FAILED.append(name)


def correctness(to_dev, label, n=3000):
    r = np.random.default_rng(0)
    X = r.uniform(size=(n, 3))
    Q = r.uniform(size=(500, 3))
    y = np.sin(4 * X[:, 0]) * X[:, 1] + 0.05 * r.normal(size=n)
    labels = (X[:, 0] > 0.5).astype(np.int64)
    for metric in ("euclidean", "manhattan", "cosine"):
        d0, i0 = NearestNeighbors(n_neighbors=8, metric=metric).fit(X).kneighbors(Q)
        d1, i1 = NearestNeighbors(n_neighbors=8, metric=metric).fit(to_dev(X)).kneighbors(to_dev(Q))
        check(
            f"{label} kNN {metric}",
            (host(i1) == i0).all() and np.allclose(host(d1), d0, rtol=1e-10),
            f"(type {type(i1).__module__})",
        )
    p0 = KNeighborsClassifier(n_neighbors=8, weights="distance").fit(X, labels).predict_proba(Q)
    p1 = KNeighborsClassifier(n_neighbors=8, weights="distance").fit(to_dev(X), to_dev(labels)).predict_proba(to_dev(Q))
    check(f"{label} kNN classifier proba", np.allclose(host(p1), p0, rtol=1e-12))
    f0 = KernelInterpolation(kernel="gaussian", sigma=0.2, smoothing=1e-3, degree=-1).fit(X, y).predict(Q)
    f1 = (
        KernelInterpolation(kernel="gaussian", sigma=0.2, smoothing=1e-3, degree=-1)
        .fit(to_dev(X), to_dev(y))
        .predict(to_dev(Q))
    )
    err = np.abs(host(f1) - f0).max() / np.abs(f0).max()
    check(f"{label} interpolation", err < 1e-8, f"rel err {err:.1e}")
    for kernel in ("gaussian", "matern"):
        g0 = GaussianProcessRegressor(kernel, sigma=0.2, amplitude=0.5, noise=1e-2).fit(X, y)
        g1 = GaussianProcessRegressor(kernel, sigma=0.2, amplitude=0.5, noise=1e-2).fit(to_dev(X), to_dev(y))
        m0, s0 = g0.predict(Q[:100], return_std=True)
        m1, s1 = g1.predict(to_dev(Q[:100]), return_std=True)
        em = np.abs(host(m1) - m0).max() / np.abs(m0).max()
        es = np.abs(host(s1) / s0 - 1).max()
        # the std is iterative (CG to tol 1e-10) and loses digits where the posterior variance is
        # small; the contract is 1e-6 relative (an H200 gave 2e-8 against the host)
        check(f"{label} GP {kernel} mean/std", em < 1e-8 and es < 1e-6, f"rel err {em:.1e} / {es:.1e}")
        l0 = g0.log_marginal_likelihood(method="slq")
        l1 = g1.log_marginal_likelihood(method="slq")
        check(f"{label} GP {kernel} SLQ", abs(l1 - l0) < 1e-6 * abs(l0), f"{l1:.6f} vs {l0:.6f}")


def timings(torch, device, small):
    r = np.random.default_rng(1)
    n_pts, n_q = (100_000, 10_000) if small else (1_000_000, 100_000)
    X = torch.from_numpy(r.normal(size=(n_pts, 16)).astype(np.float32)).to(device)
    Q = torch.from_numpy(r.normal(size=(n_q, 16)).astype(np.float32)).to(device)
    nn = NearestNeighbors(n_neighbors=10).fit(X)
    nn.kneighbors(Q[:100])
    sync()
    t = time.perf_counter()
    nn.kneighbors(Q)
    sync()
    print(f"kNN k=10 D=16 float32 {n_q:.0e} x {n_pts:.0e}: {time.perf_counter() - t:.3f} s")

    n = 20_000 if small else 100_000
    x = r.uniform(size=(n, 2))
    y = np.sin(6 * x[:, 0]) * np.cos(4 * x[:, 1]) + 0.1 * r.normal(size=n)
    Xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    grid = torch.from_numpy(r.uniform(size=(10_000, 2))).to(device)
    t = time.perf_counter()
    gp = GaussianProcessRegressor("gaussian", sigma=0.1, amplitude=1.0, noise=0.01).fit(Xt, yt)
    sync()
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    gp.predict(grid)
    sync()
    t_mean = time.perf_counter() - t
    t = time.perf_counter()
    gp.predict(grid[:64], return_std=True)
    sync()
    t_std = time.perf_counter() - t
    t = time.perf_counter()
    lml, err = gp.log_marginal_likelihood(method="slq", return_error=True, num_probes=16)
    t_lml = time.perf_counter() - t
    info = gp.solve_info_
    print(
        f"GP N={n} 2-D float64: fit {t_fit:.2f} s ({info.iterations} CG iterations, {gp._precond.name}), "
        f"mean at 1e4 points {t_mean:.3f} s, std at 64 points {t_std:.2f} s, "
        f"SLQ log-likelihood {lml:.1f} ± {err:.2g} in {t_lml:.2f} s"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="smaller timing sizes")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("torch is not installed: nothing to check")
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    dev = torch.device(args.device)
    print(f"device: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}")
    sections = [("torch", lambda: correctness(lambda a: torch.from_numpy(a).to(dev), f"torch-{dev.type}"))]
    try:
        import cupy

        if dev.type == "cuda":
            sections.append(("cupy", lambda: correctness(cupy.asarray, "cupy")))
    except ImportError:
        print("CuPy is not installed: CuPy checks skipped")
    sections.append(("timings", lambda: timings(torch, dev, args.small)))
    for name, fn in sections:
        try:
            fn()
        except Exception:
            traceback.print_exc()
            FAILED.append(name)
    print(f"\n{'all checks passed' if not FAILED else 'FAILED: ' + ', '.join(FAILED)}")


if __name__ == "__main__":
    main()
