"""Our own port of a representative subset of pykeops 2.3's test suite (pykeops/test/*.py).

Each test follows one pykeops test — the calls a pykeops user writes, through ``kernla.numpy`` /
``kernla.torch`` — and checks it against dense float64 NumPy / torch on fresh random data with odd
sizes. docs/pykeops.md gives the pass rate of pykeops' own suite, ported by its import lines.
"""

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator, eigsh

torch = pytest.importorskip("torch")

import kernla.config  # noqa: E402
from kernla import ShapeError  # noqa: E402
from kernla.numpy import Genred as NpGenred  # noqa: E402
from kernla.numpy import LazyTensor as NpLazyTensor  # noqa: E402
from kernla.numpy import generic_argkmin, generic_logsumexp, generic_sum  # noqa: E402
from kernla.torch import Genred, LazyTensor, Pm, Vi, Vj  # noqa: E402
from kernla.torch.operations import KernelSolve  # noqa: E402

RNG = np.random.default_rng(2026)
N, M, D, E = 23, 31, 3, 2


def _points(*shape):
    return RNG.random(shape)


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# -- test_numpy.py: the generic_* syntax ---------------------------------------------------------
def test_generic_sum_logsumexp_argkmin():
    x, y, b = _points(N, D), _points(M, D), _points(M, E)
    sq = ((x[:, None] - y[None]) ** 2).sum(-1)
    out = generic_sum("Exp(-SqDist(x, y)) * b", "out = Vi(2)", "x = Vi(3)", "y = Vj(3)", "b = Vj(2)")(x, y, b)
    np.testing.assert_allclose(out, np.exp(-sq) @ b, rtol=1e-12)
    lse = generic_logsumexp("-SqDist(x, y)", "out = Vi(1)", "x = Vi(3)", "y = Vj(3)")(x, y)
    np.testing.assert_allclose(lse[:, 0], np.log(np.exp(-sq).sum(1)), rtol=1e-12)
    idx = generic_argkmin("SqDist(x, y)", "ind = Vi(4)", "x = Vi(3)", "y = Vj(3)")(x, y)
    np.testing.assert_array_equal(idx, np.argsort(sq, axis=1)[:, :4])
    over_i = generic_sum("Exp(-SqDist(x, y))", "out = Vj(1)", "x = Vi(3)", "y = Vj(3)")(x, y)
    np.testing.assert_allclose(over_i[:, 0], np.exp(-sq).sum(0), rtol=1e-12)


def test_genred_logsumexp_with_a_weight_formula():
    # pykeops: Genred(..., reduction_op="LogSumExp", formula2=...) is log Σ_j exp(F) G
    x, y, g = _points(N, D), _points(M, D), _points(M, 1) + 0.5
    f = NpGenred("-SqDist(x, y)", ["x = Vi(3)", "y = Vj(3)", "g = Vj(1)"], "LogSumExp", axis=1, formula2="g")
    ref = np.log((np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) * g[:, 0]).sum(1))
    np.testing.assert_allclose(f(x, y, g)[:, 0], ref, rtol=1e-12)


def test_formula_simplification_keeps_every_declared_slot():
    # pykeops' test_formula_simplification: the nested Grad is zero, its arguments still count
    x, y = _points(N, 3), _points(M, 3)
    f = NpGenred("Grad(Grad(x + Var(1,3,1), x, Var(2,3,0)), x, Var(3,3,0))", ["x=Vi(0,3)"], axis=1)
    np.testing.assert_array_equal(f(x, y, x, x), np.zeros((N, 3)))
    with pytest.raises(ShapeError, match="expected 4 arrays"):
        f(x)


# -- test_kron.py, test_lazytensor_tensordot.py ---------------------------------------------------
def test_kron_and_tensordot():
    dimfa, dimfb = [2, 1, 3], [1, 2, 2]
    x, y = _points(N, 6), _points(M, 4)
    ref = np.stack([sum(np.kron(x[i].reshape(dimfa), y[j].reshape(dimfb)).ravel() for j in range(M)) for i in range(N)])
    ours = NpLazyTensor(x[:, None, :]).keops_kron(NpLazyTensor(y[None, :, :]), dimfa, dimfb).sum(axis=1)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    by_string = NpGenred("Kron(x, y, [2, 1, 3], [1, 2, 2])", ["x = Vi(0, 6)", "y = Vj(1, 4)"], axis=1)
    np.testing.assert_allclose(by_string(x, y), ref, rtol=1e-12)
    a, b = _t(_points(4 * 7), grad=True), _t(_points(7), grad=True)
    c = LazyTensor(a[None, None, :]).keops_tensordot(LazyTensor(b[None, None, :]), (4, 7), (7,), (1,), (0,))
    out = c.sum_reduction(dim=1).ravel()
    torch.testing.assert_close(out, a.reshape(4, 7) @ b)
    ga, gb = torch.autograd.grad(out.sum(), (a, b))
    torch.testing.assert_close(ga, b.detach().repeat(4))
    torch.testing.assert_close(gb, a.detach().reshape(4, 7).sum(0))


