"""``ArrayKindOperator``: a scipy LinearOperator whose products keep torch tensors and CuPy arrays.

scipy's ``matvec`` / ``matmat`` / ``@`` wrappers call ``np.asarray`` on their argument, which
would copy a CuPy array to the host or refuse a torch tensor on a GPU. This base class sends
torch and CuPy arrays to the subclass's ``_apply(x, transpose)`` (which returns them in their
own kind) and everything else to scipy, with clearer shape errors than scipy's
"dimension mismatch".

>>> import numpy as np
>>> class Twice(ArrayKindOperator):
...     def __init__(self, n):
...         super().__init__(np.dtype(np.float64), (n, n))
...     def _matmat(self, X):
...         return 2 * X
...     _apply = _matmat
>>> Twice(2) @ np.ones(2)
array([2., 2.])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse.linalg import LinearOperator

from ..errors import ShapeError
from ._compute import is_foreign


class ArrayKindOperator(LinearOperator):
    """A LinearOperator that routes torch / CuPy arrays to ``_apply(x, transpose=False)``."""

    def _apply(self, x: Any, transpose: bool = False) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def _check_rows(self, x: Any, transpose: bool, matrix: bool) -> None:
        """A clear ShapeError (scipy says only 'dimension mismatch')."""
        shape = getattr(x, "shape", None)
        if shape is None:
            return
        rows = self.shape[0 if transpose else 1]
        ok = len(shape) == 2 and shape[0] == rows if matrix else shape in ((rows,), (rows, 1))
        if not ok:
            want = f"({rows}, k)" if matrix else f"({rows},) or ({rows}, 1)"
            raise ShapeError(
                f"a {self.shape[0]}x{self.shape[1]} operator{' transposed' if transpose else ''} "
                f"multiplies arrays of shape {want}, got {tuple(shape)}"
            )

    # torch / CuPy in → torch / CuPy out (scipy's wrappers would turn them into NumPy arrays)
    def matvec(self, x):
        self._check_rows(x, False, False)
        return self._apply(x) if is_foreign(x) else super().matvec(x)

    def matmat(self, X):
        self._check_rows(X, False, True)
        return self._apply(X) if is_foreign(X) else super().matmat(X)

    def rmatvec(self, x):
        self._check_rows(x, True, False)
        return self._apply(x, transpose=True) if is_foreign(x) else super().rmatvec(x)

    def rmatmat(self, X):
        self._check_rows(X, True, True)
        return self._apply(X, transpose=True) if is_foreign(X) else super().rmatmat(X)

    def dot(self, x):
        if is_foreign(x):
            return self._apply(x)
        if isinstance(x, (np.ndarray, list, tuple)):
            x = np.asarray(x)
            if x.ndim not in (1, 2) or x.shape[0] != self.shape[1]:
                raise ShapeError(
                    f"a {self.shape[0]}x{self.shape[1]} operator multiplies arrays of shape "
                    f"({self.shape[1]},) or ({self.shape[1]}, k), got {x.shape}"
                )
        return super().dot(x)

    def _rdot(self, x):
        if is_foreign(x):
            if len(x.shape) == 1:
                return self._apply(x, transpose=True)
            return self._apply(x.T, transpose=True).T
        return super()._rdot(x)
