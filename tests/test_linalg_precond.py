"""Built preconditioners are scipy LinearOperators M⁻¹: scipy's cg takes them as ``M`` (issue 9, point 5)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla

from kernla import kernels
from kernla.linalg import Jacobi, Nystrom, PreconditionerOperator, eye


@pytest.fixture(scope="module")
def problem():
    n, alpha = 301, 1e-3  # odd size: no power-of-two tile hides an off-by-one
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(n, 2))
    K = kernels.gaussian(x, sigma=0.2)
    A = K + alpha * eye(n)
    b = rng.standard_normal(n)
    dense = np.exp(-((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) / (2 * 0.2**2)) + alpha * np.eye(n)
    return K, A, alpha, b, np.linalg.solve(dense, b)


def scipy_cg(A, b, M=None):
    iterations = []
    a, status = sla.cg(A, b, rtol=1e-10, maxiter=5000, M=M, callback=lambda xk: iterations.append(1))
    return a, status, len(iterations)


@pytest.mark.parametrize("spec", [Nystrom(rank=60), Nystrom(rank=60, landmarks="random", seed=0), Jacobi()])
def test_scipy_cg_with_a_kernla_preconditioner(problem, spec):
    K, A, alpha, b, exact = problem
    P = spec.build(K, alpha)
    assert isinstance(P, sla.LinearOperator) and isinstance(P, PreconditionerOperator)
    assert P.shape == (301, 301) and P.dtype == np.float64
    np.testing.assert_allclose(P @ b, P(b[:, None])[:, 0], rtol=1e-14)  # scipy's and block CG's way agree
    a, status, its = scipy_cg(A, b, M=P)
    assert status == 0
    np.testing.assert_allclose(a, exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max())
    _, status0, its0 = scipy_cg(A, b)
    if isinstance(spec, Nystrom):
        assert its < its0 / 3, (its, its0)
    else:  # a constant diagonal: Jacobi is a scaling, CG's iterates do not change
        assert its <= its0 + 2


def test_block_cg_takes_the_same_built_preconditioner(problem):
    K, A, alpha, b, exact = problem
    P = Nystrom(rank=60).build(K, alpha)
    a, info = K.solve(b, alpha=alpha, precond=P, tol=1e-10, return_info=True)
    assert info.converged
    np.testing.assert_allclose(a, exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max())
    _, plain = K.solve(b, alpha=alpha, tol=1e-10, return_info=True)
    assert info.iterations < plain.iterations
