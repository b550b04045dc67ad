"""The log-sum-exp family, with a running maximum ``m`` (stable for any magnitude):

- ``LogSumExp``: ``log Σ_j exp(F_ij)``, component-wise for a vector formula;
- ``LogSumExpWeight``: ``log Σ_j exp(F_ij) G_ij`` (F scalar, weights G of any dimension);
- ``SumSoftMaxWeight``: ``Σ_j exp(F_ij) G_ij / Σ_j exp(F_ij)``.

An infinite term dominates (``LogSumExp`` is ``+inf``, ``SumSoftMaxWeight`` the mean weight of the
infinite terms: ``exp(inf - inf)`` counts as 1); a NaN value makes the row NaN.

>>> import numpy as np
>>> from kernla.formula import Vj
>>> from kernla.reductions import Reduction
>>> red = Reduction("LogSumExp", Vj(0, 1))
>>> st = red.np_init(1, np.float64); red.np_update(st, np.log([[[1.0], [3.0]]]), None, 0)
>>> red.np_finalize(st, np.float64)[0].round(6).tolist()       # log(1 + 3)
[[1.386294]]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..formula.tree import Node, call
from .base import CAccumulator, Field, ReductionKind, lines, register
from .reduction import Reduction


def _exp_below(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """exp(a - m) for a <= m, with the log-sum-exp conventions exp(inf - inf) = 1, exp(-inf - -inf) = 0.

    So an infinite term dominates. The C snippets below implement the same rule.
    """
    return np.where(a == m, (a > -np.inf).astype(np.float64), np.exp(a - m))


class _LogSumExpFamily(ReductionKind):
    two_level = True
    gradient: str | None = "pairwise"
    #: keeps the softmax denominator Σ_j exp(F_ij - m) too
    softmax = False

    def _dims(self, red: Reduction) -> tuple[int, int]:
        """(components of the running maximum, components of the scaled sums)."""
        if red.weight is not None:
            return 1, red.weight.dim
        return red.formula.dim, red.formula.dim

    def output_dims(self, red: Reduction) -> list[tuple[int, str]]:
        return [(self._dims(red)[1], "float")]

    def fields(self, red: Reduction) -> tuple[Field, ...]:
        mdim, e = self._dims(red)
        return (Field("m", "TACC", mdim), Field("s", "TACC", e)) + ((Field("d", "TACC"),) if self.softmax else ())

    def registers(self, red: Reduction, single: bool) -> int:
        per = 2 + (0 if single else 1)  # + the float inner copy of two-level sums
        return per if red.weight is not None else 2 * per

    def np_init(self, red: Reduction, rows: int, dtype: np.dtype) -> dict:
        mdim, e = self._dims(red)
        state = {"m": np.full((rows, red.formula.dim), -np.inf), "s": np.zeros((rows, e))}
        if self.softmax:
            state["den"] = np.zeros((rows, 1))
        return state

    def np_update(self, red: Reduction, state: dict, f: np.ndarray, g: np.ndarray | None, j0: int) -> None:
        # NaN values are not maxima, they poison s
        with np.errstate(over="ignore", invalid="ignore"):
            m_new = np.fmax(state["m"], np.fmax.reduce(f, axis=1))
            scale = _exp_below(state["m"], m_new)
            ex = _exp_below(f, m_new[:, None, :])  # (rows, tile, D or 1)
            terms = ex if g is None else ex * g
            state["s"] = state["s"] * scale + terms.sum(axis=1, dtype=np.float64)
            if self.softmax:
                state["den"] = state["den"] * scale + ex.sum(axis=1, dtype=np.float64)
        state["m"] = m_new

    def np_finalize(self, red: Reduction, state: dict, dtype: np.dtype) -> list[np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.softmax:
                return [(state["s"] / state["den"]).astype(dtype)]
            return [(state["m"] + np.log(state["s"])).astype(dtype)]

    def c_accumulator(self, red: Reduction, p: str) -> CAccumulator:
        mdim, e = self._dims(red)
        weighted, soft = red.weight is not None, self.softmax

        def comps(k: int) -> range:
            return range(e) if weighted else range(k, k + 1)

        def step(k: int, x: str, otherwise: str, term: Callable[[int], str], den: str) -> str:
            """Fold ``x`` (its sums' terms ``term(c)``, its softmax denominator ``den``) into component k."""
            m = f"{p}_m[{k}]"
            grow = " ".join(f"{p}_s[{c}] = {p}_s[{c}] * kl_sc + {term(c)};" for c in comps(k))
            add = " ".join(f"{p}_s[{c}] += {term(c)} * kl_ex;" for c in comps(k))
            if soft:
                grow += f" {p}_d = {p}_d * kl_sc + {den};"
                add += f" {p}_d += {den} * kl_ex;"
            return (
                f"if ({x} > {m}) {{ TACC kl_sc = kl_exp({m} - {x}); {grow} {m} = {x}; }} "
                f"else if ({otherwise}) {{ TACC kl_ex = {x} == {m} ? TACC(1) : kl_exp({x} - {m}); {add} }}"
            )

        def update(v, w, j):
            def weight(c: int) -> str:
                return f"TACC({w[c]})" if weighted else "TACC(1)"

            # a NaN value is no maximum but must reach the sums (it makes the row NaN)
            return lines(
                *(
                    step(k, f"TACC({v[k]})", f"{p}_m[{k}] != TACC(-KL_INF) || {v[k]} != {v[k]}", weight, "TACC(1)")
                    for k in range(mdim)
                )
            )

        def merge(q):
            return lines(
                *(
                    step(k, f"{q}_m[{k}]", f"{q}_m[{k}] != TACC(-KL_INF)", lambda c: f"{q}_s[{c}]", f"{q}_d")
                    for k in range(mdim)
                )
            )

        def finalize(of, oi):
            if soft:
                return lines(*(f"{of}[{c}] = T({p}_s[{c}] / {p}_d);" for c in range(e)))
            if weighted:
                return lines(*(f"{of}[{c}] = T({p}_m[0] + kl_log({p}_s[{c}]));" for c in range(e)))
            return lines(*(f"{of}[{k}] = T({p}_m[{k}] + kl_log({p}_s[{k}]));" for k in range(e)))

        init = lines(
            *(f"{p}_m[{k}] = TACC(-KL_INF);" for k in range(mdim)),
            *(f"{p}_s[{c}] = TACC(0);" for c in range(e)),
            f"{p}_d = TACC(0);" if soft else "",
        )
        return CAccumulator(self.fields(red), p, init, update, merge, finalize)


class LogSumExp(_LogSumExpFamily):
    name = "LogSumExp"
    vector_fold = "logsumexp"
    doc = "log Σ_j exp(F_ij), component-wise, stable"

    def grad_seeds(
        self, red: Reduction, cotangent: Node, output: Callable[[], Node], extra: Callable[[Reduction], Node]
    ) -> list[tuple[Node, Node]]:
        return [(red.formula, cotangent * call("Exp", red.formula - output()))]


class LogSumExpWeight(_LogSumExpFamily):
    name = "LogSumExpWeight"
    needs_weight = True
    needs_scalar = True
    doc = "log Σ_j exp(F_ij) G_ij (F scalar)"

    def grad_seeds(
        self, red: Reduction, cotangent: Node, output: Callable[[], Node], extra: Callable[[Reduction], Node]
    ) -> list[tuple[Node, Node]]:
        assert red.weight is not None  # checked by Reduction
        P = call("Exp", red.formula - output())  # exp(F - L_c), one per weight component
        return [(red.formula, call("Sum", cotangent * P * red.weight)), (red.weight, cotangent * P)]


class SumSoftMaxWeight(_LogSumExpFamily):
    name = "SumSoftMaxWeight"
    needs_weight = True
    needs_scalar = True
    softmax = True
    doc = "Σ_j exp(F_ij) G_ij / Σ_j exp(F_ij) (F scalar)"

    def grad_seeds(
        self, red: Reduction, cotangent: Node, output: Callable[[], Node], extra: Callable[[Reduction], Node]
    ) -> list[tuple[Node, Node]]:
        assert red.weight is not None  # checked by Reduction
        P = call("Exp", red.formula - extra(Reduction("LogSumExp", red.formula)))
        out = output()
        return [(red.weight, cotangent * P), (red.formula, P * call("Scalprod", cotangent, red.weight - out))]


class _MaxSumShiftExp(_LogSumExpFamily):
    """pykeops' raw pair: the running maximum ``m_i = max_j F_ij`` then ``Σ_j exp(F_ij - m_i) G_ij``.

    One output row ``[m, s_1, …, s_E]`` (``G = 1`` without a weight, so ``[m, s]``); ``m + log s`` is
    the log-sum-exp. Not differentiable (pykeops differentiates the log-sum-exp itself).
    """

    needs_scalar = True
    splits_components = False  # the maximum leads every output row: no chunk can omit it
    gradient = None

    def output_dims(self, red: Reduction) -> list[tuple[int, str]]:
        return [(1 + self._dims(red)[1], "float")]

    def np_finalize(self, red: Reduction, state: dict, dtype: np.dtype) -> list[np.ndarray]:
        return [np.concatenate([state["m"], state["s"]], axis=1).astype(dtype)]

    def c_accumulator(self, red: Reduction, p: str) -> CAccumulator:
        acc = super().c_accumulator(red, p)
        e = self._dims(red)[1]

        def finalize(of: str, oi: str) -> str:
            return lines(f"{of}[0] = T({p}_m[0]);", *(f"{of}[{1 + c}] = T({p}_s[{c}]);" for c in range(e)))

        return CAccumulator(acc.fields, p, acc.init, acc.update, acc.merge, finalize)


class MaxSumShiftExp(_MaxSumShiftExp):
    name = "Max_SumShiftExp"
    doc = "[max_j F_ij, Σ_j exp(F_ij − max)] (F scalar; pykeops' raw pair)"


class MaxSumShiftExpWeight(_MaxSumShiftExp):
    name = "Max_SumShiftExpWeight"
    needs_weight = True
    doc = "[max_j F_ij, Σ_j exp(F_ij − max) G_ij] (F scalar)"


register(LogSumExp())
register(LogSumExpWeight())
register(SumSoftMaxWeight())
register(MaxSumShiftExp())
register(MaxSumShiftExpWeight())
