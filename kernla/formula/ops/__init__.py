"""The operations registry: one entry per operation, and nothing about operations elsewhere.

The registry core (:class:`OpSpec`, ``OPS``, :func:`get_op`) lives in :mod:`.registry`; each
family module registers its operations when imported: :mod:`.arithmetic` (``+ - * /``, negation),
:mod:`.elementwise` (powers, exp/log, trigonometry), :mod:`.piecewise` (steps, rounding, clamps,
comparisons), :mod:`.vector` (sums, extrema, norms, distances), :mod:`.components` (selection,
concatenation), :mod:`.matrix` (small matrix products) and :mod:`.tensordot` (tensor contractions).
Adding an operation is adding one ``register(OpSpec(...))`` call to its family.

>>> get_op("SqDist").output_dim((3, 3), ())
1
>>> sorted(OPS)[:4]
['Abs', 'Acos', 'Add', 'ArgMax']
"""

from . import arithmetic, components, elementwise, matrix, piecewise, tensordot, vector  # noqa: F401  (they register)
from .registry import OPS, CExprs, OpSpec, get_op, operation_names, register

__all__ = ["OPS", "CExprs", "OpSpec", "get_op", "operation_names", "register"]
