"""kernla's exception classes.

Every error kernla raises on bad input is one of these; each subclasses the built-in
exception a user would expect (``ValueError`` or ``TypeError``), so ``except ValueError``
keeps working.

>>> from kernla.errors import FormulaError
>>> issubclass(FormulaError, ValueError)
True
"""

from __future__ import annotations


class KernlaError(Exception):
    """Base class of all kernla errors."""


class FormulaError(KernlaError, ValueError):
    """A formula is malformed: unknown operation or alias, bad arity, dimension mismatch."""


class FormulaSyntaxError(FormulaError):
    """A formula string cannot be parsed; the message names the offending text and its position."""

    def __init__(self, message: str, text: str = "", position: int | None = None):
        if position is not None and text:
            message = f"{message} at position {position}:\n  {text}\n  {' ' * position}^"
        super().__init__(message)
        self.text = text
        self.position = position


class ShapeError(KernlaError, ValueError):
    """Arrays do not match the formula: wrong number, wrong dimension, empty, inconsistent sizes."""


class InputValueError(KernlaError, ValueError):
    """An input holds values kernla refuses: NaN in data, non-finite parameters."""


class ArgumentTypeError(KernlaError, TypeError):
    """An argument of the wrong type: a number where a formula or a list of aliases is due, an unknown keyword."""


class DTypeError(KernlaError, TypeError):
    """Arrays of mixed or unsupported dtypes."""


class ArrayKindError(KernlaError, TypeError):
    """Arrays of different kinds (NumPy with torch) or on different devices."""


class BackendError(KernlaError, RuntimeError):
    """A requested backend is unavailable on this machine."""
