"""Bounded fuzzing of the parser and of Genred (issue 15): random and adversarial formula strings, deep
nesting, huge literals and dimensions, random constructor arguments.

Asserted: only kernla's own exceptions (``KernlaError``), each example within a time bound (hypothesis'
``deadline``), nothing executed (no ``eval``/``exec``, no file written by a formula), and compiled results
equal to the NumPy engine's for a handful of small random formulas.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernla import Genred, KernlaError
from kernla.formula import Node, parse

ALIASES = ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(2)", "S = Vi(1)"]
#: pieces formula strings are made of, the operations with their usual arities included
TOKENS = [
    "X", "Y", "G", "B", "S", "(", ")", ",", "+", "-", "*", "/", "|", " ", "0", "1", "2", "3", "2.5", "1e308",
    "1e400", "Exp(", "Log(", "Sqrt(", "SqDist(", "SqNorm2(", "Sum(", "Elem(", "ElemT(", "OneHot(", "Pow(",
    "Powf(", "Concat(", "Extract(", "MatVecMult(", "TensorProd(", "IfElse(", "Grad(", "IntCst(", "Vi(", "Vj(",
    "Pm(", "Var(", "Min(", "ArgMin(", "Round(", "Clamp(", "Step(", "=", "'", "__import__", "os", ".", "[",
    "9" * 5000, "0" * 400, "2000000000", "\u0663", "1_0", "\x00", "\n",
]  # fmt: skip
FUZZ = settings(max_examples=300, deadline=5_000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.fixture
def nothing_executed(monkeypatch, tmp_path):
    """Fails the test if ``eval``/``exec`` run or the sentinel file appears."""

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec called on a formula")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    sentinel = tmp_path / "executed"
    yield str(sentinel)
    assert not sentinel.exists()


def _parse_or_kernla_error(text: str, aliases=ALIASES) -> Node | None:
    try:
        return parse(text, aliases)
    except KernlaError:
        return None


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_token_soup_parses_or_raises_kernla_errors(text):
    f = _parse_or_kernla_error(text)
    assert f is None or isinstance(f, Node)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_kernla_errors(text):
    _parse_or_kernla_error(text)


@settings(max_examples=40, deadline=10_000, derandomize=True)
@given(
    st.sampled_from(["(", "Exp(", "-", "-(", "Sum(", "Abs(", "+", "Sqrt(SqNorm2("]),
    st.integers(1, 20_000),
    st.booleans(),
)
def test_deep_nesting_parses_or_raises_kernla_errors(opening, depth, closed):
    closing = ")" * opening.count("(")
    text = opening * depth + "X" + (closing * depth if closed else "")
    f = _parse_or_kernla_error(text)
    assert (f is not None) == (closed or not closing)


@settings(max_examples=60, deadline=5_000, derandomize=True)
@given(
    st.integers(310, 20_000), st.sampled_from(["X * {}", "Vi(0, {})", "Pow(X, {})", "IntCst({})", "ElemT(G, {}, 0)"])
)
def test_huge_literals_and_dims_raise_kernla_errors(digits, template):
    # 310 digits and more: beyond float64, so every one of these is refused
    assert _parse_or_kernla_error(template.format("7" * digits)) is None
    with pytest.raises(KernlaError):
        Genred("X", [f"X = Vi({'7' * digits})"])


def test_formulas_are_never_executed(nothing_executed):
    sentinel = nothing_executed
    for text in (
        f"__import__('builtins').open({sentinel!r}, 'w')",
        f"open({sentinel!r}, 'w')",
        f"Exp(X) + eval(\"open({sentinel!r}, 'w')\")",
        "X.__class__.__bases__[0].__subclasses__()",
        "lambda: 0",
        "Exp(X); import os",
    ):
        assert _parse_or_kernla_error(text) is None
        with pytest.raises(KernlaError):
            Genred(text, ALIASES)
        with pytest.raises(KernlaError):
            Genred("X", [f"X = Vi({text})"])


# -- random formulas (valid ones, mostly) ------------------------------------------------------
_UNARY = ["Exp(-{})", "Sin({})", "Abs({})", "Sqrt(Abs({}))", "({} * {})", "Log(1 + Abs({}))", "Step({})"]
_BINARY = ["({} + {})", "({} - {})", "({} * {})", "(SqDist({}, {}) * X)", "Concat(Elem({}, 0), Extract({}, 1, 2))"]


def _random_formula(rng: np.random.Generator, depth: int) -> str:
    if depth == 0:
        return str(rng.choice(["X", "Y", "G * X", "(X - Y)", "(2.5 * Y)"]))
    if rng.random() < 0.5:
        template = str(rng.choice(_UNARY))
        sub = _random_formula(rng, depth - 1)
        return template.format(sub, sub)
    return str(rng.choice(_BINARY)).format(_random_formula(rng, depth - 1), _random_formula(rng, depth - 1))


#: the formulas the Genred fuzzing could build (some must be, or the calls go untested)
BUILT: list = []
_ARGUMENT = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20),
    st.lists(st.sampled_from(ALIASES + ["X = Vi(0)", "Q = Vj(2000000000)", "X = Vi(\u0663)", ""]), max_size=4),
    st.sampled_from(["Sum", "Min", "ArgKMin", "LogSumExp", "KMin", "Max_ArgMax", "SumSoftMaxWeight", "Nope"]),
)  # fmt: skip


def _mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` three times in four, else any argument at all."""
    return st.tuples(st.integers(0, 3), valid, _ARGUMENT).map(lambda t: t[2] if t[0] == 0 else t[1])


@FUZZ
@given(
    _mostly(
        st.integers(0, 2**32).map(lambda seed: _random_formula(np.random.default_rng(seed), 2))
        | st.lists(st.sampled_from(TOKENS[:40]), min_size=1, max_size=12).map("".join)
    ),
    _mostly(st.just(ALIASES[:3])),
    _mostly(st.sampled_from(["Sum", "Min", "ArgKMin", "LogSumExp", "KMin", "Max_ArgMax"])),
    _mostly(st.sampled_from([0, 1])),
    _mostly(st.none() | st.integers(-3, 5)),
)
def test_genred_constructor_and_call_raise_kernla_errors(formula, aliases, reduction_op, axis, opt_arg):
    try:
        g = Genred(formula, aliases, reduction_op, axis, opt_arg)
    except KernlaError:
        return
    BUILT.append(formula)  # kept for inspection: how many random argument sets were valid
    args = []
    for s in g.slots:
        shape = (s.dim,) if s.cat == 2 else (3, s.dim)
        args.append(np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape))
    try:
        g(*args, backend="numpy")
    except KernlaError:
        pass


# -- compiled results equal the NumPy engine's --------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
def test_compiled_results_equal_numpy_on_random_formulas(seed):
    pytest.importorskip("kernla.engines.cpu.engine")
    rng = np.random.default_rng(seed)
    text = _random_formula(rng, 3)
    reduction = ["Sum", "Min", "LogSumExp", "ArgMax"][seed]
    g = Genred(f"Sum({text})" if reduction in ("LogSumExp", "ArgMax") else text, ALIASES[:3], reduction, axis=1)
    x, y, p = rng.normal(size=(7, 3)), rng.normal(size=(11, 3)), np.array([0.7])
    expected = g(x, y, p, backend="numpy")
    try:
        got = g(x, y, p, backend="cpu")
    except KernlaError as err:  # BackendError: no compiler here
        pytest.skip(str(err))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=text)


def test_fuzz_settings_stay_bounded():
    assert FUZZ.max_examples <= 500 and FUZZ.deadline is not None
