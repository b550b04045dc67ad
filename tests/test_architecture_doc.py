"""The worked examples of docs/architecture.md run, in order, and stay true."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kernla import Genred, engines
from kernla.errors import BackendError
from kernla.formula.ops import OPS
from kernla.reductions import KINDS, register

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def namespace():
    """Run the examples, then take back what they registered."""
    kinds, loaders, ops = dict(KINDS), dict(engines._LOADERS), dict(OPS)
    yield {}
    OPS.clear()
    OPS.update(ops)
    KINDS.clear()
    KINDS.update(kinds)
    engines._LOADERS.clear()
    engines._LOADERS.update(loaders)


def test_examples_run(namespace):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 4
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)
    # the example operation: compiled, and its derivative (through Grad) is the sigmoid
    xs, ys, e = (np.random.default_rng(k).normal(size=(n, 2)) for k, n in ((5, 11), (6, 17), (7, 11)))
    diff = xs[:, None] - ys[None]
    np.testing.assert_allclose(
        namespace["soft"](xs, ys, backend="cpu"), np.logaddexp(0, diff).sum((1, 2))[:, None], rtol=1e-12
    )
    grad = Genred("Grad(Softplus(X - Y), X, E)", ["X = Vi(2)", "Y = Vj(2)", "E = Vi(2)"], axis=1)
    for backend in ("numpy", "cpu"):
        np.testing.assert_allclose(
            grad(xs, ys, e, backend=backend), (e[:, None] / (1 + np.exp(-diff))).sum(1), rtol=1e-12
        )
    # the example reduction also runs on the compiled CPU engine, against a dense float64 reference
    x, y = np.random.default_rng(3).random((37, 3)), np.random.default_rng(4).random((101, 3))
    expected = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1).mean(1, keepdims=True)
    # (without a compiler the cpu engine warns and runs the NumPy engine: the check still holds)
    np.testing.assert_allclose(namespace["mean_dist"](x, y, backend="cpu"), expected, rtol=1e-12)


def test_registering_needs_new_names(namespace):

    with pytest.raises(ValueError, match="already registered"):
        register(KINDS["Sum"])
    with pytest.raises(BackendError, match="cannot register"):
        engines.register_engine("cpu", lambda: None)
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        engines.get_engine("nope")
