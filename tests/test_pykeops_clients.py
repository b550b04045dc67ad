"""pykeops clients run unchanged on kernla after ``kernla.compat.install_as_pykeops()``.

GeoMLoss ``SamplesLoss`` with its KeOps backends ("online", "multiscale") against its dense
"tensorized" backend, and GPyTorch's ``gpytorch.kernels.keops`` kernels training an ExactGP to the
losses of the dense kernels. Skipped when the client is not installed (both are in the ``test``
extra). GeoMLoss imports ``pykeops.torch.cluster``: without ``kernla.torch.cluster`` it sees no
KeOps and these tests are skipped as pending.
"""

import importlib.util
import sys

import pytest

torch = pytest.importorskip("torch")

import kernla.compat  # noqa: E402
import kernla.core  # noqa: E402

CLIENTS = ("geomloss", "gpytorch", "linear_operator")


@pytest.fixture(scope="module")
def pykeops():
    """The compat alias for this module's tests; the clients are imported afresh under it and forgotten after."""
    if "pykeops" in sys.modules and not getattr(sys.modules["pykeops"], "__kernla__", False):
        pytest.skip("the real pykeops is imported in this process")
    stale = [n for n in sys.modules if n.split(".")[0] in CLIENTS]
    for name in stale:
        del sys.modules[name]
    yield kernla.compat.install_as_pykeops()
    kernla.compat.uninstall_pykeops()
    for name in [n for n in sys.modules if n.split(".")[0] in CLIENTS]:
        del sys.modules[name]


