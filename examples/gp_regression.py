"""Gaussian-process regression on 10 000 noisy points with kernla, against scikit-learn's dense GP.

First kernla **learns** the hyper-parameters (``ConstantKernel * RBF + WhiteKernel``, starting
from amplitude 1, length scale 1, noise 0.1) by maximising the exact log marginal likelihood
with L-BFGS-B on a 2000-point subset, then by BBMM/Adam steps on all N points. With those
values fixed, kernla's ``GaussianProcessRegressor`` never stores the N×N covariance beyond
``max_exact_size``: the posterior mean is one preconditioned conjugate-gradient solve, the
posterior std a low-rank cache, the log marginal likelihood a stochastic Lanczos estimate.
scikit-learn builds the dense matrix and its Cholesky factor: O(N²) memory, O(N³) time. Both use
the same model with the learned values, so on the sizes where scikit-learn still runs the two
must agree; beyond them only kernla runs, and this script extrapolates scikit-learn's measured
cost to say where it stops being practical. Timings are the best of two runs (the machine may
be shared).

Writes ``gp_regression.png`` (posterior at N = 10 000; timings against N) next to this script
(or into ``$KERNLA_FIGURES``, or ``--out``) and prints the timings. scikit-learn runs only up to
``--sk-max`` points (default 4000; never beyond 5000).

``--truncate EPS`` gives kernla's model a truncated kernel (``kernla.kernels.gaussian(...,
truncate=EPS)``, a callable kernel): the block pairs of points farther apart than the cutoff radius
are dropped, with the certified bound ``‖K b − K_t b‖_∞ ≤ EPS · ‖b‖_1`` on every product; the script
prints the fraction of pairs kept and the bound. (A callable kernel has no squared formula: the
posterior std then runs without the low-rank variance cache.)

    python examples/gp_regression.py [--n 10000] [--std-points 200] [--sk-max 4000] [--out FILE.png]
    python examples/gp_regression.py --truncate 1e-6
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np
from _common import figure_path, scaled

from kernla import kernels
from kernla.models import GaussianProcessRegressor
from kernla.models.gp_kernels import RBF, ConstantKernel, WhiteKernel

NOISE = 0.2**2  # of the data
AMPLITUDE, SIGMA, NOISE_FIT = 1.0, 0.25, NOISE  # replaced by the learned values in main()
TRUNCATE: float | None = None  # --truncate EPS: kernla's model uses the certified truncated kernel


def target(x: np.ndarray) -> np.ndarray:
    return np.sin(2.0 * x) + 0.5 * np.cos(5.0 * x) * np.exp(-0.1 * x)


def make_data(n: int, seed: int = 0):
    """n noisy samples on [0, 10] with two gaps (where the posterior std must grow)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=4 * n)
    x = x[~(((x > 3.0) & (x < 3.8)) | ((x > 6.5) & (x < 7.0)))][:n]
    y = target(x) + np.sqrt(NOISE) * rng.normal(size=n)
    return x[:, None], y


def learn(X: np.ndarray, y: np.ndarray, adam_steps: int = 10):
    """Learned (amplitude, length scale, noise): exact L-BFGS-B on 2000 points, then Adam on all."""
    start = ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(0.1)
    sub = np.random.default_rng(3).choice(len(X), size=min(2000, len(X)), replace=False)
    t0 = time.perf_counter()
    warm = GaussianProcessRegressor(start, random_state=0).fit(X[sub], y[sub])
    t_sub = time.perf_counter() - t0
    t0 = time.perf_counter()
    gp = GaussianProcessRegressor(
        warm.kernel_,
        method="iterative",
        optimizer="adam",
        optimizer_maxiter=adam_steps,
        learning_rate=0.05,
        random_state=0,
    ).fit(X, y)
    t_all = time.perf_counter() - t0
    k = gp.kernel_
    print(
        f"learned: {warm.kernel_!r} on 2000 points in {t_sub:.1f} s ({warm.optimizer_result_.iterations} "
        f"L-BFGS-B iterations); after {gp.optimizer_result_.iterations} Adam steps on N={len(X)} "
        f"({t_all:.1f} s): {k!r}, log marginal likelihood ≈ {gp.log_marginal_likelihood_value_:.1f} "
        f"± {gp.log_marginal_likelihood_stderr_:.2g} (the data's noise variance is {NOISE})"
    )
    return float(k.k1.k1.constant_value), float(k.k1.k2.length_scale), float(k.k2.noise_level)


