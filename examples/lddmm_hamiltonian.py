"""The LDDMM Hamiltonian H(q, p) = ½ ⟨p, K_qq p⟩ and its gradients, in linear memory.

q (control points) and p (momenta) are N×3; K_qq is the N×N Gaussian kernel matrix
exp(-|q_i - q_j|² / σ²), never stored: kernla reduces the symbolic matrix row by row and
torch.autograd's backward runs two more kernla reductions (∂H/∂q and ∂H/∂p). Dense PyTorch
stores N×N (and N×N×3) temporaries for the forward and the backward: it is shown beside kernla
where it fits the memory budget, and otherwise the memory it *would* need is printed (measured
at about 14 N×N arrays of the working dtype at its peak) instead of allocating it.

Prints, for each N: H, |∂H/∂q|, |∂H/∂p|, forward and forward+backward times, the process's peak
memory so far, and dense torch's values, its relative difference and memory. Writes
``lddmm_hamiltonian.png`` (forward+backward time against N, kernla and dense torch, log-log) next
to this script (or into ``$KERNLA_FIGURES``, or ``--out``).

    python examples/lddmm_hamiltonian.py                 # N = 1e3 … 1e4 (… 1e5 with a compiled engine)
    python examples/lddmm_hamiltonian.py --sizes 1000 10000 100000 --dtype float32
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from _common import figure_path, scaled

from kernla import LazyTensor
from kernla.engines import resolve_backend

#: peak of dense torch's forward + backward, in N×N arrays of the working dtype (measured)
DENSE_NN_ARRAYS = 14


def hamiltonian(q: torch.Tensor, p: torch.Tensor, sigma: float, backend: str | None = None) -> torch.Tensor:
    """H(q, p) = ½ Σ_ij exp(-|q_i - q_j|²/σ²) ⟨p_i, p_j⟩ with kernla (differentiable in q and p).

    >>> q = torch.zeros(2, 3, dtype=torch.float64); p = torch.ones(2, 3, dtype=torch.float64)
    >>> float(hamiltonian(q, p, 1.0, backend="numpy"))       # ½ · 4 pairs · ⟨1, 1⟩ = 6
    6.0
    """
    q_i, q_j, p_j = LazyTensor(q[:, None, :]), LazyTensor(q[None, :, :]), LazyTensor(p[None, :, :])
    k_ij = (-((q_i - q_j) ** 2).sum(-1) / sigma**2).exp()
    return 0.5 * (p * (k_ij * p_j).sum(dim=1, backend=backend)).sum()


def hamiltonian_dense(q: torch.Tensor, p: torch.Tensor, sigma: float) -> torch.Tensor:
    """The same H with a dense N×N kernel matrix (quadratic memory).

    >>> q = torch.zeros(2, 3, dtype=torch.float64); p = torch.ones(2, 3, dtype=torch.float64)
    >>> float(hamiltonian_dense(q, p, 1.0))
    6.0
    """
    k = torch.exp(-((q[:, None, :] - q[None, :, :]) ** 2).sum(-1) / sigma**2)
    return 0.5 * (p * (k @ p)).sum()


def dense_bytes(n: int, dtype: torch.dtype) -> int:
    """Peak memory dense torch needs for H and its gradients at N = n (an estimate)."""
    return DENSE_NN_ARRAYS * n * n * torch.finfo(dtype).bits // 8


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data(n: int, dtype: torch.dtype, seed: int = 0):
    """Control points in the unit cube and small random momenta."""
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(n, 3, generator=g, dtype=torch.float64).to(dtype)
    p = (0.1 * torch.randn(n, 3, generator=g, dtype=torch.float64)).to(dtype)
    return q.requires_grad_(), p.requires_grad_()


def run(n: int, dtype: torch.dtype, sigma: float, backend: str | None, budget_gb: float) -> dict:
    q, p = data(n, dtype)
    t0 = time.perf_counter()
    h = hamiltonian(q, p, sigma, backend)
    t1 = time.perf_counter()
    gq, gp = torch.autograd.grad(h, (q, p))
    t2 = time.perf_counter()
    row = {
        "N": n,
        "H": h.item(),
        "|dH/dq|": gq.norm().item(),
        "|dH/dp|": gp.norm().item(),
        "forward s": t1 - t0,
        "fwd+bwd s": t2 - t0,
        "peak RSS MB": peak_rss_mb(),
    }
    need = dense_bytes(n, dtype)
    row["dense memory"] = f"{need / 2**30:.3g} GB"
    if need <= budget_gb * 2**30:
        t0 = time.perf_counter()
        hd = hamiltonian_dense(q, p, sigma)
        gqd, gpd = torch.autograd.grad(hd, (q, p))
        row["dense fwd+bwd s"] = time.perf_counter() - t0
        err = max(
            abs(h.item() - hd.item()) / abs(hd.item()),
            ((gq - gqd).norm() / gqd.norm()).item(),
            ((gp - gpd).norm() / gpd.norm()).item(),
        )
        row["dense rel. diff"] = f"{err:.1e}"
    else:
        row["dense fwd+bwd s"] = f"out of memory (> {budget_gb:g} GB)"
        row["dense rel. diff"] = "-"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="values of N (default: 1000 3000 10000, and 30000 100000 when a compiled engine runs)",
    )
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--backend", default="auto")
    parser.add_argument(
        "--dense-budget-gb", type=float, default=4.0, help="largest memory dense torch may use (default %(default)s GB)"
    )
    parser.add_argument("--out", default=None, help="PNG file to write")
    args = parser.parse_args()
    engine = resolve_backend(args.backend, False)
    sizes = args.sizes or [scaled(n) for n in [1000, 3000, 10000] + ([] if engine == "numpy" else [30000, 100000])]
    if args.sizes is None and engine == "numpy":
        print("(the NumPy engine is running: N = 1e5 takes long; ask for it with --sizes 1000 10000 100000)")
    dtype = getattr(torch, args.dtype)
    print(f"LDDMM Hamiltonian, Gaussian kernel σ = {args.sigma}, D = 3, {args.dtype}, kernla engine: {engine}\n")
    run(100, dtype, args.sigma, args.backend, 0.0)  # compiles the kernels once: timings below exclude it
    rows = [run(n, dtype, args.sigma, args.backend, args.dense_budget_gb) for n in sizes]
    headers = list(rows[0])
    cells = [[_fmt(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[k]) for c in cells)) for k, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for c in cells:
        print("  ".join(x.rjust(w) for x, w in zip(c, widths)))
    figure(figure_path("lddmm_hamiltonian.png", args.out), rows, args.dtype, engine, args.dense_budget_gb)


def figure(path, rows: list[dict], dtype: str, engine: str, budget_gb: float) -> None:
    """Forward+backward seconds against N, log-log: kernla, and dense torch where it fits the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.loglog([r["N"] for r in rows], [r["fwd+bwd s"] for r in rows], "o-", label=f"kernla ({engine} engine)")
    dense = [(r["N"], r["dense fwd+bwd s"]) for r in rows if isinstance(r["dense fwd+bwd s"], float)]
    if dense:
        ax.loglog(*zip(*dense), "s--", label=f"dense torch (N×N matrices, up to {budget_gb:g} GB)")
    ax.set_xlabel("N (control points)")
    ax.set_ylabel("seconds, H and its gradients")
    ax.set_title(f"LDDMM Hamiltonian: forward + backward, {dtype}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) >= 1e-3 else f"{v:.3e}"
    return str(v)


if __name__ == "__main__":
    main()
