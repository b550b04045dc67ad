"""The documentation site's own code (docs/griffe_rst.py, docs/hooks.py), without building the site.

The strict build itself (every example, every page) runs in .ci/run: ``mkdocs build --strict``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
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


@pytest.mark.requires("mkdocs", "griffe")
def test_benchmark_curves_labels_references_and_gaps():
    hooks = load("hooks")
    table = {
        "headers": ["row", "kernla s", "peer", "peer s", "dense MB"],
        "rows": [
            ["gauss D=3", 0.5, "torch", 2.0, 8.0],
            ["gauss D=30", 1.5, "torch", "-", 80.0],
            ["gauss D=300", 4.0, "torch", 9.0, 800.0],
            ["overhead", 1e-5, "pykeops", 1e-3, 1.0],  # no D: left out
        ],
    }
    spec = {
        "x": "row",
        "x_regex": r"D=(\d+)",
        "y": ["kernla s", "peer s"],
        "labels": {"kernla s": "kernla", "peer s": "{peer}"},
        "references": {"dense MB": "dense"},
    }
    panels = hooks.curves(table, spec)
    assert panels == {
        "gauss": {
            "kernla": [(3.0, 0.5), (30.0, 1.5), (300.0, 4.0)],
            "torch": [(3.0, 2.0), (300.0, 9.0)],
            "dense": [(3.0, 8.0), (30.0, 80.0), (300.0, 800.0)],
        }
    }
    gaps = hooks.gapped(panels["gauss"]["torch"], [3.0, 30.0, 300.0])
    assert gaps[0] == (3.0, 2.0) and gaps[1][0] == 30.0 and gaps[1][1] != gaps[1][1] and gaps[2] == (300.0, 9.0)
    png = hooks.draw(panels, {**spec, "title": "t"}, "bench")
    assert png is not None and png.startswith(b"\x89PNG")
    assert hooks.draw({}, spec, "bench") is None


def _benchmarks():
    sys.path.insert(0, str(DOCS.parent / "benchmarks"))
    try:
        return importlib.import_module("_common")
    finally:
        sys.path.remove(str(DOCS.parent / "benchmarks"))


def test_benchmark_plot_specs_name_their_table_columns():
    common = _benchmarks()
    spec = common.plot(0, "N", ["a s", "b s"], "title", series="impl", skip_if={"converged": False})
    assert spec == {
        "table": 0,
        "x": "N",
        "y": ["a s", "b s"],
        "title": "title",
        "xlabel": "N",
        "ylabel": "seconds (median)",
        "skip_if": {"converged": False},
        "series": "impl",
    }


#: benchmark scripts whose --json is another issue's (block-sparse, parsing, Dask)
NO_JSON_HERE = {"bench_block_sparse.py", "bench_parse.py", "bench_distributed.py"}


def test_every_benchmark_script_can_write_json():
    scripts = sorted((DOCS.parent / "benchmarks").glob("bench_*.py"))
    assert len(scripts) >= 8
    missing = [p.name for p in scripts if p.name not in NO_JSON_HERE and "add_json_option(" not in p.read_text()]
    assert missing == []


@pytest.mark.requires("mkdocs", "griffe")
def test_every_results_file_draws_curves_for_kernla():
    hooks = load("hooks")
    results = sorted(hooks.RESULTS.glob("*.json"))
    assert results
    for path in results:
        data = json.loads(path.read_text())
        assert data["plots"], path.name
        for spec in data["plots"]:
            panels = hooks.curves(data["tables"][spec["table"]], spec)
            assert panels, (path.name, spec["title"])
            longest = max(len(points) for series in panels.values() for points in series.values())
            if Path(data["script"]).name not in NO_JSON_HERE:  # (others' files: their issue's own check)
                assert longest >= 2, (path.name, spec["title"])  # a curve, not a point
