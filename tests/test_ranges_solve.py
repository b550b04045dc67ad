"""``KernelSolve(...)(..., ranges=)``: block-sparse solves against dense masked float64 solves.

The mask comes from the ranges tuple by plain loops (``tests/test_ranges.py``'s ``mask_of``); the
reference is ``numpy.linalg.solve`` / ``torch.linalg.solve`` on the masked dense matrix. The masks
are symmetric (a solve needs a symmetric operator) and not block-diagonal, and ``alpha`` is taken
above the masked matrix's most negative eigenvalue so that the system is positive definite.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernla.numpy import KernelSolve as NumpyKernelSolve
from tests.test_ranges import from_keep, mask_of

ENGINES = ["numpy", "cpu"]
KERNEL = "Exp(-G * SqDist(X, Y)) * B"  # k(x, y) * B: the KernelOperator path
GENERIC = "Exp(-G * SqDist(X, Y)) * B * H"  # not of that form: CG on the flattened unknown
ALIASES = {
    1: ["X = Vi(2)", "Y = Vj(2)", "B = Vj(3)", "G = Pm(1)"],
    0: ["X = Vi(2)", "Y = Vj(2)", "B = Vi(3)", "G = Pm(1)"],
}


def _problem(n: int, rng) -> tuple:
    """Points, a symmetric (not block-diagonal) ranges tuple, its mask and a safe alpha."""
    cuts = np.unique(np.concatenate([[0, n], rng.choice(np.arange(1, n), size=5, replace=False)]))
    blocks = np.stack([cuts[:-1], cuts[1:]], 1)
    keep = rng.random((len(blocks), len(blocks))) < 0.4
    keep = keep | keep.T | np.eye(len(blocks), dtype=bool)
    order = rng.permutation(len(blocks))  # clusters listed out of order
    r = from_keep(blocks[order], blocks[order], keep[np.ix_(order, order)])
    x = rng.uniform(size=(n, 2))
    mask = mask_of(r, n, n)
    assert not mask.all() and (mask == mask.T).all()
    K = np.exp(-2.0 * ((x[:, None] - x[None]) ** 2).sum(-1)) * mask
    alpha = 0.5 + 1.5 * max(0.0, -np.linalg.eigvalsh(K).min())  # GENERIC scales K by 1.5
    return x, r, K, alpha


def _args(formula: str, axis: int, x, b, h=None) -> tuple:
    aliases = ALIASES[axis] + (["H = Pm(1)"] if formula == GENERIC else [])
    args = (x, x, b, np.array([2.0])) + (() if h is None else (h,))
    return aliases, args


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("formula", [KERNEL, GENERIC])
def test_numpy_solve_matches_the_masked_dense_solve(engine, axis, formula):
    rng = np.random.default_rng([31, axis, len(formula)])
    n = 37
    x, r, K, alpha = _problem(n, rng)
    b = rng.normal(size=(n, 3))
    h = np.array([1.5]) if formula == GENERIC else None
    aliases, args = _args(formula, axis, x, b, h)
    Kinv = NumpyKernelSolve(formula, aliases, "B", axis=axis)
    a = Kinv(*args, alpha=alpha, tol=1e-12, backend=engine, ranges=r)
    scale = 1.5 if formula == GENERIC else 1.0
    ref = np.linalg.solve(scale * K + alpha * np.eye(n), b)
    np.testing.assert_allclose(a, ref, atol=1e-8)
    dense = Kinv(*args, alpha=alpha, tol=1e-12, backend=engine)
    assert np.abs(dense - ref).max() > 1e-3  # the ranges matter: the unmasked solve differs


@pytest.mark.parametrize("formula", [KERNEL, GENERIC])
def test_torch_solve_and_gradients_match_the_masked_dense_solve(formula):
    torch = pytest.importorskip("torch")
    from kernla.torch import KernelSolve as TorchKernelSolve  # the torch re-export, next to torch's import

    rng = np.random.default_rng([32, len(formula)])
    n = 29
    x_np, r, _, alpha = _problem(n, rng)
    mask = torch.tensor(mask_of(r, n, n))
    x = torch.tensor(x_np, requires_grad=True)
    b = torch.tensor(rng.normal(size=(n, 3)), requires_grad=True)
    g = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    h = torch.tensor([1.5], dtype=torch.float64) if formula == GENERIC else None
    aliases, _ = _args(formula, 1, x_np, b, h)
    args = (x, x, b, g) + (() if h is None else (h,))
    a = TorchKernelSolve(formula, aliases, "B", axis=1)(*args, alpha=alpha, tol=1e-12, ranges=r)
    K = torch.exp(-g * ((x[:, None] - x[None]) ** 2).sum(-1)) * mask * (1.0 if h is None else h)
    ref = torch.linalg.solve(K + alpha * torch.eye(n, dtype=torch.float64), b)
    np.testing.assert_allclose(a.detach().numpy(), ref.detach().numpy(), atol=1e-8)
    w = torch.tensor(rng.normal(size=(n, 3)))
    got = torch.autograd.grad((a * w).sum(), (x, b, g))
    want = torch.autograd.grad((ref * w).sum(), (x, b, g))
    for gg, ww in zip(got, want):
        np.testing.assert_allclose(gg.numpy(), ww.numpy(), atol=1e-7)
