"""kernla.linalg.truncation: the certified bound ‖K b − K_t b‖_∞ ≤ eps·‖b‖_1 on random data.

The exact K comes from kernla.kernels (dense float64); the truncated product is a masked dense
NumPy product, the mask read from each half of the returned ranges tuple by the loops below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernla import kernels
from kernla.errors import InputValueError, ShapeError
from kernla.linalg.truncation import truncate

KERNELS = [
    ("gaussian", {}),
    ("laplacian", {}),
    ("matern", {"nu": 0.5}),
    ("matern", {"nu": 1.5}),
    ("matern", {"nu": 2.5}),
    ("cauchy", {}),
    ("inverse_multiquadric", {}),
]


def _data(rng, shape: str, n: int, dim: int) -> np.ndarray:
    if shape == "uniform":
        return rng.uniform(size=(n, dim))
    if shape == "clustered":
        centres = rng.uniform(size=(5, dim))
        return centres[rng.integers(0, 5, size=n)] + 0.02 * rng.normal(size=(n, dim))
    stretch = np.geomspace(1.0, 0.02, dim)  # anisotropic: thin along the last axes
    return rng.uniform(size=(n, dim)) * stretch


def _mask_forward(ranges, n, m):
    r_i, s_i, red_j = ranges[:3]
    out = np.zeros((n, m), dtype=bool)
    for k in range(len(r_i)):
        for c, d in red_j[(s_i[k - 1] if k else 0) : s_i[k]]:
            out[r_i[k, 0] : r_i[k, 1], c:d] = True
    return out


def _mask_backward(ranges, n, m):
    r_j, s_j, red_i = ranges[3:]
    out = np.zeros((n, m), dtype=bool)
    for k in range(len(r_j)):
        for c, d in red_i[(s_j[k - 1] if k else 0) : s_j[k]]:
            out[c:d, r_j[k, 0] : r_j[k, 1]] = True
    return out


def _boxes(points, ranges):
    return np.array([points[a:b].min(0) for a, b in ranges]), np.array([points[a:b].max(0) for a, b in ranges])


def _check(rng, x, y, name, params, sigma, eps):
    t = truncate(x, y, kernel=name, sigma=sigma, eps=eps, **params)
    yy = x if y is None else y
    xs, ys = x[t.perm_x], yy[t.perm_y]
    assert sorted(t.perm_x) == list(range(len(x))) and sorted(t.perm_y) == list(range(len(yy)))
    K = getattr(kernels, name)(xs, ys, sigma=sigma, **params).to_dense()
    mask = _mask_forward(t.ranges, len(xs), len(ys))
    assert np.array_equal(mask, _mask_backward(t.ranges, len(xs), len(ys)))
    assert t.info.pairs_kept == mask.sum() and t.info.pairs_total == mask.size
    b = rng.normal(size=(len(ys), 3)) * rng.uniform(0, 10, size=(len(ys), 1))
    c = rng.normal(size=(len(xs), 2))
    err = np.abs(K @ b - (K * mask) @ b).max(axis=0)
    err_t = np.abs(K.T @ c - (K * mask).T @ c).max(axis=0)
    assert (err <= eps * np.abs(b).sum(axis=0)).all()
    assert (err_t <= eps * np.abs(c).sum(axis=0)).all()
    assert t.info.error_bound(b) == pytest.approx(eps * np.abs(b).sum(axis=0).max())
    if (~mask).any():
        assert K[~mask].max() <= eps
    # exactly the block pairs whose kernel value at the boxes' distance exceeds eps
    (lx, hx), (ly, hy) = _boxes(xs, t.ranges[0]), _boxes(ys, t.ranges[3])
    gap = np.maximum(np.maximum(ly[None] - hx[:, None], lx[:, None] - hy[None]), 0)
    dist = np.sqrt((gap**2).sum(-1))
    blocks = np.array([[mask[a, c] for c, _ in t.ranges[3]] for a, _ in t.ranges[0]])
    k = {"gaussian": lambda r: np.exp(-(r**2) / (2 * sigma**2))}.get(name)
    if k is not None:
        assert blocks[k(dist * (1 + 1e-6)) > eps].all()
        assert (k(dist[blocks] * (1 - 1e-6)) > eps).all()
    if y is None:
        assert np.array_equal(mask, mask.T) and np.array_equal(t.perm_x, t.perm_y)
    return t


@pytest.mark.parametrize("shape", ["uniform", "clustered", "anisotropic"])
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_gaussian_bound_holds_on_random_data(shape, dim, sigma):
    rng = np.random.default_rng([dim, int(1000 * sigma), len(shape)])
    x, y = _data(rng, shape, 283, dim), _data(rng, shape, 211, dim)
    for eps in (1e-3, 1e-6):
        t = _check(rng, x, y, "gaussian", {}, sigma, eps)
        _check(rng, x, None, "gaussian", {}, sigma, eps)
    if dim > 1 and sigma == 0.01 and shape != "anisotropic":
        assert t.info.fraction_kept < 0.5


@pytest.mark.parametrize("name,params", KERNELS)
@pytest.mark.parametrize("shape", ["uniform", "clustered", "anisotropic"])
def test_every_decaying_kernel_bound_holds(name, params, shape):
    rng = np.random.default_rng([len(name), len(shape), int(10 * params.get("nu", 0))])
    x, y = _data(rng, shape, 197, 2), _data(rng, shape, 233, 2)
    sigma = 0.002 if name in ("cauchy", "inverse_multiquadric") else 0.02
    _check(rng, x, y, name, params, sigma, 1e-3)
    _check(rng, x, None, name, params, sigma, 1e-4)


def test_cells_given_and_a_custom_profile():
    rng = np.random.default_rng(7)
    x, y = rng.uniform(size=(301, 2)), rng.uniform(size=(177, 2))
    for cells in [(0.01, 0.03), (0.2, 0.05)]:
        t = truncate(x, y, sigma=0.03, eps=1e-5, cells=cells)
        assert t.info.cells == cells
        mask = _mask_forward(t.ranges, 301, 177)
        r = np.sqrt(((x[t.perm_x][:, None] - y[t.perm_y][None]) ** 2).sum(-1))
        assert (np.exp(-(r**2) / (2 * 0.03**2))[~mask] <= 1e-5).all()
    step = truncate(x, y, kernel=lambda r: (r < 0.1).astype(float), eps=0.5, sigma=0.1)
    mask = _mask_forward(step.ranges, 301, 177)
    r = np.sqrt(((x[step.perm_x][:, None] - y[step.perm_y][None]) ** 2).sum(-1))
    assert mask[r < 0.1].all()


def test_nothing_or_everything_kept():
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(50, 2))
    none = truncate(x, sigma=0.1, eps=1.0)  # every entry is at most 1
    assert none.info.pairs_kept == 0 and len(none.ranges[2]) == 0
    wide = truncate(x, kernel="inverse_multiquadric", sigma=1.0, eps=1e-6)
    assert wide.info.fraction_kept == 1.0


def test_bad_input_is_a_kernla_error():
    x = np.zeros((4, 2))
    with pytest.raises(InputValueError):
        truncate(x, eps=0.0)
    with pytest.raises(InputValueError):
        truncate(x, kernel="sinc")
    with pytest.raises(InputValueError):
        truncate(x, kernel="matern", nu=3.5)
    with pytest.raises(InputValueError):
        truncate(x, sigma=-1.0)
    with pytest.raises(ShapeError):
        truncate(x, np.zeros((3, 3)))
    with pytest.raises(InputValueError):
        truncate(np.full((3, 2), np.nan))


def test_the_doc_examples_run():
    """Every python block of docs/block_sparse.md runs, in order, in one namespace."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "block_sparse.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/block_sparse.md", "exec"), namespace)


