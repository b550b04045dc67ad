"""Gaussian-process training: kernla (exact and iterative) against scikit-learn and GPyTorch, one table.

Data: Friedman #1 (``sklearn.datasets.make_friedman1``, 10-D, noise std 1) and a 2-D function
(``sin(3 x₁) cos(2 x₂) + x₁ x₂``, noise std 0.1), N training points, 2000 test points (noise
free targets for the RMSE; NLL: the mean negative log predictive density of noisy test targets).
Kernel everywhere: ``ConstantKernel · Matérn-5/2(ARD) + White`` from the same starting values
(amplitude 1, length scales 1, noise 0.1), targets standardised.

- kernla exact (N ≤ 5000): Cholesky evidence with the analytic gradient, L-BFGS-B; above
  2·``--start-subset`` points it first learns on a random ``--start-subset``-point subset (default
  1000) and starts the full-N L-BFGS-B there (``start_subset``).
- kernla iterative (N ≤ 5000, unless ``--skip-bbmm``): BBMM (pivoted-Cholesky PCG on [y, 16 probes],
  SLQ + Hutchinson), Adam (lr 0.1, at most ``--adam-iters`` steps).
- N > 5000: hyper-parameters learned exactly on a ``--big-subset``-point subset, ``--full-steps``
  BBMM Adam steps at full N (default 0), the final CG solve to ``--big-tol`` with ``--probes`` probes
  (the evidence estimate) and the variance cache of rank ``--variance-rank`` (default: the model's): one ``fit``,
  all timed. ``--std-points M`` times the std at M more test points (and, N ≤ 3e4, its largest relative
  error against the exact std at ``--std-check`` of them); ``--reference R`` adds an exact GP on an
  R-point subset (the reference of the test RMSE; not a timed peer): its hyper-parameters learned exactly
  on ``--reference-subset`` of those points (default 5000), then ``--reference-steps`` exact L-BFGS-B
  iterations on all R (default 2; 0: the subset's values conditioned on all R points) — a full exact
  training at R = 2e4 would take 1–3 min per evaluation here, hours in all.
- scikit-learn ``GaussianProcessRegressor`` (L-BFGS-B, no restarts) where N ≤ ``--sk-max``
  (default 1000: it took 550 s there on the loaded box); above, up to 5000, the time of one of its
  log marginal likelihood + gradient evaluations against one of kernla's exact ones.
- GPyTorch ``ExactGP`` with Adam (lr 0.1, ``--adam-iters`` steps, dense), N ≤ ``--gpytorch-max``
  (default 1000: 164 s there); its KeOps kernel when pykeops compiles here.

Each training is one run (wall seconds; the 2-core box is shared: see the load printed). Columns:
time, iterations, the learned log marginal likelihood per point (exact where N ≤ 5000, else the
estimate), learned noise, test RMSE, NLL, the time of mean + std at the test points.

    python benchmarks/bench_gp.py --sizes 1000,5000        # about 10 minutes on a loaded 2-core box
    python benchmarks/bench_gp.py --quick                  # N = 500, a smoke test
    python benchmarks/bench_gp.py --datasets friedman1 --sizes 100000 --std-points 10000   # N = 1e5 (< 10 min)
    python benchmarks/bench_gp.py --datasets friedman1 --sizes 100000 --sk-max 0 --gpytorch-max 0 --reference 20000
    python benchmarks/bench_gp.py --datasets 2-D --sizes 500,1000,2000 --sk-max 0 --gpytorch-max 1000 --json PATH

At the end the rows are printed again as one table (with ``--json PATH`` also written there, with the
plots' specs: training time against N per method, and one evaluation's time, scikit-learn against kernla).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_json_option, optional, plot, table, write_json  # noqa: E402

from kernla.models import GaussianProcessRegressor  # noqa: E402
from kernla.models import gp_kernels as gk  # noqa: E402
from kernla.models.gp_predict import CholeskyPosterior  # noqa: E402

TEST = 2000
#: every row of this run: data set, N, then the row of :class:`Rows`; and the one-evaluation timings
ALL_ROWS: list[list] = []
EVALUATIONS: list[list] = []


def friedman(n: int, seed: int):
    datasets = optional("sklearn.datasets")
    X, y = datasets.make_friedman1(n_samples=n, n_features=10, noise=1.0, random_state=seed)
    _, clean = datasets.make_friedman1(n_samples=n, n_features=10, noise=0.0, random_state=seed)
    return X, y, clean


def two_d(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    clean = np.sin(3 * X[:, 0]) * np.cos(2 * X[:, 1]) + X[:, 0] * X[:, 1]
    return X, clean + 0.1 * rng.normal(size=n), clean


DATASETS = {"friedman1": friedman, "2-D": two_d}


def kernel(d: int):
    return gk.ConstantKernel(1.0) * gk.Matern([1.0] * d, nu=2.5) + gk.WhiteKernel(0.1)


def scores(mean, std, clean, noisy):
    rmse = float(np.sqrt(np.mean((mean - clean) ** 2)))
    nll = float(np.mean(0.5 * np.log(2 * np.pi * std**2) + 0.5 * ((noisy - mean) / std) ** 2))
    return rmse, nll


def run_kernla(X, y, Xt, method, adam_iters, start=None, **extra):
    k = kernel(X.shape[1]) if start is None else start
    opts = dict(method=method, normalize_y=True, random_state=0)
    if method == "iterative":
        opts.update(optimizer="adam", optimizer_maxiter=adam_iters, learning_rate=0.1, tol=1e-6)
    opts.update(extra)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp = GaussianProcessRegressor(k, **opts).fit(X, y)
    train, cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    mean, std = gp.predict(Xt, return_std=True, include_noise=True)
    pred = time.perf_counter() - t0
    res, sub = gp.optimizer_result_, gp.subset_result_
    evals = (res.evaluations if res else 0, sub.evaluations if sub else 0)
    print(
        f"# kernla {method} N={len(X)}: {train:.1f} s wall, {cpu:.1f} s CPU, log marginal likelihood "
        f"{gp.log_marginal_likelihood_value_:.4f}; evaluations at full N {evals[0]}"
        + (f", on the {opts['start_subset']}-point subset {evals[1]} ({sub.time:.1f} s)" if sub else ""),
        flush=True,
    )
    return gp, train, res.iterations if res else 0, mean, std, pred


def big_fit(X, y, Xt, args):
    """N above --exact-max: hyper-parameters learned exactly on a subset, --full-steps BBMM steps at full N
    (warm), the final solve and the variance cache (all inside ``fit``)."""
    return run_kernla(
        X,
        y,
        Xt,
        "iterative",
        args.full_steps,
        start_subset=args.big_subset,
        num_probes=args.probes,
        tol=args.big_tol,
        variance_rank=args.variance_rank,
    )


def std_check(gp, X, n_std: int, n_check: int):
    """Seconds of the std at n_std test points; with n_check, its largest relative error against the exact
    (dense Cholesky) std at n_check of them (needs the N×N matrix: N ≤ 3e4 or so)."""
    Xs, _, _ = friedman(n_std, 3) if X.shape[1] == 10 else two_d(n_std, 3)
    t0, c0 = time.perf_counter(), time.process_time()
    _, std = gp.predict(Xs, return_std=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    err = med = math.nan
    if n_check:
        exact = CholeskyPosterior(gp.kernel_, X, gp.noise_).variance(Xs[:n_check])
        ref = np.sqrt(exact) * float(gp._y_std)
        rel = np.abs(std[:n_check] - ref) / ref
        err, med = float(rel.max()), float(np.median(rel))
    return wall, cpu, err, med


def run_sklearn(X, y, Xt):
    sk_gp = optional("sklearn.gaussian_process")
    skk = sk_gp.kernels
    d = X.shape[1]
    k = skk.ConstantKernel(1.0) * skk.Matern([1.0] * d, nu=2.5) + skk.WhiteKernel(0.1)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp = sk_gp.GaussianProcessRegressor(k, normalize_y=True, random_state=0).fit(X, y)
    train = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean, std = gp.predict(Xt, return_std=True)
    pred = time.perf_counter() - t0
    noise = gp.kernel_.k2.noise_level * np.std(y) ** 2
    return gp.log_marginal_likelihood_value_, train, mean, std, pred, noise


def one_evaluation(X, y):
    """Seconds of one log marginal likelihood + gradient evaluation: scikit-learn's, kernla's exact one."""
    sk_gp = optional("sklearn.gaussian_process")
    skk = sk_gp.kernels
    d = X.shape[1]
    yn = (y - y.mean()) / y.std()
    k = skk.ConstantKernel(1.0) * skk.Matern([1.0] * d, nu=2.5) + skk.WhiteKernel(0.1)
    ref = sk_gp.GaussianProcessRegressor(k, optimizer=None).fit(X, yn)
    t0 = time.perf_counter()
    ref.log_marginal_likelihood(k.theta, eval_gradient=True)
    sk_time = time.perf_counter() - t0
    ours = GaussianProcessRegressor(kernel(d), optimizer=None).fit(X, yn)
    t0 = time.perf_counter()
    ours.log_marginal_likelihood(ours.kernel_.theta, eval_gradient=True)
    return sk_time, time.perf_counter() - t0


def run_gpytorch(X, y, Xt, iters, keops=False):
    torch, gpytorch = optional("torch"), optional("gpytorch")
    Xtr, Xte = torch.from_numpy(X), torch.from_numpy(Xt)
    ym, ys = y.mean(), y.std()
    ytr = torch.from_numpy((y - ym) / ys)
    d = X.shape[1]
    base = gpytorch.kernels.keops.MaternKernel if keops else gpytorch.kernels.MaternKernel

    class Model(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(Xtr, ytr, likelihood)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(base(nu=2.5, ard_num_dims=d))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    lik = gpytorch.likelihoods.GaussianLikelihood()
    model = Model(lik).double()
    lik.double()
    model.covar_module.base_kernel.lengthscale = 1.0
    model.covar_module.outputscale = 1.0
    lik.noise = 0.1
    model.train()
    lik.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    t0 = time.perf_counter()
    for _ in range(iters):
        opt.zero_grad()
        loss = -mll(model(Xtr), ytr)
        loss.backward()
        opt.step()
    train = time.perf_counter() - t0
    model.eval()
    lik.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), gpytorch.settings.fast_pred_var():
        pred = lik(model(Xte))
        mean, std = pred.mean.numpy() * ys + ym, pred.stddev.numpy() * ys
    ptime = time.perf_counter() - t0
    return -float(loss), train, mean, std, ptime, float(lik.noise) * ys**2


class Rows(list):
    """The table's rows of one data set and size, each printed as soon as it is measured."""

    def __init__(self, name: str, n: int):
        super().__init__()
        self.name, self.n = name, n

    def append(self, row) -> None:
        super().append(row)
        ALL_ROWS.append([self.name, self.n, *row])
        label, t, it, lml, noise, rmse, nll, p = row
        print(
            f"{self.name:9} {self.n:6d} {label:24} {t:8.2f} {it if it >= 0 else '—':>5} {lml:8.4f} {noise:7.4f} "
            f"{rmse:7.4f} {nll:7.4f} {p:7.2f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,20000,100000")
    ap.add_argument("--datasets", default="friedman1,2-D")
    ap.add_argument("--adam-iters", type=int, default=50)
    ap.add_argument("--sk-max", type=int, default=1000)
    ap.add_argument("--gpytorch-max", type=int, default=1000)
    ap.add_argument("--exact-max", type=int, default=5000)
    ap.add_argument("--start-subset", type=int, default=1000, help="exact training: learn on this many points first")
    ap.add_argument("--skip-bbmm", action="store_true", help="no BBMM Adam row at N <= --exact-max")
    ap.add_argument("--big-subset", type=int, default=2000, help="N > --exact-max: exact training on this subset")
    ap.add_argument("--full-steps", type=int, default=0, help="N > --exact-max: BBMM Adam steps at full N after it")
    ap.add_argument("--probes", type=int, default=4, help="N > --exact-max: probes of the final evidence estimate")
    ap.add_argument("--big-tol", type=float, default=1e-4, help="N > --exact-max: CG tolerance of the final solve")
    ap.add_argument("--variance-rank", type=int, default=None, help="N > --exact-max: rank of the variance cache")
    ap.add_argument("--std-points", type=int, default=0, help="N > --exact-max: time the std at this many points")
    ap.add_argument("--std-check", type=int, default=300, help="... its error at this many (exact; N <= 3e4)")
    ap.add_argument("--reference", type=int, default=0, help="also an exact GP trained on a subset of this size")
    ap.add_argument("--reference-subset", type=int, default=5000, help="... learned first on this many of its points")
    ap.add_argument("--reference-steps", type=int, default=2, help="... then this many exact L-BFGS-B steps on all")
    ap.add_argument("--quick", action="store_true")
    add_json_option(ap)
    args = ap.parse_args()
    sizes = [500] if args.quick else [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.adam_iters = 10
    import platform

    print(
        f"# bench_gp: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start (other jobs share the box)"
    )
    header = (
        f"{'data':9} {'N':>6} {'method':24} {'train s':>8} {'iters':>5} {'lml/N':>8} {'noise':>7} "
        f"{'RMSE':>7} {'NLL':>7} {'pred s':>7}"
    )
    print(header)
    print("-" * len(header))
    for name in args.datasets.split(","):
        for n in sizes:
            X, y, _ = DATASETS[name](n, 0)
            Xt, yt, ct = DATASETS[name](TEST, 1)
            rows = Rows(name, n)
            k_time = None
            if n <= args.exact_max:
                sub = args.start_subset if n > 2 * args.start_subset else None
                gp, t, it, m, s, p = run_kernla(X, y, Xt, "exact", args.adam_iters, start_subset=sub)
                label = "kernla exact L-BFGS-B" + (f" ({sub} first)" if sub else "")
                rows.append(
                    (
                        label,
                        t,
                        it,
                        gp.log_marginal_likelihood_value_ / n,
                        gp.noise_ * np.std(y) ** 2,
                        *scores(m, s, ct, yt),
                        p,
                    )
                )
                k_time = t
                if not args.skip_bbmm:
                    gp, t, it, m, s, p = run_kernla(X, y, Xt, "iterative", args.adam_iters)
                    rows.append(
                        (
                            "kernla BBMM Adam",
                            t,
                            it,
                            gp.log_marginal_likelihood_value_ / n,
                            gp.noise_ * np.std(y) ** 2,
                            *scores(m, s, ct, yt),
                            p,
                        )
                    )
            else:
                gp, t, it, m, s, p = big_fit(X, y, Xt, args)
                label = f"kernla {args.big_subset} exact, {args.full_steps} BBMM"
                rows.append(
                    (
                        label,
                        t,
                        it,
                        gp.log_marginal_likelihood_value_ / n,
                        gp.noise_ * np.std(y) ** 2,
                        *scores(m, s, ct, yt),
                        p,
                    )
                )
                if args.std_points:
                    wall, cpu, err, med = std_check(gp, X, args.std_points, args.std_check if n <= 30000 else 0)
                    cache = gp._variance_cache
                    print(
                        f"# {name} N={n}: std at {args.std_points} test points {wall:.1f} s wall, {cpu:.1f} s CPU "
                        f"({type(cache).__name__}, rank {getattr(cache, 'rank', '?')}, the second call: no build)"
                        + (
                            f"; relative error against the exact std at {args.std_check} of them: largest {err:.2e}, "
                            f"median {med:.2e}"
                            if np.isfinite(err)
                            else ""
                        ),
                        flush=True,
                    )
            if args.reference and n > args.reference:
                rsub = np.random.default_rng(2).choice(n, args.reference, replace=False)
                gp, t, it, m, s, p = run_kernla(
                    X[rsub],
                    y[rsub],
                    Xt,
                    "exact",
                    0,
                    max_exact_size=args.reference,
                    start_subset=args.reference_subset,
                    optimizer_maxiter=args.reference_steps,
                )
                rows.append(
                    (
                        f"kernla exact on {args.reference} ({args.reference_subset} learned, "
                        f"{args.reference_steps} steps)",
                        t,
                        it,
                        math.nan,
                        gp.noise_ * np.std(y) ** 2,
                        *scores(m, s, ct, yt),
                        p,
                    )
                )
            if optional("gpytorch") is not None and n <= args.gpytorch_max:
                for keops in (False, True):
                    try:
                        lml, t, m, s, p, noise = run_gpytorch(X, y, Xt, args.adam_iters, keops)
                    except Exception as err:  # KeOps may not compile here
                        print(f"# GPyTorch{' KeOps' if keops else ''} failed: {type(err).__name__}: {str(err)[:100]}")
                        continue
                    rows.append(
                        (
                            f"GPyTorch Adam{' KeOps' if keops else ''}",
                            t,
                            args.adam_iters,
                            lml,
                            noise,
                            *scores(m, s, ct, yt),
                            p,
                        )
                    )
            if optional("sklearn") is not None and args.sk_max < n <= args.exact_max:
                sk_eval, k_eval = one_evaluation(X, y)
                EVALUATIONS.append([name, n, sk_eval, k_eval, sk_eval / k_eval])
                print(
                    f"# {name} N={n}: one log marginal likelihood + gradient evaluation: scikit-learn {sk_eval:.1f} s, "
                    f"kernla exact {k_eval:.1f} s ({sk_eval / k_eval:.1f}x); its training not run (> 10 min)",
                    flush=True,
                )
            if optional("sklearn") is not None and n <= args.sk_max:
                lml, t, m, s, p, noise = run_sklearn(X, y, Xt)
                rows.append(("scikit-learn L-BFGS-B", t, -1, lml / n, noise, *scores(m, s, ct, yt), p))
                if k_time:
                    print(f"# {name} N={n}: scikit-learn / kernla exact training time = {t / k_time:.1f}x", flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end; lml/N of GPyTorch: its last training objective")
    headers = ["data", "N", "method", "train s", "iters", "lml/N", "noise", "RMSE", "NLL", "pred s"]
    print(table(headers, [[*r[:4], "—" if r[4] < 0 else r[4], *r[5:]] for r in ALL_ROWS], "bench_gp: training"))
    if EVALUATIONS:
        columns = ["data", "N", "scikit-learn s", "kernla exact s", "scikit-learn / kernla"]
        print(table(columns, EVALUATIONS, "one log marginal likelihood + gradient evaluation"))
    write_json(
        args.json, plot_specs(bool(EVALUATIONS)), "One training per method (wall seconds); Adam: --adam-iters steps."
    )


def plot_specs(evaluations: bool) -> list[dict]:
    """Training time against N per method (a panel per data set); one evaluation's time, if measured."""
    axes = dict(panel="data", xlabel="N (training points)")
    specs = [
        plot(
            0,
            "N",
            "train s",
            "Gaussian-process training time",
            series="method",
            ylabel="wall seconds (one training)",
            **axes,
        )
    ]
    if evaluations:
        y = ["scikit-learn s", "kernla exact s"]
        specs.append(
            plot(1, "N", y, "one log marginal likelihood + gradient evaluation", ylabel="wall seconds (one)", **axes)
        )
    return specs


if __name__ == "__main__":
    main()
