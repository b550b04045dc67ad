"""NumPy evaluation of a formula on broadcastable arrays (the reference semantics).

>>> import numpy as np
>>> from kernla.formula.tree import Vi, Vj, call
>>> x = np.array([[[0.0, 0.0]], [[1.0, 0.0]]])      # i-variable, shape (2, 1, 2)
>>> y = np.array([[[0.0, 1.0], [3.0, 4.0]]])        # j-variable, shape (1, 2, 2)
>>> evaluate(call("SqDist", Vi(0, 2), Vj(1, 2)), {0: x, 1: y})[..., 0]
array([[ 1., 25.],
       [ 2., 20.]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .ops import get_op
from .tree import Node


def evaluate(
    formula: Node, values: Mapping[int, np.ndarray] | Sequence[np.ndarray], dtype: np.dtype | None = None
) -> np.ndarray:
    """Evaluate ``formula`` with variable ``pos`` bound to ``values[pos]`` (shape ``(..., dim)``).

    Constants take ``dtype`` (default: the dtype of the first value). The result broadcasts the
    variables' leading axes and has ``formula.dim`` on the last axis.
    """
    if dtype is None:
        first = next(iter(values.values())) if isinstance(values, Mapping) else (values[0] if len(values) else None)
        dtype = first.dtype if first is not None else np.dtype(np.float64)
    memo: dict[int, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for node in formula.walk():
            if node.is_var:
                memo[id(node)] = values[node.params[0]]
            elif node.is_const:
                memo[id(node)] = np.full((1,), node.params[0], dtype=dtype)
            else:
                args = [memo[id(a)] for a in node.args]
                memo[id(node)] = np.asarray(get_op(node.op).numpy(*args, *node.params), dtype=dtype)
    return memo[id(formula)]
