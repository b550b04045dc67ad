"""The worked examples of docs/architecture.md run, in order, and stay true."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from kernla import engines
from kernla.errors import BackendError
from kernla.reductions import KINDS, register

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.fixture
def namespace():
    """Run the examples, then take back what they registered."""
    kinds, loaders = dict(KINDS), dict(engines._LOADERS)
    yield {}
    KINDS.clear()
    KINDS.update(kinds)
    engines._LOADERS.clear()
    engines._LOADERS.update(loaders)


def test_examples_run(namespace):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)
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
