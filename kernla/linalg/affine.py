"""``scale · K + shift · I``: the one place where a kernel operator's scaling and shift act.

A :class:`~kernla.linalg.KernelOperator` is a kernel matrix K (its formula and data, never
scaled) and one :class:`Affine` map. Multiplying the operator by a number or adding
``alpha · I`` makes a new Affine and keeps K; every product, entry, diagonal and dense matrix
goes through the Affine's methods, which skip the multiplications by 1 and additions of 0.

>>> import numpy as np
>>> A = Affine().times(2.0).plus(0.5)
>>> A, A.product(np.ones(2), np.full(2, 10.0))
(Affine(scale=2.0, shift=0.5), array([7., 7.]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Affine:
    """The map ``K ↦ scale · K + shift · I``."""

    scale: float = 1.0
    shift: float = 0.0

    def times(self, c: float) -> Affine:
        """``c · (scale · K + shift · I)``."""
        return Affine(self.scale * c, self.shift * c)

    def plus(self, alpha: float) -> Affine:
        """``scale · K + (shift + alpha) · I``."""
        return Affine(self.scale, self.shift + alpha)

    def entries(self, values: Any) -> Any:
        """``scale · values`` for entries of K away from the diagonal shift (blocks, columns, pairs)."""
        return values * self.scale if self.scale != 1.0 else values

    def product(self, KV: Any, V: Any) -> Any:
        """``scale · KV + shift · V``: the operator's product from K's product ``KV`` with ``V``.

        ``V`` may be a number: ``product(d, 1.0)`` is the diagonal from K's diagonal ``d``.
        """
        out = self.entries(KV)
        return out + self.shift * V if self.shift != 0.0 else out

    def dense(self, D: Any, identity: Any) -> Any:
        """The operator's dense matrix from K's dense matrix ``D``; ``identity()`` builds the n×n I.

        The identity is only built for a non-zero shift.

        >>> import numpy as np
        >>> Affine(2.0, 1.0).dense(np.ones((2, 2)), lambda: np.eye(2))
        array([[3., 2.],
               [2., 3.]])
        """
        return self.product(D, identity() if self.shift != 0.0 else 0.0)

    def describe(self, text: str) -> str:
        """``text`` (K's formula) with the scale and shift written around it."""
        if self.scale != 1.0:
            text = f"{self.scale:g} * ({text})"
        if self.shift != 0.0:
            text = f"{text} + {self.shift:g} * I"
        return text
