"""pykeops' formula words (kernla/formula/macros.py) against finite differences, NumPy and scipy references."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernla import FormulaSyntaxError, Genred

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(formula, aliases, *arrays, backend="numpy"):
    return Genred(formula, aliases, axis=1)(*arrays, backend=backend)


@st.composite
def problems(draw):
    d = draw(st.integers(1, 4))
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return d, rng.normal(size=(n, d)), rng.normal(size=(m, d)), rng


@SETTINGS
@given(problems())
def test_diff_is_the_directional_derivative(p):
    d, x, y, rng = p
    u = rng.normal(size=x.shape)

    def f(x):  # F(x, y) = exp(-|x - y|²) (x - y), summed over j
        r = x[:, None, :] - y[None, :, :]
        return (np.exp(-(r**2).sum(-1, keepdims=True)) * r).sum(1)

    h = 1e-5
    ref = (f(x + h * u) - f(x - h * u)) / (2 * h)
    aliases = [f"X = Vi({d})", f"Y = Vj({d})", f"U = Vi({d})"]
    out = _run("Diff(Exp(-SqDist(X, Y)) * (X - Y), X, U)", aliases, x, y, u)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-8)


@SETTINGS
@given(problems())
def test_laplacian_of_a_gaussian(p):
    d, x, y, _ = p
    r2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    ref = ((4 * r2 - 2 * d) * np.exp(-r2)).sum(1, keepdims=True)  # Δ exp(-|r|²)
    out = _run("Laplacian(Exp(-SqDist(X, Y)), X)", [f"X = Vi({d})", f"Y = Vj({d})"], x, y)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


@SETTINGS
@given(problems())
def test_weighted_squared_norms_and_sumt(p):
    d, x, y, rng = p
    r = x[:, None, :] - y[None, :, :]
    s, diag, S = rng.random(1) + 0.1, rng.random(d) + 0.1, rng.normal(size=(d, d))
    al = [f"X = Vi({d})", f"Y = Vj({d})"]
    cases = [
        ("SqNormIso(S, X - Y)", "S = Pm(1)", s, s[0] * (r**2).sum(-1)),
        ("SqNormDiag(S, X - Y)", f"S = Pm({d})", diag, (diag * r**2).sum(-1)),
        ("SymSqNorm(S, X - Y)", f"S = Pm({d * d})", S.ravel(), np.einsum("ijk,kl,ijl->ij", r, S, r)),
    ]
    for formula, alias, w, ref in cases:
        out = _run(formula, al + [alias], x, y, w)
        np.testing.assert_allclose(out[:, 0], ref.sum(1), rtol=1e-10, atol=1e-12, err_msg=formula)
    out = _run("SumT(SqDist(X, Y) * IntInv(3), 5)", al, x, y)
    np.testing.assert_allclose(out, np.repeat((r**2).sum(-1).sum(1, keepdims=True) / 3, 5, axis=1), rtol=1e-12)


@SETTINGS
@given(st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_bspline_basis_matches_scipy(order, seed):
    from scipy.interpolate import BSpline  # optional dependency: scipy, the reference

    rng = np.random.default_rng(seed)
    t = np.sort(rng.random(order + 2 + rng.integers(0, 5)))
    t[rng.integers(0, len(t) - 1)] = t[rng.integers(0, len(t))]  # repeated knots too
    t.sort()
    x = rng.random((11, 1)) * 1.2 - 0.1
    out = _run(f"BSpline(T, X, {order})", [f"T = Pm({len(t)})", "X = Vi(1)"], t, x)
    n = len(t) - order - 1
    ref = np.stack(
        [np.nan_to_num(BSpline.basis_element(t[j : j + order + 2], extrapolate=False)(x[:, 0])) for j in range(n)], 1
    )
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def _soft_dtw(x, y, gamma):
    """The soft-DTW recursion, written directly (plain sums on the first row and column, as KeOps)."""
    r = np.zeros((len(x), len(y)))
    for j in range(len(y)):
        for i in range(len(x)):
            d = (x[i] - y[j]) ** 2
            if i == 0 or j == 0:
                r[i, j] = d + (r[i - 1, j] if i else r[i, j - 1] if j else 0.0)
            else:
                v = np.array([r[i - 1, j - 1], r[i - 1, j], r[i, j - 1]])
                r[i, j] = d - gamma * np.log(np.exp(-v / gamma).sum())
    return r[-1, -1]


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 4), st.floats(0.05, 2.0), st.integers(0, 2**32 - 1))
def test_soft_dtw_values_and_gradient(n, m, gamma, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(3, n)), rng.normal(size=(4, m))
    al = [f"X = Vi({n})", f"Y = Vj({m})", "G = Pm(1)"]
    ref = np.array([[sum(_soft_dtw(xi, yj, gamma) for yj in y)] for xi in x])
    np.testing.assert_allclose(_run("SoftDTW_SqDist(X, Y, G)", al, x, y, np.array([gamma])), ref, rtol=1e-10)
    h, u = 1e-6, rng.normal(size=x.shape)
    fd = (
        _run("SoftDTW_SqDist(X, Y, G)", al, x + h * u, y, np.array([gamma]))
        - _run("SoftDTW_SqDist(X, Y, G)", al, x - h * u, y, np.array([gamma]))
    ) / (2 * h)
    jvp = _run("Diff(SoftDTW_SqDist(X, Y, G), X, U)", al + [f"U = Vi({n})"], x, y, np.array([gamma]), u)
    np.testing.assert_allclose(jvp, fd, rtol=1e-5, atol=1e-7)


def test_macros_compile_on_the_cpu_engine():
    pytest.importorskip("kernla.engines.cpu.engine")
    rng = np.random.default_rng(3)
    x, y, u = rng.normal(size=(9, 2)), rng.normal(size=(13, 2)), rng.normal(size=(9, 2))
    al = ["X = Vi(2)", "Y = Vj(2)", "U = Vi(2)"]
    for formula in ("Diff(Exp(-SqDist(X, Y)), X, U)", "Laplacian(Exp(-SqDist(X, Y)), X)", "BSpline(Y, Elem(X, 0), 0)"):
        ref = _run(formula, al, x, y, u)
        np.testing.assert_allclose(_run(formula, al, x, y, u, backend="cpu"), ref, rtol=1e-12, err_msg=formula)


@pytest.mark.parametrize(
    "formula, message",
    [
        ("Diff(X, X + X, X)", "with respect to a variable"),
        ("Laplacian(X, X)", "scalar formula"),
        ("SqNormDiag(Y, X)", "weight has dimension"),
        ("SumT(X, 2)", "repeats a scalar"),
        ("IntInv(0)", "not finite"),
        ("SumT(Y)", "takes 2 argument"),
    ],
)
def test_macro_errors_are_clear(formula, message):
    with pytest.raises(FormulaSyntaxError, match=message):
        Genred(formula, ["X = Vi(2)", "Y = Vj(3)"])
