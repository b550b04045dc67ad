"""ComplexLazyTensor (pykeops' complex LazyTensors) against dense complex NumPy and torch."""

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator

from kernla import ComplexLazyTensor, LazyTensor, ShapeError

RNG = np.random.default_rng(11)
N, M, D = 7, 9, 3


def _c(*shape):
    return RNG.normal(size=shape) + 1j * RNG.normal(size=shape)


CASES = {
    "mul": (lambda X, Y: X * Y, lambda x, y: x * y),
    "div": (lambda X, Y: X / (Y + 3), lambda x, y: x / (y + 3)),
    "add_sub": (lambda X, Y: 1 - X + Y * 2j, lambda x, y: 1 - x + y * 2j),
    "conj_real_imag": (lambda X, Y: X.conj() * Y.real + X.imag, lambda x, y: np.conj(x) * y.real + x.imag),
    "exp": (lambda X, Y: (X * Y / 4).exp(), lambda x, y: np.exp(x * y / 4)),
    "fourier": (
        lambda X, Y: X * (-2j * np.pi * Y.real * X.imag).exp(),
        lambda x, y: x * np.exp(-2j * np.pi * y.real * x.imag),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_complex_formulas_reduced_over_each_axis(name):
    lazy, dense = CASES[name]
    x, y = _c(N, 1, D), _c(1, M, D)
    K = lazy(LazyTensor(x), LazyTensor(y))
    assert isinstance(K, ComplexLazyTensor)
    ref = dense(x, y)
    for axis in (0, 1):
        np.testing.assert_allclose(K.sum(axis=axis, backend="numpy"), ref.sum(axis), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.sum(-1).sum(1, backend="numpy")[:, 0], ref.sum((1, 2)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.abs().sum(1, backend="numpy"), np.abs(ref).sum(1), rtol=1e-12)


def test_complex_torch_values_and_gradients():
    torch = pytest.importorskip("torch")
    x = torch.tensor(_c(1, M, 1), dtype=torch.complex128, requires_grad=True)
    p, f = torch.rand(1, M, 1, dtype=torch.float64), torch.rand(N, 1, 1, dtype=torch.float64)

    def fourier(x, p, f):
        return (x * (-2 * np.pi * 1j * p * f).exp()).sum(dim=0)

    ours = fourier(LazyTensor(x), LazyTensor(p), LazyTensor(f))
    ref = fourier(x, p, f)
    assert ours.dtype == torch.complex128
    torch.testing.assert_close(ours.reshape(ref.shape), ref)
    (g_ours,) = torch.autograd.grad(ours.abs().square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.abs().square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref)


def test_complex_api_shape_dtype_and_the_words_of_pykeops():
    x, y, r = _c(N, 1, D), _c(1, M, D), RNG.normal(size=(1, M, D))
    X, Y, R = LazyTensor(x), LazyTensor(y), LazyTensor(r)
    assert (X * Y).shape == (N, M, D) and (X * Y)._shape == (N, M, 2 * D)
    assert (X * Y).sum(-1).shape == (N, M) and (X * Y).dtype == np.complex128
    cases = [
        ((X * Y).angle(), np.angle(x * y)),
        ((X / Y).real - (X / R).imag, (x / y).real - (x / r).imag),
        ((R / X).conj() + 2.5, np.conj(r / x) + 2.5),
        (abs(X - Y), np.abs(x - y)),
        (R.real2complex() * X + R.imag2complex(), r * x + 1j * r),
        (R.exp1j() * X, np.exp(1j * r) * x),
        (-(X * Y).sum(-1), -(x * y).sum(-1, keepdims=True)),
    ]
    for lazy, ref in cases:
        for axis in (0, 1):
            np.testing.assert_allclose(lazy.sum(axis, backend="numpy"), ref.sum(axis), rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match="not defined for complex"):
        (X * Y).min(dim=1)
    with pytest.raises(ShapeError, match="even dimension"):
        ComplexLazyTensor(LazyTensor(r))


def test_complex_matmul_and_scipy_linear_operator():
    x, y = RNG.normal(size=(N, 2)), RNG.normal(size=(M, 2))
    v, b = _c(M), _c(M, 2)
    phase = ((x[:, None, :] - y[None]) ** 2).sum(-1)
    K_real = (-LazyTensor(x[:, None]).sqdist(LazyTensor(y[None]))).exp()
    K_cplx = LazyTensor(x[:, None]).sqdist(LazyTensor(y[None])).exp1j()  # exp(i |x - y|²)
    np.testing.assert_allclose(K_real @ v, np.exp(-phase) @ v, rtol=1e-12)
    np.testing.assert_allclose(K_cplx @ b, np.exp(1j * phase) @ b, rtol=1e-12)
    np.testing.assert_allclose(K_cplx @ b.real, np.exp(1j * phase) @ b.real, rtol=1e-12)
    A = aslinearoperator(K_cplx)
    assert A.shape == (N, M) and A.dtype == np.complex128
    np.testing.assert_allclose(A.matvec(v), np.exp(1j * phase) @ v, rtol=1e-12)
    u = _c(N)
    np.testing.assert_allclose(A.rmatvec(u), np.exp(1j * phase).T @ u, rtol=1e-12)  # pykeops: Kᵀ, not Kᴴ


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_complex_torch_in_and_out_with_gradients_on_each_engine(backend):
    torch = pytest.importorskip("torch")
    x = torch.tensor(_c(N, 1, D), dtype=torch.complex128, requires_grad=True)
    y = torch.tensor(_c(1, M, D), dtype=torch.complex128, requires_grad=True)
    s = torch.rand(N, 1, 1, dtype=torch.float64, requires_grad=True)

    def f(x, y, s, **kw):
        ratio = x / (y + 3)
        return ((ratio * s).exp() + ratio.conj() * x.abs()).sum(dim=1, **kw)

    ours, ref = f(LazyTensor(x), LazyTensor(y), LazyTensor(s), backend=backend), f(x, y, s)
    assert ours.dtype == torch.complex128 and ours.shape == ref.shape == (N, D)
    torch.testing.assert_close(ours, ref)
    w = torch.tensor(_c(N, D), dtype=torch.complex128)
    g_ours = torch.autograd.grad((ours * w).real.sum(), (x, y, s))
    g_ref = torch.autograd.grad((ref * w).real.sum(), (x, y, s))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dim", [0, 1])
def test_keepdim_keeps_the_reduced_axis_of_complex_sums(dim):
    """``keepdim=True`` as for real reductions (it was dropped when the result is made complex)."""
    rng = np.random.default_rng(11)
    z = rng.normal(size=(7, 1, 3)) + 1j * rng.normal(size=(7, 1, 3))
    w = rng.normal(size=(1, 5, 3)) + 1j * rng.normal(size=(1, 5, 3))
    out = (LazyTensor(z) * LazyTensor(w)).sum(dim=dim, keepdim=True, backend="numpy")
    np.testing.assert_allclose(out, (z * w).sum(dim, keepdims=True), rtol=1e-12, atol=1e-14)
