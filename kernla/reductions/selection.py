"""Selections: ``Min``, ``Max``, ``ArgMin``, ``ArgMax``, ``Min_ArgMin``, ``Max_ArgMax`` and the K-best
``KMin``, ``ArgKMin``, ``KMin_ArgKMin``, component by component.

NaN values are ignored; ties go to the smallest index; an index is ``-1`` when no value beats the
empty accumulator, whose value is the worst infinity (all NaN, or all ``+inf`` for a min, ``-inf``
for a max); ``-inf`` is a genuine minimum with its index. K-best outputs are laid out ``(K, D)`` per
row (k-major), sorted by increasing value.

>>> from kernla.formula import Vi, Vj, call
>>> from kernla.reductions import Reduction
>>> Reduction("KMin_ArgKMin", call("SqDist", Vi(0, 2), Vj(1, 2)), K=4).output_dims()
[(4, 'float'), (4, 'index')]
"""

from __future__ import annotations

import numpy as np

from .base import CAccumulator, Field, ReductionKind, lines, register
from .reduction import Reduction


class _Selection(ReductionKind):
    """Keeps, per component, the best value(s) and their column index(es)."""

    #: "min" or "max"
    direction: str = "min"
    #: what the reduction returns: values, indices, or both (values first)
    returns: tuple[str, ...] = ("val",)

    def __init__(self, name: str, direction: str, returns: tuple[str, ...], with_indices: str, doc: str):
        self.name, self.direction, self.returns, self.with_indices, self.doc = (
            name,
            direction,
            returns,
            with_indices,
            doc,
        )
        self.gradient = "selection" if "val" in returns else None  # integer outputs are not differentiable

    def width(self, red: Reduction) -> int:
        """Scalars per row of each output."""
        return red.formula.dim * (red.K or 1)

    def output_dims(self, red: Reduction) -> list[tuple[int, str]]:
        kinds = {"val": "float", "idx": "index"}
        return [(self.width(red), kinds[r]) for r in self.returns]

    def fields(self, red: Reduction) -> tuple[Field, ...]:
        n = self.width(red)
        return Field("v", "T", n), Field("i", "int64_t", n)

    def registers(self, red: Reduction, single: bool) -> int:
        return (2 if single else 1) + 2  # value + int64 index (K-best state lives in local memory)

    @property
    def worst(self) -> float:
        return np.inf if self.direction == "min" else -np.inf

    def np_init(self, red: Reduction, rows: int, dtype: np.dtype) -> dict:
        shape = (rows, red.K, red.formula.dim) if self.k_selection else (rows, red.formula.dim)
        return {"val": np.full(shape, self.worst, dtype), "idx": np.full(shape, -1, np.int64)}

    def _minimised(self, f: np.ndarray) -> np.ndarray:
        """Values to minimise: NaN made worst, signs flipped for a max."""
        v = np.where(np.isnan(f), self.worst, f)
        return v if self.direction == "min" else -v

    def np_update(self, red: Reduction, state: dict, f: np.ndarray, g: np.ndarray | None, j0: int) -> None:
        v = self._minimised(f)
        is_min = self.direction == "min"
        cur = state["val"] if is_min else -state["val"]
        k = v.argmin(axis=1)
        best = np.take_along_axis(v, k[:, None, :], 1)[:, 0, :]
        better = best < cur
        state["val"] = np.where(better, best if is_min else -best, state["val"])
        state["idx"] = np.where(better, k + j0, state["idx"])

    def np_finalize(self, red: Reduction, state: dict, dtype: np.dtype) -> list[np.ndarray]:
        rows = state["val"].shape[0]
        val, idx = state["val"], np.where(state["val"] == self.worst, -1, state["idx"])
        out = {"val": val.reshape(rows, -1).astype(dtype), "idx": idx.reshape(rows, -1)}
        return [out[r] for r in self.returns]

    def c_accumulator(self, red: Reduction, p: str) -> CAccumulator:
        d = red.formula.dim
        rng = range(d)
        cmp, start = ("<", "KL_INF") if self.direction == "min" else (">", "(-KL_INF)")
        fin_v, fin_i = "val" in self.returns, "idx" in self.returns
        return CAccumulator(
            fields=self.fields(red),
            prefix=p,
            init=lines(*(f"{p}_v[{k}] = {start}; {p}_i[{k}] = -1;" for k in rng)),
            update=lambda v, w, j: lines(
                *(f"if ({v[k]} {cmp} {p}_v[{k}]) {{ {p}_v[{k}] = {v[k]}; {p}_i[{k}] = {j}; }}" for k in rng)
            ),
            merge=lambda q: lines(
                *(
                    f"if ({q}_v[{k}] {cmp} {p}_v[{k}]) {{ {p}_v[{k}] = {q}_v[{k}]; {p}_i[{k}] = {q}_i[{k}]; }}"
                    for k in rng
                )
            ),
            finalize=lambda of, oi: lines(
                *(
                    (f"{of}[{k}] = {p}_v[{k}];" if fin_v else "") + (f" {oi}[{k}] = {p}_i[{k}];" if fin_i else "")
                    for k in rng
                )
            ),
        )


