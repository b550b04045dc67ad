"""Reductions: how the values F(x_i, y_j) of one row are combined over j.

Each reduction is defined once here, as an accumulator with ``init`` / ``update`` (one tile of
values) / ``finalize``, in NumPy; tiles are merged in order, so the NumPy engine and any tiled
engine agree. Conventions shared by every engine:

- ``Sum`` accumulates in float64 for float32 data (pairwise within a tile, then across tiles);
- ``Min``/``Max``/``ArgMin``/``ArgMax``/``KMin`` ignore NaN values; ties go to the smallest index;
  an index is ``-1`` when no finite candidate exists (all values ±inf or NaN);
- ``KMin`` outputs are laid out ``(K, D)`` per row (k-major), sorted by increasing value;
- ``LogSumExp`` keeps a running maximum (stable for any magnitude); for a vector formula it works
  component-wise; ``LogSumExpWeight`` / ``SumSoftMaxWeight`` need a scalar formula and weights
  ``G`` of any dimension: ``log Σ_j exp(F_ij) G_ij`` and ``Σ_j exp(F_ij) G_ij / Σ_j exp(F_ij)``.

>>> import numpy as np
>>> from kernla.formula import Vi, Vj, call
>>> r = Reduction("ArgKMin", call("SqDist", Vi(0, 1), Vj(1, 1)), K=2)
>>> r.output_dims()
[(2, 'index')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import FormulaError
from .formula.tree import Node

#: reduction name -> (needs K, needs a weight formula, outputs)
_KINDS = {
    "Sum": (False, False), "Min": (False, False), "Max": (False, False),
    "ArgMin": (False, False), "ArgMax": (False, False),
    "Min_ArgMin": (False, False), "Max_ArgMax": (False, False),
    "KMin": (True, False), "ArgKMin": (True, False), "KMin_ArgKMin": (True, False),
    "LogSumExp": (False, False), "LogSumExpWeight": (False, True), "SumSoftMaxWeight": (False, True),
}
REDUCTIONS = tuple(_KINDS)
_ALIASES = {"Max_SumShiftExp": "LogSumExp", "Max_SumShiftExpWeight": "LogSumExpWeight",
            "SoftMax": "SumSoftMaxWeight"}


@dataclass(frozen=True)
class Reduction:
    """A reduction applied to a formula (and, for weighted ones, a weight formula ``weight``).

    Hashable: formulas are interned, so equal reductions compile to the same kernel.
    """

    name: str
    formula: Node
    weight: Optional[Node] = None
    K: Optional[int] = None

    def __post_init__(self):
        name = _ALIASES.get(self.name, self.name)
        object.__setattr__(self, "name", name)
        if name not in _KINDS:
            raise FormulaError(f"unknown reduction {self.name!r}; known: {', '.join(REDUCTIONS)}")
        needs_k, needs_w = _KINDS[name]
        if needs_k:
            if not isinstance(self.K, (int, np.integer)) or isinstance(self.K, bool) or self.K < 1:
                raise FormulaError(f"{name} needs an integer K >= 1 (opt_arg), got {self.K!r}")
            object.__setattr__(self, "K", int(self.K))
        elif self.K is not None:
            raise FormulaError(f"{name} takes no K (opt_arg)")
        if needs_w and self.weight is None:
            raise FormulaError(f"{name} needs a weight formula (formula2)")
        if not needs_w and self.weight is not None:
            raise FormulaError(f"{name} takes no weight formula (formula2)")
        if needs_w and self.formula.dim != 1:
            raise FormulaError(f"{name} needs a scalar formula, got dimension {self.formula.dim}")

    @property
    def formulas(self) -> tuple[Node, ...]:
        """The formulas evaluated per pair: (F,) or (F, G)."""
        return (self.formula,) if self.weight is None else (self.formula, self.weight)

    def output_dims(self) -> list[tuple[int, str]]:
        """[(width, 'float' | 'index')] of each output array, per row."""
        d, k = self.formula.dim, self.K
        return {
            "Sum": [(d, "float")], "Min": [(d, "float")], "Max": [(d, "float")],
            "ArgMin": [(d, "index")], "ArgMax": [(d, "index")],
            "Min_ArgMin": [(d, "float"), (d, "index")], "Max_ArgMax": [(d, "float"), (d, "index")],
            "KMin": [(k * d if k else 0, "float")], "ArgKMin": [(k * d if k else 0, "index")],
            "KMin_ArgKMin": [(k * d if k else 0, "float"), (k * d if k else 0, "index")],
            "LogSumExp": [(d, "float")],
            "LogSumExpWeight": [(self.weight.dim if self.weight else 0, "float")],
            "SumSoftMaxWeight": [(self.weight.dim if self.weight else 0, "float")],
        }[self.name]

    def swap_ij(self) -> "Reduction":
        """The same reduction with i- and j-variables exchanged (reduction over i)."""
        from .formula.tree import swap_ij

        return Reduction(self.name, swap_ij(self.formula),
                         None if self.weight is None else swap_ij(self.weight), self.K)

    # ---------------------------------------------------------------------------------------
    # NumPy accumulators (state is a dict of arrays for one block of rows)
    # ---------------------------------------------------------------------------------------
    def np_init(self, rows: int, dtype: np.dtype) -> dict:
        d, name = self.formula.dim, self.name
        if name == "Sum":
            return {"acc": np.zeros((rows, d))}
        if name in ("Min", "ArgMin", "Min_ArgMin", "Max", "ArgMax", "Max_ArgMax"):
            start = np.inf if "Min" in name else -np.inf
            return {"val": np.full((rows, d), start, dtype), "idx": np.full((rows, d), -1, np.int64)}
        if name in ("KMin", "ArgKMin", "KMin_ArgKMin"):
            return {"val": np.full((rows, self.K, d), np.inf, dtype),
                    "idx": np.full((rows, self.K, d), -1, np.int64)}
        e = self.weight.dim if self.weight is not None else d
        state = {"m": np.full((rows, d), -np.inf), "s": np.zeros((rows, e))}
        if name == "SumSoftMaxWeight":
            state["den"] = np.zeros((rows, 1))
        return state

    def np_update(self, state: dict, f: np.ndarray, g: Optional[np.ndarray], j0: int) -> None:
        """Fold one tile: ``f`` (rows, tile, D) values, ``g`` weights, ``j0`` first column index."""
        name = self.name
        if name == "Sum":
            state["acc"] += f.sum(axis=1, dtype=np.float64)
            return
        if "Min" in name or "Max" in name:
            is_min = "Min" in name
            v = np.where(np.isnan(f), np.inf if is_min else -np.inf, f)
            if not is_min:
                v = -v
            if name.startswith("K") or name.startswith("ArgK"):
                vals = np.concatenate([state["val"], v], axis=1)
                j = np.broadcast_to(np.arange(j0, j0 + f.shape[1])[None, :, None], v.shape)
                idx = np.concatenate([state["idx"], j], axis=1)
                order = np.argsort(vals, axis=1, kind="stable")[:, : self.K]
                state["val"] = np.take_along_axis(vals, order, 1)
                state["idx"] = np.take_along_axis(idx, order, 1)
                return
            cur = state["val"] if is_min else -state["val"]
            k = v.argmin(axis=1)
            best = np.take_along_axis(v, k[:, None, :], 1)[:, 0, :]
            better = best < cur
            state["val"] = np.where(better, best if is_min else -best, state["val"])
            state["idx"] = np.where(better, k + j0, state["idx"])
            return
        # log-sum-exp family, with a running maximum
        m_tile = f.max(axis=1)
        m_new = np.fmax(state["m"], m_tile)
        finite = np.isfinite(m_new)
        shift = np.where(finite, m_new, 0.0)
        scale = np.where(finite, np.exp(np.where(finite, state["m"] - shift, 0.0)), 1.0)
        ex = np.exp(f - shift[:, None, :])  # (rows, tile, D or 1)
        if g is None:
            state["s"] = state["s"] * scale + ex.sum(axis=1, dtype=np.float64)
        else:
            state["s"] = state["s"] * scale + (ex * g).sum(axis=1, dtype=np.float64)
        if name == "SumSoftMaxWeight":
            state["den"] = state["den"] * scale + ex.sum(axis=1, dtype=np.float64)
        state["m"] = m_new

    def np_finalize(self, state: dict, dtype: np.dtype) -> list[np.ndarray]:
        """The output arrays for these rows: one per :meth:`output_dims` entry."""
        name = self.name
        rows = next(iter(state.values())).shape[0]
        if name == "Sum":
            return [state["acc"].astype(dtype)]
        if "Min" in name or "Max" in name:
            val, idx = state["val"], state["idx"]
            if name.startswith("K") or name.startswith("ArgK"):
                idx = np.where(np.isinf(val), -1, idx)
                val = val.reshape(rows, -1)
                idx = idx.reshape(rows, -1)
            else:
                idx = np.where(np.isinf(val), -1, idx)
            out = {"val": val.astype(dtype), "idx": idx}
            if name.startswith("Arg"):
                return [out["idx"]]
            if "_" in name:
                return [out["val"], out["idx"]]
            return [out["val"]]
        with np.errstate(divide="ignore", invalid="ignore"):
            if name == "SumSoftMaxWeight":
                return [(state["s"] / state["den"]).astype(dtype)]
            return [(state["m"] + np.log(state["s"])).astype(dtype)]
