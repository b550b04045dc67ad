"""GaussianProcessRegressor with learned hyper-parameters.

References: scikit-learn's GaussianProcessRegressor (its optimum and its log marginal likelihood at our
hyper-parameters), a dense torch implementation differentiated by autograd, central finite differences,
dense NumPy formulas for covariances and samples; stochastic estimates against exact values within
their reported standard errors over many seeds."""

import contextlib
import io

import numpy as np
import pytest

from kernla.errors import InputValueError
from kernla.models import GaussianProcessRegressor
from kernla.models import gp_kernels as gk
from kernla.models.gp_evidence import exact_evidence, iterative_evidence
from kernla.models.gp_optimize import SCIPY_LBFGS_TOL

try:
    from sklearn import gaussian_process as sk_gp
    from sklearn.gaussian_process import kernels as sk
except ImportError:  # optional dependency
    sk = sk_gp = None

needs_sklearn = pytest.mark.skipif(sk is None, reason="scikit-learn is not installed")


def _data(n, d=2, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, d))
    y = np.sin(3 * X[:, 0]) + 0.5 * X[:, 1] ** 2 + noise * rng.normal(size=n)
    return X, y


def _kernel():
    return gk.ConstantKernel(1.0) * gk.Matern([0.8, 1.2], nu=2.5) + gk.WhiteKernel(0.05)


@needs_sklearn
@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.ConstantKernel(1.0) * m.RBF([1.0, 1.0]) + m.WhiteKernel(0.1),
        lambda m: m.ConstantKernel(0.5) * m.Matern([0.5, 2.0], nu=2.5) + m.WhiteKernel(0.1),
        lambda m: m.ConstantKernel(1.0) * m.Matern(1.0, nu=0.5) + m.WhiteKernel(0.1),
    ],
)
def test_learned_evidence_reaches_sklearns_optimum(make):
    X, y = _data(97, seed=3)
    ref = sk_gp.GaussianProcessRegressor(make(sk), normalize_y=True, random_state=0).fit(X, y)
    gp = GaussianProcessRegressor(make(gk), normalize_y=True, random_state=0).fit(X, y)
    ours = gp.log_marginal_likelihood_value_
    assert ours >= ref.log_marginal_likelihood_value_ - 1e-3 * abs(ref.log_marginal_likelihood_value_)
    # scikit-learn's own likelihood at our hyper-parameters agrees with ours
    assert ref.log_marginal_likelihood(gp.kernel_.theta) == pytest.approx(ours, rel=1e-8)
    m_ref = ref.predict(X[:20])
    assert np.abs(gp.predict(X[:20]) - m_ref).max() < 0.05 * np.abs(m_ref).max()


@needs_sklearn
def test_start_subset_reaches_sklearns_optimum_and_reuses_the_last_cholesky_factor():
    X, y = _data(301, seed=5)
    ref = sk_gp.GaussianProcessRegressor(_kernel_sk(), normalize_y=True, random_state=0).fit(X, y)
    gp = GaussianProcessRegressor(_kernel(), normalize_y=True, random_state=4, start_subset=61).fit(X, y)
    best = ref.log_marginal_likelihood_value_
    assert gp.log_marginal_likelihood_value_ >= best - 1e-3 * abs(best)
    assert gp.subset_result_.evaluations > 0 and gp.optimizer_result_.evaluations > 0
    # the kept factor is the dense Cholesky factor of K + noise·I at the learned hyper-parameters
    A = gp.kernel_.dense(X) + gp.noise_ * np.eye(len(X))
    assert np.allclose(gp._chol.L @ gp._chol.L.T, A, rtol=1e-12, atol=1e-12)
    assert ref.log_marginal_likelihood(gp.kernel_.theta) == pytest.approx(gp.log_marginal_likelihood_value_, rel=1e-9)
    # optimizer_maxiter=0: the subset's hyper-parameters, conditioned on all points
    only = GaussianProcessRegressor(_kernel(), normalize_y=True, random_state=4, start_subset=61, optimizer_maxiter=0)
    only.fit(X, y)
    assert only.optimizer_result_ is None
    assert np.allclose(only.kernel_.theta, only.subset_result_.theta)
    assert only.log_marginal_likelihood_value_ <= gp.log_marginal_likelihood_value_ + 1e-9
    with pytest.raises(InputValueError, match="start_subset"):
        GaussianProcessRegressor(_kernel(), start_subset=1).fit(X, y)


