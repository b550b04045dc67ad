"""torch.autograd through kernla's linear algebra: KernelOperator products (and diag / to_dense),
KernelOperator.solve, KernelSolve and LazyTensor.solve, checked with ``torch.autograd.gradcheck``
(float64, small N) and against dense torch (``torch.linalg.solve`` of the kernel matrix built in
torch).

Most checks force ``backend="numpy"`` (no compilation, fast on 2 cores); one test runs the default
backend end to end.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kernla import KernelOperator, KernelSolve, LazyTensor, Vi, Vj, kernels
from kernla.linalg import ConvergenceWarning

try:
    import torch
except ImportError:  # optional: the tests that use it are marked requires("torch")
    torch = None

F64 = torch.float64 if torch is not None else None  # read by the requires("torch") tests only
NP = "numpy"
GAUSS = "Exp(-G * SqDist(X, Y))"
TIGHT = 1e-14  # CG tolerance: finite differences divide the solve error by gradcheck's eps (1e-6)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def leaf(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=gen(seed), dtype=F64)).requires_grad_()


def dense_gauss(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return torch.exp(-g * ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))


def op(x, y, g, **kw) -> KernelOperator:
    return KernelOperator(GAUSS, X=Vi(x), Y=Vj(y), G=g, backend=NP, **kw)


def assert_grads_match(out, ref, inputs, seed=0, rtol=1e-7, atol=1e-9):
    """Values and vector-Jacobian products of ``out`` and of the dense reference agree."""
    assert torch.allclose(out, ref, rtol=rtol, atol=atol)
    w = torch.randn(out.shape, generator=gen(seed), dtype=F64)
    got = torch.autograd.grad((out * w).sum(), inputs)
    want = torch.autograd.grad((ref * w).sum(), inputs, retain_graph=True)  # references share graphs
    for u, v in zip(got, want):
        assert torch.allclose(u, v, rtol=rtol, atol=atol), (u, v)


# ---------------------------------------------------------------------------------------------
# products
# ---------------------------------------------------------------------------------------------
@pytest.mark.requires("torch")
def test_products_gradcheck_vector_points_and_parameter():
    x, y = leaf(7, 2, seed=1), leaf(5, 2, seed=2)
    g = torch.tensor([0.6], dtype=F64, requires_grad=True)
    v, u = leaf(5, seed=3), leaf(7, 2, seed=4)
    assert torch.autograd.gradcheck(lambda x, y, g, v: op(x, y, g) @ v, (x, y, g, v))
    assert torch.autograd.gradcheck(lambda x, y, g, u: op(x, y, g).T @ u, (x, y, g, u))  # transposed, matmat
    assert torch.autograd.gradcheck(lambda x, y, g, u: u.T @ op(x, y, g), (x, y, g, u))  # u @ K (rdot)
    assert torch.autograd.gradcheck(lambda x, y, g, u: op(x, y, g).rmatmat(u), (x, y, g, u))
    assert torch.autograd.gradcheck(lambda x, g, u: (2.5 * op(x, x, g)).shifted(0.3).matmat(u), (x, g, u))


@pytest.mark.requires("torch")
def test_products_match_dense_torch():
    x, y = leaf(9, 3, seed=5), leaf(6, 3, seed=6)
    g = torch.tensor([0.4], dtype=F64, requires_grad=True)
    V, U = leaf(6, 2, seed=7), leaf(9, seed=8)
    k = dense_gauss(x, y, g)
    K = op(x, y, g)
    assert_grads_match(K @ V, k @ V, (x, y, g, V))
    assert_grads_match(K.T.matvec(U), k.T @ U, (x, y, g, U))
    assert_grads_match((-K / 2).rmatvec(U), -k.T @ U / 2, (x, y, g, U))


@pytest.mark.requires("torch")
def test_products_grad_only_through_the_operator_or_only_through_the_vector():
    x = leaf(6, 2, seed=9)
    v = torch.randn(6, generator=gen(10), dtype=F64)
    out = op(x, x, 0.5) @ v  # the operator's data requires grad, v does not
    assert out.requires_grad
    (gx,) = torch.autograd.grad(out.sum(), x)
    xr = x.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad((dense_gauss(xr, xr, 0.5) @ v).sum(), xr)
    assert torch.allclose(gx, want, atol=1e-12)
    xn = np.random.default_rng(0).normal(size=(6, 2))  # a NumPy operator times a tensor that requires grad
    vv = leaf(6, seed=11)
    out = KernelOperator(GAUSS, X=Vi(xn), Y=Vj(xn), G=0.5, backend=NP) @ vv
    assert isinstance(out, torch.Tensor) and out.requires_grad
    (gv,) = torch.autograd.grad(out.sum(), vv)
    assert torch.allclose(gv, torch.as_tensor(np.exp(-0.5 * ((xn[:, None] - xn[None]) ** 2).sum(-1))).sum(0))
    with torch.no_grad():  # no graph when grad mode is off
        assert not (op(x, x, 0.5) @ vv).requires_grad


@pytest.mark.requires("torch")
def test_product_double_backward():
    x, v = leaf(6, 2, seed=12), leaf(6, seed=13)
    g = torch.tensor([0.7], dtype=F64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, g, v: op(x, x, g) @ v, (x, g, v))


@pytest.mark.requires("torch")
def test_diag_and_to_dense_are_differentiable():
    x, y = leaf(6, 2, seed=14), leaf(6, 2, seed=15)
    g = torch.tensor([0.5], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y, g: (3 * op(x, y, g)).shifted(0.2).diag(), (x, y, g))
    assert torch.autograd.gradcheck(lambda x, y, g: op(x, y[:4], g).to_dense(), (x, y, g))
    K = (3 * op(x, y, g)).shifted(0.2)
    k = 3 * dense_gauss(x, y, g) + 0.2 * torch.eye(6, dtype=F64)
    assert_grads_match(K.to_dense(), k, (x, y, g))
    assert_grads_match(K.diag(), torch.diagonal(k), (x, y, g))


# ---------------------------------------------------------------------------------------------
# KernelOperator.solve
# ---------------------------------------------------------------------------------------------
@pytest.mark.requires("torch")
def test_operator_solve_gradcheck():
    x, b = leaf(8, 2, seed=16), leaf(8, 2, seed=17)
    g = torch.tensor([1.5], dtype=F64, requires_grad=True)
    alpha = torch.tensor(0.4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g, b, al: op(x, x, g).solve(b, alpha=al, tol=TIGHT), (x, g, b, alpha))
    assert torch.autograd.gradcheck(lambda x, b: (2 * op(x, x, 0.8)).shifted(0.1).solve(b[:, 0], tol=TIGHT), (x, b))


@pytest.mark.requires("torch")
@pytest.mark.parametrize("precond", [None, "jacobi", "nystrom"])
def test_operator_solve_matches_dense_torch(precond):
    n = 12
    x, b = leaf(n, 2, seed=18), leaf(n, 3, seed=19)
    g = torch.tensor([2.0], dtype=F64, requires_grad=True)
    alpha = torch.tensor(0.3, dtype=F64, requires_grad=True)
    a, info = op(x, x, g).solve(
        b, alpha=alpha, tol=1e-13, precond=precond, rank=None if precond != "nystrom" else 6, return_info=True
    )
    assert info.converged and a.grad_fn is not None
    ref = torch.linalg.solve(dense_gauss(x, x, g) + alpha * torch.eye(n, dtype=F64), b)
    assert_grads_match(a, ref, (x, g, b, alpha), seed=20)


@pytest.mark.requires("torch")
def test_operator_solve_numpy_rhs_with_differentiable_data():
    x = leaf(8, 1, seed=21)
    b = np.linspace(-1, 1, 8)
    a = op(x, x, 1.0).solve(b, alpha=0.5, tol=TIGHT)
    assert isinstance(a, torch.Tensor) and a.requires_grad and a.shape == (8,)
    ref = torch.linalg.solve(dense_gauss(x, x, 1.0) + 0.5 * torch.eye(8, dtype=F64), torch.as_tensor(b))
    assert_grads_match(a, ref, (x,), seed=22)


@pytest.mark.requires("torch")
def test_solve_backward_warns_when_the_adjoint_solve_does_not_converge():
    x, b = leaf(10, 2, seed=23), leaf(10, seed=24)
    with pytest.warns(ConvergenceWarning) as forward:  # the forward solve
        a = op(x, x, 1.0).solve(b, alpha=0.01, tol=TIGHT, maxiter=2)
    with pytest.warns(ConvergenceWarning) as backward:  # the adjoint solve of the backward
        a.sum().backward()
    assert x.grad is not None and b.grad is not None
    # both warnings name this file, not kernla's or torch's autograd.Function.apply
    assert {w.filename for w in [*forward, *backward] if w.category is ConvergenceWarning} == {__file__}


# ---------------------------------------------------------------------------------------------
# KernelSolve and LazyTensor.solve
# ---------------------------------------------------------------------------------------------
ALIASES = ["X = Vi(2)", "Y = Vj(2)", "B = Vj(2)", "G = Pm(1)"]


@pytest.mark.requires("torch")
def test_kernelsolve_gradcheck_b_points_parameter_alpha():
    kinv = KernelSolve("Exp(-G * SqDist(X, Y)) * B", ALIASES, "B", axis=1)
    x, b = leaf(8, 2, seed=25), leaf(8, 2, seed=26)
    g = torch.tensor([1.2], dtype=F64, requires_grad=True)
    alpha = torch.tensor(0.5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, b, g, al: kinv(x, x, b, g, alpha=al, tol=TIGHT, backend=NP), (x, b, g, alpha)
    )
    ref = torch.linalg.solve(dense_gauss(x, x, g) + alpha * torch.eye(8, dtype=F64), b)
    assert_grads_match(kinv(x, x, b, g, alpha=alpha, tol=TIGHT, backend=NP), ref, (x, b, g, alpha), seed=27)


@pytest.mark.requires("torch")
def test_kernelsolve_axis0_and_a_generic_linear_formula():
    x, b = leaf(7, 2, seed=28), leaf(7, 2, seed=29)
    g = torch.tensor([0.9], dtype=F64, requires_grad=True)
    k0 = KernelSolve("Exp(-G * SqDist(X, Y)) * B", ["X = Vj(2)", "Y = Vi(2)", "B = Vi(2)", "G = Pm(1)"], "B", axis=0)
    assert torch.autograd.gradcheck(lambda x, b, g: k0(x, x, b, g, alpha=0.3, tol=TIGHT, backend=NP), (x, b, g))
    # not of the form k(x, y) * B: solved by CG on the flattened unknown (KernelSolve._generic)
    kg = KernelSolve("Exp(-G * SqDist(X, Y)) * B + Exp(-SqDist(X, Y)) * B", ALIASES, "B", axis=1)
    assert kg.kernel is None
    assert torch.autograd.gradcheck(lambda x, b, g: kg(x, x, b, g, alpha=0.3, tol=TIGHT, backend=NP), (x, b, g))
    a, info = kg(x, x, b, g, alpha=0.3, tol=TIGHT, backend=NP, return_info=True)
    assert info.converged
    k = dense_gauss(x, x, g) + dense_gauss(x, x, 1.0)
    ref = torch.linalg.solve(k + 0.3 * torch.eye(7, dtype=F64), b)
    assert_grads_match(a, ref, (x, b, g), seed=30)


@pytest.mark.requires("torch")
def test_lazytensor_solve_gradcheck():
    x, b = leaf(8, 2, seed=31), leaf(8, 2, seed=32)
    g = torch.tensor([1.1], dtype=F64, requires_grad=True)

    def K(x, g):
        return (-LazyTensor(g, axis=2) * Vi(x).sqdist(Vj(x))).exp()

    assert torch.autograd.gradcheck(lambda x, b, g: K(x, g).solve(b, alpha=0.2, tol=TIGHT), (x, b, g))
    assert torch.autograd.gradcheck(lambda x, b, g: K(x, g).solve(Vi(b), alpha=0.2, tol=TIGHT), (x, b, g))


@pytest.mark.requires("torch")
def test_kernels_sigma_tensor_and_default_backend():
    """kernla.kernels with a learnable σ, on the default (compiled where available) backend."""
    x, b = leaf(10, 2, seed=33), leaf(10, seed=34)
    sigma = torch.tensor(0.8, dtype=F64, requires_grad=True)
    k = dense_gauss(x, x, 1 / (2 * sigma**2))
    # the operator holds G = 1/(2σ²), a torch expression of σ: like any torch graph, one backward per build
    assert_grads_match(kernels.gaussian(x, sigma=sigma) @ b, k @ b, (x, sigma, b), seed=35)
    ref = torch.linalg.solve(k + 0.1 * torch.eye(10, dtype=F64), b)
    assert_grads_match(kernels.gaussian(x, sigma=sigma).solve(b, alpha=0.1, tol=TIGHT), ref, (x, sigma, b), seed=36)


def test_numpy_programs_never_import_torch():
    code = (
        "import sys, numpy as np, kernla\n"
        "x = np.random.default_rng(0).normal(size=(20, 2))\n"
        "K = kernla.kernels.gaussian(x, sigma=1.0, backend='numpy')\n"
        "K @ np.ones(20); K.T @ np.ones(20); K.diag(); K.solve(np.ones(20), alpha=0.1)\n"
        "kinv = kernla.KernelSolve('Exp(-SqDist(X, Y)) * B + Exp(-2 * SqDist(X, Y)) * B',"
        " ['X = Vi(2)', 'Y = Vj(2)', 'B = Vj(1)'], 'B')\n"
        "kinv(x, x, np.ones((20, 1)), alpha=0.1, backend='numpy')\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
