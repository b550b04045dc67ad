"""Geodesic shooting (LDDMM): register one 2-D curve onto another by optimising the initial momentum.

The source curve's points q carry momenta p; the deformation is the Hamiltonian flow of
H(q, p) = ½ ⟨p, K_qq p⟩ (Gaussian kernel, scale σ), integrated with a few explicit Euler steps:

    dq/dt = ∂H/∂p = K_qq p,    dp/dt = -∂H/∂q.

Each step asks torch.autograd for ∂H/∂q and ∂H/∂p with ``create_graph=True``; those gradients
are kernla reductions, differentiable again, so the gradient of the final loss with respect to
the initial momentum p0 goes through second derivatives of the kernel (double backward) — never
an N×N matrix. The loss is the kernel (MMD) distance between the shot curve and the target
(another kernla reduction) plus a small multiple of the shooting energy H(q0, p0); p0 is found
by gradient descent (with a backtracking step). The figure shows the curves, the point
trajectories and the deformed grid (grid points follow the velocity field v(x) = Σ_j K(x, q_j) p_j).

The figure goes to ``lddmm_shooting.png`` next to this script (or into ``$KERNLA_FIGURES``, or
``--out``). The log's "iteration k" line gives the loss and gradient norm at the momentum reached
after k steps (iteration 0: the starting loss, before any step).

    python examples/lddmm_shooting.py [--n 100] [--steps 8] [--iters 60] [--out FILE.png]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from _common import figure_path, scaled

from kernla import LazyTensor


def gauss(x: torch.Tensor, y: torch.Tensor, sigma: float) -> LazyTensor:
    """The symbolic Gaussian kernel matrix exp(-|x_i - y_j|²/σ²)."""
    return (-((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1) / sigma**2).exp()


def hamiltonian(q: torch.Tensor, p: torch.Tensor, sigma: float) -> torch.Tensor:
    """H(q, p) = ½ ⟨p, K_qq p⟩.

    >>> q = torch.zeros(2, 2, dtype=torch.float64); p = torch.ones(2, 2, dtype=torch.float64)
    >>> float(hamiltonian(q, p, 1.0))
    4.0
    """
    return 0.5 * (p * (gauss(q, q, sigma) * LazyTensor(p[None, :, :])).sum(dim=1)).sum()


def shoot(q0: torch.Tensor, p0: torch.Tensor, sigma: float, steps: int, create_graph: bool = True):
    """Euler integration of the Hamiltonian flow; returns the list of (q, p) states."""
    states = [(q0, p0)]
    q, p, dt = q0, p0, 1.0 / steps
    for _ in range(steps):
        dq_h, dp_h = torch.autograd.grad(hamiltonian(q, p, sigma), (q, p), create_graph=create_graph)
        q, p = q + dt * dp_h, p - dt * dq_h
        if not create_graph:
            q, p = q.detach().requires_grad_(), p.detach().requires_grad_()
        states.append((q, p))
    return states


def mmd(x: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Squared kernel (MMD) distance between two point sets with uniform weights."""

    def s(a, b):
        return gauss(a, b, sigma).sum(dim=1).sum() / (a.shape[0] * b.shape[0])

    return s(x, x) - 2 * s(x, y) + s(y, y)


def curves(n: int):
    """Source: a circle; target: a bean-shaped curve (a bent, squashed circle)."""
    t = torch.linspace(0, 2 * math.pi, n + 1, dtype=torch.float64)[:-1]
    source = torch.stack([torch.cos(t), torch.sin(t)], 1) * 0.6
    r = 0.6 + 0.18 * torch.cos(2 * t) - 0.12 * torch.sin(t)
    target = torch.stack([r * torch.cos(t) * 1.15 + 0.15, r * torch.sin(t) * 0.8 + 0.1 * torch.cos(3 * t)], 1)
    return source, target


def loss_of(p0, q0, target, sigma, sigma_data, steps, gamma):
    q1 = shoot(q0, p0, sigma, steps)[-1][0]
    return mmd(q1, target, sigma_data) + gamma * hamiltonian(q0, p0, sigma)


