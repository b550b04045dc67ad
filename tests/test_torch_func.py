"""torch.func transforms over kernla reductions, against the same functions written with dense torch."""

import pytest

torch = pytest.importorskip("torch")
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap  # noqa: E402

from kernla import LazyTensor  # noqa: E402

B, N, M, D = 3, 7, 11, 2


def _data(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, 1, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, 1, M, D, generator=g, dtype=torch.float64)
    b = torch.rand(B, 1, M, 1, generator=g, dtype=torch.float64) + 0.1
    return x, y, b


def gauss(x, y, b, lazy):
    """||Σ_j exp(-|x_i - y_j|²) b_j||: a scalar, so that grad and hessian apply."""
    if lazy:
        x, y, b = LazyTensor(x), LazyTensor(y), LazyTensor(b)
        return ((-((x - y) ** 2).sum(-1)).exp() * b).sum(x.ndim - 2).norm()
    return ((-((x - y) ** 2).sum(-1, keepdim=True)).exp() * b).sum(-2).norm()


def lse(x, y, b, lazy):
    """||log Σ_j exp(-|x_i - y_j|²) b_j||, the weighted log-sum-exp (pykeops' other=)."""
    if lazy:
        x, y, b = LazyTensor(x), LazyTensor(y), LazyTensor(b)
        return (-((x - y) ** 2).sum(-1)).logsumexp(dim=x.ndim - 2, other=b).norm()
    return ((-((x - y) ** 2).sum(-1, keepdim=True)).exp() * b).sum(-2).log().norm()


def _close(a, b):
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        torch.testing.assert_close(u, v, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("fn", [gauss, lse])
def test_vmap_grad_vjp(fn):
    x, y, b = _data(1)
    _close(vmap(lambda *a: fn(*a, True))(x, y, b), vmap(lambda *a: fn(*a, False))(x, y, b))
    args = (x[0], y[0], b[0])
    _close(grad(lambda *a: fn(*a, True), (0, 1, 2))(*args), grad(lambda *a: fn(*a, False), (0, 1, 2))(*args))
    one = torch.tensor(1.0, dtype=torch.float64)
    _close(vjp(lambda *a: fn(*a, True), *args)[1](one), vjp(lambda *a: fn(*a, False), *args)[1](one))


@pytest.mark.parametrize("fn", [gauss, lse])
def test_forward_mode_and_hessian(fn):
    x, y, b = _data(2)
    args = (x[0], y[0], b[0])
    tangents = tuple(torch.randn_like(a) for a in args)
    _close(jvp(lambda *a: fn(*a, True), args, tangents)[1], jvp(lambda *a: fn(*a, False), args, tangents)[1])
    _close(jacfwd(lambda *a: fn(*a, True))(*args), jacfwd(lambda *a: fn(*a, False))(*args))
    _close(jacrev(lambda *a: fn(*a, True), 1)(*args), jacrev(lambda *a: fn(*a, False), 1)(*args))
    _close(hessian(lambda x: fn(x, *args[1:], True))(args[0]), hessian(lambda x: fn(x, *args[1:], False))(args[0]))


@pytest.mark.parametrize("in_dims", [0, 1, (1, 0, None)])
def test_vmap_over_any_dimension_and_backward(in_dims):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, B, N, 1, D, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(B, B, 1, M, D, generator=g, dtype=torch.float64)
    b = torch.randn(B, B, 1, M, 1, generator=g, dtype=torch.float64)

    def fn(x, y, b, lazy):
        if lazy:
            x, y, b = LazyTensor(x), LazyTensor(y), LazyTensor(b)
            k = (-((x - y) ** 2).sum(-1)).exp() * b
            return k.sum(k.ndim - 2)
        return ((-((x - y) ** 2).sum(-1, keepdim=True)).exp() * b).sum(-2)

    ours = vmap(lambda *a: fn(*a, True), in_dims=in_dims)(x, y, b)
    ref = vmap(lambda *a: fn(*a, False), in_dims=in_dims)(x, y, b)
    _close(ours, ref)
    u = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    _close(torch.autograd.grad(ours, x, u)[0], torch.autograd.grad(ref, x, u)[0])


def test_vmap_of_index_reductions():
    x, y, _ = _data(4)
    idx = vmap(lambda x, y: ((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1).argKmin(3, dim=1))(x, y)
    ref = ((x - y) ** 2).sum(-1).argsort(-1)[..., :3]
    assert torch.equal(idx, ref)


def _selections(x, y, b, backend=None):
    """Min, Max and the 3 smallest values over j, of a scalar and of a vector formula (component-wise);
    dense torch when ``backend`` is None."""
    if backend is not None:
        x, y, b = LazyTensor(x), LazyTensor(y), LazyTensor(b)
        d = ((x - y) ** 2).sum(-1) * b
        v = (x - y).abs() * b
        return tuple(r(dim=1, backend=backend) for r in (d.min, d.max, lambda **k: d.Kmin(3, **k), v.min))
    d = ((x - y) ** 2).sum(-1, keepdim=True) * b
    v = (x - y).abs() * b
    return d.min(1).values, d.max(1).values, d.squeeze(-1).sort(-1).values[:, :3], v.min(1).values


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_forward_mode_of_selections(backend):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, 1, D, generator=g, dtype=torch.float64)
    y = torch.randn(1, M, D, generator=g, dtype=torch.float64)
    b = torch.rand(1, M, 1, generator=g, dtype=torch.float64) + 0.5
    tangents = tuple(torch.randn(a.shape, generator=g, dtype=torch.float64) for a in (x, y, b))
    ours = jvp(lambda *a: _selections(*a, backend), (x, y, b), tangents)
    ref = jvp(lambda *a: _selections(*a), (x, y, b), tangents)
    _close(ours[0], ref[0])
    _close(ours[1], ref[1])
    jac = jacfwd(lambda x: _selections(x, y, b, backend)[2])(x)
    torch.testing.assert_close(jac, jacfwd(lambda x: _selections(x, y, b)[2])(x), rtol=1e-9, atol=1e-10)