# -- KernelOperator(..., truncate=...) -----------------------------------------------------------


def _truncated_dense(t, K_dense):
    """K with the dropped pairs zeroed, in the caller's order: the sorted mask taken back through the perms."""
    mask = _mask_forward(t.ranges, len(t.perm_x), len(t.perm_y))
    inv_x, inv_y = np.argsort(t.perm_x), np.argsort(t.perm_y)
    return K_dense * mask[inv_x][:, inv_y]


def test_truncated_operator_is_the_masked_matrix_in_the_callers_order():
    from kernla import Vi, Vj
    from kernla.errors import ArgumentTypeError
    from kernla.linalg import KernelOperator

    rng = np.random.default_rng(11)
    x, y = rng.uniform(size=(613, 2)), rng.uniform(size=(427, 2))
    t = truncate(x, y, sigma=0.03, eps=1e-5)
    K = KernelOperator("Exp(-G * SqDist(X, Y))", X=Vi(x), Y=Vj(y), G=1 / (2 * 0.03**2), truncate=t)
    dense = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / (2 * 0.03**2))
    Kt = _truncated_dense(t, dense)
    assert 0 < K.truncation_info.fraction_kept < 0.2
    b, c = rng.normal(size=(427, 3)), rng.normal(size=613)
    np.testing.assert_allclose(K @ b, Kt @ b, atol=1e-12)
    np.testing.assert_allclose(K.T @ c, Kt.T @ c, atol=1e-12)
    assert np.abs(K @ b - dense @ b).max(axis=0).max() <= 1e-5 * np.abs(b).sum(axis=0).max()
    np.testing.assert_allclose(K.to_dense(), Kt, atol=1e-15)
    np.testing.assert_allclose(K.columns([3, 400, 17]), Kt[:, [3, 400, 17]], atol=1e-15)
    with pytest.raises(ArgumentTypeError):
        KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(y), truncate=t, ranges=t.ranges)
    with pytest.raises(ArgumentTypeError):
        KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(y), truncate=1e-6)
    with pytest.raises(ShapeError):
        KernelOperator("Exp(-SqDist(X, Y))", X=Vi(y), Y=Vj(x), truncate=t)
    assert KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(y)).truncation_info is None