def _kernel_sk():
    return sk.ConstantKernel(1.0) * sk.Matern([0.8, 1.2], nu=2.5) + sk.WhiteKernel(0.05)


@needs_sklearn
def test_sklearn_kernel_objects_and_restarts_match_sklearn():
    X, y = _data(61, seed=5)
    kern = sk.ConstantKernel(1.0, (1e-2, 1e2)) * sk.RBF(1.0, (1e-2, 1e2)) + sk.WhiteKernel(0.1, (1e-4, 1e1))
    ref = sk_gp.GaussianProcessRegressor(kern, n_restarts_optimizer=3, random_state=1).fit(X, y)
    gp = GaussianProcessRegressor(kern, n_restarts_optimizer=3, random_state=1).fit(X, y)
    assert gp.log_marginal_likelihood_value_ >= ref.log_marginal_likelihood_value_ - 1e-3 * abs(
        ref.log_marginal_likelihood_value_
    )
    assert gp.kernel is kern  # the parameter is not modified
    value, grad = gp.log_marginal_likelihood(gp.kernel_.theta, eval_gradient=True)
    v_ref, g_ref = ref.log_marginal_likelihood(gp.kernel_.theta, eval_gradient=True)
    assert value == pytest.approx(v_ref, rel=1e-9)
    np.testing.assert_allclose(grad, g_ref, rtol=1e-6, atol=1e-6)


def _torch_lml(theta, X, y):
    """Dense log marginal likelihood of ConstantKernel * Matern(ARD, 5/2) + White, in torch."""
    import torch  # optional dependency: the autograd reference

    c, l1, l2, w = torch.exp(theta)
    Xs = X / torch.stack([l1, l2])
    r = torch.sqrt(((Xs[:, None, :] - Xs[None, :, :]) ** 2).sum(-1) + 1e-300)
    a = np.sqrt(5.0) * r
    K = c * (1 + a + a * a / 3) * torch.exp(-a) + (w + 1e-10) * torch.eye(X.shape[0], dtype=X.dtype)
    L = torch.linalg.cholesky(K)
    alpha = torch.cholesky_solve(y[:, None], L)
    n = X.shape[0]
    return -0.5 * (y[:, None] * alpha).sum() - torch.log(torch.diag(L)).sum() - 0.5 * n * np.log(2 * np.pi)


def test_exact_gradient_matches_finite_differences_and_torch_autograd():
    torch = pytest.importorskip("torch")
    X, y = _data(83, seed=7)
    k = _kernel()
    ev = exact_evidence(k, X, y[:, None], 1e-10)
    h = 1e-6
    fd = np.array(
        [
            (
                exact_evidence(k.clone_with_theta(k.theta + h * e), X, y[:, None], 1e-10, False).value
                - exact_evidence(k.clone_with_theta(k.theta - h * e), X, y[:, None], 1e-10, False).value
            )
            / (2 * h)
            for e in np.eye(k.n_dims)
        ]
    )
    np.testing.assert_allclose(ev.gradient, fd, rtol=1e-5, atol=1e-6)
    theta = torch.tensor(k.theta, requires_grad=True)
    value = _torch_lml(theta, torch.from_numpy(X), torch.from_numpy(y))
    (grad,) = torch.autograd.grad(value, theta)
    assert ev.value == pytest.approx(float(value.detach()), rel=1e-10)
    np.testing.assert_allclose(ev.gradient, grad.numpy(), rtol=1e-7, atol=1e-8)


