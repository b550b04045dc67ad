"""Reductions: how the values F(x_i, y_j) of one row are combined over j.

Each reduction is one object in :data:`KINDS` (a :class:`ReductionKind`) that holds everything
about it: output shapes, the NumPy accumulator (``init`` / ``update`` one tile / ``finalize``,
tiles merged in order, so the NumPy engine and any tiled engine agree), the C accumulator
generated from its state :class:`Field` s, its gradient rule and the traits engines need. A
:class:`Reduction` applies a kind to a formula. Conventions shared by every engine:

- ``Sum`` accumulates in float64 for float32 data (pairwise within a tile, then across tiles);
- selections (``Min`` … ``KMin_ArgKMin``) ignore NaN values; ties go to the smallest index; see
  :mod:`kernla.reductions.selection`;
- the log-sum-exp family keeps a running maximum; see :mod:`kernla.reductions.logsumexp`.

Adding a reduction = one :class:`ReductionKind` subclass registered with :func:`register`
(``docs/architecture.md`` has a worked example).

>>> import numpy as np
>>> from kernla.formula import Vi, Vj, call
>>> r = Reduction("ArgKMin", call("SqDist", Vi(0, 1), Vj(1, 1)), K=2)
>>> r.output_dims()
[(2, 'index')]
"""

from .base import ALIASES, KINDS, CAccumulator, Field, ReductionKind, register
from .reduction import Reduction

# each module registers its reductions; this order is the order of REDUCTIONS (and of docs/reference.md), which
# isort would change: kept out of the sorted block; imported for the registration, so no name is used (F401)
from . import sums, selection, logsumexp  # noqa: F401  # isort: skip

#: the names of all registered reductions
REDUCTIONS = tuple(KINDS)

__all__ = ["ALIASES", "KINDS", "REDUCTIONS", "CAccumulator", "Field", "Reduction", "ReductionKind", "register"]
