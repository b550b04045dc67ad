"""``Sum``: Σ_j F_ij, accumulated in float64 for float32 data (pairwise within a tile, then across tiles).

>>> import numpy as np
>>> from kernla.formula import Vi, Vj
>>> from kernla.reductions import Reduction
>>> red = Reduction("Sum", Vi(0, 1) * Vj(1, 1))
>>> st = red.np_init(1, np.float64); red.np_update(st, np.array([[[1.0], [2.0]]]), None, 0)
>>> red.np_finalize(st, np.float64)[0].tolist()
[[3.0]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..formula.tree import Node
from .base import CAccumulator, Field, ReductionKind, lines, register
from .reduction import Reduction


class Sum(ReductionKind):
    name = "Sum"
    two_level = True
    vector_fold = "sum"
    kernel_products = True
    gradient = "pairwise"
    doc = "Σ_j F_ij (float64 accumulation for float32 data)"

    def output_dims(self, red: Reduction) -> list[tuple[int, str]]:
        return [(red.formula.dim, "float")]

    def fields(self, red: Reduction) -> tuple[Field, ...]:
        return (Field("s", "TACC", red.formula.dim),)

    def registers(self, red: Reduction, single: bool) -> int:
        return 2 + (0 if single else 1)  # + the float inner copy of two-level sums

    def np_init(self, red: Reduction, rows: int, dtype: np.dtype) -> dict:
        return {"acc": np.zeros((rows, red.formula.dim))}

    def np_update(self, red: Reduction, state: dict, f: np.ndarray, g: np.ndarray | None, j0: int) -> None:
        state["acc"] += f.sum(axis=1, dtype=np.float64)

    def np_finalize(self, red: Reduction, state: dict, dtype: np.dtype) -> list[np.ndarray]:
        return [state["acc"].astype(dtype)]

    def c_accumulator(self, red: Reduction, p: str) -> CAccumulator:
        rng = range(red.formula.dim)
        return CAccumulator(
            fields=self.fields(red),
            prefix=p,
            init=lines(*(f"{p}_s[{k}] = TACC(0);" for k in rng)),
            update=lambda v, w, j: lines(*(f"{p}_s[{k}] += TACC({v[k]});" for k in rng)),
            merge=lambda q: lines(*(f"{p}_s[{k}] += {q}_s[{k}];" for k in rng)),
            finalize=lambda of, oi: lines(*(f"{of}[{k}] = T({p}_s[{k}]);" for k in rng)),
        )

    def grad_seeds(
        self, red: Reduction, cotangent: Node, output: Callable[[], Node], extra: Callable[[Reduction], Node]
    ) -> list[tuple[Node, Node]]:
        return [(red.formula, cotangent)]


register(Sum())
