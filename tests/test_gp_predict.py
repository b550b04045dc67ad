"""Fast predictive variances (kernla.models.gp_predict) against dense float64 formulas."""

import numpy as np
import pytest
import scipy.linalg

from kernla.errors import InputValueError
from kernla.models import GaussianProcessRegressor
from kernla.models import gp_kernels as gk
from kernla.models.gp_predict import (
    CholeskyPosterior,
    LowRankVarianceCache,
    NystromVariance,
    variance_cache,
)


def _points(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(n, d))


def _huge() -> gk.GPKernel:
    """A learned Friedman-#1-like kernel: amplitude 1e5, length scales far above the unit cube."""
    return gk.ConstantKernel(1e5) * gk.Matern([9.0, 13.0, 31.0], nu=2.5)


def _dense_variance(kernel, X, Xn, noise, train_cov):
    """``k_** − k_*ᵀ (train_cov + σ² I)⁻¹ k_*`` by a dense float64 Cholesky."""
    C = scipy.linalg.cho_factor(train_cov + noise * np.eye(len(X)), lower=True)
    Ks = kernel.dense(X, Xn)
    return kernel.diag(Xn) - (Ks * scipy.linalg.cho_solve(C, Ks)).sum(axis=0)


def _tau(nv: NystromVariance, kernel, X, noise) -> float:
    """``‖R‖₂/σ²`` of the Nyström residual on the training points, dense."""
    R = kernel.dense(X) - nv.L @ nv.L.T
    return float(np.linalg.eigvalsh(R)[-1]) / noise


