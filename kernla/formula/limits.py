"""Limits on the size of formulas, so that a short or hostile formula fails fast with a clear error.

A formula string or tree that passes these limits parses, prints and compiles in bounded time and
memory; one that exceeds a limit raises :class:`~kernla.errors.FormulaError` (or its subclass
:class:`~kernla.errors.FormulaSyntaxError` while parsing) naming the limit and how to raise it.
Each limit is a module attribute, read at each use; its default can be replaced by an environment
variable (read once, at import) or by assigning the attribute at run time:

=====================  ===========================  ==========  ==============================================
attribute              environment variable         default     bounds
=====================  ===========================  ==========  ==============================================
``MAX_DIM``            ``KERNLA_MAX_DIM``           10,000      the vector dimension of any variable or node
``MAX_UNROLLED``       ``KERNLA_MAX_UNROLLED``      4,096       the scalar operations compiled code unrolls
``MAX_FORMULA_CHARS``  ``KERNLA_MAX_FORMULA_CHARS`` 4,194,304   a formula string to parse, a canonical string
``MAX_PRINT_CHARS``    ``KERNLA_MAX_PRINT_CHARS``   100,000     ``str()`` / ``repr()`` of a formula (then cut)
``MAX_INT_DIGITS``     (none: fixed)                309         an integer literal (larger is not a float64)
=====================  ===========================  ==========  ==============================================

>>> from kernla.errors import FormulaError
>>> from kernla.formula import limits
>>> from kernla.formula.tree import Vi
>>> Vi(0, limits.MAX_DIM).dim == limits.MAX_DIM
True
>>> try:
...     Vi(0, limits.MAX_DIM + 1)
... except FormulaError as err:
...     print(err)  # doctest: +ELLIPSIS
variable dimension 10001 exceeds the limit of 10000 (MAX_DIM: set the environment variable KERNLA_MAX_DIM ...)
"""

from __future__ import annotations

import os
import sys
import warnings

from ..errors import FormulaError


def _setting(variable: str, default: int) -> int:
    """The environment variable ``variable`` as a positive integer, else ``default`` (with a warning if malformed)."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and 0 < len(text) < 19 and int(text) > 0):
        warnings.warn(f"{variable}={text!r} is not a positive integer; using the default {default}", stacklevel=2)
        return default
    return int(text)


#: the largest vector dimension of a variable or of any node of a formula
MAX_DIM = _setting("KERNLA_MAX_DIM", 10_000)
#: the largest :func:`unrolled_size` of the formulas of one compiled kernel
MAX_UNROLLED = _setting("KERNLA_MAX_UNROLLED", 4_096)
#: the longest formula string :func:`~kernla.formula.parse` reads or :func:`~kernla.formula.to_string` writes
MAX_FORMULA_CHARS = _setting("KERNLA_MAX_FORMULA_CHARS", 1 << 22)
#: the longest ``str()`` of a formula; longer ones print shared sub-formulas once, then are cut
MAX_PRINT_CHARS = _setting("KERNLA_MAX_PRINT_CHARS", 100_000)
#: the most digits of an integer literal: a larger integer does not fit in a float64
MAX_INT_DIGITS = len(str(int(sys.float_info.max)))

_VARIABLES = {
    "MAX_DIM": "KERNLA_MAX_DIM",
    "MAX_UNROLLED": "KERNLA_MAX_UNROLLED",
    "MAX_FORMULA_CHARS": "KERNLA_MAX_FORMULA_CHARS",
    "MAX_PRINT_CHARS": "KERNLA_MAX_PRINT_CHARS",
}


def how_to_raise(name: str) -> str:
    """The sentence telling how to raise limit ``name``.

    >>> how_to_raise("MAX_UNROLLED")
    'MAX_UNROLLED: set the environment variable KERNLA_MAX_UNROLLED or kernla.formula.limits.MAX_UNROLLED to raise it'
    """
    return f"{name}: set the environment variable {_VARIABLES[name]} or kernla.formula.limits.{name} to raise it"


def check_dim(dim: int, what: str) -> None:
    """FormulaError when ``dim`` exceeds :data:`MAX_DIM` (``what`` names the dimension)."""
    if dim > MAX_DIM:
        raise FormulaError(f"{what} {dim} exceeds the limit of {MAX_DIM} ({how_to_raise('MAX_DIM')})")