def test_stochastic_estimates_within_their_standard_errors():
    torch = pytest.importorskip("torch")
    X, y = _data(301, seed=11)
    k = _kernel()
    exact = exact_evidence(k, X, y[:, None], 1e-10)
    theta = torch.tensor(k.theta, requires_grad=True)
    (g_torch,) = torch.autograd.grad(_torch_lml(theta, torch.from_numpy(X), torch.from_numpy(y)), theta)
    runs = [iterative_evidence(k, X, y[:, None], 1e-10, num_probes=8, rank=20, seed=s, tol=1e-10) for s in range(40)]
    values = np.array([r.value for r in runs])
    errors = np.array([r.stderr for r in runs])
    z = (values - exact.value) / errors
    assert np.mean(np.abs(z) < 2.0) >= 0.8  # ~95% for a normal estimate; the reported errors are honest
    assert abs(values.mean() - exact.value) < 4 * values.std(ddof=1) / np.sqrt(len(values))
    grads = np.array([r.gradient for r in runs])
    g_err = grads.std(axis=0, ddof=1) / np.sqrt(len(runs))
    assert np.all(np.abs(grads.mean(axis=0) - exact.gradient) < 4 * g_err + 1e-8)
    assert np.all(np.abs(grads.mean(axis=0) - g_torch.numpy()) < 4 * g_err + 1e-8)
    h = 1e-5
    fd = [
        (
            exact_evidence(k.clone_with_theta(k.theta + h * e), X, y[:, None], 1e-10, False).value
            - exact_evidence(k.clone_with_theta(k.theta - h * e), X, y[:, None], 1e-10, False).value
        )
        / (2 * h)
        for e in np.eye(k.n_dims)
    ]
    assert np.all(np.abs(grads.mean(axis=0) - fd) < 4 * g_err + 1e-6)
    # deterministic given the seed
    again = iterative_evidence(k, X, y[:, None], 1e-10, num_probes=8, rank=20, seed=3, tol=1e-10)
    assert again.value == runs[3].value and np.array_equal(again.gradient, runs[3].gradient)


def test_iterative_training_learns_like_exact_training():
    X, y = _data(400, seed=17)
    Xt, yt = _data(200, seed=18, noise=0.0)
    exact = GaussianProcessRegressor(_kernel(), random_state=0).fit(X, y)
    it = GaussianProcessRegressor(
        _kernel(), method="iterative", random_state=0, optimizer_maxiter=40, learning_rate=0.1, rank=40
    ).fit(X, y)
    assert it.method_ == "iterative" and exact.method_ == "exact"
    assert it.optimizer_result_.iterations <= 40
    # the learned evidence, evaluated exactly, is close to the exact optimum
    learned = exact.log_marginal_likelihood(it.kernel_.theta)
    assert learned >= exact.log_marginal_likelihood_value_ - 0.02 * abs(exact.log_marginal_likelihood_value_)
    rmse = lambda gp: np.sqrt(np.mean((gp.predict(Xt) - yt) ** 2))  # noqa: E731
    assert rmse(it) < 1.3 * rmse(exact) + 1e-3
    est, err = it.log_marginal_likelihood_value_, it.log_marginal_likelihood_stderr_
    assert err > 0 and abs(est - learned) < 5 * err + 1e-6 * abs(learned)


def test_hyperparameter_changes_during_training_never_compile():
    engine = pytest.importorskip("kernla.engines.cpu.engine")
    X, y = _data(350, seed=19)
    opts = dict(method="iterative", backend="cpu", rank=30, random_state=0)
    GaussianProcessRegressor(_kernel(), optimizer_maxiter=1, **opts).fit(X, y).predict(X[:5], return_std=True)
    compiled = len(engine._kernels)
    GaussianProcessRegressor(_kernel(), optimizer_maxiter=8, **opts).fit(X, y).predict(X[:5], return_std=True)
    assert len(engine._kernels) == compiled


