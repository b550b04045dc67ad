"""The parser's short cuts to repeated sub-formulas (``tree.find``, its own memo) give the nodes building gives.

The parser looks a repeated operation up in the interning tables instead of building it again
(``kernla.formula.tree.find``), and remembers itself those it cannot look up there: operations with
parameters or whose simplification rules may apply. These tests check that the short cuts change no
result: simplifications still happen, limits lowered since a node was built still hold, errors and
their positions are those of a first build.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from kernla import FormulaError, FormulaSyntaxError
from kernla.formula import IntCst, Node, call, limits, parse, parser, tree
from kernla.formula.ops import get_op
from kernla.formula.tree import Vi, Vj


def test_a_node_made_without_its_rules_is_not_what_the_parser_finds():
    # Node(…) interns the fields it is given, unsimplified: parsing still simplifies, as building does
    x = Vi(0, 3)
    raw = Node("Add", (x, IntCst(0)))
    assert raw.op == "Add" and raw.args == (x, IntCst(0))
    assert parse("X + 0", {"X": x}) is x
    assert parse("(X + 0) * 1 + (X + 0) * 1", {"X": x}) is call("Add", x, x)
    assert tree.find(get_op("Add"), (x, IntCst(0))) is None


def test_find_returns_the_live_node_that_building_returns():
    rng = np.random.default_rng(7)
    x, y = Vi(0, 3), Vj(1, 3)
    names = ["Add", "Subtract", "Mult", "Divide"]
    nodes = [x, y, x * y]
    for _ in range(60):
        spec = get_op(names[rng.integers(len(names))])
        args = (nodes[rng.integers(len(nodes))], nodes[rng.integers(len(nodes))])
        found = tree.find(spec, args)
        built = tree.build(spec, args, ())
        assert found is None or found is built
        assert tree.find(spec, args) is built
        nodes.append(built)


def test_a_found_node_obeys_a_dimension_limit_lowered_since_it_was_built(monkeypatch):
    x = Vi(0, 7)
    s = parse("X + X", {"X": x})
    assert tree.find(get_op("Add"), (x, x)) is s
    monkeypatch.setattr(limits, "MAX_DIM", 5)
    assert tree.find(get_op("Add"), (x, x)) is None
    with pytest.raises(FormulaSyntaxError, match="MAX_DIM") as err:
        parse("X + X", {"X": x})
    assert err.value.position == 2


def test_repeats_the_tables_cannot_find_are_built_once(monkeypatch):
    # operations whose rules may apply (a constant argument, Minus) or with parameters: the parse's memo
    builds = []
    build = parser.build
    monkeypatch.setattr(parser, "build", lambda *a: builds.append(a[0].name) or build(*a))
    x = Vi(0, 3)
    n = 300
    f = parse(" + ".join(["(X * 2 - -X) / Elem(X, 1)"] * n), {"X": x})
    g = (x * 2 - -x) / call("Elem", x, params=(1,))
    assert sorted(builds) == sorted(["Mult", "Minus", "Subtract", "Divide"] + ["Add"] * (n - 1))
    h = g
    for _ in range(n - 1):
        h = h + g
    assert f is h


def test_errors_in_repeated_operations_keep_their_positions():
    x, y = Vi(0, 3), Vj(1, 2)
    text = "X + X + (X + Y)"
    with pytest.raises(FormulaSyntaxError, match="Add: dimensions 3 and 2") as err:
        parse(text, {"X": x, "Y": y})
    assert err.value.position == text.index("+ Y")
    with pytest.raises(FormulaSyntaxError, match="not an argument of Add") as err:
        parse("X + X + [1, 2]", {"X": x})
    assert err.value.position == len("X + X + ")
    with pytest.raises(FormulaError, match="not an argument of Minus"):
        parse("-[1]", {})


def test_a_long_distinct_chain_equals_the_tree_built_in_python_and_frees_its_nodes():
    x, y = Vi(0, 2), Vj(1, 2)
    n = 3_001
    operands = [x if k % 3 else y for k in range(n)] + [x]
    symbols = ["*" if k % 5 == 1 else "-" if k % 7 == 2 else "+" for k in range(n)]
    f = parse("".join(("X" if v is x else "Y") + s for v, s in zip(operands, symbols)) + "X", {"X": x, "Y": y})
    # the same formula built with Python's operators on nodes: products first, then sums left to right
    total, pending, product = None, "+", operands[0]
    for s, v in zip(symbols, operands[1:]):
        if s == "*":
            product = product * v
            continue
        total = product if total is None else total + product if pending == "+" else total - product
        pending, product = s, v
    total = total + product if pending == "+" else total - product
    assert f is total
    table = tree._interned["Add"]
    before = len(table)
    del f, total, product
    gc.collect()
    assert len(table) < before


def test_each_parse_builds_its_distinct_nodes_once_even_those_built_before(monkeypatch):
    # find only finds what this parse built (tree.start_generation): what an earlier formula built is built
    # once more, then remembered, so the count does not depend on what else is alive
    x, y = Vi(0, 3), Vj(1, 3)
    earlier = parse("Exp(-SqDist(X, Y)) * X", {"X": x, "Y": y})
    builds = []
    build = parser.build
    monkeypatch.setattr(parser, "build", lambda *a: builds.append(a[0].name) or build(*a))
    h = parse(" + ".join(["Exp(-SqDist(X, Y)) * X"] * 50), {"X": x, "Y": y})
    assert sorted(builds) == sorted(["SqDist", "Minus", "Exp", "Mult"] + ["Add"] * 49)
    assert h.args[1] is earlier
