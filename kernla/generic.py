"""pykeops' ``generic_*`` constructors: a :class:`~kernla.Genred` whose axis comes from an output alias.

``generic_sum(formula, output, *aliases)`` reduces over j when ``output`` is an i-variable
(``"s = Vi(1)"``) and over i when it is a j-variable; ``generic_argkmin`` reads K from the
output's dimension, as pykeops does.

>>> import numpy as np
>>> f = generic_sum("SqDist(X, Y)", "s = Vi(1)", "X = Vi(2)", "Y = Vj(2)")
>>> f(np.zeros((3, 2)), np.ones((4, 2)), backend="numpy").ravel()
array([8., 8., 8.])
"""

from __future__ import annotations

from typing import Any

from .errors import FormulaError
from .formula import CAT_I, CAT_J, parse_aliases
from .genred import Genred

__all__ = ["generic_sum", "generic_logsumexp", "generic_argmin", "generic_argkmin"]


def _output(output: str) -> tuple[int, int]:
    """(axis, dimension) from an output alias such as ``"s = Vi(3)"``."""
    (var,) = parse_aliases([output]).values()
    _, dim, cat = var.params
    if cat not in (CAT_I, CAT_J):
        raise FormulaError(f"the output {output!r} must be a Vi or Vj variable")
    return (1 if cat == CAT_I else 0), dim


def _generic(reduction_op: str, formula: str, output: str, aliases: tuple, kwargs: dict, k_from_dim: bool = False):
    axis, dim = _output(output)
    opt_arg = dim if k_from_dim else kwargs.pop("opt_arg", None)
    return Genred(formula, list(aliases), reduction_op=reduction_op, axis=axis, opt_arg=opt_arg, **kwargs)


def generic_sum(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    """Σ of ``formula`` over the index ``output`` is not indexed by."""
    return _generic("Sum", formula, output, aliases, kwargs)


def generic_logsumexp(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    """log Σ exp of a scalar ``formula``."""
    return _generic("LogSumExp", formula, output, aliases, kwargs)


def generic_argmin(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    """The index of the smallest value of a scalar ``formula``."""
    return _generic("ArgMin", formula, output, aliases, kwargs)


def generic_argkmin(formula: str, output: str, *aliases: str, **kwargs: Any) -> Genred:
    """The indices of the K smallest values, K being the output's dimension (``"ind = Vi(5)"``)."""
    return _generic("ArgKMin", formula, output, aliases, kwargs, k_from_dim=True)
