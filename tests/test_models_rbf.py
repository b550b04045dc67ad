"""KernelInterpolation against scipy's RBFInterpolator: every kernel, degree, smoothing, vector data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
from scipy.interpolate import RBFInterpolator

from kernla.errors import InputValueError
from kernla.models import KernelInterpolation
from kernla.models.rbf import FORMULAS, MIN_DEGREE, rbf_operator
from kernla.models.schwarz import CoarseDeflation, landmarks

pytest.importorskip("sklearn")

#: shape parameters with a moderately conditioned system at 250 points in the unit square
EPSILON = {
    "linear": 1.0,
    "thin_plate_spline": 1.0,
    "cubic": 1.0,
    "quintic": 1.0,
    "multiquadric": 12.0,
    "inverse_multiquadric": 12.0,
    "inverse_quadratic": 12.0,
    "gaussian": 12.0,
}


@pytest.fixture(scope="module")
def data():
    r = np.random.default_rng(0)
    x = r.uniform(size=(250, 2))
    y = np.column_stack([np.sin(4 * x[:, 0]) * np.cos(3 * x[:, 1]), x[:, 0] * x[:, 1]])  # 2nd: a polynomial
    return x, y, r.uniform(-0.1, 1.1, size=(60, 2))


CASES = [(k, d, s) for k in FORMULAS for d in sorted({max(MIN_DEGREE.get(k, -1), -1), 2}) + [None] for s in (0.0, 1e-3)]


@pytest.mark.parametrize("kernel, degree, smoothing", CASES)
def test_matches_scipy(data, kernel, degree, smoothing):
    x, y, xn = data
    eps = EPSILON[kernel]
    ref = RBFInterpolator(x, y, kernel=kernel, epsilon=eps, degree=degree, smoothing=smoothing)
    model = KernelInterpolation(kernel=kernel, epsilon=eps, degree=degree, smoothing=smoothing).fit(x, y)
    info = model.solve_info_
    assert info.converged and info.method == "projected-cg" and info.residual_norms.max() < 1e-9
    assert info.constraint_norms.max() < 1e-10
    scale = np.abs(ref(xn)).max(axis=0)
    np.testing.assert_allclose(model.predict(xn) / scale, ref(xn) / scale, rtol=0, atol=1e-8)
    assert model.powers_.shape == ref.powers.shape  # scipy's tail (its default degree when None)


def test_defaults_are_scipys(data):
    x, y, xn = data
    model = KernelInterpolation().fit(x, y[:, 0])  # thin-plate spline, degree 1, epsilon 1
    assert model.degree_ == 1 and model.epsilon_ == 1.0 and model.poly_coef_.shape == (3,)
    np.testing.assert_allclose(model.predict(xn), RBFInterpolator(x, y[:, 0])(xn), rtol=1e-8, atol=1e-9)
    assert KernelInterpolation(kernel="quintic").fit(x, y).degree_ == 2
    assert KernelInterpolation(kernel="gaussian", epsilon=5.0, smoothing=0.1).fit(x, y).degree_ == 0


def test_per_point_smoothing_vector_data_and_aliases():
    r = np.random.default_rng(1)
    x = r.uniform(size=(200, 3))
    y = np.stack([x.sum(1), np.cos(3 * x[:, 0]), x[:, 1] ** 3], axis=1).reshape(200, 3, 1) * [1.0, -2.0]
    smoothing = r.uniform(0.0, 1e-2, size=200)
    xn = r.uniform(size=(30, 3))
    ref = RBFInterpolator(x, y, kernel="cubic", smoothing=smoothing)(xn)
    out = KernelInterpolation(kernel="cubic", smoothing=smoothing).fit(x, y).predict(xn)
    assert out.shape == ref.shape == (30, 3, 2)
    np.testing.assert_allclose(out, ref, rtol=1e-7, atol=1e-8 * np.abs(ref).max())
    # kernla's names: rbf = gaussian, cauchy = inverse_quadratic; sigma as a length scale
    a = KernelInterpolation(kernel="rbf", sigma=0.1, smoothing=1e-3).fit(x, y[:, 0, 0]).predict(xn)
    b = KernelInterpolation(kernel="gaussian", epsilon=1 / (np.sqrt(2) * 0.1), smoothing=1e-3).fit(x, y[:, 0, 0])
    np.testing.assert_allclose(a, b.predict(xn), rtol=1e-9)
    c = KernelInterpolation(kernel="cauchy", sigma=0.1, smoothing=1e-3).fit(x, y[:, 0, 0]).predict(xn)
    d = RBFInterpolator(x, y[:, 0, 0], kernel="inverse_quadratic", epsilon=10.0, smoothing=1e-3)(xn)
    np.testing.assert_allclose(c, d, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("kernel, degree", [("thin_plate_spline", 0), ("linear", -1), ("multiquadric", -1)])
def test_degree_below_minimum_warns_and_uses_minres(data, kernel, degree):
    x, y, xn = data
    x, y = x[:120], y[:120]
    with warnings.catch_warnings(record=True) as scipy_said:
        warnings.simplefilter("always")
        ref = RBFInterpolator(x, y, kernel=kernel, degree=degree, epsilon=EPSILON[kernel], smoothing=1e-3)
    with warnings.catch_warnings(record=True) as we_said:
        warnings.simplefilter("always")
        model = KernelInterpolation(
            kernel=kernel, degree=degree, epsilon=EPSILON[kernel], smoothing=1e-3, tol=1e-12, maxiter=5000
        ).fit(x, y)
    assert len(we_said) == len(scipy_said) == (degree > -1)  # scipy warns below the minimum except at -1
    assert all("MINRES" in str(w.message) for w in we_said)
    assert model.solve_info_.method == "minres"
    np.testing.assert_allclose(model.predict(xn), ref(xn), rtol=1e-6, atol=1e-7 * np.abs(ref(xn)).max())


def test_float32_and_torch(data):
    torch = pytest.importorskip("torch")
    x, y, xn = data
    ref = KernelInterpolation().fit(x, y).predict(xn)
    out = KernelInterpolation().fit(torch.from_numpy(x), torch.from_numpy(y)).predict(torch.from_numpy(xn))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-9, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f32 = KernelInterpolation(smoothing=1e-3).fit(x.astype(np.float32), y.astype(np.float32))
    assert f32.predict(xn.astype(np.float32)).dtype == np.float32


def test_errors(data):
    x, y, xn = data
    with pytest.raises(InputValueError, match="epsilon must be specified"):
        KernelInterpolation(kernel="gaussian").fit(x, y)
    with pytest.raises(InputValueError, match="not both"):
        KernelInterpolation(epsilon=1.0, sigma=1.0).fit(x, y)
    with pytest.raises(InputValueError, match="At least 6 data points"):
        KernelInterpolation(kernel="quintic").fit(x[:5], y[:5])
    with pytest.raises(InputValueError, match="shape"):
        KernelInterpolation(smoothing=np.ones(3)).fit(x, y)
    with pytest.raises(InputValueError, match="rank-deficient"):
        KernelInterpolation().fit(np.column_stack([x[:, 0], 2 * x[:, 0]]), y)
    with pytest.raises(InputValueError, match="jacobi"):
        KernelInterpolation(precond="jacobi").fit(x, y)
    with pytest.raises(InputValueError, match="degree"):
        KernelInterpolation(degree=-2).fit(x, y)


def _dense_saddle(x, y, smoothing, eps, kernel):
    """The saddle-point system solved densely in float64 (NumPy), scipy's tail: (c, d)."""
    r = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) * eps
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = {"thin_plate_spline": np.where(r > 0, r**2 * np.log(r), 0.0), "gaussian": np.exp(-(r**2))}[kernel]
    lo, hi = x.min(0), x.max(0)
    P = np.column_stack([np.ones(len(x)), (x - (lo + hi) / 2) / ((hi - lo) / 2)])
    n, m = P.shape
    A = np.block([[phi + np.diag(smoothing), P], [P.T, np.zeros((m, m))]])
    sol = np.linalg.solve(A, np.concatenate([y, np.zeros((m,) + y.shape[1:])]))
    return sol[:n], sol[n:]


