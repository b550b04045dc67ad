"""Block-sparse ranges on the matrix-multiply tile path of the CPU engine (dimensions around its threshold)."""

from __future__ import annotations

import numpy as np
import pytest

from kernla import LazyTensor

# rows [0, 150) meet columns [0, 37) and [100, 257); rows [150, 301) meet columns [37, 100)
RANGES = (
    np.array([[0, 150], [150, 301]]),
    np.array([2, 3]),
    np.array([[0, 37], [100, 257], [37, 100]]),
    np.array([[0, 37], [37, 100], [100, 257]]),
    np.array([1, 2, 3]),
    np.array([[0, 150], [150, 301], [0, 150]]),
)
MASK = np.zeros((301, 257), dtype=bool)
MASK[:150, :37] = MASK[:150, 100:] = MASK[150:, 37:100] = True


@pytest.mark.parametrize("dim", [3, 15, 16, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranges_on_tiles_match_the_masked_dense_reference(dim, dtype):
    rng = np.random.default_rng(dim)
    x, y = rng.normal(size=(301, dim)).astype(dtype), rng.normal(size=(257, dim)).astype(dtype)
    b = rng.normal(size=(257, 3)).astype(dtype)
    d_ij = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)
    d = ((x[:, None, :].astype(np.float64) - y[None].astype(np.float64)) ** 2).sum(-1)
    K = (-d_ij / dim).exp()
    K.ranges = RANGES
    ref = (np.exp(-d / dim) * MASK) @ b
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.abs(K @ b - ref).max() <= rtol * np.abs(ref).max()
    v = rng.normal(size=(301, 1)).astype(dtype)
    over_i = (K * LazyTensor(v[:, None, :])).sum(dim=0)  # reduced over i: the transposed ranges
    ref_t = (np.exp(-d / dim) * MASK).T @ v
    assert np.abs(over_i - ref_t).max() <= rtol * np.abs(ref_t).max()
    near = -d_ij
    near.ranges = RANGES
    assert (near.argmax(dim=1).ravel() == np.where(MASK, -d, -np.inf).argmax(1)).all()
