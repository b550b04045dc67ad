"""From what the user wrote to a scalar formula and its variables: a :class:`~kernla.linalg.KernelOperator`'s input.

A kernel operator is given either by a formula string with keyword bindings (``X=Vi(x)``,
``Y=Vj(y)``, numbers and 1-D parameter arrays, or symbolic LazyTensor expressions) or by a
scalar LazyTensor. Both become ``(formula, variables, names)``: a formula tree whose ``Var``
positions index ``variables``, a list of ``(data, category)`` pairs, and a name per variable
for error messages.

>>> import numpy as np
>>> from kernla import Vi, Vj
>>> x = np.zeros((3, 1))
>>> formula, variables, names = from_string("Exp(-G * SqDist(X, Y))", {"X": Vi(x), "Y": Vj(x), "G": 0.5})
>>> names
['X', 'Y', 'G']
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import arrays as arr
from ..errors import FormulaError, ShapeError
from ..formula import CAT_PARAM, Var, parse
from ..formula.tree import CATEGORY_NAMES, Node
from ..lazy import LazyTensor
from ._compute import finite_number, is_number


def _merge_lazy(lazy: LazyTensor, variables: list, names: list, name: str) -> Node:
    """Append ``lazy``'s variables to ``variables`` (sharing identical data) and renumber its formula."""
    formula, added = lazy.merge_into(variables)
    names += [name if len(lazy.variables) == 1 else f"{name}[{pos}]" for pos in added]
    return formula


def from_string(text: str, bindings: dict) -> tuple[Node, list, list]:
    """The formula ``text`` parsed with ``bindings`` (name -> LazyTensor, number or 1-D array)."""
    variables: list = []
    names: list = []
    aliases: dict[str, Node] = {}
    for name, value in bindings.items():
        if isinstance(value, LazyTensor):
            aliases[name] = _merge_lazy(value, variables, names, name)
            continue
        if is_number(value):
            variables.append((finite_number(value, f"parameter {name!r}"), CAT_PARAM))
            names.append(name)
            aliases[name] = Var(len(variables) - 1, 1, CAT_PARAM)
            continue
        try:
            kind = arr.kind_of(value)
        except arr.ArrayKindError:
            raise FormulaError(
                f"binding {name!r} must be Vi(array), Vj(array), a number or a 1-D array of "
                f"parameters, got {type(value).__name__}"
            ) from None
        ndim = len(value.shape)
        if ndim >= 2:
            raise ShapeError(
                f"binding {name!r} is a {ndim}-D array of shape {tuple(value.shape)}: say which index it "
                f"follows with {name}=Vi(array) (rows, i) or {name}=Vj(array) (columns, j); plain arrays "
                "are only taken as 1-D parameter vectors"
            )
        data = value.reshape(1) if ndim == 0 else value
        if kind == "scalar":  # pragma: no cover - numbers were handled above
            data = float(value)
        variables.append((data, CAT_PARAM))
        names.append(name)
        aliases[name] = Var(len(variables) - 1, int(data.shape[-1]), CAT_PARAM)
    formula = parse(text, aliases)
    used = set(formula.variables())
    for name, node in aliases.items():
        if not set(node.variables()) & used:
            raise FormulaError(f"binding {name!r} is not used in the formula {text!r}")
    return formula, variables, names


def from_lazy(lazy: LazyTensor) -> tuple[Node, list, list]:
    """A scalar LazyTensor's formula and variables (named by position and category)."""
    if lazy.formula.dim != 1:
        raise ShapeError(
            f"a KernelOperator needs a scalar formula, this LazyTensor has dimension "
            f"{lazy.formula.dim}; reduce its vector axis first (e.g. .sum(-1))"
        )
    variables = list(lazy.variables)
    names = [f"variable {k} ({CATEGORY_NAMES[c]})" for k, (_, c) in enumerate(variables)]
    return lazy.formula, variables, names


def compact(formula: Node, variables: Sequence, names: Sequence) -> tuple[Node, list, list]:
    """Drop unused variables and renumber the rest 0, 1, … in order."""
    mapping: dict[Node, Node] = {}
    kept: list = []
    kept_names: list = []
    for v in formula.variables():
        pos, dim, cat = v.params
        mapping[v] = Var(len(kept), dim, cat)
        kept.append(variables[pos])
        kept_names.append(names[pos])
    return formula.replace(mapping), kept, kept_names