class _KSelection(_Selection):
    """The K smallest values per component, sorted, with their indices (insertion into a sorted list)."""

    needs_k = True
    k_selection = True

    def np_update(self, red: Reduction, state: dict, f: np.ndarray, g: np.ndarray | None, j0: int) -> None:
        v = self._minimised(f)
        vals = np.concatenate([state["val"], v], axis=1)
        j = np.broadcast_to(np.arange(j0, j0 + f.shape[1])[None, :, None], v.shape)
        idx = np.concatenate([state["idx"], j], axis=1)
        order = np.argsort(vals, axis=1, kind="stable")[:, : red.K]
        state["val"] = np.take_along_axis(vals, order, 1)
        state["idx"] = np.take_along_axis(idx, order, 1)

    def c_accumulator(self, red: Reduction, p: str) -> CAccumulator:
        d, K = red.formula.dim, red.K
        assert K is not None  # checked by Reduction
        rng = range(d)

        def insert(value: str, index: str, k: int) -> str:
            return (
                f"if ({value} < {p}_v[{(K - 1) * d + k}]) {{ int q = {K - 1}; "
                f"while (q > 0 && {value} < {p}_v[(q - 1) * {d} + {k}]) {{ "
                f"{p}_v[q * {d} + {k}] = {p}_v[(q - 1) * {d} + {k}]; "
                f"{p}_i[q * {d} + {k}] = {p}_i[(q - 1) * {d} + {k}]; q--; }} "
                f"{p}_v[q * {d} + {k}] = {value}; {p}_i[q * {d} + {k}] = {index}; }}"
            )

        fin_v, fin_i = "val" in self.returns, "idx" in self.returns
        n = K * d
        return CAccumulator(
            fields=self.fields(red),
            prefix=p,
            init=f"for (int q = 0; q < {n}; q++) {{ {p}_v[q] = KL_INF; {p}_i[q] = -1; }}",
            update=lambda v, w, j: lines(*(insert(v[k], j, k) for k in rng)),
            merge=lambda q: lines(
                *(
                    f"for (int r = 0; r < {K}; r++) {{ T kl_qx = {q}_v[r * {d} + {k}]; "
                    f"int64_t kl_qy = {q}_i[r * {d} + {k}]; {insert('kl_qx', 'kl_qy', k)} }}"
                    for k in rng
                )
            ),
            finalize=lambda of, oi: (
                f"for (int q = 0; q < {n}; q++) {{ "
                + (f"{of}[q] = {p}_v[q]; " if fin_v else "")
                + (f"{oi}[q] = {p}_i[q]; " if fin_i else "")
                + "}"
            ),
        )


_VAL, _IDX, _BOTH = ("val",), ("idx",), ("val", "idx")
register(_Selection("Min", "min", _VAL, "Min_ArgMin", "min_j F_ij"))
register(_Selection("Max", "max", _VAL, "Max_ArgMax", "max_j F_ij"))
register(_Selection("ArgMin", "min", _IDX, "Min_ArgMin", "argmin_j F_ij (int64)"))
register(_Selection("ArgMax", "max", _IDX, "Max_ArgMax", "argmax_j F_ij (int64)"))
register(_Selection("Min_ArgMin", "min", _BOTH, "Min_ArgMin", "min and argmin"))
register(_Selection("Max_ArgMax", "max", _BOTH, "Max_ArgMax", "max and argmax"))
register(_KSelection("KMin", "min", _VAL, "KMin_ArgKMin", "the K smallest values, sorted"))
register(_KSelection("ArgKMin", "min", _IDX, "KMin_ArgKMin", "indices of the K smallest values (int64)"))
register(_KSelection("KMin_ArgKMin", "min", _BOTH, "KMin_ArgKMin", "K smallest values and their indices"))
