"""The automatic backend counts a formula's size as the cpu engine compiles it: a wide inner product on the
tile path is one value, so a D = 1024 Gaussian compiles instead of falling back to the NumPy engine."""

import numpy as np
import pytest

from kernla import Genred
from kernla.engines import resolve_backend
from kernla.engines.cpu import tiles
from kernla.formula import Vi, Vj, call, limits

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def gaussian(d: int):
    return call("Exp", -call("SqDist", Vi(0, d), Vj(1, d)))


def test_a_wide_inner_product_on_the_tile_path_compiles():
    assert resolve_backend("auto", False, [gaussian(1024)]) == "cpu"
    assert resolve_backend("auto", False, [gaussian(3)]) == "cpu"


def test_without_tiles_the_wide_formula_goes_to_numpy(monkeypatch):
    monkeypatch.setattr(tiles, "MIN_DIM", 0)
    assert resolve_backend("auto", False, [gaussian(1024)]) == "numpy"


def test_a_formula_too_wide_even_when_tiled_goes_to_numpy():
    f = call("Exp", -call("SqDist", Vi(0, 1024), Vj(1, 1024))) * Vj(2, limits.MAX_UNROLLED)
    assert resolve_backend("auto", False, [f]) == "numpy"


@pytest.mark.parametrize("poison", [False, True])
def test_auto_at_d_1024_matches_float64_numpy(poison):
    """Finite data runs the tiles; a non-finite operand needs the exact path, too wide here: the NumPy engine."""
    rng = np.random.default_rng(7)
    d, n, m = 1024, 37, 53
    x, y = rng.normal(size=(n, d)) / 30, rng.normal(size=(m, d)) / 30
    b = rng.normal(size=(m, 1))
    if poison:
        y[5, 3] = np.inf
    dist = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    want = np.exp(-dist) @ b
    g = Genred("Exp(-SqDist(X, Y)) * B", [f"X = Vi({d})", f"Y = Vj({d})", "B = Vj(1)"], axis=1)
    got = g(x, y, b, backend="auto")
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
