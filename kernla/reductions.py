"""Reductions: how the values F(x_i, y_j) of one row are combined over j.

Each reduction is defined once here, as an accumulator with ``init`` / ``update`` (one tile of
values) / ``finalize``, in NumPy; tiles are merged in order, so the NumPy engine and any tiled
engine agree. Conventions shared by every engine:

- ``Sum`` accumulates in float64 for float32 data (pairwise within a tile, then across tiles);
- ``Min``/``Max``/``ArgMin``/``ArgMax``/``KMin`` ignore NaN values; ties go to the smallest index;
  an index is ``-1`` when no value beats the empty accumulator, whose value is the reduction's
  worst infinity (all NaN, or all ``+inf`` for a min, ``-inf`` for a max); ``-inf`` is a genuine
  minimum with its index;
- ``KMin`` outputs are laid out ``(K, D)`` per row (k-major), sorted by increasing value;
- ``LogSumExp`` keeps a running maximum (stable for any magnitude); for a vector formula it works
  component-wise; ``LogSumExpWeight`` / ``SumSoftMaxWeight`` need a scalar formula and weights
  ``G`` of any dimension: ``log Σ_j exp(F_ij) G_ij`` and ``Σ_j exp(F_ij) G_ij / Σ_j exp(F_ij)``;
  an infinite term dominates (``LogSumExp`` is ``+inf``, ``SumSoftMaxWeight`` the mean weight of
  the infinite terms); a NaN value makes the row NaN.

>>> import numpy as np
>>> from kernla.formula import Vi, Vj, call
>>> r = Reduction("ArgKMin", call("SqDist", Vi(0, 1), Vj(1, 1)), K=2)
>>> r.output_dims()
[(2, 'index')]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

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
#: the reductions that select values (by name: "SumSoftMaxWeight" also contains "Max")
_SELECTING = ("Min", "Max", "ArgMin", "ArgMax", "Min_ArgMin", "Max_ArgMax", "KMin", "ArgKMin", "KMin_ArgKMin")
_ALIASES = {"Max_SumShiftExp": "LogSumExp", "Max_SumShiftExpWeight": "LogSumExpWeight",
            "SoftMax": "SumSoftMaxWeight"}


def _exp_below(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """exp(a - m) for a <= m, with the log-sum-exp conventions exp(inf - inf) = 1, exp(-inf - -inf) = 0.

    So an infinite term dominates: LogSumExp gives +inf and SumSoftMaxWeight the mean weight of
    the infinite terms. The C snippets below implement the same rule.
    """
    return np.where(a == m, (a > -np.inf).astype(np.float64), np.exp(a - m))


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

    def kernel_product(self) -> "tuple[Node, Node] | None":
        """``(k, B)`` when this is Σ_j k(x_i, y_j) · B_j, k scalar and B a j-variable that k does not use.

        Compiled engines build one kernel per k that takes B's width at run time, so matvec and
        matmat with any number of columns share one compiled kernel.

        >>> from kernla.formula import Vi, Vj, call
        >>> k = call("Exp", -call("SqDist", Vi(0, 3), Vj(1, 3)))
        >>> Reduction("Sum", k * Vj(2, 4)).kernel_product()[1].params
        (2, 4, 1)
        """
        from .formula.tree import CAT_J

        f = self.formula
        if self.name != "Sum" or f.op != "Mult":
            return None
        for k, b in (f.args, f.args[::-1]):
            if b.is_var and b.params[2] == CAT_J and k.dim == 1 and b not in set(k.variables()):
                return k, b
        return None

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
        if name in _SELECTING:
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
        # log-sum-exp family, with a running maximum m (NaN values are not maxima, they poison s)
        with np.errstate(over="ignore", invalid="ignore"):
            m_new = np.fmax(state["m"], np.fmax.reduce(f, axis=1))
            scale = _exp_below(state["m"], m_new)
            ex = _exp_below(f, m_new[:, None, :])  # (rows, tile, D or 1)
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
        if name in _SELECTING:
            val, idx = state["val"], state["idx"]
            worst = np.inf if "Min" in name else -np.inf
            idx = np.where(val == worst, -1, idx)
            if name.startswith("K") or name.startswith("ArgK"):
                val = val.reshape(rows, -1)
                idx = idx.reshape(rows, -1)
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

    # ---------------------------------------------------------------------------------------
    # C accumulators, shared by the compiled engines
    # ---------------------------------------------------------------------------------------
    def c_accumulator(self, p: str = "acc") -> "CAccumulator":
        """C snippets for one row's accumulator, variables prefixed ``p``.

        ``p`` may be a member access (``"A.acc"``) when ``decl`` (written with a plain prefix)
        is placed in a struct: the snippets declare no variable named after ``p``.

        Types: ``T`` (values), ``TACC`` (sums), ``int64_t`` (indices); the engine's prelude
        defines ``KL_INF`` (``T`` infinity) and the ``kl_*`` maths functions.
        """
        return _c_accumulator(self, p)


@dataclass(frozen=True)
class CAccumulator:
    """C code for one row's accumulator (see :meth:`Reduction.c_accumulator`).

    ``update(values, weights, j)`` folds the formula's component expressions for column ``j``;
    ``merge(q)`` folds another accumulator ``q`` that covers *later* columns (ties keep ours);
    ``finalize(out_f, out_i)`` writes the row's outputs through pointers to its first value and
    first index.
    """

    decl: str
    init: str
    update: Callable[[list, Optional[list], str], str]
    merge: Callable[[str], str]
    finalize: Callable[[str, str], str]


def _lines(*parts) -> str:
    return "\n".join(x for x in parts if x)


def _c_accumulator(red: "Reduction", p: str) -> CAccumulator:
    d, name, K = red.formula.dim, red.name, red.K
    rng = range(d)
    if name == "Sum":
        return CAccumulator(
            decl=f"TACC {p}_s[{d}];",
            init=_lines(*(f"{p}_s[{k}] = TACC(0);" for k in rng)),
            update=lambda v, w, j: _lines(*(f"{p}_s[{k}] += TACC({v[k]});" for k in rng)),
            merge=lambda q: _lines(*(f"{p}_s[{k}] += {q}_s[{k}];" for k in rng)),
            finalize=lambda of, oi: _lines(*(f"{of}[{k}] = T({p}_s[{k}]);" for k in rng)),
        )
    if name in ("Min", "ArgMin", "Min_ArgMin", "Max", "ArgMax", "Max_ArgMax"):
        cmp, start = ("<", "KL_INF") if "Min" in name else (">", "(-KL_INF)")
        fin_v = name in ("Min", "Max", "Min_ArgMin", "Max_ArgMax")
        fin_i = name.startswith("Arg") or "_" in name
        return CAccumulator(
            decl=f"T {p}_v[{d}]; int64_t {p}_i[{d}];",
            init=_lines(*(f"{p}_v[{k}] = {start}; {p}_i[{k}] = -1;" for k in rng)),
            update=lambda v, w, j: _lines(*(
                f"if ({v[k]} {cmp} {p}_v[{k}]) {{ {p}_v[{k}] = {v[k]}; {p}_i[{k}] = {j}; }}" for k in rng)),
            merge=lambda q: _lines(*(
                f"if ({q}_v[{k}] {cmp} {p}_v[{k}]) {{ {p}_v[{k}] = {q}_v[{k}]; {p}_i[{k}] = {q}_i[{k}]; }}"
                for k in rng)),
            finalize=lambda of, oi: _lines(*(
                (f"{of}[{k}] = {p}_v[{k}];" if fin_v else "") + (f" {oi}[{k}] = {p}_i[{k}];" if fin_i else "")
                for k in rng)),
        )
    if name in ("KMin", "ArgKMin", "KMin_ArgKMin"):
        def insert(value: str, index: str, k: int) -> str:
            return (f"if ({value} < {p}_v[{(K - 1) * d + k}]) {{ int q = {K - 1}; "
                    f"while (q > 0 && {value} < {p}_v[(q - 1) * {d} + {k}]) {{ "
                    f"{p}_v[q * {d} + {k}] = {p}_v[(q - 1) * {d} + {k}]; "
                    f"{p}_i[q * {d} + {k}] = {p}_i[(q - 1) * {d} + {k}]; q--; }} "
                    f"{p}_v[q * {d} + {k}] = {value}; {p}_i[q * {d} + {k}] = {index}; }}")
        fin_v, fin_i = name != "ArgKMin", name != "KMin"
        n = K * d
        return CAccumulator(
            decl=f"T {p}_v[{n}]; int64_t {p}_i[{n}];",
            init=f"for (int q = 0; q < {n}; q++) {{ {p}_v[q] = KL_INF; {p}_i[q] = -1; }}",
            update=lambda v, w, j: _lines(*(insert(v[k], j, k) for k in rng)),
            merge=lambda q: _lines(*(f"for (int r = 0; r < {K}; r++) {{ T kl_qx = {q}_v[r * {d} + {k}]; "
                                     f"int64_t kl_qy = {q}_i[r * {d} + {k}]; {insert('kl_qx', 'kl_qy', k)} }}"
                                     for k in rng)),
            finalize=lambda of, oi: (f"for (int q = 0; q < {n}; q++) {{ "
                                     + (f"{of}[q] = {p}_v[q]; " if fin_v else "")
                                     + (f"{oi}[q] = {p}_i[q]; " if fin_i else "") + "}"),
        )
    # log-sum-exp family: running maximum m, scaled sums s (and the softmax denominator)
    e = red.weight.dim if red.weight is not None else d
    mdim = 1 if red.weight is not None else d
    soft = name == "SumSoftMaxWeight"

    def update(v, w, j):
        out = []
        for k in range(mdim):
            m = f"{p}_m[{k}]"
            comps = range(e) if red.weight is not None else [k]
            wt = (lambda c: f"TACC({w[c]})") if red.weight is not None else (lambda c: "TACC(1)")
            grow = " ".join(f"{p}_s[{c}] = {p}_s[{c}] * kl_sc + {wt(c)};" for c in comps)
            add = " ".join(f"{p}_s[{c}] += kl_ex * {wt(c)};" for c in comps)
            if soft:
                grow += f" {p}_d = {p}_d * kl_sc + TACC(1);"
                add += f" {p}_d += kl_ex;"
            out.append(f"if (TACC({v[k]}) > {m}) {{ TACC kl_sc = kl_exp({m} - TACC({v[k]})); {grow} {m} = TACC({v[k]}); }} "
                       f"else if ({m} != TACC(-KL_INF) || {v[k]} != {v[k]}) {{ "
                       f"TACC kl_ex = TACC({v[k]}) == {m} ? TACC(1) : kl_exp(TACC({v[k]}) - {m}); {add} }}")
        return _lines(*out)

    def merge(q):
        out = []
        for k in range(mdim):
            m, qm = f"{p}_m[{k}]", f"{q}_m[{k}]"
            comps = range(e) if red.weight is not None else [k]
            grow = " ".join(f"{p}_s[{c}] = {p}_s[{c}] * kl_sc + {q}_s[{c}];" for c in comps)
            add = " ".join(f"{p}_s[{c}] += {q}_s[{c}] * kl_ex;" for c in comps)
            if soft:
                grow += f" {p}_d = {p}_d * kl_sc + {q}_d;"
                add += f" {p}_d += {q}_d * kl_ex;"
            out.append(f"if ({qm} > {m}) {{ TACC kl_sc = kl_exp({m} - {qm}); {grow} {m} = {qm}; }} "
                       f"else if ({qm} != TACC(-KL_INF)) {{ TACC kl_ex = {qm} == {m} ? TACC(1) : kl_exp({qm} - {m}); {add} }}")
        return _lines(*out)

    def finalize(of, oi):
        if soft:
            return _lines(*(f"{of}[{c}] = T({p}_s[{c}] / {p}_d);" for c in range(e)))
        if red.weight is not None:
            return _lines(*(f"{of}[{c}] = T({p}_m[0] + kl_log({p}_s[{c}]));" for c in range(e)))
        return _lines(*(f"{of}[{k}] = T({p}_m[{k}] + kl_log({p}_s[{k}]));" for k in range(d)))

    return CAccumulator(
        decl=f"TACC {p}_m[{mdim}]; TACC {p}_s[{e}];" + (f" TACC {p}_d;" if soft else ""),
        init=_lines(*(f"{p}_m[{k}] = TACC(-KL_INF);" for k in range(mdim)),
                    *(f"{p}_s[{c}] = TACC(0);" for c in range(e)), f"{p}_d = TACC(0);" if soft else ""),
        update=update, merge=merge, finalize=finalize,
    )
