"""What ``import kernla`` costs: no optional dependency is imported until it is used."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["sklearn", "torch", "dask", "cupy"])
def test_import_kernla_leaves_optional_dependencies_alone(module):
    code = f"import sys, kernla; print({module!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_estimators_are_reachable_from_the_top_level():
    pytest.importorskip("sklearn")
    import kernla
    from kernla import models

    assert kernla.NearestNeighbors is models.NearestNeighbors
    assert kernla.models is models and "GaussianProcessRegressor" in dir(kernla)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        kernla.nonexistent  # noqa: B018
