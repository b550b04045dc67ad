"""kernla.models: k-nearest neighbours, kernel interpolation, Gaussian-process regression.

References: scikit-learn (brute-force neighbours, GaussianProcessRegressor with fixed
hyperparameters), scipy's RBFInterpolator, dense NumPy formulas. Sizes stay small so that the
whole file runs in well under 30 s on two cores.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernla
from kernla.errors import ArrayKindError, InputValueError, ShapeError
from kernla.models import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors, NotFittedError

try:
    from sklearn import gaussian_process as sk_gp
    from sklearn import neighbors as sk_neighbors
    from sklearn.gaussian_process import kernels as sk_kernels
except ImportError:  # optional: the tests that use it are marked requires("sklearn")
    sk_gp = sk_kernels = sk_neighbors = None


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# k-nearest neighbours
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def knn_data():
    r = rng(0)
    X = r.normal(size=(400, 4))
    Q = r.normal(size=(150, 4))
    labels = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8)
    targets = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] ** 2], axis=1)
    return X, Q, labels, targets


SK_METRICS = ["euclidean", "sqeuclidean", "manhattan", "chebyshev", "cosine"]


@pytest.mark.requires("sklearn")
@pytest.mark.parametrize("metric", SK_METRICS)
def test_kneighbors_matches_sklearn(knn_data, metric):
    X, Q, _, _ = knn_data
    k = 7
    ref = sk_neighbors.NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(X)
    d_ref, i_ref = ref.kneighbors(Q)
    d, i = NearestNeighbors(n_neighbors=k, metric=metric).fit(X).kneighbors(Q)
    assert i.dtype == np.int64 and i.shape == (150, k) and d.shape == (150, k)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-10, atol=1e-12)
    # no queries: the fitted points, each without itself
    d_ref, i_ref = ref.kneighbors()
    d, i = NearestNeighbors(n_neighbors=k, metric=metric).fit(X).kneighbors()
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.requires("sklearn")
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_classifier_and_regressor_match_sklearn(knn_data, metric, weights):
    X, Q, labels, targets = knn_data
    k = 7
    names = np.array(["low", "mid", "high"])[labels]  # string labels
    clf = KNeighborsClassifier(n_neighbors=k, weights=weights, metric=metric).fit(X, names)
    ref = sk_neighbors.KNeighborsClassifier(n_neighbors=k, weights=weights, metric=metric, algorithm="brute").fit(
        X, names
    )
    np.testing.assert_array_equal(clf.classes_, ref.classes_)
    np.testing.assert_array_equal(clf.predict(Q), ref.predict(Q))
    np.testing.assert_allclose(clf.predict_proba(Q), ref.predict_proba(Q), rtol=1e-10, atol=1e-12)
    assert clf.score(Q, ref.predict(Q)) == 1.0
    assert clf.score(X, names) == pytest.approx(ref.score(X, names))

    for y in (targets, targets[:, 0]):
        reg = KNeighborsRegressor(n_neighbors=k, weights=weights, metric=metric).fit(X, y)
        sk = sk_neighbors.KNeighborsRegressor(n_neighbors=k, weights=weights, metric=metric, algorithm="brute").fit(
            X, y
        )
        pred = reg.predict(Q)
        assert pred.shape == y[: len(Q)].shape
        np.testing.assert_allclose(pred, sk.predict(Q), rtol=1e-10, atol=1e-12)
        assert reg.score(Q, sk.predict(Q)) == pytest.approx(1.0)
        assert reg.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-10)


def test_distance_weights_with_exact_matches():
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 1, 1, 1])
    # the query sits on point 0: only that point votes, whatever the other neighbours say
    clf = KNeighborsClassifier(n_neighbors=3, weights="distance").fit(X, y)
    np.testing.assert_array_equal(clf.predict(np.array([[0.0]])), [0])
    reg = KNeighborsRegressor(n_neighbors=3, weights="distance").fit(X, y.astype(float))
    w = 1 / np.array([0.4, 0.6, 1.4])  # neighbours 1, 2, 0 of the query 1.4
    np.testing.assert_allclose(reg.predict(np.array([[0.0], [1.4]])), [0.0, (w[0] + w[1]) / w.sum()])
    reg = KNeighborsRegressor(n_neighbors=2, weights=lambda d: np.exp(-d)).fit(X, X[:, 0])
    w = np.exp(-np.array([0.25, 0.75]))
    np.testing.assert_allclose(reg.predict(np.array([[0.25]])), [(w @ [0.0, 1.0]) / w.sum()])


def _acosh(z):
    return np.arccosh(np.maximum(z, 1.0))


def test_hyperbolic_and_poincare_vs_dense_numpy():
    r = rng(3)
    # upper half-space: first coordinate > 0
    X = np.column_stack([r.uniform(0.1, 2.0, 300), r.normal(size=(300, 2))])
    Q = np.column_stack([r.uniform(0.1, 2.0, 60), r.normal(size=(60, 2))])
    sq = ((Q[:, None] - X[None]) ** 2).sum(-1)
    D = _acosh(1 + sq / (2 * Q[:, :1] * X[None, :, 0]))
    i_ref = np.argsort(D, axis=1)[:, :5]
    d, i = NearestNeighbors(n_neighbors=5, metric="hyperbolic").fit(X).kneighbors(Q)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, np.take_along_axis(D, i_ref, 1), rtol=1e-9)
    # Poincaré ball
    B = r.normal(size=(300, 3))
    B = 0.9 * B / (1 + np.linalg.norm(B, axis=1, keepdims=True))
    P = B[:60] * 0.99 + 0.001
    sq = ((P[:, None] - B[None]) ** 2).sum(-1)
    D = _acosh(1 + 2 * sq / ((1 - (P**2).sum(1))[:, None] * (1 - (B**2).sum(1))[None]))
    i_ref = np.argsort(D, axis=1)[:, :5]
    d, i = NearestNeighbors(n_neighbors=5, metric="poincare").fit(B).kneighbors(P)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, np.take_along_axis(D, i_ref, 1), rtol=1e-9)
    # points outside the model's domain are refused
    with pytest.raises(InputValueError, match="first coordinate"):
        NearestNeighbors(metric="hyperbolic").fit(-X)
    with pytest.raises(InputValueError, match="norm < 1"):
        NearestNeighbors(metric="poincare").fit(B * 3)


@pytest.mark.requires("sklearn")
def test_custom_metric_callable(knn_data):
    X, Q, labels, _ = knn_data
    w = np.array([1.0, 4.0, 0.5, 2.0])

    def weighted(x_i, y_j):
        return (((x_i - y_j) ** 2) * w).sum(-1)

    d, i = NearestNeighbors(n_neighbors=4, metric=weighted).fit(X).kneighbors(Q)
    D = (((Q[:, None] - X[None]) ** 2) * w).sum(-1)
    i_ref = np.argsort(D, axis=1)[:, :4]
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, np.take_along_axis(D, i_ref, 1), rtol=1e-10)
    clf = KNeighborsClassifier(n_neighbors=5, metric=weighted).fit(X, labels)
    ref = sk_neighbors.KNeighborsClassifier(n_neighbors=5, algorithm="brute", metric="euclidean")
    ref.fit(X * np.sqrt(w), labels)
    np.testing.assert_array_equal(clf.predict(Q), ref.predict(Q * np.sqrt(w)))
    with pytest.raises(ShapeError, match="scalar LazyTensor"):
        NearestNeighbors(n_neighbors=2, metric=lambda a, b: a - b).fit(X).kneighbors(Q)


def test_knn_float32_and_torch(knn_data):
    torch = pytest.importorskip("torch")
    X, Q, labels, targets = knn_data
    d64, i64 = NearestNeighbors(n_neighbors=3).fit(X).kneighbors(Q)
    d, i = NearestNeighbors(n_neighbors=3).fit(torch.from_numpy(X)).kneighbors(torch.from_numpy(Q))
    assert isinstance(d, torch.Tensor) and isinstance(i, torch.Tensor) and i.dtype == torch.int64
    assert d.dtype == torch.float64
    np.testing.assert_array_equal(i.numpy(), i64)
    np.testing.assert_allclose(d.numpy(), d64, rtol=1e-12)
    reg = KNeighborsRegressor(n_neighbors=3).fit(torch.from_numpy(X), torch.from_numpy(targets))
    out = reg.predict(torch.from_numpy(Q))
    assert isinstance(out, torch.Tensor) and out.shape == (150, 2)
    clf = KNeighborsClassifier(n_neighbors=3).fit(torch.from_numpy(X), torch.from_numpy(labels))
    assert isinstance(clf.predict(torch.from_numpy(Q)), torch.Tensor)
    assert isinstance(clf.predict_proba(torch.from_numpy(Q)), torch.Tensor)
    # float32 data: same neighbours here (well separated), float64 queries are cast
    d32, i32 = NearestNeighbors(n_neighbors=3).fit(X.astype(np.float32)).kneighbors(Q)
    assert d32.dtype == np.float32
    np.testing.assert_array_equal(i32, i64)
    with pytest.raises(ArrayKindError, match="fitted on numpy"):
        NearestNeighbors(n_neighbors=3).fit(X).kneighbors(torch.from_numpy(Q))


def test_knn_errors(knn_data):
    X, Q, labels, _ = knn_data
    with pytest.raises(NotFittedError, match="fit"):
        NearestNeighbors().kneighbors(Q)
    with pytest.raises(NotFittedError):
        KNeighborsClassifier().predict(Q)
    with pytest.raises(NotFittedError):
        KNeighborsRegressor().predict(Q)
    nn = NearestNeighbors(n_neighbors=3).fit(X)
    with pytest.raises(ShapeError, match="dimension 3"):
        nn.kneighbors(Q[:, :3])
    with pytest.raises(ShapeError, match="k=401"):
        nn.kneighbors(Q, n_neighbors=401)
    with pytest.raises(ShapeError, match="k=400"):
        nn.kneighbors(n_neighbors=400)  # the point itself does not count
    with pytest.raises(InputValueError, match="positive integer"):
        NearestNeighbors(n_neighbors=0).fit(X)
    with pytest.raises(InputValueError, match="unknown metric"):
        NearestNeighbors(metric="mahalanobis").fit(X)
    with pytest.raises(InputValueError, match="weights"):
        KNeighborsClassifier(weights="inverse").fit(X, labels)
    with pytest.raises(ShapeError, match="labels"):
        KNeighborsClassifier().fit(X, labels[:-1])
    with pytest.raises(ShapeError, match=r"\(400,\)"):
        KNeighborsRegressor().fit(X, np.ones(3))
    with pytest.raises(InputValueError, match="NaN"):
        nn.kneighbors(np.full((2, 4), np.nan))
    with pytest.raises(ShapeError, match="empty"):
        NearestNeighbors().fit(np.zeros((0, 4)))
    with pytest.raises(ShapeError, match="2-D"):
        NearestNeighbors().fit(np.zeros((2, 2, 2)))


# ---------------------------------------------------------------------------------------------
# kernel interpolation
# ---------------------------------------------------------------------------------------------
from kernla.models import GaussianProcessRegressor, KernelInterpolation  # noqa: E402


def _smooth_data(n, seed=0, dim=2):
    r = rng(seed)
    x = r.uniform(size=(n, dim))
    y = np.column_stack([np.sin(4 * x[:, 0]) * np.cos(3 * x[:, 1]), x[:, 0] * x[:, 1] + 0.05 * r.normal(size=n)])
    return x, y, r.uniform(-0.1, 1.1, size=(80, dim))


@pytest.mark.parametrize("n", [150, 400])  # Jacobi and Nyström preconditioning under precond="auto"
@pytest.mark.parametrize(
    "kernel, scipy_name, to_sigma",
    [
        ("gaussian", "gaussian", lambda eps: 1 / (np.sqrt(2) * eps)),
        ("inverse_multiquadric", "inverse_multiquadric", lambda eps: 1 / eps),
        ("cauchy", "inverse_quadratic", lambda eps: 1 / eps),
    ],
)
def test_interpolation_matches_scipy_rbf(n, kernel, scipy_name, to_sigma):
    from scipy.interpolate import RBFInterpolator

    x, y, xn = _smooth_data(n)
    eps, smoothing = 3.0, 1e-3
    ref = RBFInterpolator(x, y, kernel=scipy_name, epsilon=eps, smoothing=smoothing, degree=-1)
    model = KernelInterpolation(kernel=kernel, sigma=to_sigma(eps), smoothing=smoothing, degree=-1).fit(x, y)
    assert model.coef_.shape == (n, 2) and model.solve_info_.converged
    assert len(model.solve_info_.residual_norms) == 2  # both columns in one block solve
    np.testing.assert_allclose(model.predict(xn), ref(xn), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(model(x[:5, :]), ref(x[:5]), rtol=1e-7, atol=1e-8)
    one = KernelInterpolation(kernel=kernel, sigma=to_sigma(eps), smoothing=smoothing, degree=-1).fit(x, y[:, 0])
    assert one.predict(xn).shape == (80,)
    np.testing.assert_allclose(one.predict(xn), ref(xn)[:, 0], rtol=1e-7, atol=1e-8)


@pytest.mark.requires("sklearn")
@pytest.mark.parametrize("kernel, nu", [("laplacian", None), ("matern", 0.5), ("matern", 1.5), ("matern", 2.5)])
def test_interpolation_matern_vs_dense_solve(kernel, nu):
    x, y, xn = _smooth_data(200, seed=1)
    sigma, alpha = 0.4, 1e-2
    ref_k = sk_kernels.Matern(length_scale=sigma, nu=0.5 if nu is None else nu)
    coef = np.linalg.solve(ref_k(x) + alpha * np.eye(200), y)
    expected = ref_k(xn, x) @ coef
    model = KernelInterpolation(
        kernel=kernel, nu=1.5 if nu is None else nu, sigma=sigma, smoothing=alpha, precond="nystrom"
    ).fit(x, y)
    np.testing.assert_allclose(model.predict(xn), expected, rtol=1e-8, atol=1e-9)


def test_interpolation_exact_custom_kernel_and_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(0, 1, 30)[:, None]
    y = np.cos(5 * x[:, 0])
    # alpha = 0: the interpolant goes through the data
    model = KernelInterpolation(kernel="laplacian", sigma=0.3, smoothing=0.0).fit(x, y)
    np.testing.assert_allclose(model.predict(x), y, atol=1e-8)

    def double_gaussian(a, b, sigma):
        return 2.0 * kernla.kernels.gaussian(a, b, sigma=sigma)

    custom = KernelInterpolation(kernel=double_gaussian, sigma=0.2, smoothing=2e-2).fit(x, y)
    plain = KernelInterpolation(kernel="gaussian", sigma=0.2, smoothing=1e-2, degree=-1).fit(x, y)
    xn = np.array([[0.33], [0.71]])
    np.testing.assert_allclose(custom.predict(xn), plain.predict(xn), rtol=1e-9)
    t = KernelInterpolation(kernel="gaussian", sigma=0.2, smoothing=1e-2, degree=-1).fit(
        torch.from_numpy(x), torch.from_numpy(y)
    )
    out = t.predict(torch.from_numpy(xn))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), plain.predict(xn), rtol=1e-9)


def test_interpolation_errors():
    x, y, xn = _smooth_data(50)
    with pytest.raises(NotFittedError):
        KernelInterpolation().predict(xn)
    with pytest.raises(InputValueError, match="unknown kernel"):
        KernelInterpolation(kernel="polyharmonic").fit(x, y)
    with pytest.raises(InputValueError, match="sigma"):
        KernelInterpolation(sigma=-1.0).fit(x, y)
    with pytest.raises(InputValueError, match="smoothing"):  # scipy's name of the former alpha
        KernelInterpolation(smoothing=float("nan")).fit(x, y)
    with pytest.raises(ShapeError, match=r"\(50,\)"):
        KernelInterpolation().fit(x, y[:-1])
    model = KernelInterpolation(sigma=0.3, smoothing=1e-2).fit(x, y)
    with pytest.raises(ShapeError, match="dimension 3"):
        model.predict(np.zeros((4, 3)))
    with pytest.raises(InputValueError, match="NaN"):
        KernelInterpolation().fit(x, np.full(50, np.nan))
    with pytest.raises(InputValueError, match="KernelOperator"):
        KernelInterpolation(kernel=lambda a, b, sigma: np.eye(3)).fit(x, y)


# ---------------------------------------------------------------------------------------------
# Gaussian-process regression
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gp_data():
    r = rng(5)
    X = r.uniform(size=(350, 2))
    y = np.sin(5 * X[:, 0]) * np.cos(3 * X[:, 1]) + 0.1 * r.normal(size=350)
    Xn = r.uniform(-0.3, 1.3, size=(60, 2))
    return X, y, Xn


def _sk_kernel(kernel, nu, amplitude, sigma, noise=None):
    base = sk_kernels.RBF(sigma) if kernel == "gaussian" else sk_kernels.Matern(sigma, nu=nu)
    k = sk_kernels.ConstantKernel(amplitude) * base
    return k if noise is None else k + sk_kernels.WhiteKernel(noise)


@pytest.mark.requires("sklearn")
@pytest.mark.parametrize(
    "kernel, nu, normalize_y",
    [("gaussian", None, False), ("gaussian", None, True), ("matern", 1.5, False), ("matern", 2.5, True)],
)
def test_gp_matches_sklearn(gp_data, kernel, nu, normalize_y):
    X, y, Xn = gp_data
    amplitude, sigma, noise = 0.7, 0.3, 0.01
    # the WhiteKernel's noise is in scikit-learn's predictive std: include_noise=True
    ref = sk_gp.GaussianProcessRegressor(
        _sk_kernel(kernel, nu, amplitude, sigma, noise), optimizer=None, alpha=1e-12, normalize_y=normalize_y
    ).fit(X, y)
    m_ref, s_ref = ref.predict(Xn, return_std=True)
    gp = GaussianProcessRegressor(
        kernel=kernel, nu=nu or 1.5, sigma=sigma, amplitude=amplitude, noise=noise + 1e-12, normalize_y=normalize_y
    ).fit(X, y)
    m, s = gp.predict(Xn, return_std=True, include_noise=True)
    assert m.shape == s.shape == (60,)
    np.testing.assert_allclose(m, m_ref, rtol=1e-6, atol=1e-9 * np.abs(m_ref).max())
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    np.testing.assert_allclose(gp.predict(Xn), m)
    assert gp.log_marginal_likelihood() == pytest.approx(ref.log_marginal_likelihood_value_, rel=1e-9)


@pytest.mark.requires("sklearn")
def test_gp_latent_std_and_batches(gp_data):
    X, y, Xn = gp_data
    amplitude, sigma, noise = 1.3, 0.25, 0.04
    # noise as scikit-learn's alpha (not a kernel term): its std is the latent one
    ref = sk_gp.GaussianProcessRegressor(
        _sk_kernel("gaussian", None, amplitude, sigma), optimizer=None, alpha=noise
    ).fit(X, y)
    m_ref, s_ref = ref.predict(Xn, return_std=True)
    gp = GaussianProcessRegressor(sigma=sigma, amplitude=amplitude, noise=noise, batch_size=7).fit(X, y)
    m, s = gp.predict(Xn, return_std=True)
    np.testing.assert_allclose(m, m_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    # far from the data the posterior is the prior: std = sqrt(amplitude)
    _, far = gp.predict(np.array([[50.0, 50.0]]), return_std=True)
    np.testing.assert_allclose(far, np.sqrt(amplitude), rtol=1e-12)


@pytest.mark.requires("sklearn")
def test_gp_multi_output(gp_data):
    X, y, Xn = gp_data
    Y = np.column_stack([y, 3 * y + 1])
    ref = sk_gp.GaussianProcessRegressor(
        _sk_kernel("gaussian", None, 0.7, 0.3, 0.01), optimizer=None, alpha=1e-12, normalize_y=True
    ).fit(X, Y)
    m_ref, s_ref = ref.predict(Xn, return_std=True)
    gp = GaussianProcessRegressor(sigma=0.3, amplitude=0.7, noise=0.01 + 1e-12, normalize_y=True).fit(X, Y)
    m, s = gp.predict(Xn, return_std=True, include_noise=True)
    assert m.shape == s.shape == (60, 2)
    np.testing.assert_allclose(m, m_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    assert gp.log_marginal_likelihood() == pytest.approx(ref.log_marginal_likelihood_value_, rel=1e-9)


def test_gp_log_marginal_likelihood_slq(gp_data):
    X, y, _ = gp_data
    gp = GaussianProcessRegressor(kernel="matern", nu=1.5, sigma=0.3, amplitude=0.7, noise=0.01).fit(X, y)
    exact = gp.log_marginal_likelihood()
    est, err = gp.log_marginal_likelihood(method="slq", return_error=True, num_probes=24)
    assert err > 0 and abs(est - exact) < 5 * err + 1e-8 * abs(exact)
    assert abs(est - exact) < 0.02 * abs(exact)
    assert gp.log_marginal_likelihood(method="slq", num_probes=24) == est  # seeded
    with pytest.raises(InputValueError, match="max_exact_size"):
        gp.log_marginal_likelihood(max_exact_size=100)
    with pytest.raises(InputValueError, match="method"):
        gp.log_marginal_likelihood(method="laplace")


def test_gp_torch(gp_data):
    torch = pytest.importorskip("torch")
    X, y, Xn = gp_data
    gp = GaussianProcessRegressor(sigma=0.3, amplitude=0.7, noise=0.01).fit(X, y)
    m, s = gp.predict(Xn, return_std=True)
    gt = GaussianProcessRegressor(sigma=0.3, amplitude=0.7, noise=0.01).fit(torch.from_numpy(X), torch.from_numpy(y))
    mt, st = gt.predict(torch.from_numpy(Xn), return_std=True)
    assert isinstance(mt, torch.Tensor) and isinstance(st, torch.Tensor)
    np.testing.assert_allclose(mt.numpy(), m, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st.numpy(), s, rtol=1e-9)


def test_gp_errors(gp_data):
    X, y, Xn = gp_data
    with pytest.raises(NotFittedError):
        GaussianProcessRegressor().predict(Xn)
    with pytest.raises(NotFittedError):
        GaussianProcessRegressor().log_marginal_likelihood()
    with pytest.raises(InputValueError, match="noise"):
        GaussianProcessRegressor(noise=-1.0).fit(X, y)
    with pytest.raises(InputValueError, match="amplitude"):
        GaussianProcessRegressor(amplitude=0.0).fit(X, y)
    with pytest.raises(InputValueError, match="batch_size"):
        GaussianProcessRegressor(batch_size=0).fit(X, y)
    with pytest.raises(InputValueError, match="nu"):
        GaussianProcessRegressor(kernel="matern", nu=3.0).fit(X, y)
    gp = GaussianProcessRegressor(sigma=0.3).fit(X[:50], y[:50])
    with pytest.raises(ShapeError, match="dimension 1"):
        gp.predict(Xn[:, :1])
    with pytest.raises(ShapeError):
        GaussianProcessRegressor().fit(X, y[:10])
