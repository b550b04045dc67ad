"""A long parse and Python's cyclic garbage collector (``kernla.formula.parser._collector_paused``).

A formula of many tokens is parsed with the collector paused; after it, the objects the parse made
go to the oldest generation at once (``gc.freeze`` then ``gc.unfreeze``) instead of being walked by
the young collections, unless the program froze objects itself: those stay frozen.
"""

from __future__ import annotations

import gc

import pytest

from kernla import FormulaSyntaxError
from kernla.formula import Vi, parse

LONG = "X" + "+X" * 5_000


def _in_oldest_generation(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


def test_a_long_parse_leaves_its_nodes_in_the_oldest_generation():
    x = Vi(0, 2)
    gc.collect()  # (then the young collections after the parse could not move them there)
    f = parse(LONG, {"X": x})
    assert gc.isenabled()
    assert _in_oldest_generation(f) and _in_oldest_generation(f.args)
    g = x
    for _ in range(5_000):
        g = g + x
    assert f is g  # the same nodes as built in Python


def test_a_short_parse_leaves_the_collector_alone():
    x = Vi(0, 2)
    gc.collect()
    f = parse("X + X * X", {"X": x})
    assert not _in_oldest_generation(f)


def test_objects_the_program_froze_stay_frozen():
    gc.collect()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        f = parse(LONG, {"X": Vi(0, 3)})
        assert gc.get_freeze_count() == frozen and gc.isenabled()
        assert not _in_oldest_generation(f)  # not moved: a young collection may walk it
    finally:
        gc.unfreeze()


def test_a_failed_long_parse_moves_nothing():
    gc.collect()
    witness = [[]]  # a young object made before the parse
    with pytest.raises(FormulaSyntaxError, match="unknown alias"):
        parse(LONG + "+Z", {"X": Vi(0, 3)})
    assert gc.isenabled() and not _in_oldest_generation(witness)
