"""ComplexLazyTensor (pykeops' complex LazyTensors) against dense complex NumPy and torch."""

import numpy as np
import pytest

from kernla import ComplexLazyTensor, LazyTensor

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