def run_kernla(X, y, grid, std_grid):
    t0 = time.perf_counter()
    kernel = "gaussian" if TRUNCATE is None else functools.partial(kernels.gaussian, truncate=TRUNCATE)
    gp = GaussianProcessRegressor(
        kernel, sigma=SIGMA, amplitude=AMPLITUDE, noise=NOISE_FIT, fast_variance=TRUNCATE is None
    ).fit(X, y)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean = gp.predict(grid)
    t_mean = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, std = gp.predict(std_grid, return_std=True, include_noise=True)
    t_std = time.perf_counter() - t0
    return gp, mean, std, dict(fit=t_fit, mean=t_mean, std=t_std)


def run_sklearn(X, y, grid, std_grid):
    from sklearn.gaussian_process import GaussianProcessRegressor as SkGP
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    kernel = ConstantKernel(AMPLITUDE) * RBF(SIGMA) + WhiteKernel(NOISE_FIT)
    t0 = time.perf_counter()
    gp = SkGP(kernel, optimizer=None, alpha=1e-12).fit(X, y)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean = gp.predict(grid)
    t_mean = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, std = gp.predict(std_grid, return_std=True)
    t_std = time.perf_counter() - t0
    return gp, mean, std, dict(fit=t_fit, mean=t_mean, std=t_std)