# -- test_sinc.py, test_lazytensor_clamp.py --------------------------------------------------------
def test_sinc_and_clamp_with_gradients():
    x = _t(_points(7, 1) * 6, grad=True)
    (ours,) = torch.autograd.grad(LazyTensor(x[:, None]).sinc().sum(0).sum(), x)
    (ref,) = torch.autograd.grad(torch.sinc(x).sum(), x)
    torch.testing.assert_close(ours, ref)
    x, y = _t(RNG.normal(size=(N, 1, D)), grad=True), _t(RNG.normal(size=(1, M, D)))
    ours = (-(((LazyTensor(x) * LazyTensor(y)).clamp(-1.23, 1.54)).sum(2) ** 2)).exp().sum(dim=1)
    ref = (-(((x * y).clamp(-1.23, 1.54)).sum(2) ** 2)).exp().sum(1, keepdim=True)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), x)[0], torch.autograd.grad(ref.sum(), x)[0])


# -- test_chunks.py, test_gpu_cpu.py, test_lazytensor_gaussian_*inplace.py --------------------------
def test_matmul_takes_pykeops_keywords_and_out():
    x, y, b = _t(_points(N, 1, D)), _t(_points(1, M, D)), _t(RNG.normal(size=(M, E)))
    K = (-((LazyTensor(x) - LazyTensor(y)) ** 2).sum(dim=2)).exp()
    ref = torch.exp(-((x - y) ** 2).sum(2)) @ b
    for kw in ({"backend": "CPU"}, {"sum_scheme": "block_sum"}, {"device_id": "cpu", "enable_chunks": True}):
        torch.testing.assert_close(K.__matmul__(b, **kw), ref)
    out = torch.empty(N, E, dtype=torch.float64)
    assert K.__matmul__(b, out=out) is out
    torch.testing.assert_close(out, ref)
    out_np = np.empty((N, E))
    Knp = (-((NpLazyTensor(x.numpy()) - NpLazyTensor(y.numpy())) ** 2).sum(axis=2)).exp()
    Knp.__matmul__(b.numpy(), out=out_np)
    np.testing.assert_allclose(out_np, ref.numpy(), rtol=1e-12)


def test_transpose():
    x, y, w = _t(_points(N, 1, D)), _t(_points(1, M, D)), _t(_points(N, 2))
    K = (-((LazyTensor(x) - LazyTensor(y)) ** 2).sum(2)).exp()
    torch.testing.assert_close(K.t() @ w, torch.exp(-((x - y) ** 2).sum(2)).t() @ w)


# -- test_torch.py: LazyTensor details --------------------------------------------------------------
def test_batched_lazytensors_and_indexing():
    x, y = _t(_points(2, 3, N, 1, D)), _t(_points(2, 1, 1, M, D))
    K = LazyTensor(x) - LazyTensor(y)
    assert (K.nbatchdims, K.ni, K.nj, K._shape) == (2, N, M, (2, 3, N, M, D))
    assert K.dtype == torch.float64
    ours = K[:, :, :, :, 1].exp().sum(dim=3)
    torch.testing.assert_close(ours, (x - y)[..., 1:2].exp().sum(3))


def test_shape_drops_the_trailing_one_of_a_scalar_formula():
    x, y = _t(_points(2, 3, N, 1, D)), _t(_points(2, 1, 1, M, D))
    K = LazyTensor(x) - LazyTensor(y)
    assert K.shape == (2, 3, N, M, D) and K.sum(-1).shape == (2, 3, N, M)
    assert K.sum(-1)._shape == (2, 3, N, M, 1) and K.sum(-1).dim() == 5
    assert LazyTensor(x).shape == (2, 3, N, 1, D) and LazyTensor(x)[..., 0].shape == (2, 3, N, 1)


# -- tutorials/backends/plot_scipy.py: a LazyTensor as a scipy LinearOperator ------------------------
def test_scipy_aslinearoperator_and_eigsh_match_the_dense_matrix():
    x = RNG.normal(size=(101, 2)).astype(np.float64)
    x_i, x_j = NpLazyTensor(x[:, None, :]), NpLazyTensor(x[None, :, :])
    K_xx = (-((x_i - x_j) ** 2).sum(2) / 2).exp()
    dense = np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / 2)
    K = aslinearoperator(K_xx)
    assert K.shape == (101, 101) and K.dtype == np.float64
    v = RNG.normal(size=101)
    np.testing.assert_allclose(K @ v, dense @ v, rtol=1e-12)
    np.testing.assert_allclose(K.rmatvec(v), dense.T @ v, rtol=1e-12)
    vals, vecs = eigsh(K, k=5, v0=np.ones(101))
    ref_vals, ref_vecs = eigsh(dense, k=5, v0=np.ones(101))
    np.testing.assert_allclose(vals, ref_vals, rtol=1e-9)
    np.testing.assert_allclose(np.abs(vecs.T @ ref_vecs), np.eye(5), atol=1e-6)  # the same vectors, up to sign
    rect = aslinearoperator(((x_i - NpLazyTensor(x[None, :37, :])) ** 2).sum(-1))
    w = RNG.normal(size=101)
    sq = ((x[:, None] - x[None, :37]) ** 2).sum(-1)
    assert rect.shape == (101, 37)
    np.testing.assert_allclose(rect.rmatvec(w), sq.T @ w, rtol=1e-12)
    np.testing.assert_allclose(rect.matmat(np.eye(37)[:, :3]), sq[:, :3], rtol=1e-12)