def register(q0, target, sigma, sigma_data, steps, iters, gamma=1e-3, log=print):
    """Gradient descent on the initial momentum, with a backtracking (Armijo) step."""
    p0 = torch.zeros_like(q0, requires_grad=True)
    step, history = 1.0, []
    loss = loss_of(p0, q0, target, sigma, sigma_data, steps, gamma)
    for it in range(iters):
        (g,) = torch.autograd.grad(loss, p0)
        history.append(loss.item())
        if it % 10 == 0:  # the loss at this iterate, before its step (iteration 0: the start)
            log(f"  iteration {it:3d}: loss {loss.item():.4e}, |grad| {g.norm().item():.2e}")
        while True:
            trial = (p0 - step * g).detach().requires_grad_()
            new = loss_of(trial, q0, target, sigma, sigma_data, steps, gamma)
            if new.item() <= loss.item() - 1e-4 * step * (g * g).sum().item() or step < 1e-8:
                break
            step *= 0.5
        p0, loss, step = trial, new, step * 2.0
    history.append(loss.item())
    log(f"  after {iters} iterations: loss {loss.item():.4e}")
    return p0.detach(), history


def flow_points(x: torch.Tensor, states, sigma: float) -> list[torch.Tensor]:
    """Carry arbitrary points (the grid) along the flow: dx/dt = Σ_j K(x, q_j) p_j."""
    out, dt = [x], 1.0 / (len(states) - 1)
    for q, p in states[:-1]:
        v = (gauss(x, q.detach(), sigma) * LazyTensor(p.detach()[None, :, :])).sum(dim=1)
        x = x + dt * v
        out.append(x)
    return out


def figure(path, source, target, states, grid_paths, history, shape):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axl) = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [1.25, 1]})
    g = grid_paths[-1].numpy().reshape(shape + (2,))
    for k in range(shape[0]):
        ax.plot(g[k, :, 0], g[k, :, 1], color="0.8", lw=0.6)
    for k in range(shape[1]):
        ax.plot(g[:, k, 0], g[:, k, 1], color="0.8", lw=0.6)
    traj = np.stack([q.detach().numpy() for q, _ in states])
    for k in range(0, traj.shape[1], 3):
        ax.plot(traj[:, k, 0], traj[:, k, 1], color="tab:green", lw=0.7, alpha=0.7)
    close = lambda a: np.vstack([a, a[:1]])  # noqa: E731
    ax.plot(*close(source.numpy()).T, color="tab:blue", lw=2, label="source")
    ax.plot(*close(target.numpy()).T, color="tab:red", lw=2, label="target")
    ax.plot(*close(traj[-1]).T, "--", color="k", lw=1.5, label="shot source")
    q0, p0 = states[0][0].detach().numpy(), states[0][1].detach().numpy()
    ax.quiver(
        q0[::3, 0], q0[::3, 1], p0[::3, 0], p0[::3, 1], color="tab:purple", width=0.003, label="initial momentum p0"
    )
    ax.set_aspect("equal")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("geodesic shooting: curves, trajectories, deformed grid")
    axl.semilogy(history, marker=".")
    axl.set_xlabel("gradient-descent iteration")
    axl.set_ylabel("loss (MMD + γ·H)")
    axl.set_title("registration loss during the descent")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="points per curve")
    parser.add_argument("--steps", type=int, default=8, help="Euler steps of the flow")
    parser.add_argument("--iters", type=int, default=scaled(60), help="gradient-descent iterations (default 60)")
    parser.add_argument("--sigma", type=float, default=0.35, help="deformation kernel scale")
    parser.add_argument("--sigma-data", type=float, default=0.3, help="scale of the MMD data term's kernel")
    parser.add_argument("--out", default=None, help="PNG file to write")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    source, target = curves(args.n)
    q0 = source.clone().requires_grad_()
    t0 = time.perf_counter()
    print(f"registering a circle onto a bean: {args.n} points, {args.steps} Euler steps, σ = {args.sigma}")
    p0, history = register(q0, target, args.sigma, args.sigma_data, args.steps, args.iters)
    print(f"loss {history[0]:.4e} -> {history[-1]:.4e} in {time.perf_counter() - t0:.1f} s")
    states = shoot(source.clone().requires_grad_(), p0.requires_grad_(), args.sigma, args.steps, create_graph=False)
    gap = torch.cdist(states[-1][0].detach(), target).min(1)[0].max().item()
    print(f"largest distance from a shot point to the target curve: {gap:.3f} (curve radius ~0.6)")
    shape = (21, 21)
    u = torch.linspace(-1.1, 1.1, shape[0])
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    grid_paths = flow_points(grid, states, args.sigma)
    path = figure_path("lddmm_shooting.png", args.out)
    figure(path, source, target, states, grid_paths, history, shape)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
