"""GP kernels with hyper-parameters: values against dense formulas (and scikit-learn), derivative sums
against central finite differences, the one-reduction gradient against the dense one, no compile when
hyper-parameters change."""

import numpy as np
import pytest

from kernla.errors import InputValueError
from kernla.models import gp_kernels as gk

try:
    from sklearn.gaussian_process import kernels as sk
except ImportError:  # optional dependency
    sk = None

RNG = np.random.default_rng(1234)
X = RNG.uniform(-1, 1, size=(37, 3))


def _kernels():
    return [
        gk.RBF(0.7),
        gk.RBF([0.5, 1.3, 0.8]),
        gk.Matern([0.6, 0.9, 1.4], nu=0.5),
        gk.Matern(0.8, nu=1.5),
        gk.Matern([0.6, 0.9, 1.4], nu=2.5),
        gk.Laplacian(0.9),
        gk.RationalQuadratic([0.7, 1.1, 0.5], alpha=1.7),
        gk.ExpSineSquared(0.9, periodicity=1.3),
        gk.DotProduct(0.8),
        gk.ConstantKernel(1.7) * gk.Matern([0.6, 0.9, 1.4], nu=2.5) + gk.RBF(0.4) * gk.DotProduct(0.5),
        gk.ConstantKernel(0.6) * gk.RBF([0.5, 0.7, 0.9]) + gk.WhiteKernel(0.1),
    ]


def _dense(kernel):
    return kernel.operator(X).to_dense()