def test_symbolic_variables_give_callables():
    x, y, b = _t(_points(N, D)), _t(_points(M, D)), _t(_points(M, E))
    f = ((-Pm(0, 1) * Vi(1, D).sqdist(Vj(2, D))).exp() * Vj(3, E)).sum(dim=1)
    assert callable(f)
    g = torch.tensor([0.7], dtype=torch.float64)
    torch.testing.assert_close(f(g, x, y, b), torch.exp(-0.7 * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b)
    deferred = (LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])).sqnorm2().sum(dim=1, call=False)
    torch.testing.assert_close(deferred(), ((x[:, None] - y[None]) ** 2).sum((1, 2))[:, None])


def test_list_parameters_comparisons_concatenation_and_grad():
    x, y = _t(RNG.normal(size=(N, 1, 2)), grad=True), _t(RNG.normal(size=(1, M, 2)))
    xi, yj = LazyTensor(x), LazyTensor(y)
    shift = LazyTensor([0.5, -1.0])
    torch.testing.assert_close(
        ((xi - yj) * shift).sum(-1).sum(1), (((x - y) * _t([0.5, -1.0])).sum(-1)).sum(1)[:, None]
    )
    below = (xi[..., 0] < yj[..., 0]).sum(1)
    torch.testing.assert_close(below, (x[..., 0] < y[..., 0]).to(torch.float64).sum(1)[:, None])
    at_least = (xi[..., 1] >= yj[..., 1] + 0.5).sum(1)
    torch.testing.assert_close(at_least, (x[..., 1] >= y[..., 1] + 0.5).to(torch.float64).sum(1)[:, None])
    both = LazyTensor.cat((xi, yj), dim=-1).sum(1)
    torch.testing.assert_close(both, torch.cat((x.expand(N, M, 2), y.expand(N, M, 2)), -1).sum(1))
    e = _t(RNG.normal(size=(N, 1, 1)))
    gx = ((xi - yj) ** 2).sum(-1).exp().grad(xi, LazyTensor(e)).sum(1)
    (ref,) = torch.autograd.grad(((x - y) ** 2).sum(-1, keepdim=True).exp(), x, e.expand(N, M, 1))
    torch.testing.assert_close(gx, ref[:, 0, :])


def test_min_argmin_of_a_formula_too_wide_to_compile():
    # pykeops' test_LazyTensor_min_chunked: 990-dimensional variables, backend chosen automatically
    x, y = _t(_points(7, 990)), _t(_points(9, 990))
    K = (-((LazyTensor(x[:, None, :]) + LazyTensor(y[None, :, :])) ** 2)).exp().sum(-1)
    m, am = K.min_argmin(dim=0)
    ref = torch.exp(-((x[:, None] + y[None]) ** 2)).sum(-1).min(0)
    torch.testing.assert_close(m.ravel(), ref.values)
    torch.testing.assert_close(am.ravel(), ref.indices)


def test_kernel_solve_default_axis_and_gradient():
    x, b = _t(_points(M, D), grad=True), _t(RNG.normal(size=(M, E)))
    aliases = [f"x = Vi({D})", f"y = Vj({D})", f"b = Vj({E})", "g = Pm(1)"]
    Kinv = KernelSolve("Exp(-g * SqDist(x, y)) * b", aliases, "b")  # pykeops' default axis for a Vj unknown
    g = torch.tensor([2.0], dtype=torch.float64)
    a = Kinv(x, x, b, g, alpha=0.5)
    K = torch.exp(-2.0 * ((x[:, None] - x[None]) ** 2).sum(-1)) + 0.5 * torch.eye(M, dtype=torch.float64)
    ref = torch.linalg.solve(K, b)
    torch.testing.assert_close(a, ref, rtol=1e-6, atol=1e-8)
    e = _t(RNG.normal(size=(M, E)))
    torch.testing.assert_close(torch.autograd.grad(a, x, e)[0], torch.autograd.grad(ref, x, e)[0], rtol=1e-5, atol=1e-7)


def test_config_answers_what_pykeops_scripts_read():
    assert kernla.config.gpu_available in (True, False) and isinstance(kernla.config.get_build_folder(), str)
    gaussian = Genred("Exp(-SqDist(x, y))", ["x = Vi(2)", "y = Vj(2)"], axis=1)
    x = _t(_points(N, 2))
    backend = "GPU" if kernla.config.gpu_available else "CPU"
    torch.testing.assert_close(
        gaussian(x, x, backend=backend), torch.exp(-((x[:, None] - x[None]) ** 2).sum(-1)).sum(1, keepdim=True)
    )
