"""The 5 largest eigenvalues of a 10000×10000 Gaussian kernel matrix, never stored:
scipy's ARPACK (``scipy.sparse.linalg.eigsh`` on the KernelOperator) and kernla's thick-restart
Lanczos (``K.eigsh``) side by side.

N points drawn from a standard normal distribution in 2-D, kernel exp(-|x - y|² / (2σ²)) with
σ = 0.5. Prints, for each solver, the time, the number of kernel products (each one kernla
reduction over N² pairs) and the eigenvalues, then their largest relative difference and the
eigenvector residuals ‖K v − λ v‖ / λ. Writes ``eigsh.png`` (the spectrum and the leading
eigenvectors on the points) next to this script (or into ``$KERNLA_FIGURES``, or ``--out``).
On the NumPy engine (no compiler) N = 10000 takes minutes: try ``--n 2000``.

    python examples/eigsh.py                 # N = 10000
    python examples/eigsh.py --n 2000 --k 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse.linalg as sla
from _common import figure_path, scaled

from kernla import kernels
from kernla.engines import resolve_backend
from kernla.linalg import eigsh as lanczos

SIGMA = 0.5


class Counting(sla.LinearOperator):
    """A LinearOperator that counts the products it forwards to another one."""

    def __init__(self, op):
        super().__init__(op.dtype, op.shape)
        self.op, self.count = op, 0

    def _matmat(self, X):
        self.count += 1
        return self.op.matmat(X)

    def _adjoint(self):
        return self


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=scaled(10_000), help="number of points (default 10000)")
    p.add_argument("--k", type=int, default=5, help="number of eigenvalues (default 5)")
    p.add_argument("--out", default=None, help="PNG file to write")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, 2))
    K = kernels.gaussian(x, sigma=SIGMA)
    print(f"N = {args.n}, engine {resolve_backend(None, False)}, Gaussian kernel σ = {SIGMA}")
    K @ np.ones(args.n)  # warm-up: a compiled engine builds or loads its kernel here

    counted = Counting(K)
    t0 = time.perf_counter()
    w_s, v_s = sla.eigsh(counted, k=args.k, which="LA", tol=1e-10)
    t_s = time.perf_counter() - t0
    n_s = counted.count

    calls = [0]

    def apply(V):
        calls[0] += 1
        return K @ V

    t0 = time.perf_counter()
    w_k, v_k = lanczos(apply, args.n, k=args.k, which="LA", tol=1e-10)
    t_k = time.perf_counter() - t0
    w_m, _ = K.eigsh(k=args.k)  # the method on the operator: the same algorithm
    assert np.allclose(w_m, w_k, rtol=1e-8)

    def residuals(w, v):
        return np.linalg.norm(K @ v - v * w, axis=0) / np.abs(w)

    print(f"{'solver':<28}{'time s':>9}{'products':>10}   eigenvalues (ascending)")
    print(f"{'scipy eigsh (ARPACK)':<28}{t_s:>9.2f}{n_s:>10}   " + " ".join(f"{v:.10g}" for v in w_s))
    print(f"{'kernla K.eigsh (Lanczos)':<28}{t_k:>9.2f}{calls[0]:>10}   " + " ".join(f"{v:.10g}" for v in w_k))
    print(f"largest relative difference: {np.max(np.abs(w_s - w_k) / np.abs(w_s)):.2e}")
    print(f"max residual ‖Kv − λv‖/λ: scipy {residuals(w_s, v_s).max():.1e}, kernla {residuals(w_k, v_k).max():.1e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = min(args.k, 4)
    fig, axes = plt.subplots(1, shown + 1, figsize=(4 * (shown + 1), 3.8))
    order = np.arange(args.k)
    axes[0].plot(order + 1, w_s[::-1], "o", ms=9, mfc="none", label="scipy (ARPACK)")
    axes[0].plot(order + 1, w_k[::-1], "x", ms=7, label="kernla (Lanczos)")
    axes[0].set_title("largest eigenvalues")
    axes[0].set_xlabel("rank")
    axes[0].set_ylabel("eigenvalue")
    axes[0].legend()
    pts = rng.choice(args.n, size=min(args.n, 4000), replace=False)
    for j in range(shown):
        vec = v_k[:, -1 - j]
        ax = axes[j + 1]
        lim = np.abs(vec[pts]).max()
        ax.scatter(x[pts, 0], x[pts, 1], c=vec[pts], s=3, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"eigenvector {j + 1}, λ = {w_k[-1 - j]:.4g}")
        ax.set_aspect("equal")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
    fig.suptitle(f"Gaussian kernel matrix, N = {args.n}: leading eigenvalues and eigenvectors (colour: value)")
    path = figure_path("eigsh.png", args.out)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