@pytest.mark.parametrize("kernel", _kernels(), ids=repr)
def test_gradient_sums_match_finite_differences(kernel):
    n = X.shape[0]
    W = RNG.normal(size=(n, n))
    W = W + W.T
    theta = kernel.theta
    got = gk.dense_gradient(kernel, X, W)
    h = 1e-6
    fd = np.empty(theta.size)
    for p in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[p] += h
        down[p] -= h
        fd[p] = (
            (W * _dense(kernel.clone_with_theta(up))).sum() - (W * _dense(kernel.clone_with_theta(down))).sum()
        ) / (2 * h)
    white = kernel.white_mask()
    np.testing.assert_allclose(got[~white], fd[~white], rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    assert np.all(got[white] == 0)
    # the dense NumPy evaluation (squared distances by matrix products) against the engine's
    Y = RNG.uniform(-1, 1, size=(11, 3))
    np.testing.assert_allclose(kernel.dense(X), _dense(kernel), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kernel.dense(X, Y), kernel.operator(X, Y).to_dense(), rtol=1e-10, atol=1e-12)
    # the low-rank weight W = U Vᵀ: one kernla reduction gives the same sums
    U, V = RNG.normal(size=(n, 4)), RNG.normal(size=(n, 4))
    np.testing.assert_allclose(
        gk.pair_gradient(kernel, X, U, V), gk.dense_gradient(kernel, X, U @ V.T), rtol=1e-9, atol=1e-10
    )


@pytest.mark.parametrize("kernel", _kernels(), ids=repr)
@pytest.mark.parametrize("entries", [1 << 18, 50])
def test_upper_triangle_values_and_symmetric_gradient(kernel, entries, monkeypatch):
    """dense_upper and symmetric_gradient (the exact evidence's path: one triangle) against the full dense
    matrix and finite differences; ``entries`` 50: many row blocks of shrinking width, diagonal blocks cut."""
    monkeypatch.setattr(gk, "_BLOCK_ENTRIES", entries)
    n = X.shape[0]
    np.testing.assert_array_equal(np.tril(kernel.dense_upper(X), -1), 0.0)
    np.testing.assert_allclose(kernel.dense_upper(X), np.triu(_dense(kernel)), rtol=1e-10, atol=1e-12)
    W = RNG.normal(size=(n, n))
    W = W + W.T
    asked = []

    def weight(i0, i1):
        asked.append((i0, i1))
        block = W[i0:i1, i0:].copy()
        block[:, : i1 - i0][np.tril_indices(i1 - i0, -1)] = np.nan  # below the diagonal: must not be read
        return block

    got = gk.symmetric_gradient(kernel, X, weight)
    assert asked[0][0] == 0 and asked[-1][1] == n and (entries > n * n or len(asked) > 3)
    h = 1e-6
    fd = np.empty(kernel.theta.size)
    for p in range(fd.size):
        up, down = kernel.theta.copy(), kernel.theta.copy()
        up[p] += h
        down[p] -= h
        fd[p] = ((W * (_dense(kernel.clone_with_theta(up)) - _dense(kernel.clone_with_theta(down)))).sum()) / (2 * h)
    white = kernel.white_mask()
    np.testing.assert_allclose(got[~white], fd[~white], rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    assert np.all(got[white] == 0)


def test_values_match_closed_forms():
    d = X[:, None, :] - X[None, :, :]
    ls = np.array([0.6, 0.9, 1.4])
    r = np.sqrt(((d / ls) ** 2).sum(-1))
    a = np.sqrt(5) * r
    np.testing.assert_allclose(_dense(gk.Matern(ls.tolist(), nu=2.5)), (1 + a + a * a / 3) * np.exp(-a), rtol=1e-12)
    rr = np.sqrt((d**2).sum(-1))
    np.testing.assert_allclose(
        _dense(gk.ExpSineSquared(0.9, 1.3)), np.exp(-2 * np.sin(np.pi * rr / 1.3) ** 2 / 0.81), rtol=1e-12, atol=1e-14
    )
    s2 = ((d / 0.7) ** 2).sum(-1)
    np.testing.assert_allclose(_dense(gk.RationalQuadratic(0.7, 1.7)), (1 + s2 / 3.4) ** -1.7, rtol=1e-12)
    np.testing.assert_allclose(_dense(gk.DotProduct(0.8)), 0.64 + X @ X.T, rtol=1e-12)


@pytest.mark.requires("sklearn")
@pytest.mark.skipif(sk is None, reason="scikit-learn is not installed")
def test_sklearn_kernels_translate():
    ref = sk.ConstantKernel(1.3) * sk.Matern([0.5, 0.8, 1.2], nu=1.5) + sk.RBF(0.3) * sk.DotProduct(0.7)
    ours = gk.as_gp_kernel(ref + sk.WhiteKernel(0.2))
    np.testing.assert_allclose(_dense(ours), ref(X), rtol=1e-12)
    np.testing.assert_allclose(ours.theta, (ref + sk.WhiteKernel(0.2)).theta, rtol=1e-14)
    np.testing.assert_allclose(ours.bounds, (ref + sk.WhiteKernel(0.2)).bounds, rtol=1e-14)
    assert ours.white_noise() == 0.2
    np.testing.assert_allclose(ours.diag(X), ref.diag(X), rtol=1e-12)
    periodic = sk.ExpSineSquared(0.8, 1.7) + sk.RationalQuadratic(0.6, 2.0)
    np.testing.assert_allclose(_dense(gk.as_gp_kernel(periodic)), periodic(X), rtol=1e-12, atol=1e-14)
    with pytest.raises(InputValueError, match="no kernla translation"):
        gk.as_gp_kernel(sk.Exponentiation(sk.RBF(), 2))
    with pytest.raises(InputValueError, match="nu"):
        gk.as_gp_kernel(sk.Matern(nu=3.5)).operator(X)


def test_hyperparameter_changes_never_compile():
    engine = pytest.importorskip("kernla.engines.cpu.engine")
    kernel = gk.ConstantKernel(1.0) * gk.Matern([0.5, 0.8, 1.2], nu=2.5) + gk.WhiteKernel(0.1)
    U = RNG.normal(size=(X.shape[0], 3))
    for step in range(4):
        k = kernel.clone_with_theta(kernel.theta + 0.3 * step)
        k.operator(X, backend="cpu") @ U
        gk.pair_gradient(k, X, U, U, backend="cpu")
        if step == 0:
            compiled = len(engine._kernels)
    assert len(engine._kernels) == compiled


def test_bounds_priors_and_errors():
    k = gk.ConstantKernel(2.0, "fixed") * gk.RBF([1.0, 2.0], (1e-2, 1e2), length_scale_prior=gk.LogNormalPrior(0, 1))
    assert k.n_dims == 2 and k.bounds.shape == (2, 2)
    value, grad = k.log_prior(k.theta)
    np.testing.assert_allclose(grad, -k.theta)
    assert value == pytest.approx(-0.5 * (k.theta**2).sum())
    moved = k.clone_with_theta(np.log([3.0, 4.0]))
    np.testing.assert_allclose(moved.k2.length_scale, [3.0, 4.0], rtol=1e-15)
    assert moved.k1.constant_value == 2.0 and k.k2.length_scale == [1.0, 2.0]
    with pytest.raises(InputValueError, match="ARD"):
        gk.RBF([1.0, 2.0]).operator(X)
    with pytest.raises(InputValueError, match="bounds"):
        gk.Hyperparameter("length_scale", 1, (2.0, 1.0))
    with pytest.raises(InputValueError, match="factor"):
        (gk.RBF() * gk.WhiteKernel()).operator(X)
    with pytest.raises(InputValueError, match="positive"):
        gk.RBF(-1.0).operator(X)