def test_nystrom_variance_is_the_nystrom_gram_formula_and_dtc():
    X, Xn = _points(347, 3, 1), _points(29, 3, 2)
    k = gk.ConstantKernel(1.3) * gk.Matern([0.4, 0.9, 2.0], nu=2.5)
    noise = 0.05
    nv = NystromVariance(k, X, noise, rank=61, tol=0.0)
    assert nv.rank == 61
    want = _dense_variance(k, X, Xn, noise, nv.L @ nv.L.T)
    np.testing.assert_allclose(nv.variance(Xn), want, rtol=1e-9, atol=1e-12)
    # DTC: k_** − Q_*X (Q_XX + σ² I)⁻¹ Q_X*, Q the Nyström kernel on the pivots (K_PP solved densely)
    P = nv.pivots
    KP = k.dense(X[P])
    Q = k.dense(X, X[P]) @ np.linalg.solve(KP, k.dense(X[P], X))
    Qs = k.dense(X, X[P]) @ np.linalg.solve(KP, k.dense(X[P], Xn))
    C = scipy.linalg.cho_factor(Q + noise * np.eye(len(X)), lower=True)
    dtc = k.diag(Xn) - (Qs * scipy.linalg.cho_solve(C, Qs)).sum(axis=0)
    nv.cross = False
    np.testing.assert_allclose(nv.variance(Xn), dtc, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("rank", [97, 211])
def test_bounds_hold_when_the_prior_is_1e8_times_the_posterior(rank):
    X, Xn = _points(1499, 3, 3), _points(83, 3, 4)
    k, noise = _huge(), 0.04
    exact = CholeskyPosterior(k, X, noise).variance(Xn)
    assert np.median(k.diag(Xn) / exact) > 1e7  # the regime where prior minus a quadratic form cancels
    nv = NystromVariance(k, X, noise, rank=rank, tol=0.0)
    tau = _tau(nv, k, X, noise)
    assert tau < 0.5
    assert nv.residual_trace >= tau * noise * (1 - 1e-9)
    fast = nv.variance(Xn)
    rounding = 1e-6  # the dense reference's own relative accuracy here (prior 1e5, variance ~1e-3)
    assert np.all(fast <= exact * (1 + rounding))
    assert np.all(fast >= exact * (1 - tau * (1 + tau) - rounding))
    nv.cross = False
    dtc = nv.variance(Xn) / exact
    assert np.all(dtc >= 1 / ((1 + tau) * (1 + np.sqrt(tau))) - rounding)
    assert np.all(dtc <= 1 / (1 - np.sqrt(tau)) + rounding)
    projection = LowRankVarianceCache(k, X, noise, rank=rank).variance(Xn)
    assert np.median(np.abs(projection / exact - 1)) > 10 * np.median(np.abs(fast / exact - 1))


def test_full_rank_nystrom_variance_is_exact():
    X, Xn = _points(233, 3, 5), _points(17, 3, 6)
    k, noise = _huge(), 0.04
    exact = CholeskyPosterior(k, X, noise).variance(Xn)
    nv = NystromVariance(k, X, noise, rank=233, tol=0.0)
    np.testing.assert_allclose(nv.variance(Xn), exact, rtol=1e-6)


def test_residual_norm_is_exact_on_few_points_and_a_subset_estimate_on_many():
    X = _points(1201, 3, 7)
    k, noise = _huge(), 0.04
    nv = NystromVariance(k, X, noise, rank=57, tol=0.0)
    top = _tau(nv, k, X, noise) * noise
    np.testing.assert_allclose(nv.residual_norm(), top, rtol=1e-8)
    assert 0.5 * top <= nv.residual_norm(sample=500, seed=3) <= 2 * top
    assert nv.residual_norm() <= nv.residual_trace


def test_rank_stops_at_the_residual_tolerance():
    X = _points(300, 2, 8)
    k, noise = gk.ConstantKernel(2.0) * gk.RBF([1.5, 2.5]), 0.01
    nv = NystromVariance(k, X, noise, rank=300, tol=1e-3)
    assert nv.rank < 300
    residual = k.diag(X) - (nv.L * nv.L).sum(axis=1)
    assert residual.max() <= 1e-3 * noise


def test_variance_cache_takes_nystrom_only_where_its_bound_is_small():
    X, Xn = _points(311, 3, 9), _points(13, 3, 10)
    assert isinstance(variance_cache(_huge(), X, 0.04, rank=150), NystromVariance)
    rough = gk.Matern([0.05, 0.05, 0.05], nu=0.5)
    cache = variance_cache(rough, X, 0.01, rank=60)
    assert isinstance(cache, LowRankVarianceCache)
    exact = CholeskyPosterior(rough, X, 0.01).variance(Xn)
    assert np.all(cache.variance(Xn) >= exact * (1 - 1e-9))  # the projection errs on the large side
    assert isinstance(variance_cache(_huge(), X, 0.0, rank=20), LowRankVarianceCache)


@pytest.mark.parametrize("rank", [0, -3, 2.5, True])
def test_bad_rank_is_refused(rank):
    with pytest.raises(InputValueError, match="rank"):
        NystromVariance(_huge(), _points(20, 3, 11), 0.1, rank=rank)


def test_zero_noise_is_refused():
    with pytest.raises(InputValueError, match="noise"):
        NystromVariance(_huge(), _points(20, 3, 12), 0.0)


def test_iterative_gp_std_in_the_huge_amplitude_regime():
    X, Xn = _points(1201, 3, 13), _points(41, 3, 14)
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2 + 0.2 * np.random.default_rng(15).normal(size=len(X))
    k = _huge() + gk.WhiteKernel(0.04)
    opts = dict(optimizer=None, alpha=0.0, variance_rank=300)
    fast = GaussianProcessRegressor(k, method="iterative", **opts).fit(X, y)
    exact = GaussianProcessRegressor(k, method="exact", **opts).fit(X, y)
    s_fast, s_exact = (g.predict(Xn, return_std=True)[1] for g in (fast, exact))
    assert isinstance(fast._variance_cache, NystromVariance)
    np.testing.assert_allclose(s_fast, s_exact, rtol=1e-3)
    assert np.all(s_fast <= s_exact * (1 + 1e-6))  # Nyström variances err on the small side
