"""A reduction applied to a formula: the kind (``Sum``, ``ArgKMin``, …), the formula, its weight and K.

>>> from kernla.formula import Vi, Vj, call
>>> r = Reduction("ArgKMin", call("SqDist", Vi(0, 1), Vj(1, 1)), K=2)
>>> r.output_dims(), r.kind.k_selection
([(2, 'index')], True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FormulaError
from ..formula.tree import CAT_J, Node, swap_ij
from .base import ALIASES, KINDS, WEIGHTED_ALIASES, CAccumulator, Field, ReductionKind


@dataclass(frozen=True)
class Reduction:
    """A reduction applied to a formula (and, for weighted ones, a weight formula ``weight``).

    Hashable: formulas are interned, so equal reductions compile to the same kernel. Everything
    that depends on which reduction this is comes from :attr:`kind`.
    """

    name: str
    formula: Node
    weight: Node | None = None
    K: int | None = None

    def __post_init__(self) -> None:
        name = ALIASES.get(self.name, self.name)
        if self.weight is not None:
            name = WEIGHTED_ALIASES.get(name, name)
        object.__setattr__(self, "name", name)
        kind = KINDS.get(name)
        if kind is None:
            raise FormulaError(f"unknown reduction {self.name!r}; known: {', '.join(KINDS)}")
        if kind.needs_k:
            if not isinstance(self.K, (int, np.integer)) or isinstance(self.K, bool) or self.K < 1:
                raise FormulaError(f"{name} needs an integer K >= 1 (opt_arg), got {self.K!r}")
            object.__setattr__(self, "K", int(self.K))
        elif self.K is not None:
            raise FormulaError(f"{name} takes no K (opt_arg)")
        if kind.needs_weight and self.weight is None:
            raise FormulaError(f"{name} needs a weight formula (formula2)")
        if not kind.needs_weight and self.weight is not None:
            raise FormulaError(f"{name} takes no weight formula (formula2)")
        if kind.needs_scalar and self.formula.dim != 1:
            raise FormulaError(f"{name} needs a scalar formula, got dimension {self.formula.dim}")

    @property
    def kind(self) -> ReductionKind:
        """The reduction's definition: accumulators, gradient rule, engine traits."""
        return KINDS[self.name]

    @property
    def formulas(self) -> tuple[Node, ...]:
        """The formulas evaluated per pair: (F,) or (F, G)."""
        return (self.formula,) if self.weight is None else (self.formula, self.weight)

    def output_dims(self) -> list[tuple[int, str]]:
        """[(width, 'float' | 'index')] of each output array, per row."""
        return self.kind.output_dims(self)

    def state_fields(self) -> tuple[Field, ...]:
        """The variables of one row's C accumulator (what a split-j pass saves and reloads)."""
        return self.kind.fields(self)

    def with_indices(self) -> Reduction:
        """For a selection, the variant that also returns the selected indices (what autograd runs)."""
        if self.kind.with_indices is None:
            raise FormulaError(f"{self.name} selects no indices")
        return Reduction(self.kind.with_indices, self.formula, self.weight, self.K)

    def kernel_product(self) -> tuple[Node, Node] | None:
        """``(k, B)`` when this is Σ_j k(x_i, y_j) · B_j, k scalar and B a j-variable that k does not use.

        Compiled engines build one kernel per k that takes B's width at run time, so matvec and
        matmat with any number of columns share one compiled kernel.

        >>> from kernla.formula import Vi, Vj, call
        >>> k = call("Exp", -call("SqDist", Vi(0, 3), Vj(1, 3)))
        >>> Reduction("Sum", k * Vj(2, 4)).kernel_product()[1].params
        (2, 4, 1)
        """
        f = self.formula
        if not self.kind.kernel_products or f.op != "Mult":
            return None
        for k, b in (f.args, f.args[::-1]):
            if b.is_var and b.params[2] == CAT_J and k.dim == 1 and b not in set(k.variables()):
                return k, b
        return None

    def swap_ij(self) -> Reduction:
        """The same reduction with i- and j-variables exchanged (reduction over i)."""
        return Reduction(
            self.name, swap_ij(self.formula), None if self.weight is None else swap_ij(self.weight), self.K
        )

    # NumPy accumulators: the state is a dict of arrays for one block of rows
    def np_init(self, rows: int, dtype: np.dtype) -> dict:
        """The empty accumulator for ``rows`` rows."""
        return self.kind.np_init(self, rows, dtype)

    def np_update(self, state: dict, f: np.ndarray, g: np.ndarray | None, j0: int) -> None:
        """Fold one tile: ``f`` (rows, tile, D) values, ``g`` weights, ``j0`` first column index."""
        self.kind.np_update(self, state, f, g, j0)

    def np_finalize(self, state: dict, dtype: np.dtype) -> list[np.ndarray]:
        """The output arrays for these rows: one per :meth:`output_dims` entry."""
        return self.kind.np_finalize(self, state, dtype)

    def c_accumulator(self, p: str = "acc") -> CAccumulator:
        """C snippets for one row's accumulator, variables prefixed ``p``.

        ``p`` may be a member access (``"A.acc"``) when ``decl`` (written with a plain prefix)
        is placed in a struct: the snippets declare no variable named after ``p``.

        Types: ``T`` (values), ``TACC`` (sums), ``int64_t`` (indices); the engine's prelude
        defines ``KL_INF`` (``T`` infinity) and the ``kl_*`` maths functions.
        """
        return self.kind.c_accumulator(self, p)