@pytest.mark.parametrize("kernel, eps, smoothing", [("thin_plate_spline", 1.0, 0.0), ("gaussian", 9.0, 1e-4)])
def test_two_level_deflated_solve_matches_dense(kernel, eps, smoothing):
    r = np.random.default_rng(7)
    x = r.uniform(size=(1337, 2))
    y = np.column_stack([np.exp(-4 * ((x - 0.4) ** 2).sum(1)), np.sin(5 * x[:, 1])])
    s = smoothing * r.uniform(0.5, 1.5, size=1337)
    model = KernelInterpolation(kernel=kernel, epsilon=eps, smoothing=s, degree=1).fit(x, y)
    info = model.solve_info_
    assert "deflation" in info.precond and info.converged and info.residual_norms.max() < 1e-9
    c, d = _dense_saddle(x, y, s, eps, kernel)
    np.testing.assert_allclose(model.coef_, c, rtol=0, atol=1e-6 * np.abs(c).max())
    np.testing.assert_allclose(model.poly_coef_, d, rtol=0, atol=1e-6 * np.abs(d).max())


def test_coarse_level_is_the_landmarks_interpolation_problem():
    r = np.random.default_rng(3)
    x = r.uniform(size=(901, 2))
    L = landmarks(x, 60)
    assert 50 <= L.size <= 70 and np.unique(L).size == L.size
    K = rbf_operator("thin_plate_spline", x, x, 1.0)
    P = np.column_stack([np.ones(901), x])
    Q = np.linalg.qr(P)[0]

    def proj(V):
        return V - Q @ (Q.T @ V)

    s = np.full(901, 1e-3)
    coarse = CoarseDeflation(
        L,
        P[L],
        K.to_dense()[np.ix_(L, L)],
        rbf_operator("thin_plate_spline", x, x[L], 1.0),
        rbf_operator("thin_plate_spline", x[L], x, 1.0),
        proj,
        s,
    )
    assert coarse.size == L.size - 3
    # a right-hand side whose solution is carried by the landmarks: deflated away, recovered exactly
    c = np.zeros((901, 1))
    c[L] = scipy.linalg.null_space(P[L].T) @ r.normal(size=(L.size - 3, 1))
    B = proj(K.to_dense() @ c + s[:, None] * c)
    assert np.abs(coarse.deflate(B)).max() < 1e-10 * np.abs(B).max()
    np.testing.assert_allclose(coarse.solution(np.zeros_like(B), B), c, rtol=0, atol=1e-9 * np.abs(c).max())
