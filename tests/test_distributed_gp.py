"""GaussianProcessRegressor(client=...) on a LocalCluster of 2 worker processes: the single-process fit.

The iterative (BBMM) training — pivoted Cholesky, block CG with Lanczos, the gradient's pair sums —
and the predictions run their kernel products on the workers; with the same seed, the learned
hyper-parameters, the marginal likelihood and the predictions are the single-process ones up to
rounding (sums in another order). One cluster serves the module.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from kernla.errors import InputValueError
from kernla.models import GaussianProcessRegressor
from kernla.models import gp_kernels as gk
from kernla.models.gp_evidence import LocalProducts

try:
    from distributed import Client, LocalCluster
    from sklearn.base import clone

    from kernla.models.gp_cluster import ClusterProducts
except ImportError:  # optional: the whole module needs dask[distributed] and scikit-learn
    pytestmark = pytest.mark.skip(reason="needs dask[distributed] and scikit-learn")

RTOL = 1e-10


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


def close(a, b, rtol=RTOL):
    """``a`` equals ``b`` to ``rtol`` relative to b's largest entry."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and float(np.abs(a - b).max()) <= rtol * float(np.abs(b).max())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(263, 2))
    y = np.sin(4 * X[:, 0]) * X[:, 1] + 0.05 * rng.normal(size=263)
    return X, y, rng.uniform(size=(31, 2))


def params(**extra):
    kernel = gk.ConstantKernel(1.0) * gk.RBF([0.5, 0.5]) + gk.WhiteKernel(0.1)
    options = dict(kernel=kernel, method="iterative", rank=15, num_probes=6, optimizer_maxiter=3, random_state=3)
    return {**options, **extra}


@pytest.fixture(scope="module")
def fits(client, data):
    X, y, _ = data
    return GaussianProcessRegressor(**params()).fit(X, y), GaussianProcessRegressor(**params(), client=client).fit(X, y)


def test_training_learns_the_single_process_hyperparameters(fits):
    local, spread = fits
    assert spread.method_ == "iterative" and isinstance(spread._products, ClusterProducts)
    assert close(spread.kernel_.theta, local.kernel_.theta)
    assert close(spread.log_marginal_likelihood_value_, local.log_marginal_likelihood_value_)
    assert close(spread.log_marginal_likelihood_stderr_, local.log_marginal_likelihood_stderr_)
    assert close(spread.alpha_, local.alpha_)
    assert spread.optimizer_result_.history == pytest.approx(local.optimizer_result_.history, rel=RTOL)


def test_predictions_on_the_cluster(fits, data):
    local, spread = fits
    new = data[2]
    assert close(spread.predict(new), local.predict(new))
    for g, w in zip(spread.predict(new, return_std=True), local.predict(new, return_std=True)):
        assert close(g, w)
    # the covariance: the prior (of the signal variance's size) minus CG solves to tol = 1e-10, mostly cancelling
    cov, want = spread.predict(new, return_cov=True)[1], local.predict(new, return_cov=True)[1]
    assert float(np.abs(cov - want).max()) <= 1e-9 * float(spread.kernel_.diag(new).max())
    est = spread.log_marginal_likelihood(method="slq", num_probes=4, seed=1, return_error=True)
    assert close(est, local.log_marginal_likelihood(method="slq", num_probes=4, seed=1, return_error=True))


def test_variances_by_solves_on_the_cluster(client, data):
    X, y, new = data
    options = params(optimizer=None, fast_variance=False, tol=1e-12)
    local = GaussianProcessRegressor(**options).fit(X, y)
    spread = GaussianProcessRegressor(**options, client=client).fit(X, y)
    assert close(spread.predict(new, return_std=True)[1], local.predict(new, return_std=True)[1], 1e-9)


@pytest.mark.parametrize("broadcast_bytes", [None, 0])
def test_products_and_gradient_sums_match_the_local_ones(client, broadcast_bytes):
    """Several stationary factors, ARD and a dot product on the same placed points, both column modes."""
    rng = np.random.default_rng(4)
    X = rng.uniform(size=(157, 3))
    kernel = gk.ConstantKernel(2.0) * gk.Matern([0.3, 1.0, 2.0], nu=2.5) + gk.RationalQuadratic(0.5, 2.0)
    kernel = kernel + gk.DotProduct(0.7) * gk.ExpSineSquared(1.0, 3.0) + gk.WhiteKernel(0.01)
    local, spread = LocalProducts(X), ClusterProducts(client, X, broadcast_bytes=broadcast_bytes)
    V, U, W = rng.normal(size=(157, 4)), rng.normal(size=(157, 3)), rng.normal(size=(157, 3))
    assert close(spread.operator(kernel) @ V, local.operator(kernel) @ V, 1e-12)
    other = kernel.clone_with_theta(kernel.theta + 0.3)  # new hyper-parameters: the same blocks
    assert close(spread.operator(other) @ V, local.operator(other) @ V, 1e-12)
    assert spread.operator(other).rows is spread.operator(kernel).rows
    assert spread.operator(other).broadcast == (broadcast_bytes is None)
    assert close(spread.pair_gradient(other, U, W), local.pair_gradient(other, U, W), 1e-12)
    new = rng.uniform(size=(21, 3))
    assert close(spread.cross(other, new) @ V, local.cross(other, new) @ V, 1e-12)


def test_client_is_a_scikit_learn_parameter(client, fits, data):
    gp = GaussianProcessRegressor(client=client)
    assert gp.get_params()["client"] is client
    twin = clone(gp)
    assert twin.client is client and gp.client is client
    loaded = pickle.loads(pickle.dumps(fits[1]))  # a client is a connection: the copy predicts here
    assert loaded.client is None
    assert close(loaded.predict(data[2]), fits[1].predict(data[2]))


def test_the_exact_method_stays_local(client, data):
    X, y, new = data
    local = GaussianProcessRegressor(sigma=0.3, noise=0.05).fit(X, y)
    spread = GaussianProcessRegressor(sigma=0.3, noise=0.05, client=client).fit(X, y)
    assert spread.method_ == "exact" and isinstance(spread._products, LocalProducts)
    assert np.array_equal(spread.predict(new), local.predict(new))


def test_what_the_cluster_cannot_take_is_refused(client, data):
    X, y, _ = data
    with pytest.raises(InputValueError, match="kernel with a formula"):
        GaussianProcessRegressor(lambda x, y, sigma: None, method="iterative", client=client).fit(X, y)
    torch = pytest.importorskip("torch")
    with pytest.raises(InputValueError, match="NumPy data"):
        GaussianProcessRegressor(**params(), client=client).fit(torch.as_tensor(X), torch.as_tensor(y))
