"""KernelOperator, block CG with preconditioners, Lanczos eigsh, KernelSolve (issue 5).

Sizes stay small (N <= 600): everything must also run on the NumPy engine.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import scipy.sparse.linalg as sla

import kernla
from kernla import KernelOperator, KernelSolve, LazyTensor, Vi, Vj, kernels
from kernla.errors import FormulaError, InputValueError, ShapeError
from kernla.linalg import ConvergenceWarning, Jacobi, Nystrom, eye
from kernla.linalg import kernel as op_module


def rng(seed=0):
    return np.random.default_rng(seed)


def sqdist(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def gauss_dense(x, y, sigma):
    return np.exp(-sqdist(x, y) / (2 * sigma**2))


def relres(A, a, b):
    return np.linalg.norm(A @ a - b, axis=0) / np.linalg.norm(b, axis=0)


@pytest.fixture(scope="module")
def square():
    x = rng(1).uniform(size=(300, 2))
    K = kernels.gaussian(x, sigma=0.2)
    return x, K, gauss_dense(x, x, 0.2)


# ---------------------------------------------------------------------------------------------
# the operator
# ---------------------------------------------------------------------------------------------
def test_linear_operator_contract():
    r = rng(2)
    x, y = r.uniform(size=(120, 3)), r.uniform(size=(80, 3))
    K = KernelOperator("Exp(-G * SqDist(X, Y))", X=Vi(x), Y=Vj(y), G=2.0)
    D = np.exp(-2.0 * sqdist(x, y))
    assert isinstance(K, sla.LinearOperator)
    assert K.shape == (120, 80) and K.dtype == np.float64
    v, u = r.standard_normal(80), r.standard_normal(120)
    V, U = r.standard_normal((80, 4)), r.standard_normal((120, 3))
    np.testing.assert_allclose(K.matvec(v), D @ v, rtol=1e-12, atol=1e-12)
    assert K.matvec(v[:, None]).shape == (120, 1)
    np.testing.assert_allclose(K.matmat(V), D @ V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K @ V, D @ V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K(v), D @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.rmatvec(u), D.T @ u, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.rmatmat(U), D.T @ U, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.T @ u, D.T @ u, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.H @ U, D.T @ U, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.adjoint().matvec(u), D.T @ u, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(u @ K, u @ D, rtol=1e-12, atol=1e-12)
    assert isinstance(K.T, KernelOperator) and K.T.shape == (80, 120)
    L = sla.aslinearoperator(K)
    np.testing.assert_allclose(L.matvec(v), D @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((K.T @ K) @ v, D.T @ (D @ v), rtol=1e-10)
    np.testing.assert_allclose(K.to_dense(), D, rtol=1e-12, atol=1e-14)


def test_matmat_is_one_reduction(monkeypatch):
    x = rng(3).uniform(size=(50, 2))
    K = kernels.gaussian(x, sigma=0.5)
    calls = []
    real = op_module.reduce
    monkeypatch.setattr(op_module, "reduce", lambda *a, **k: calls.append(1) or real(*a, **k))
    K @ rng(4).standard_normal((50, 7))
    K.T @ rng(4).standard_normal((50, 5))
    assert len(calls) == 2


def test_lazytensor_and_string_agree():
    x = rng(5).uniform(size=(60, 2))
    K_ij = (-LazyTensor(x[:, None, :]).sqdist(LazyTensor(x[None, :, :])) * 3.0).exp()
    A, B = KernelOperator(K_ij), KernelOperator("Exp(-G * SqDist(X, Y))", X=Vi(x), Y=Vj(x), G=3.0)
    np.testing.assert_allclose(A.to_dense(), B.to_dense(), rtol=1e-13)
    # a binding may be an expression, and data shared by two bindings is passed once
    C = KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x) * 2.0, Y=Vj(x) * 2.0)
    np.testing.assert_allclose(C.to_dense(), np.exp(-4 * sqdist(x, x)), rtol=1e-13)


def test_construction_errors():
    x = rng(6).uniform(size=(10, 2))
    with pytest.raises(ShapeError, match="Vi"):
        KernelOperator("Exp(-SqDist(X, Y))", X=x, Y=Vj(x))
    with pytest.raises(FormulaError, match="not used"):
        KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(x), Q=1.0)
    with pytest.raises(FormulaError, match="G"):
        KernelOperator("Exp(-G * SqDist(X, Y))", X=Vi(x), Y=Vj(x))
    with pytest.raises(ShapeError, match="same number"):
        KernelOperator("Exp(-SqDist(X, Y)) * W", X=Vi(x), Y=Vj(x), W=Vi(np.ones((3, 1))))
    with pytest.raises(ShapeError, match="scalar"):
        KernelOperator(LazyTensor(x[:, None, :]) - LazyTensor(x[None, :, :]))
    with pytest.raises(ShapeError, match="columns"):
        KernelOperator("Exp(-SqNorm2(X))", X=Vi(x))
    with pytest.raises(InputValueError):
        KernelOperator("Exp(-G * SqDist(X, Y))", X=Vi(x), Y=Vj(x), G=float("nan"))
    K = kernels.gaussian(x)
    with pytest.raises(ShapeError):
        K @ np.ones(7)
    with pytest.raises(InputValueError, match="NaN"):
        K @ np.full(10, np.nan)
    with pytest.raises(ShapeError, match="square"):
        kernels.gaussian(x, x[:4]).solve(np.ones(10))
    with pytest.raises(ShapeError):
        K.solve(np.ones(9))
    with pytest.raises(InputValueError):
        K.solve(np.array([np.inf] + [1.0] * 9))
    with pytest.raises(InputValueError, match="preconditioner"):
        K.solve(np.ones(10), precond="cholesky")


def test_diag_to_dense_scaling_and_shift(square):
    x, K, D = square
    np.testing.assert_allclose(K.diag(), np.ones(300))
    A = 2.0 * K + 0.5 * eye(300)
    assert isinstance(A, KernelOperator) and A.scale == 2.0 and A.shift == 0.5
    Ad = 2 * D + 0.5 * np.eye(300)
    np.testing.assert_allclose(A.to_dense(), Ad, rtol=1e-12)
    np.testing.assert_allclose(A.diag(), np.diag(Ad))
    v = rng(7).standard_normal(300)
    np.testing.assert_allclose(A @ v, Ad @ v, rtol=1e-11)
    np.testing.assert_allclose((K.shifted(1.0) - eye(300)) @ v, D @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((-K / 4) @ v, -D @ v / 4, rtol=1e-11)
    with pytest.raises(TypeError, match="eye"):
        K + 1.0
    with pytest.raises(ShapeError, match="square"):
        kernels.gaussian(x, x[:5]).shifted(1.0)
    with pytest.raises(ShapeError, match="force=True"):
        K.to_dense(max_entries=1000)
    assert K.to_dense(force=True, max_entries=1000).shape == (300, 300)
    # a non-constant diagonal: evaluated on the pairs i = j
    w = rng(8).uniform(1, 2, size=(300, 1))
    W = KernelOperator("Exp(-SqDist(X, Y)) * A * B", X=Vi(x), Y=Vj(x), A=Vi(w), B=Vj(w))
    np.testing.assert_allclose(W.diag(), w[:, 0] ** 2)


def test_kernels_closed_forms():
    r = rng(9)
    x, y = r.uniform(size=(40, 3)), r.uniform(size=(30, 3))
    d2 = sqdist(x, y)
    d = np.sqrt(d2)
    s = 0.7
    expected = {
        "gaussian": np.exp(-d2 / (2 * s * s)),
        "laplacian": np.exp(-d / s),
        "cauchy": 1 / (1 + d2 / s**2),
        "inverse_multiquadric": 1 / np.sqrt(1 + d2 / s**2),
    }
    for name, ref in expected.items():
        np.testing.assert_allclose(getattr(kernels, name)(x, y, sigma=s).to_dense(), ref, rtol=1e-12)
    t = d / s
    maternref = {
        0.5: np.exp(-t),
        1.5: (1 + np.sqrt(3) * t) * np.exp(-np.sqrt(3) * t),
        2.5: (1 + np.sqrt(5) * t + 5 * t**2 / 3) * np.exp(-np.sqrt(5) * t),
    }
    for nu, ref in maternref.items():
        np.testing.assert_allclose(kernels.matern(x, y, sigma=s, nu=nu).to_dense(), ref, rtol=1e-12)
    K = kernels.gaussian(x, sigma=s)  # y=None: y = x
    assert K.shape == (40, 40)
    np.testing.assert_allclose(K.to_dense(), K.to_dense().T)
    with pytest.raises(InputValueError):
        kernels.gaussian(x, sigma=-1.0)
    with pytest.raises(InputValueError, match="nu"):
        kernels.matern(x, nu=3.5)
    # 1-D points
    assert kernels.laplacian(np.linspace(0, 1, 7)).shape == (7, 7)


# ---------------------------------------------------------------------------------------------
# solving
# ---------------------------------------------------------------------------------------------
def test_solve_matches_dense(square):
    x, K, D = square
    r = rng(10)
    b = r.standard_normal(300)
    a = K.solve(b, alpha=0.1)
    assert a.shape == (300,)
    A = D + 0.1 * np.eye(300)
    assert relres(A, a, b) < 1e-9
    np.testing.assert_allclose(a, np.linalg.solve(A, b), rtol=1e-7, atol=1e-7)
    B = r.standard_normal((300, 4))
    a, info = K.solve(B, alpha=0.1, precond="nystrom", return_info=True)
    assert a.shape == (300, 4) and info.converged
    assert (relres(A, a, B) < 1e-9).all()
    assert info.residual_norms.shape == (4,) and (info.residual_norms <= 1e-10).all()
    # the operator's own shift counts: (K + 0.1 I) a = b
    np.testing.assert_allclose(K.shifted(0.1).solve(b, tol=1e-12), np.linalg.solve(A, b), rtol=1e-7, atol=1e-8)


def test_float32_default_tolerance():
    x = rng(11).uniform(size=(200, 2)).astype(np.float32)
    K = kernels.gaussian(x, sigma=0.2)
    assert K.dtype == np.float32
    b = rng(12).standard_normal(200).astype(np.float32)
    a, info = K.solve(b, alpha=1.0, return_info=True)
    assert a.dtype == np.float32 and info.tol == 1e-6 and info.converged
    A = gauss_dense(x.astype(np.float64), x.astype(np.float64), 0.2) + np.eye(200)
    assert relres(A, a.astype(np.float64), b.astype(np.float64)) < 1e-5


def test_float32_host_data_reach_the_default_tolerance_with_float64_products():
    # σ=0.1, α=1e-2: cond ≈ 1e4, so float32 products leave a true-residual floor near 1e-6·…;
    # the products of the solve run on float64 copies of the data instead
    x = rng(40).uniform(size=(300, 2)).astype(np.float32)
    b = rng(41).standard_normal((300, 2)).astype(np.float32)
    x64 = x.astype(np.float64)
    A = gauss_dense(x64, x64, 0.1) + 1e-2 * np.eye(300)
    exact = np.linalg.solve(A, b.astype(np.float64))
    K = kernels.gaussian(x, sigma=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        a, info = K.solve(b, alpha=1e-2, return_info=True)
        a_lazy = (-(Vi(x).sqdist(Vj(x))) / np.float32(2 * 0.1**2)).exp().solve(Vj(b), alpha=1e-2)
    assert a.dtype == np.float32 and info.converged and info.residual_norms.max() <= 1e-6
    assert np.linalg.norm(a - exact) < 1e-5 * np.linalg.norm(exact)
    assert a_lazy.dtype == np.float32 and np.linalg.norm(a_lazy - exact) < 1e-5 * np.linalg.norm(exact)
    assert K.dtype == np.float32 and K.kernel.data[0].dtype == np.float32  # the operator itself is unchanged


def test_stalled_residual_stops_early_with_the_best_iterate():
    # float32 products under float64 CG (what a GPU solve on float32 data does): the true residual
    # stalls near eps32·cond ≈ 5e-5 while the recursive one keeps falling
    x = rng(0).uniform(size=(300, 2))
    A = gauss_dense(x, x, 0.2) + 1e-2 * np.eye(300)
    A32 = A.astype(np.float32)
    b = rng(42).standard_normal((300, 2))

    def apply(V):
        return (A32 @ V.astype(np.float32)).astype(np.float64)

    with pytest.warns(ConvergenceWarning, match="stalled at .* rounding floor") as caught:
        X, info = kernla.linalg.block_cg(apply, b, tol=1e-6)
    assert caught[0].filename == __file__
    assert not info.converged and info.column_stalled.all()
    assert info.iterations < 400  # maxiter is 2000; the floor is reached after ~190 iterations
    true = np.linalg.norm(b - apply(X), axis=0) / np.linalg.norm(b, axis=0)
    np.testing.assert_allclose(info.residual_norms, true, rtol=1e-12)
    assert true.max() < 2e-4 and (np.linalg.norm(b - A @ X, axis=0) / np.linalg.norm(b, axis=0)).max() < 1e-4
    # float64 products on the same system: slow convergence is not a stall
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        X, info = kernla.linalg.block_cg(lambda V: A @ V, b, tol=1e-10)
    assert info.converged and not info.column_stalled.any()


def test_badly_scaled_columns_converge_each_on_its_own(square):
    x, K, D = square
    A = D + 0.05 * np.eye(300)
    r = rng(13)
    w, V = np.linalg.eigh(A)
    B = np.column_stack(
        [
            r.standard_normal(300) * 1e-8,
            r.standard_normal(300),
            r.standard_normal(300) * 1e8,
            V[:, -1] * 3.0,
            np.zeros(300),
        ]
    )
    seen = []
    a, info = K.solve(B, alpha=0.05, return_info=True, callback=lambda it, res: seen.append((it, res.copy())))
    assert info.converged and info.column_converged.all()
    res = relres(A, a, B + (B == 0))  # zero column: compare against ones to keep the ratio finite
    assert (res[:4] < 1e-9).all()
    np.testing.assert_array_equal(a[:, 4], 0.0)
    # an eigenvector converges in one iteration and then stops moving
    assert info.column_iterations[3] == 1 and info.column_iterations[4] == 0
    assert info.column_iterations[:3].min() > 5
    assert seen[0][0] == 1 and len(seen) == info.iterations and seen[-1][1].shape == (5,)
    assert all(s[1][3] <= 1e-10 for s in seen[1:])
    # every column's relative residual is what it would be alone
    for j in range(3):
        alone = K.solve(B[:, j], alpha=0.05)
        np.testing.assert_allclose(a[:, j], alone, rtol=1e-6, atol=1e-6 * np.abs(alone).max())


def test_warm_start(square):
    x, K, D = square
    b = rng(14).standard_normal((300, 2))
    a0, info0 = K.solve(b, alpha=0.01, return_info=True)
    a1, info1 = K.solve(b, alpha=0.01, x0=a0, return_info=True)
    assert info1.iterations == 0 and info1.converged
    np.testing.assert_allclose(a1, a0)
    near = a0 + 1e-4 * rng(15).standard_normal(a0.shape)
    _, info2 = K.solve(b, alpha=0.01, x0=near, return_info=True)
    assert 0 < info2.iterations < info0.iterations
    with pytest.raises(ShapeError):
        K.solve(b, alpha=0.01, x0=a0[:, :1])


def test_maxiter_warns_and_returns_best_iterate(square):
    x, K, D = square
    b = rng(16).standard_normal(300)
    assert issubclass(ConvergenceWarning, UserWarning) and kernla.ConvergenceWarning is ConvergenceWarning
    with pytest.warns(ConvergenceWarning, match="maxiter=3"):
        a, info = K.solve(b, alpha=1e-4, maxiter=3, return_info=True)
    assert not info.converged and info.iterations == 3
    A = D + 1e-4 * np.eye(300)
    np.testing.assert_allclose(info.residual_norms[0], relres(A, a, b), rtol=1e-6)
    # the iterate is the best in the A-norm: better than the start
    e0 = np.linalg.solve(A, b)
    assert (e0 - a) @ A @ (e0 - a) < e0 @ A @ e0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        K.solve(b, alpha=1.0)  # converges: no warning
    # a matrix that is not positive definite is detected, never an endless loop
    with pytest.warns(ConvergenceWarning, match="not positive definite"):
        (-K).solve(b, alpha=0.0, maxiter=50)


def test_torch_in_torch_out(square):
    torch = pytest.importorskip("torch")
    x, K, D = square
    b = rng(17).standard_normal((300, 2))
    a = K.solve(torch.tensor(b), alpha=0.1)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float64 and a.shape == (300, 2)
    assert (relres(D + 0.1 * np.eye(300), a.numpy(), b) < 1e-9).all()
    xt = torch.tensor(x, dtype=torch.float32)
    Kt = kernels.gaussian(xt, sigma=0.2)
    v = torch.ones(300, dtype=torch.float32)
    for out in (Kt @ v, Kt.matvec(v), Kt.rmatvec(v), v @ Kt, Kt.diag()):
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose((Kt @ v).numpy(), D.sum(1), rtol=1e-5)
    assert isinstance(Kt @ np.ones(300), np.ndarray)  # scipy's path stays NumPy
    a32 = Kt.solve(v, alpha=1.0)
    assert isinstance(a32, torch.Tensor) and a32.dtype == torch.float32
    w, vecs = Kt.eigsh(k=2)
    assert isinstance(w, torch.Tensor) and vecs.shape == (300, 2)


def test_preconditioners_reduce_iterations():
    x = rng(18).uniform(size=(600, 2))
    K = kernels.gaussian(x, sigma=0.1)
    b = np.sin(6 * x[:, :1]) + 0.1 * rng(19).standard_normal((600, 1))
    its = {}
    for name, pc in [
        ("none", None),
        ("nystrom", "nystrom"),
        ("random", Nystrom(rank=150, landmarks="random", seed=0)),
        ("auto", "auto"),
    ]:
        a, info = K.solve(b, alpha=1e-2, precond=pc, rank=150 if pc == "nystrom" else None, tol=1e-8, return_info=True)
        assert info.converged, name
        its[name] = info.kernel_products
    assert its["nystrom"] * 10 <= its["none"], its
    assert its["random"] * 3 <= its["none"], its
    assert its["auto"] * 5 <= its["none"], its
    # Jacobi helps a narrow kernel whose rows are scaled very differently
    x, b = x[:300], b[:300]
    w = np.exp(3 * rng(20).uniform(size=(300, 1)))
    W = KernelOperator("Exp(-SqDist(X, Y) * G) * A * B", X=Vi(x), Y=Vj(x), A=Vi(w), B=Vj(w), G=5000.0)
    _, plain = W.solve(b, alpha=1e-1, return_info=True, tol=1e-8)
    _, jac = W.solve(b, alpha=1e-1, precond=Jacobi(), return_info=True, tol=1e-8)
    assert jac.converged and 3 * jac.iterations < plain.iterations


def _greedy_cholesky_reference(A, rank, rtol=1e-12):
    """Pivoted partial Cholesky one column at a time, on a dense matrix."""
    d = np.diag(A).copy()
    top, Lt, piv = d.max(), np.zeros((rank, len(d))), []
    for k in range(rank):
        p = int(np.argmax(d))
        if d[p] <= rtol * top:
            break
        col = (A[:, p] - Lt[:k, p] @ Lt[:k]) / np.sqrt(d[p])
        Lt[k], d = col, np.maximum(d - col * col, 0.0)
        d[p] = 0.0
        piv.append(p)
    return Lt[: len(piv)].T, np.array(piv)


def test_pivoted_cholesky_picks_the_greedy_pivots():
    from kernla.linalg import pivoted_cholesky

    x = rng(50).uniform(size=(400, 2))
    w = 1.0 + rng(51).uniform(size=(400, 1))
    weighted = KernelOperator("Exp(-SqDist(X, Y) * G) * A * B", X=Vi(x), Y=Vj(x), A=Vi(w), B=Vj(w), G=20.0)
    for K in (weighted, kernels.gaussian(x, sigma=0.1)):  # without and with ties on the diagonal
        D = K.to_dense()
        L0, p0 = _greedy_cholesky_reference(D, 80)
        L, p = pivoted_cholesky(K, 80)
        np.testing.assert_array_equal(p, p0)
        np.testing.assert_allclose(L, L0, atol=1e-10)
    # an exhausted matrix stops early
    xs = np.repeat(rng(52).uniform(size=(5, 2)), 8, axis=0)
    Ks = kernels.gaussian(xs, sigma=0.3)
    L, p = pivoted_cholesky(Ks, 30)
    assert len(p) == 5 and np.abs(L @ L.T - Ks.to_dense()).max() < 1e-9
    # the columns come from the engine, chunk by chunk
    cols = np.array([5, 0, 399, 7, 7])
    np.testing.assert_allclose(weighted.columns(cols, chunk=2), weighted.to_dense()[:, cols], rtol=1e-13, atol=1e-15)


def test_solvers_run_host_blas_on_one_thread_next_to_the_compiled_engine():
    # OpenBLAS threads spinning after a NumPy call take cores from the engine's OpenMP threads
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from kernla.engines import resolve_backend
    from kernla.linalg import _compute

    def blas_threads():
        return {m["num_threads"] for m in threadpoolctl.threadpool_info() if m["user_api"] == "blas"}

    with _compute.blas_single_thread("numpy", False):
        outside = blas_threads()
    with _compute.blas_single_thread(None, False):
        inside = blas_threads()
    if resolve_backend(None, False) == "cpu":
        assert inside == {1}
    assert blas_threads() == outside  # restored


def test_user_preconditioners(square):
    x, K, D = square
    A = D + 0.1 * np.eye(300)
    Ainv = np.linalg.inv(A)
    b = rng(21).standard_normal(300)
    a, info = K.solve(b, alpha=0.1, precond=lambda R: Ainv @ R, return_info=True)
    assert info.iterations <= 2 and relres(A, a, b) < 1e-9
    a, info = K.solve(b, alpha=0.1, precond=sla.aslinearoperator(Ainv), return_info=True)
    assert info.iterations <= 2


def test_verbose_with_and_without_tqdm(square, monkeypatch, capsys):
    x, K, D = square
    b = np.ones(300)
    K.solve(b, alpha=0.1, verbose=True)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    a = K.solve(b, alpha=0.1, verbose=True)
    assert relres(D + 0.1 * np.eye(300), a, b) < 1e-9


# ---------------------------------------------------------------------------------------------
# eigenvalues
# ---------------------------------------------------------------------------------------------
def test_eigsh_matches_dense_eigh(square):
    x, K, D = square
    ref = np.linalg.eigvalsh(D)
    w, v = K.eigsh(k=5)
    np.testing.assert_allclose(w, ref[-5:], rtol=1e-10)
    assert np.linalg.norm(D @ v - v * w, axis=0).max() < 1e-6 * ref[-1]
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-10)
    # smallest eigenvalues: of -K (the top of K), and of a Laplacian kernel (well separated)
    ws = (-K).eigsh(k=3, which="SA", return_eigenvectors=False)
    np.testing.assert_allclose(ws, -ref[::-1][:3], rtol=1e-10)
    xl = rng(27).uniform(size=(60, 1))
    L = kernels.laplacian(xl, sigma=0.3)
    ws, vs = L.eigsh(k=3, which="SA")
    np.testing.assert_allclose(ws, np.linalg.eigvalsh(L.to_dense())[:3], rtol=1e-6)
    wl = K.eigsh(k=4, which="LM", method="arpack", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(wl), ref[-4:], rtol=1e-10)
    with pytest.raises(InputValueError):
        K.eigsh(k=300)
    with pytest.raises(InputValueError):
        K.eigsh(k=2, which="BE")


def test_eigsh_smallest_of_a_gaussian_matches_dense_or_warns():
    # 150 of the 200 eigenvalues lie within 1e-4 of 0 (most under the rounding floor): a residual
    # test against max|θ| alone used to return values 1e6 too large as converged, silently
    x = rng(0).uniform(size=(200, 2))
    K = kernels.gaussian(x, sigma=0.2)
    ref = np.linalg.eigvalsh(K.to_dense())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w, v = K.eigsh(k=50, which="SA")
    warned = [c for c in caught if issubclass(c.category, ConvergenceWarning)]
    if not warned:
        np.testing.assert_allclose(w, ref[:50], rtol=0, atol=1e-8 * ref[-1])
    else:
        assert "below the attainable accuracy" in str(warned[0].message)
        assert warned[0].filename == __file__  # the warning points at the caller
    assert w.shape == (50,) and v.shape == (200, 50)


def test_eigsh_per_pair_convergence_and_the_rounding_floor():
    from kernla.linalg import eigsh

    # well separated small eigenvalues: each pair converges to its own relative tolerance
    d = np.concatenate([[1e-3, 2e-3, 3e-3], np.linspace(1.0, 100.0, 97)])
    Q, _ = np.linalg.qr(rng(5).standard_normal((100, 100)))
    A = (Q * d) @ Q.T
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        w = eigsh(lambda V: A @ V, 100, k=3, which="SA", return_eigenvectors=False)
    np.testing.assert_allclose(w, d[:3], rtol=1e-7)
    # eigenvalues far below the rounding floor (√n·eps·max|λ| ≈ 2e-13): to them a single-vector
    # Krylov method sees one (numerically) triple eigenvalue 0, and it must say so
    d[:3] = [1e-20, 2e-20, 3e-20]
    A = (Q * d) @ Q.T
    with pytest.warns(ConvergenceWarning, match="below the attainable accuracy"):
        w = eigsh(lambda V: A @ V, 100, k=3, which="SA", return_eigenvectors=False)
    assert np.abs(w[0]) < 1e-11


def test_scipy_eigensolvers_on_the_operator(square):
    x, K, D = square
    ref = np.linalg.eigvalsh(D)
    w = sla.eigsh(K, k=5, return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(w), ref[-5:], rtol=1e-10)
    X0 = rng(22).standard_normal((300, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lobpcg may warn about its own tolerance
        wl, _ = sla.lobpcg(K, X0, tol=1e-9, maxiter=300)
    np.testing.assert_allclose(np.sort(wl), ref[-4:], rtol=1e-6)
    # and scipy's own CG through the LinearOperator interface
    b = np.ones(300)
    a, code = sla.cg(K + 0.1 * eye(300), b, rtol=1e-10)
    assert code == 0 and relres(D + 0.1 * np.eye(300), a, b) < 1e-8


# ---------------------------------------------------------------------------------------------
# KernelSolve and LazyTensor.solve
# ---------------------------------------------------------------------------------------------
ALIASES = ["x = Vi(1)", "y = Vj(1)", "b = Vj(1)", "g = Pm(1)"]


def test_kernelsolve_interpolation_1d():
    # the seed's interpolation example, small
    r = rng(23)
    N = 400
    x = r.uniform(size=(N, 1))
    b = x + 0.5 * np.sin(6 * x) + 0.1 * np.sin(20 * x) + 0.05 * r.standard_normal((N, 1))
    g = np.array([1 / (2 * 0.1**2)])
    Kinv = KernelSolve("Exp(-g * SqDist(x, y)) * b", ALIASES, "b", axis=1)
    a = Kinv(x, x, b, g, alpha=1.0)
    A = np.exp(-g[0] * sqdist(x, x)) + np.eye(N)
    assert a.shape == (N, 1) and relres(A, a, b)[0] < 1e-9
    a2, info = Kinv(x, x, b, g, alpha=1.0, precond="nystrom", eps=1e-8, return_info=True)
    assert info.tol == 1e-8 and relres(A, a2, b)[0] < 1e-7
    # the interpolant through Genred
    t = np.linspace(0, 1, 11)[:, None]
    interp = kernla.Genred("Exp(-g * SqDist(x, y)) * b", ALIASES, axis=1)(t, x, a, g, backend="numpy")
    np.testing.assert_allclose(interp, np.exp(-g[0] * sqdist(t, x)) @ a, rtol=1e-10)


def test_kernelsolve_axis0_vector_and_generic():
    r = rng(24)
    x = r.uniform(size=(150, 2))
    b = r.standard_normal((150, 3))
    D = np.exp(-5.0 * sqdist(x, x))
    A = D + 0.1 * np.eye(150)
    K0 = KernelSolve("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vi(3)", "G = Pm(1)"], "B", axis=0)
    a = K0(x, x, b, 5.0, alpha=0.1)
    assert (relres(A, a, b) < 1e-9).all()
    # not of the form k * B: solved on the flattened unknown
    Kg = KernelSolve("(Exp(-G * SqDist(X, Y)) * B) * 2", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(3)", "G = Pm(1)"], "B")
    assert Kg.kernel is None
    a = Kg(x, x, b, 5.0, alpha=0.1)
    assert (relres(2 * D + 0.1 * np.eye(150), a, b) < 1e-9).all()
    with pytest.raises(InputValueError, match="preconditioner"):
        Kg(x, x, b, 5.0, alpha=0.1, precond="jacobi")
    with pytest.raises(FormulaError, match="alias"):
        KernelSolve("Exp(-SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(3)"], "C")
    with pytest.raises(FormulaError, match="Vj"):
        KernelSolve("Exp(-SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vi(3)"], "B", axis=1)
    with pytest.raises(FormulaError, match="dimension"):
        KernelSolve("Exp(-SqDist(X, Y))", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(3)"], "B")


def test_kernelsolve_torch():
    torch = pytest.importorskip("torch")
    x = torch.rand(100, 1, dtype=torch.float64)
    b = torch.randn(100, 1, dtype=torch.float64)
    Kinv = KernelSolve("Exp(-g * SqDist(x, y)) * b", ALIASES, "b", axis=1)
    a = Kinv(x, x, b, torch.tensor([20.0], dtype=torch.float64), alpha=0.5)
    assert isinstance(a, torch.Tensor) and a.shape == (100, 1)
    D = np.exp(-20.0 * sqdist(x.numpy(), x.numpy())) + 0.5 * np.eye(100)
    assert relres(D, a.numpy(), b.numpy())[0] < 1e-9


def test_lazytensor_solve():
    x = rng(25).uniform(size=(120, 2))
    b = rng(26).standard_normal((120, 2))
    K_ij = (-LazyTensor(x[:, None, :]).sqdist(LazyTensor(x[None, :, :])) * 8.0).exp()
    A = np.exp(-8.0 * sqdist(x, x)) + 0.3 * np.eye(120)
    a = K_ij.solve(Vi(b), alpha=0.3)
    assert a.shape == (120, 2) and (relres(A, a, b) < 1e-9).all()
    a1 = K_ij.solve(b[:, 0], alpha=0.3, precond="nystrom")
    assert a1.shape == (120,) and relres(A, a1, b[:, 0]) < 1e-9


def test_scipy_attributes_do_not_clobber_ours(monkeypatch):
    # newer scipy versions set attributes of their own (an array namespace `_xp`) in
    # LinearOperator.__init__: a KernelOperator must keep working whatever scipy stores there
    real_init = sla.LinearOperator.__init__

    def init(self, dtype, shape):
        real_init(self, dtype, shape)
        for name in ("_xp", "_ns", "_data", "_kind", "_scale", "_shift", "_formula"):
            setattr(self, name, "set by scipy")

    monkeypatch.setattr(sla.LinearOperator, "__init__", init)
    x = rng(28).uniform(size=(100, 2))
    K = kernels.gaussian(x, sigma=0.3)
    b = np.ones(100)
    a = K.solve(b, alpha=0.1, precond="nystrom")
    assert relres(gauss_dense(x, x, 0.3) + 0.1 * np.eye(100), a, b) < 1e-9


@pytest.mark.parametrize("n, block, accept", [(397, 16, 1.0), (397, 16, 0.5), (1203, 64, 0.5), (50, 64, 0.3)])
def test_pivoted_cholesky_in_blocks(n, block, accept):
    """Blocks of candidates: L Lᵀ is the Nyström approximation on the chosen pivots, every pivot is
    within ``accept`` of the greedy choice at its step, and accept = 1 gives the greedy pivots."""
    from kernla.linalg import pivoted_cholesky

    x = rng(60 + n).uniform(size=(n, 3))
    w = 1.0 + rng(61 + n).uniform(size=(n, 1))  # distinct diagonal entries: no ties between pivots
    K = KernelOperator("Exp(-SqDist(X, Y) * G) * A * B", X=Vi(x), Y=Vj(x), A=Vi(w), B=Vj(w), G=6.0)
    D = K.to_dense()
    rank = min(120, n)
    L, p = pivoted_cholesky(K, rank, block=block, accept=accept)
    assert len(set(p.tolist())) == len(p) == L.shape[1] <= rank
    nystrom = D[:, p] @ np.linalg.solve(D[np.ix_(p, p)], D[p, :])
    np.testing.assert_allclose(L @ L.T, nystrom, atol=1e-7)
    for k in range(len(p)):  # the residual of each pivot, against the largest residual at its step
        res = np.diag(D) - (L[:, :k] ** 2).sum(axis=1)
        assert res[p[k]] >= accept * res.max() * (1 - 1e-9) - 1e-12
    L0, p0 = pivoted_cholesky(K, rank)
    if accept == 1.0:
        np.testing.assert_array_equal(p, p0)
        np.testing.assert_allclose(L, L0, atol=1e-10)
    # the residual trace stays close to greedy's
    assert np.trace(D) - (L**2).sum() <= 1.5 * (np.trace(D) - (L0**2).sum()) + 1e-9


def test_pivoted_cholesky_block_arguments():
    from kernla.linalg import pivoted_cholesky

    K = kernels.gaussian(rng(70).uniform(size=(20, 2)), sigma=0.5)
    for bad in ({"block": 0}, {"block": 2.0}, {"block": True}, {"accept": 0.0}, {"accept": 1.5}):
        with pytest.raises(InputValueError):
            pivoted_cholesky(K, 5, **bad)
