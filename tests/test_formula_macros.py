"""pykeops' words Diff, Laplacian, SqNormIso, SqNormDiag, SymSqNorm, SumT, IntInv against NumPy references."""

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