@pytest.fixture
def kernla_calls(monkeypatch):
    """Counts the reductions kernla runs (to prove the client went through kernla)."""
    calls = []
    real = kernla.core.get_engine

    def counting(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(kernla.core, "get_engine", counting)
    return calls


def test_install_refuses_a_real_pykeops_and_is_idempotent(monkeypatch):
    fake = type(sys)("pykeops")
    monkeypatch.setitem(sys.modules, "pykeops", fake)
    with pytest.raises(kernla.KernlaError, match="real pykeops is already imported"):
        kernla.compat.install_as_pykeops()
    monkeypatch.delitem(sys.modules, "pykeops")
    try:
        first = kernla.compat.install_as_pykeops()
        assert kernla.compat.install_as_pykeops() is first
        import pykeops.numpy.operations  # only importable after install_as_pykeops()
        import pykeops.torch  # only importable after install_as_pykeops()

        assert pykeops.torch.LazyTensor is kernla.LazyTensor and pykeops.config is kernla.config
        assert pykeops.numpy.operations.KernelSolve is kernla.KernelSolve
        with pytest.raises(ModuleNotFoundError):
            import pykeops.no_such_module  # noqa: F401  (the import under test)
    finally:
        kernla.compat.uninstall_pykeops()
    assert "pykeops" not in sys.modules and "pykeops.torch" not in sys.modules


# ---------------------------------------------------------------------------------------------
# GeoMLoss
# ---------------------------------------------------------------------------------------------
def _ranges_supported() -> bool:
    """Whether kernla runs block-sparse reductions (``ranges=``)."""
    x, y = torch.zeros(2, 1, 1, dtype=torch.float64), torch.zeros(1, 2, 1, dtype=torch.float64)
    whole, one = torch.tensor([[0, 2]], dtype=torch.int32), torch.tensor([1], dtype=torch.int32)
    try:
        (kernla.LazyTensor(x) - kernla.LazyTensor(y)).sum(dim=1, ranges=(whole, one, whole, whole, one, whole))
    except NotImplementedError:
        return False
    return True


@pytest.fixture(autouse=True)
def grad_mode():
    """GeoMLoss turns grad mode off inside its loops: an error there must not leak into the next test."""
    with torch.enable_grad():
        yield


LOSSES = [("sinkhorn", 1), ("sinkhorn", 2), ("energy", 2), ("gaussian", 2), ("laplacian", 2)]


def _clouds(batch: tuple, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, 37, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(*batch, 41, 3, generator=g, dtype=torch.float64) + 0.2
    return x, y


@pytest.mark.parametrize("batch", [(), (3,)], ids=["single", "batched"])
@pytest.mark.parametrize("backend", ["online", "multiscale"])
@pytest.mark.parametrize("loss,p", LOSSES, ids=[f"{n}-p{p}" for n, p in LOSSES])
def test_geomloss_keops_backends_match_tensorized(pykeops, kernla_calls, monkeypatch, loss, p, backend, batch):
    pytest.importorskip("geomloss")
    if importlib.util.find_spec("kernla.torch.cluster") is None:
        pytest.skip("pending: kernla.torch.cluster (the clustering helpers), which GeoMLoss imports")
    if backend == "multiscale" and batch:
        pytest.skip("GeoMLoss has no batched multiscale mode")
    if backend == "multiscale" and loss == "sinkhorn" and not _ranges_supported():
        pytest.skip("pending: block-sparse reductions (ranges=), which multiscale Sinkhorn uses")
    import geomloss._legacy.kernel_samples as kernel_samples  # imported under the pykeops alias (fixture)
    import geomloss._legacy.sinkhorn_samples as sinkhorn_samples  # imported under the pykeops alias (fixture)
    from geomloss import SamplesLoss  # imported under the pykeops alias (fixture)

    # GeoMLoss's dense distances are sqrt(max(d², 1e-8)) from the expanded |x|² + |y|² - 2 x·y: 1e-4 where
    # kernla (and the exact value) has 0; the reference uses the exact dense differences instead
    original = sinkhorn_samples.distances

    def exact_distances(x, y, use_keops=False):
        if use_keops:
            return original(x, y, use_keops=True)
        return ((x.unsqueeze(-2) - y.unsqueeze(-3)) ** 2).sum(-1).clamp_min(1e-30).sqrt()

    monkeypatch.setattr(sinkhorn_samples, "distances", exact_distances)
    monkeypatch.setattr(kernel_samples, "distances", exact_distances)
    x, y = _clouds(batch, seed=len(LOSSES))
    results = {}
    for b in ("tensorized", backend):
        value = SamplesLoss(loss, p=p, blur=0.05, backend=b)(x, y)
        results[b] = (value, torch.autograd.grad(value.sum(), x)[0])
    assert kernla_calls, "GeoMLoss did not call kernla"
    (v_ref, g_ref), (v, g) = results["tensorized"], results[backend]
    # "online" is exact: Sinkhorn's iterated log-sum-exps round to ~1e-6 of the gradient's scale. "multiscale" is
    # GeoMLoss's approximation: kernel losses drop far cluster pairs (~1e-4 of the value); Sinkhorn also anneals on
    # cluster centroids, and its gradient is that of the approximation (measured on these clouds: the real pykeops and
    # kernla agree to 1e-15 and both are 0.5 % / 8-33 % of the gradient's scale from "tensorized")
    if backend == "multiscale" and loss == "sinkhorn":
        torch.testing.assert_close(v.reshape(v_ref.shape), v_ref, rtol=1e-2, atol=1e-12)
        assert torch.isfinite(g).all() and torch.nn.functional.cosine_similarity(g.ravel(), g_ref.ravel(), 0) > 0.9
        return
    v_tol, g_tol = (1e-3, 1e-2) if backend == "multiscale" else (1e-8, 1e-6)
    torch.testing.assert_close(v.reshape(v_ref.shape), v_ref, rtol=v_tol, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=g_tol * float(g_ref.abs().max()))


# ---------------------------------------------------------------------------------------------
# GPyTorch
# ---------------------------------------------------------------------------------------------
def _train_losses(gpytorch, kernel, x, y, steps=4) -> list[float]:
    class GP(gpytorch.models.ExactGP):
        def __init__(self, likelihood):
            super().__init__(x, y, likelihood)
            self.mean = gpytorch.means.ConstantMean()
            self.covar = gpytorch.kernels.ScaleKernel(kernel)

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(self.mean(z), self.covar(z))

    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    model = GP(likelihood).double()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    "name,kwargs", [("RBFKernel", {}), ("MaternKernel", {"nu": 1.5}), ("MaternKernel", {"nu": 2.5})]
)
def test_gpytorch_keops_kernels_train_like_dense_ones(pykeops, kernla_calls, name, kwargs):
    gpytorch = pytest.importorskip("gpytorch")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(90, 2, generator=g, dtype=torch.float64)
    y = torch.sin(6 * x[:, 0]) + 0.1 * torch.randn(90, generator=g, dtype=torch.float64)
    # above max_cholesky_size the KeOps kernels hand their products to kernla; probes fixed for both runs
    with gpytorch.settings.max_cholesky_size(40), gpytorch.settings.deterministic_probes(True):
        ours = _train_losses(gpytorch, getattr(gpytorch.kernels.keops, name)(**kwargs), x, y)
        assert kernla_calls, "gpytorch did not call kernla"
        dense = _train_losses(gpytorch, getattr(gpytorch.kernels, name)(**kwargs), x, y)
    assert ours == pytest.approx(dense, rel=1e-5)
