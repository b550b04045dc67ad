"""Optional dependencies per test: ``@pytest.mark.requires("torch")`` skips that test when torch is missing.

A module that needs an optional package for some of its tests imports it under ``try`` (``torch = None``
without it) and marks those tests, so that the module's other tests still run::

    try:
        import torch
    except ImportError:  # optional: the tests that use it are marked requires("torch")
        torch = None

    @pytest.mark.requires("torch")
    def test_torch_in_torch_out(): ...
"""

from __future__ import annotations

import importlib
from functools import cache

import pytest


@cache
def importable(module: str) -> bool:
    """Whether ``module`` imports here (an installed but broken package counts as missing).

    >>> importable("numpy"), importable("kernla_no_such_module")
    (True, False)
    """
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``skip`` every test whose ``requires(...)`` names a module that does not import."""
    for item in items:
        missing = [name for mark in item.iter_markers("requires") for name in mark.args if not importable(name)]
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs {', '.join(missing)} (not installed)"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private, empty compile cache for the test (``KERNLA_CACHE_DIR``), default compiler and flags."""
    path = tmp_path / "cache"
    monkeypatch.setenv("KERNLA_CACHE_DIR", str(path))
    monkeypatch.delenv("KERNLA_CXXFLAGS", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    return path
