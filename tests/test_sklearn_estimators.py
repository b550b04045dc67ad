"""kernla.models as scikit-learn estimators: every estimator check, and the tools built on them.

``parametrize_with_checks`` runs scikit-learn's full estimator checks (about 50 per model) on
default-constructed models and a few non-default ones; the whole file takes ~15 s on two cores
(small data, NumPy engine). No check is marked xfail.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn")

import joblib  # noqa: E402  (installed with scikit-learn)
from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.exceptions import NotFittedError as SkNotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from kernla.models import (  # noqa: E402
    GaussianProcessRegressor,
    KernelInterpolation,
    KNeighborsClassifier,
    KNeighborsRegressor,
    NearestNeighbors,
    NotFittedError,
)
from kernla.models.gp_kernels import RBF, ConstantKernel, WhiteKernel  # noqa: E402

ESTIMATORS = [
    NearestNeighbors(),
    NearestNeighbors(n_neighbors=3, metric="cosine"),
    KNeighborsClassifier(),
    KNeighborsClassifier(n_neighbors=3, weights="distance", metric="minkowski", p=3),
    KNeighborsRegressor(),
    KNeighborsRegressor(weights="distance", metric="manhattan"),
    KernelInterpolation(),
    KernelInterpolation(kernel="gaussian", epsilon=0.5, smoothing=1e-3),
    GaussianProcessRegressor(),
    GaussianProcessRegressor(ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(0.1), optimizer_maxiter=20),  # learns
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(seed=0, n=60):
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, 3))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int), np.sin(X[:, 0]) + X[:, 1] ** 2


def test_set_params_then_fit_uses_the_new_values():
    X, labels, _ = _data()
    clf = KNeighborsClassifier(n_neighbors=1).fit(X, labels)
    clf.set_params(n_neighbors=25)
    clf.fit(X, labels)
    assert not np.isin(clf.predict_proba(X), [0.0, 1.0]).all()  # not the 0/1 votes of one neighbour
    ref = KNeighborsClassifier(n_neighbors=25).fit(X, labels)
    np.testing.assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))
    clf.metric = "manhattan"
    ref = KNeighborsClassifier(n_neighbors=25, metric="manhattan").fit(X, labels)
    np.testing.assert_array_equal(clf.fit(X, labels).predict_proba(X), ref.predict_proba(X))


def test_get_params_clone_repr_tags():
    est = KNeighborsRegressor(n_neighbors=4, weights="distance", p=1)
    assert est.get_params() == {"n_neighbors": 4, "weights": "distance", "metric": "minkowski", "p": 1, "backend": None}
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert repr(est) == "KNeighborsRegressor(n_neighbors=4, p=1, weights='distance')"
    assert is_classifier(KNeighborsClassifier()) and is_regressor(GaussianProcessRegressor())
    assert is_regressor(KernelInterpolation()) and KernelInterpolation().__sklearn_tags__().target_tags.multi_output
    # invalid values are stored, and refused by fit
    bad = KernelInterpolation(kernel="nope", smoothing=-1)
    assert bad.kernel == "nope"
    with pytest.raises(ValueError, match="unknown kernel"):
        bad.fit(*_data()[::2])


def test_not_fitted_error_is_sklearns():
    assert issubclass(NotFittedError, SkNotFittedError)
    for est in (NearestNeighbors(), KNeighborsClassifier(), KernelInterpolation(), GaussianProcessRegressor()):
        with pytest.raises(SkNotFittedError):
            (est.kneighbors if isinstance(est, NearestNeighbors) else est.predict)(np.zeros((2, 3)))


def test_pipeline_grid_search_cross_val_score():
    from sklearn import neighbors as sk

    X, labels, targets = _data(1, 80)
    pipe = make_pipeline(StandardScaler(), KNeighborsClassifier())
    assert pipe.fit(X, labels).score(X, labels) > 0.8
    grid = {"n_neighbors": [1, 5, 9], "weights": ["uniform", "distance"]}
    ours = GridSearchCV(KNeighborsClassifier(), grid, cv=3).fit(X, labels)
    ref = GridSearchCV(sk.KNeighborsClassifier(algorithm="brute"), grid, cv=3).fit(X, labels)
    assert ours.best_params_ == ref.best_params_
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])
    scores = cross_val_score(make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=4)), X, targets, cv=4)
    expected = cross_val_score(make_pipeline(StandardScaler(), sk.KNeighborsRegressor(n_neighbors=4)), X, targets, cv=4)
    np.testing.assert_allclose(scores, expected, rtol=1e-10)
    search = GridSearchCV(KernelInterpolation(kernel="thin_plate_spline"), {"smoothing": [1e-3, 1e-1]}, cv=3)
    assert search.fit(X, targets).best_score_ > 0.5
    gp_scores = cross_val_score(GaussianProcessRegressor(sigma=1.0, noise=1e-2), X, targets, cv=3)
    assert gp_scores.mean() > 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: NearestNeighbors(n_neighbors=3, metric="cosine"),
        lambda: KNeighborsClassifier(n_neighbors=3, weights="distance"),
        lambda: KNeighborsRegressor(n_neighbors=3, metric="minkowski", p=3),
        lambda: KernelInterpolation(smoothing=1e-3),
        lambda: GaussianProcessRegressor(sigma=0.8),
    ],
)
def test_pickle_and_joblib_round_trips(make, tmp_path):
    X, labels, targets = _data(2)
    unfitted = pickle.loads(pickle.dumps(make()))
    assert unfitted.get_params() == make().get_params()
    est = make()
    est = est.fit(X) if isinstance(est, NearestNeighbors) else est.fit(X, labels if is_classifier(est) else targets)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    back = joblib.load(path)
    again = pickle.loads(pickle.dumps(est))
    if isinstance(est, NearestNeighbors):
        for other in (back, again):
            np.testing.assert_array_equal(other.kneighbors(X[:7])[1], est.kneighbors(X[:7])[1])
        return
    for other in (back, again):
        np.testing.assert_allclose(other.predict(X[:7]), est.predict(X[:7]), rtol=1e-12)
    if isinstance(est, GaussianProcessRegressor):  # the preconditioner is rebuilt after unpickling
        np.testing.assert_allclose(
            back.predict(X[:4], return_std=True)[1], est.predict(X[:4], return_std=True)[1], rtol=1e-8
        )


def test_torch_model_pickles():
    torch = pytest.importorskip("torch")
    X, labels, targets = _data(3)
    reg = KNeighborsRegressor(n_neighbors=3).fit(torch.from_numpy(X), torch.from_numpy(targets))
    back = pickle.loads(pickle.dumps(reg))
    out = back.predict(torch.from_numpy(X[:5]))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), reg.predict(torch.from_numpy(X[:5])).numpy())


def test_kernla_imports_without_sklearn():
    code = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None          # makes `import sklearn` raise ImportError
        import kernla, kernla.models
        try:
            kernla.models.KNeighborsClassifier(n_neighbors=3)
        except ImportError as e:
            print("ImportError:", e)
        print(issubclass(kernla.models.NotFittedError, ValueError))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install scikit-learn" in out.stdout and "KNeighborsClassifier" in out.stdout
    assert out.stdout.strip().endswith("True")
