"""The architecture, checked: layers import only downward, no import cycles, no hidden imports,
and no code outside ``kernla/reductions/`` dispatches on a reduction's name.

The layers (docs/architecture.md), lowest first; a module may import from its own layer or below.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

from kernla.reductions import REDUCTIONS

ROOT = Path(__file__).resolve().parents[1] / "kernla"

#: (layer name, module prefixes), lowest first
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("kernla._version", "kernla.errors")),
    ("formula", ("kernla.formula",)),
    ("reductions", ("kernla.reductions",)),
    ("engines", ("kernla.engines",)),
    ("cluster", ("kernla.cluster",)),
    ("arrays", ("kernla.arrays",)),
    ("core", ("kernla.core",)),
    ("autograd", ("kernla.autograd",)),
    ("genred", ("kernla.genred", "kernla.generic")),
    ("lazy", ("kernla.lazy",)),
    ("linalg", ("kernla.linalg", "kernla.kernels")),
    ("distributed", ("kernla.distributed",)),
    ("models", ("kernla.models",)),
    ("front doors", ("kernla", "kernla.numpy", "kernla.torch", "kernla.config", "kernla.compat")),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix matching ``module``."""
    best, index = -1, None
    for k, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, index = len(p), k
    if index is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return index


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The kernla modules an import statement in ``module`` loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "kernla"]
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "kernla":
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported kernla module, line, inside a function) for every import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((m, child.lineno, nested) for m in _resolve(module, child))
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # annotations only: no import at run time
            visit(child, inner)

    visit(tree, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_downward(module):
    mine = layer_of(module)
    for target, line, _ in _imports(module):
        theirs = layer_of(target)
        assert theirs <= mine, (
            f"{module}:{line} imports {target}: layer {LAYERS[theirs][0]!r} sits above {LAYERS[mine][0]!r}"
        )


def test_no_import_cycles_outside_formula_internals():
    graph = {m: {t for t, _, _ in _imports(m) if t != m} for m in MODULES}

    def internal(a: str, b: str) -> bool:
        return a.startswith("kernla.formula") and b.startswith("kernla.formula")

    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if internal(m, t):
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def _comments(path: Path) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {t.start[0]: t.string for t in tokens if t.type == tokenize.COMMENT}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_local_imports_say_why(module):
    """An import inside a function is for an optional dependency or a deferred load, and says so."""
    path = MODULES[module]
    comments = _comments(path)
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                reason = comments.get(node.lineno) or comments.get(node.lineno - 1) or comments.get(node.end_lineno)
                assert reason, f"{module}:{node.lineno}: function-local import without a one-line reason"


def _reduction_literals(node: ast.AST) -> list[str]:
    """Reduction names written as string literals in ``node`` (a compared value or a container of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in REDUCTIONS else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for e in node.elts for n in _reduction_literals(e)]
    return []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("kernla.reductions")))
def test_no_reduction_name_dispatch_outside_the_package(module):
    """Comparing reduction names, or tables keyed by them, belong in kernla/reductions/ only."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                names += _reduction_literals(side)
        elif isinstance(node, ast.Dict):
            names += [n for k in node.keys if k is not None for n in _reduction_literals(k)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("startswith", "endswith"):
            names += [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and any(a.value in r for r in REDUCTIONS)
            ]
        assert not names, f"{module}:{node.lineno} dispatches on reduction name(s) {names}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The helpers above find an upward import, a reasonless local import and a name comparison."""
    bad = "from ..linalg import KernelOperator\ndef f(red):\n    import os\n    return red.name == 'ArgKMin'\n"
    tree = ast.parse(bad)
    imp = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    MODULES["kernla.engines.fake"] = ROOT / "engines" / "fake.py"
    try:
        (target,) = _resolve("kernla.engines.fake", imp)
    finally:
        del MODULES["kernla.engines.fake"]
    assert target == "kernla.linalg" and layer_of(target) > layer_of("kernla.engines.fake")
    compare = next(n for n in ast.walk(tree) if isinstance(n, ast.Compare))
    assert _reduction_literals(compare.comparators[0]) == ["ArgKMin"]
    path = tmp_path / "m.py"
    path.write_text(bad)
    assert 3 not in _comments(path)
