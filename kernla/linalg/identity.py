"""``ScaledIdentity``: ``scale · I`` as a LinearOperator, for writing ``K + alpha * eye(n)``.

>>> import numpy as np
>>> (2.0 * eye(3)) @ np.ones(3)
array([2., 2., 2.])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse.linalg import LinearOperator

from ..errors import ShapeError
from ._compute import finite_number, is_number


class ScaledIdentity(LinearOperator):
    """``scale * I`` of size n; ``K + alpha * eye(n)`` shifts a :class:`~kernla.linalg.KernelOperator`.

    >>> I = eye(3)
    >>> (2.0 * I) @ np.ones(3)
    array([2., 2., 2.])
    """

    def __init__(self, n: int, scale: float = 1.0, dtype: Any = np.float64):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ShapeError(f"the identity needs a positive integer size, got {n!r}")
        self.scale = finite_number(scale, "the identity's scale")
        super().__init__(np.dtype(dtype), (int(n), int(n)))

    def _matvec(self, x):
        return self.scale * x

    def _matmat(self, X):
        return self.scale * X

    def _adjoint(self):
        return self

    def _transpose(self):
        return self

    def __mul__(self, x):
        if is_number(x):
            return ScaledIdentity(self.shape[0], self.scale * float(x), self.dtype)
        return super().__mul__(x)

    def __rmul__(self, x):
        if is_number(x):
            return ScaledIdentity(self.shape[0], self.scale * float(x), self.dtype)
        return super().__rmul__(x)

    def __neg__(self):
        return ScaledIdentity(self.shape[0], -self.scale, self.dtype)

    def __add__(self, other):
        if callable(getattr(other, "shifted", None)):  # a KernelOperator absorbs the identity: K.shifted(scale)
            return other.__add__(self)
        return super().__add__(other)

    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} ScaledIdentity {self.scale:g} * I>"


def eye(n: int, dtype: Any = np.float64) -> ScaledIdentity:
    """The n×n identity as a LinearOperator, for writing ``K + alpha * eye(n)``.

    >>> eye(2).shape
    (2, 2)
    """
    return ScaledIdentity(n, 1.0, dtype)
