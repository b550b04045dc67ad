"""The documentation site's own code (docs/griffe_rst.py, docs/hooks.py), without building the site.

The strict build itself (every example, every page) runs in .ci/run: ``mkdocs build --strict``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def load(name: str):
    """A module of docs/ by file (docs/ is not a package)."""
    sys.path.insert(0, str(DOCS))
    try:
        spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(DOCS))
    return module


@pytest.mark.requires("griffe")
def test_rest_docstrings_become_markdown():
    rst = load("griffe_rst")
    text = "\n".join(
        [
            "Uses :class:`~kernla.linalg.KernelOperator`, :func:`kernla.reduce` and ``x ** 2``.",
            "",
            "Parameters",
            "----------",
            "Grammar::",
            "",
            "    a := b",
            "",
            ">>> 1 + 1",
            "2",
        ]
    )
    assert rst.rest_to_markdown(text).splitlines() == [
        "Uses `KernelOperator`, `kernla.reduce` and `x ** 2`.",
        "",
        "**Parameters**",
        "",
        "Grammar:",
        "",
        "```text",
        "a := b",
        "```",
        "",
        "```pycon",
        ">>> 1 + 1",
        "2",
        "```",
    ]
    assert rst.comment_doc(["x = 1", "#: first line", "#: second", "Y = 2"], 4) == "first line second"
    assert rst.comment_doc(["x = 1", "Y = 2"], 2) is None


@pytest.mark.requires("mkdocs", "griffe")
def test_every_public_name_has_a_docstring():
    hooks = load("hooks")
    names = hooks.public_names()
    assert "kernla.LazyTensor" in names and "kernla.engines.resolve_backend" in names
    assert [n for n in names if not hooks.has_docstring(n)] == []


@pytest.mark.requires("mkdocs", "griffe")
def test_benchmark_curves_read_n_from_columns_or_labels():
    hooks = load("hooks")
    long = {"headers": ["N", "method", "total s"], "rows": [[100, "a", 1.0], [1000, "a", 9.5], [100, "b", "-"]]}
    assert hooks.curves(long, {"x": "N", "y": "total s", "series": "method"}) == {"": {"a": [(100, 1.0), (1000, 9.5)]}}
    labelled = {
        "headers": ["case", "impl", "wall (s)"],
        "rows": [["sum N=M=1e+04", "k", 0.5], ["sum N=M=1e+05", "k", 40]],
    }
    spec = {"x": "case", "x_regex": r"N=M=(\S+)$", "y": "wall (s)", "series": "impl"}
    assert hooks.curves(labelled, spec) == {"sum": {"k": [(1e4, 0.5), (1e5, 40.0)]}}