@pytest.mark.parametrize("name,params", KERNELS[:5])
def test_kernels_truncate_solve_and_eigsh_on_the_truncated_matrix(name, params):
    rng = np.random.default_rng([len(name), int(10 * params.get("nu", 0))])
    x = rng.uniform(size=(701, 2))
    K = getattr(kernels, name)(x, sigma=0.02, truncate=1e-6, **params)
    exact = getattr(kernels, name)(x, sigma=0.02, **params).to_dense()
    t = truncate(x, kernel=name, sigma=0.02, eps=1e-6, **params)
    Kt = _truncated_dense(t, exact)
    assert np.array_equal(Kt, Kt.T) and K.truncation_info.pairs_kept == t.info.pairs_kept
    np.testing.assert_allclose(K.diag(), np.diag(Kt), atol=1e-15)
    b = rng.normal(size=701)
    a = K.solve(b, alpha=0.5, precond="nystrom")
    np.testing.assert_allclose(a, np.linalg.solve(Kt + 0.5 * np.eye(701), b), rtol=1e-6, atol=1e-8)
    w, v = K.eigsh(k=3)
    ref = np.linalg.eigvalsh(Kt)[-3:]
    np.testing.assert_allclose(np.sort(w), ref, rtol=1e-8)
    np.testing.assert_allclose(np.abs(Kt @ v - v * w).max(), 0, atol=1e-7)