@pytest.mark.parametrize("method", ["exact", "iterative"])
def test_covariances_std_and_samples_match_dense_formulas(method):
    X, y = _data(240, seed=23)
    Xn = np.random.default_rng(24).uniform(-1.2, 1.2, size=(37, 2))
    k = gk.ConstantKernel(0.8) * gk.RBF([0.4, 0.7]) + gk.WhiteKernel(0.02)
    gp = GaussianProcessRegressor(k, optimizer=None, method=method, normalize_y=True, rank=80, variance_rank=80)
    gp.fit(X, y)
    kern = k.k1
    noise = 0.02 + 1e-10
    A = kern.operator(X).to_dense() + noise * np.eye(len(X))
    Ks = kern.operator(Xn, X).to_dense()
    ystd, ymean = y.std(), y.mean()
    mean = Ks @ np.linalg.solve(A, (y - ymean) / ystd) * ystd + ymean
    cov = (kern.operator(Xn).to_dense() - Ks @ np.linalg.solve(A, Ks.T)) * ystd**2
    m, c = gp.predict(Xn, return_cov=True)
    np.testing.assert_allclose(m, mean, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(c, cov, rtol=1e-6, atol=1e-8)
    _, s = gp.predict(Xn, return_std=True)
    np.testing.assert_allclose(s, np.sqrt(np.diag(cov)), rtol=1e-4, atol=1e-5)  # the low-rank cache when iterative
    _, sn = gp.predict(Xn, return_std=True, include_noise=True)
    np.testing.assert_allclose(sn**2, s**2 + 0.02 * ystd**2, rtol=1e-9)
    samples = gp.sample_y(Xn, n_samples=4000, random_state=5)
    assert samples.shape == (37, 4000)
    np.testing.assert_array_equal(samples, gp.sample_y(Xn, n_samples=4000, random_state=5))
    np.testing.assert_allclose(samples.mean(axis=1), mean, atol=4 * np.sqrt(np.diag(cov).max() / 4000) + 1e-8)
    np.testing.assert_allclose(np.cov(samples), cov, atol=0.15 * np.abs(cov).max())


def test_fast_variance_against_cg_variances():
    X, y = _data(900, seed=29)
    Xn = np.random.default_rng(30).uniform(-1, 1, size=(50, 2))
    k = gk.ConstantKernel(1.0) * gk.Matern([0.3, 0.5], nu=1.5) + gk.WhiteKernel(0.01)
    fast = GaussianProcessRegressor(k, optimizer=None, method="iterative", rank=100, variance_rank=300).fit(X, y)
    slow = GaussianProcessRegressor(k, optimizer=None, method="iterative", fast_variance=False).fit(X, y)
    exact = GaussianProcessRegressor(k, optimizer=None).fit(X, y)
    s_fast, s_slow, s_exact = (g.predict(Xn, return_std=True)[1] for g in (fast, slow, exact))
    np.testing.assert_allclose(s_slow, s_exact, rtol=1e-6)
    np.testing.assert_allclose(s_fast, s_exact, rtol=0.05)
    assert np.all(s_fast >= s_exact * (1 - 1e-6))  # the projection cache errs on the large side


def test_multi_output_shapes_and_named_kernels_that_learn():
    X, y = _data(80, seed=31)
    Y = np.column_stack([y, 2 * y + 1])
    gp = GaussianProcessRegressor(kernel="matern", nu=2.5, sigma=[1.0, 1.0], optimizer="fmin_l_bfgs_b").fit(X, Y)
    assert gp.kernel_.n_dims == 4  # amplitude, two length scales, noise
    m, c = gp.predict(X[:7], return_cov=True)
    assert m.shape == (7, 2) and c.shape == (7, 7, 2)
    assert gp.sample_y(X[:7], 3).shape == (7, 2, 3)
    fixed = GaussianProcessRegressor(kernel="matern", nu=2.5, sigma=[0.5, 2.0]).fit(X, y)
    assert fixed.optimizer_result_ is None and fixed.kernel_.n_dims == 0


def test_adam_verbose_early_stop_and_custom_optimizer():
    X, y = _data(120, seed=37)
    out = io.StringIO()
    with contextlib.redirect_stderr(out):
        gp = GaussianProcessRegressor(_kernel(), optimizer="adam", optimizer_maxiter=300, verbose=2, random_state=0)
        gp.fit(X, y)
    assert "iter" in out.getvalue() and "lml" in out.getvalue()
    assert gp.optimizer_result_.converged and gp.optimizer_result_.iterations < 300

    calls = []

    def optimizer(obj_func, initial_theta, bounds):
        value, grad = obj_func(initial_theta, eval_gradient=True)
        calls.append(value)
        return initial_theta - 0.01 * grad, value

    gp = GaussianProcessRegressor(_kernel(), optimizer=optimizer).fit(X, y)
    assert len(calls) == 1 and gp.kernel_.theta.shape == (4,)


def test_priors_move_the_optimum():
    X, y = _data(60, seed=41)
    strong = gk.LogNormalPrior(np.log(5.0), 0.01)
    k = gk.ConstantKernel(1.0) * gk.RBF(1.0, length_scale_prior=strong) + gk.WhiteKernel(0.1)
    gp = GaussianProcessRegressor(k).fit(X, y)
    assert gp.kernel_.k1.k2.length_scale == pytest.approx(5.0, rel=0.05)


@needs_sklearn
def test_default_relative_stop_is_within_the_margin_of_scipys_and_sklearns():
    """The default L-BFGS-B stop (optimizer_tol=None: 1e-6 relative reduction) against scipy's own ftol
    (SCIPY_LBFGS_TOL, what scikit-learn runs): no more evaluations, and within 1e-3·|value| of both optima."""
    X, y = _data(211, d=3, seed=8)
    kern = sk.ConstantKernel(1.0) * sk.Matern([1.0] * 3, nu=2.5) + sk.WhiteKernel(0.1)
    ref = sk_gp.GaussianProcessRegressor(kern, normalize_y=True, random_state=0).fit(X, y)
    ours = GaussianProcessRegressor(kern, normalize_y=True).fit(X, y)
    long = GaussianProcessRegressor(kern, normalize_y=True, optimizer_tol=SCIPY_LBFGS_TOL).fit(X, y)
    assert ours.get_params()["optimizer_tol"] is None and long.optimizer_result_.converged
    assert ours.optimizer_result_.evaluations <= long.optimizer_result_.evaluations
    for best in (ref.log_marginal_likelihood_value_, long.log_marginal_likelihood_value_):
        assert ours.log_marginal_likelihood_value_ >= best - 1e-3 * abs(best)
    for bad in (-1e-3, 1.0, "tight", True):
        with pytest.raises(InputValueError, match="optimizer_tol"):
            GaussianProcessRegressor(kern, optimizer_tol=bad).fit(X, y)


def test_errors():
    X, y = _data(30)
    with pytest.raises(InputValueError, match="method"):
        GaussianProcessRegressor(method="cholesky").fit(X, y)
    with pytest.raises(InputValueError, match="optimizer"):
        GaussianProcessRegressor(_kernel(), optimizer="bfgs").fit(X, y)
    with pytest.raises(InputValueError, match="sigma"):
        GaussianProcessRegressor(sigma="wide").fit(X, y)
    with pytest.raises(InputValueError, match="n_restarts"):
        GaussianProcessRegressor(_kernel(), n_restarts_optimizer=-1).fit(X, y)
    with pytest.raises(InputValueError, match="return_std"):
        GaussianProcessRegressor().fit(X, y).predict(X, return_std=True, return_cov=True)
    with pytest.raises(InputValueError, match="n_samples"):
        GaussianProcessRegressor().fit(X, y).sample_y(X, n_samples=0)