def total_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=scaled(10_000), help="training points for the main run")
    parser.add_argument("--grid", type=int, default=1000, help="points where the mean is predicted")
    parser.add_argument("--std-points", type=int, default=scaled(200), help="points where the std is predicted")
    parser.add_argument("--sk-max", type=int, default=scaled(4000), help="largest N for scikit-learn (at most 5000)")
    parser.add_argument("--out", default=None, help="PNG file to write")
    parser.add_argument("--truncate", type=float, default=None, metavar="EPS", help="certified truncation of K")
    args = parser.parse_args()
    sk_max = min(args.sk_max, 5000)
    global AMPLITUDE, SIGMA, NOISE_FIT, TRUNCATE
    AMPLITUDE, SIGMA, NOISE_FIT = learn(*make_data(args.n))
    TRUNCATE = args.truncate

    grid = np.linspace(-0.5, 10.5, args.grid)[:, None]
    std_grid = np.linspace(-0.5, 10.5, args.std_points)[:, None]

    # -- side by side where the dense GP still runs -------------------------------------------
    sizes = [s for s in (1000, 2000, 4000, 5000) if s <= sk_max]
    rows = []
    print(
        f"GP regression, Gaussian kernel (learned sigma={SIGMA:.4g}, amplitude={AMPLITUDE:.4g}, "
        f"noise={NOISE_FIT:.4g}), "
        f"mean at {args.grid} points, std at {args.std_points}"
    )
    print(
        f"{'N':>6} {'library':>8} {'fit (s)':>8} {'mean (s)':>9} {'std (s)':>8} {'total (s)':>10} "
        f"{'max|Δmean|':>11} {'max|Δstd|/std':>14}"
    )
    for n in sizes:
        X, y = make_data(n)
        # best of two runs each: the first kernla run includes compiling its kernels, and other
        # programs sharing the machine make single timings noisy
        runs_k = [run_kernla(X, y, grid, std_grid) for _ in range(2)]
        runs_s = [run_sklearn(X, y, grid, std_grid) for _ in range(2)]
        _, m_k, s_k, _ = runs_k[0]
        _, m_s, s_s, _ = runs_s[0]
        t_k = {key: min(r[3][key] for r in runs_k) for key in runs_k[0][3]}
        t_s = {key: min(r[3][key] for r in runs_s) for key in runs_s[0][3]}
        dm = float(np.abs(m_k - m_s).max())
        ds = float(np.abs(s_k / s_s - 1).max())
        for name, t in (("kernla", t_k), ("sklearn", t_s)):
            print(
                f"{n:>6} {name:>8} {t['fit']:>8.2f} {t['mean']:>9.3f} {t['std']:>8.2f} {sum(t.values()):>10.2f} "
                f"{dm:>11.1e} {ds:>14.1e}"
            )
        rows.append((n, sum(t_k.values()), sum(t_s.values()), t_s["fit"]))

    # -- kernla alone at N ----------------------------------------------------------------------
    X, y = make_data(args.n)
    gp, mean, std, t = run_kernla(X, y, grid, std_grid)
    t0 = time.perf_counter()
    lml, lml_err = gp.log_marginal_likelihood(method="slq", return_error=True)
    t_lml = time.perf_counter() - t0
    info = gp.solve_info_ or {"cg_iterations": 0, "kernel_products": 0}  # None when exact (Cholesky)
    print(
        f"\nkernla at N={args.n} ({gp.method_}): fit {t['fit']:.2f} s ({info['cg_iterations']} CG iterations, "
        f"{info['kernel_products']} kernel products), mean at {args.grid} points {t['mean']:.3f} s, "
        f"std at {args.std_points} points {t['std']:.2f} s"
    )
    print(f"  log marginal likelihood (SLQ estimate) {lml:.2f} ± {lml_err:.2g} (standard error) in {t_lml:.2f} s")
    if TRUNCATE is not None:
        t_info = kernels.gaussian(X, sigma=SIGMA, truncate=TRUNCATE).truncation_info
        assert t_info is not None  # truncate= was given
        print(
            f"  truncated kernel: {t_info.fraction_kept:.1%} of the N² pairs kept ({t_info.pairs_kept:,}, "
            f"cutoff radius {t_info.radius:.3g}); certified ‖K b − K_t b‖_∞ ≤ {t_info.bound:g} · ‖b‖_1 "
            f"(times the amplitude {AMPLITUDE:.3g})"
        )
    g = grid[:, 0]
    inside = (g >= 0) & (g <= 10) & ~(((g > 3.0) & (g < 3.8)) | ((g > 6.5) & (g < 7.0)))
    rmse = float(np.sqrt(np.mean((mean - target(g))[inside] ** 2)))
    print(
        f"  RMSE of the posterior mean against the noise-free function where there is data: {rmse:.4f} "
        f"(noise std {np.sqrt(NOISE):.2f})"
    )

    # -- where the dense GP stops being practical --------------------------------------------------
    mem = total_memory_gb()
    if rows:
        n_ref, _, _, fit_ref = rows[-1]
        # scikit-learn holds K, its Cholesky factor and a copy during fit: about 3 dense N×N float64
        n_mem = int(np.sqrt(mem * 1e9 / (3 * 8)))
        n_time = int(n_ref * (600.0 / max(fit_ref, 1e-3)) ** (1 / 3))  # O(N³) fit: where it exceeds 10 min
        t_at_n = fit_ref * (args.n / n_ref) ** 3
        print(f"\nscikit-learn's dense GP (measured up to N={n_ref}, fit {fit_ref:.2f} s; O(N³) time, ~3 N² floats):")
        print(f"  at N={args.n}: about {3 * 8 * args.n**2 / 1e9:.1f} GB and ~{t_at_n:.0f} s to fit (extrapolated)")
        print(f"  fit beyond 10 minutes from N ≈ {n_time:,}; out of this machine's {mem:.0f} GB from N ≈ {n_mem:,}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    show = np.random.default_rng(1).choice(args.n, size=min(args.n, 1500), replace=False)
    ax.plot(X[show, 0], y[show], ".", ms=2, color="0.6", label=f"data ({len(show)} of {args.n} shown)")
    ax.plot(grid[:, 0], target(grid[:, 0]), "k--", lw=1, label="noise-free function")
    ax.plot(grid[:, 0], mean, "C0", lw=1.5, label="posterior mean")
    m_std = np.interp(std_grid[:, 0], grid[:, 0], mean)
    latent = np.sqrt(np.maximum(std**2 - NOISE_FIT, 0.0))  # std of f itself (the noise variance removed)
    ax.fill_between(
        std_grid[:, 0], m_std - 2 * std, m_std + 2 * std, color="C0", alpha=0.12, label="± 2 std, new noisy observation"
    )
    ax.fill_between(
        std_grid[:, 0], m_std - 2 * latent, m_std + 2 * latent, color="C0", alpha=0.35, label="± 2 std of f"
    )
    for a, b in ((3.0, 3.8), (6.5, 7.0)):
        ax.axvspan(a, b, color="C1", alpha=0.08)
    ax.set_title(f"kernla GP regression, N = {args.n}")
    ax.legend(loc="lower left", fontsize=8)
    ax = axes[1]
    if rows:
        ns = [r[0] for r in rows]
        ax.loglog(ns, [r[2] for r in rows], "o-", color="C3", label="scikit-learn (dense)")
        ax.loglog(ns + [args.n], [r[1] for r in rows] + [sum(t.values())], "o-", color="C0", label="kernla")
        ax.set_xlabel("N")
        ax.set_ylabel("fit + predict (s)")
        ax.set_title("time, same model and outputs")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = figure_path("gp_regression.png", args.out)
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