def test_truncated_torch_products_differentiate_like_the_masked_matrix():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x0 = rng.uniform(size=(389, 2))
    t = truncate(x0, sigma=0.04, eps=1e-6)
    mask = torch.tensor(_truncated_dense(t, np.ones((389, 389))))
    x = torch.tensor(x0, requires_grad=True)
    b = torch.tensor(rng.normal(size=389))
    out = kernels.gaussian(x, sigma=0.04, truncate=1e-6) @ b
    ref = (torch.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * 0.04**2)) * mask) @ b
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(out.square().sum(), [x])
    (g_ref,) = torch.autograd.grad(ref.square().sum(), [x])
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("q", [2, 3, 4])
@pytest.mark.parametrize("shape", ["uniform", "clustered"])
def test_cells_at_whole_fractions_of_the_cutoff_radius_in_3d(q, shape):
    """Cells of side r/q exactly (the default in 3-D is r/3): the bound holds on both sides, and the
    symmetric kept set's two halves are the same arrays (the engines check them once)."""
    from kernla.engines.ranges import block_sparsity
    from kernla.linalg.truncation import cutoff_radius, profile

    rng = np.random.default_rng([q, len(shape)])
    sigma, eps = 0.03, 1e-6
    r = cutoff_radius(profile("gaussian", sigma), eps, sigma)
    x, y = _data(rng, shape, 347, 3), _data(rng, shape, 219, 3)
    t = truncate(x, sigma=sigma, eps=eps, cells=(r / q, r / q))
    _check(rng, x, None, "gaussian", {}, sigma, eps)
    assert t.ranges[3] is t.ranges[0] and t.ranges[4] is t.ranges[1] and t.ranges[5] is t.ranges[2]
    sp = block_sparsity(t.ranges, 347, 347)
    assert sp.over_i is sp.over_j
    xs = x[t.perm_x]
    K = np.exp(-((xs[:, None] - xs[None]) ** 2).sum(-1) / (2 * sigma**2))
    mask = _mask_forward(t.ranges, 347, 347)
    b = rng.normal(size=347)
    assert np.abs(K @ b - (K * mask) @ b).max() <= eps * np.abs(b).sum()
    t_xy = truncate(x, y, sigma=sigma, eps=eps, cells=(r / q, r / (q + 1)))
    mask_xy = _mask_forward(t_xy.ranges, 347, 219)
    assert np.array_equal(mask_xy, _mask_backward(t_xy.ranges, 347, 219))
    d2 = ((x[t_xy.perm_x][:, None] - y[t_xy.perm_y][None]) ** 2).sum(-1)
    assert (np.exp(-d2 / (2 * sigma**2))[~mask_xy] <= eps).all()


def test_float32_points_are_truncated_on_their_own_coordinates():
    """float32 points: the boxes are computed on the float32 values (widened to float64), so the dropped
    pairs of those very points have k ≤ eps, and the operator's products are the masked float32 matrix's."""
    rng = np.random.default_rng(23)
    x = rng.uniform(size=(419, 3)).astype(np.float32)
    sigma, eps = 0.05, 1e-6
    K = kernels.gaussian(x, sigma=sigma, truncate=eps)
    t = truncate(x, sigma=sigma, eps=eps)
    x64 = x.astype(np.float64)
    dense = np.exp(-((x64[:, None] - x64[None]) ** 2).sum(-1) / (2 * sigma**2))
    Kt = _truncated_dense(t, dense)
    assert (dense[Kt == 0] <= eps).all() and K.truncation_info.pairs_kept == t.info.pairs_kept
    b = rng.normal(size=419).astype(np.float32)
    out = K @ b
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, Kt @ b.astype(np.float64), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, args",
    [
        ("interpolation_1d.py", ["--n", "3001", "--sigma", "0.01"]),
        ("interpolation_2d.py", ["--n", "2001", "--sigma", "0.02"]),
        ("gp_regression.py", ["--n", "1500", "--grid", "200", "--std-points", "20", "--sk-max", "500"]),
    ],
)
def test_the_examples_truncate_option(script, args, tmp_path):
    """``--truncate EPS`` runs each example block-sparse and reports the kept fraction and the bound."""
    pytest.importorskip("matplotlib")
    if script == "gp_regression.py":
        pytest.importorskip("sklearn")
    path = Path(__file__).resolve().parents[1] / "examples" / script
    run = subprocess.run(
        [sys.executable, str(path), *args, "--truncate", "1e-6", "--out", str(tmp_path / "f.png")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    kept = re.search(r"([0-9.]+)% of the (?:N² )?pairs kept", run.stdout)
    assert kept is not None and 0 < float(kept.group(1)) < 100, run.stdout
    assert "1e-06 · ‖b‖_1" in run.stdout and (tmp_path / "f.png").is_file()
