"""The one C generator (kernla/formula/codegen.py), its engine options, and the shared template filler.

Operation facts live in the registry: the generator's fast path comes from ``OpSpec.c_fast``, the
parser's and printer's operators from ``OpSpec.symbol``, the differentiator's broadcast rule from
``OpSpec.elementwise``.
"""

from __future__ import annotations

import re

import pytest

from kernla.engines._template import fill, indent
from kernla.engines.cpu.source import kernel_source
from kernla.engines.cuda import source as cs
from kernla.formula import OPS, Pm, Vi, Vj, call, parse, to_string
from kernla.formula.codegen import drop_unused, emit_bodies
from kernla.reductions import Reduction

X, Y, G = Vi(0, 3), Vj(1, 3), Pm(2, 1)
LOAD = lambda v, k: f"v{v.params[0]}[{k}]"  # noqa: E731


@pytest.mark.parametrize(
    "arg, scaled",
    [
        (-G * call("SqDist", X, Y), r"\(t\d+ \* T\(1\.4426950408889634\)\)"),  # uniform factor absorbs log2 e
        (call("SqDist", X, Y) / G, r"\(T\(1\.4426950408889634\) / v2\[0\]\)"),  # uniform divisor
        (-call("SqDist", X, Y), None),  # a negation: -log2 e
    ],
)
def test_fast_exp_is_one_exp2_of_a_prescaled_argument(arg, scaled):
    lines, (out,) = emit_bodies([call("Exp", arg)], LOAD, fast=True, prune=True)
    text = "\n".join(lines)
    assert "kl_exp(" not in text and text.count("kl_exp2f(") == 1
    assert text.count("1.4426950408889634") == 1
    if scaled:
        assert re.search(scaled, text), text
    slow, _ = emit_bodies([call("Exp", arg)], LOAD)
    assert "kl_exp2f" not in "\n".join(slow) and "kl_exp(" in "\n".join(slow)


def test_prune_drops_what_a_fast_emitter_leaves_unused():
    f = call("Exp", -G * call("SqDist", X, Y))
    kept, _ = emit_bodies([f], LOAD, fast=True, prune=True)
    every, _ = emit_bodies([f], LOAD, fast=True)
    assert len(every) == len(kept) + 1 and set(kept) < set(every)  # the product -G * d is not needed
    assert drop_unused(every, "x = y;") == []


def test_cuda_gaussian_uses_the_prescaled_exp2_and_cpu_the_accurate_exp():
    k = call("Exp", -G * call("SqDist", X, Y))
    red = Reduction("Sum", k * Vj(3, 1))
    body = cs.build_plan(red, "float32").source.split("kl_reduce_w1", 1)[1]
    scale = re.search(r"T (\w+) = \(t0 \* T\(1\.4426950408889634\)\);", body).group(1)  # -G log2(e)
    assert re.search(r"T \w+ = kl_exp2f\(" + scale + r" \* t\d+\);", body) and "kl_exp(" not in body
    assert "kl_exp2f" not in cs.build_plan(red, "float64").source.split("kl_reduce_w1", 1)[1]
    assert "kl_exp2f" not in kernel_source(red, "float32") and "kl_exp(" in kernel_source(red, "float32")


def test_fill_refuses_unfilled_slots_and_does_not_rescan_values():
    assert fill("a @X@ b", {"X": "@Y@"}) == "a @Y@ b"
    with pytest.raises(ValueError, match="@Y@"):
        fill("@X@ @Y@", {"X": ""})
    assert indent("a\n  \nb", 2) == "  a\n\n  b"


def test_operator_symbols_come_from_the_registry():
    symbols = {name: spec.symbol for name, spec in OPS.items() if spec.symbol}
    assert symbols == {"Add": "+", "Subtract": "-", "Mult": "*", "Divide": "/", "Minus": "-", "Scalprod": "|"}
    f = parse("-(X + Y) * X / Y - (X | Y)", ["X = Vi(3)", "Y = Vj(3)"])
    assert parse(to_string(f)) is f


def test_elementwise_marks_exactly_the_componentwise_operations():
    vector_ops = {
        "Sum",
        "Max",
        "Min",
        "ArgMax",
        "ArgMin",
        "Scalprod",
        "SqNorm2",
        "Norm2",
        "Normalize",
        "SqDist",
        "WeightedSqNorm",
        "WeightedSqDist",
        "Elem",
        "ElemT",
        "Extract",
        "ExtractT",
        "Concat",
        "OneHot",
        "MatVecMult",
        "VecMatMult",
        "TensorProd",
        "TensorDot",
        "Kron",
    }
    assert {name for name, spec in OPS.items() if not spec.elementwise} == vector_ops
