"""What every reduction is made of: its accumulator state as fields, and the kind's interface.

A *kind* (one instance per reduction name: ``Sum``, ``ArgKMin``, …) holds everything about that
reduction: how many outputs of which width it returns, its NumPy accumulator (``np_init`` /
``np_update`` / ``np_finalize``), its C accumulator (state :class:`Field` s from which the C
declarations are generated, plus ``init`` / ``update`` / ``merge`` / ``finalize`` snippets), its
gradient rule and the traits engines ask about. Engines and autograd read these traits; no code
outside this package compares reduction names.

>>> from kernla.reductions import KINDS
>>> KINDS["ArgKMin"].k_selection, KINDS["Sum"].two_level
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..formula.tree import Node

if TYPE_CHECKING:
    from .reduction import Reduction

#: C types of state fields: values (``T``), sums (``TACC``), indices
CTYPES = ("T", "TACC", "int64_t")


@dataclass(frozen=True)
class Field:
    """One variable of a row's C accumulator: ``<ctype> <prefix>_<name>[count];`` (``count=None``: a scalar).

    >>> Field("s", "TACC", 3).decl("acc")
    'TACC acc_s[3];'
    """

    name: str
    ctype: str
    count: int | None = None

    def __post_init__(self) -> None:
        if self.ctype not in CTYPES:
            raise ValueError(f"state field type must be one of {CTYPES}, got {self.ctype!r}")

    @property
    def words(self) -> int:
        """Number of scalars in the field."""
        return 1 if self.count is None else self.count

    def decl(self, prefix: str) -> str:
        """The C declaration of this field for an accumulator named ``prefix``."""
        size = "" if self.count is None else f"[{self.count}]"
        return f"{self.ctype} {prefix}_{self.name}{size};"

    def ref(self, prefix: str, k: int | str) -> str:
        """C reference to scalar ``k`` of the field (the field itself when it is a scalar)."""
        return f"{prefix}_{self.name}" if self.count is None else f"{prefix}_{self.name}[{k}]"


@dataclass(frozen=True)
class CAccumulator:
    """C code for one row's accumulator (see :meth:`kernla.reductions.Reduction.c_accumulator`).

    ``fields`` are the state variables (``decl`` declares them); ``update(values, weights, j)``
    folds the formula's component expressions for column ``j``; ``merge(q)`` folds another
    accumulator ``q`` that covers *later* columns (ties keep ours); ``finalize(out_f, out_i)``
    writes the row's outputs through pointers to its first value and first index.
    """

    fields: tuple[Field, ...]
    prefix: str
    init: str
    update: Callable[[Sequence[str], Sequence[str] | None, str], str]
    merge: Callable[[str], str]
    finalize: Callable[[str, str], str]

    @property
    def decl(self) -> str:
        return " ".join(f.decl(self.prefix) for f in self.fields)


def lines(*parts: str) -> str:
    """Non-empty parts, one per line."""
    return "\n".join(x for x in parts if x)


#: the gradient rules a kind can have (see :mod:`kernla.autograd`)
GRADIENTS = (None, "pairwise", "selection")


class ReductionKind:
    """One reduction: its outputs, accumulators, gradient rule and engine traits.

    Subclasses set the class attributes and implement the accumulator methods; registering an
    instance with :func:`register` makes the name usable everywhere (``Genred``, ``LazyTensor``,
    every engine, autograd).
    """

    name: str
    #: needs an integer K (``opt_arg``)
    needs_k: bool = False
    #: needs a weight formula (``formula2``)
    needs_weight: bool = False
    #: the main formula must be scalar
    needs_scalar: bool = False
    #: a wide output may be computed in chunks of components, one reduction each (GPU register budget)
    splits_components: bool = True
    #: a sum of terms: engines may accumulate one tile in the value type, then merge into ``TACC``
    two_level: bool = False
    #: keeps the K best candidates per component (sorted insertion)
    k_selection: bool = False
    #: folds inside the CPU engine's vector loop: ``"sum"``, ``"logsumexp"`` or None
    vector_fold: str | None = None
    #: Σ_j k_ij B_j is a kernel product (one compiled kernel for any number of columns of B)
    kernel_products: bool = False
    #: ``"pairwise"`` (gradients are Sum reductions over the other index), ``"selection"``
    #: (gradients at the selected pairs), or None (integer outputs)
    gradient: str | None = None
    #: a selection's variant that also returns the indices (what its forward pass runs)
    with_indices: str | None = None
    doc: str = ""

    def output_dims(self, red: Reduction) -> list[tuple[int, str]]:
        raise NotImplementedError

    def fields(self, red: Reduction) -> tuple[Field, ...]:
        raise NotImplementedError

    def registers(self, red: Reduction, single: bool) -> int:
        """32-bit registers one output component's accumulator takes on a GPU (``single``: float64 data)."""
        raise NotImplementedError

    def np_init(self, red: Reduction, rows: int, dtype: np.dtype) -> dict:
        raise NotImplementedError

    def np_update(self, red: Reduction, state: dict, f: np.ndarray, g: np.ndarray | None, j0: int) -> None:
        raise NotImplementedError

    def np_finalize(self, red: Reduction, state: dict, dtype: np.dtype) -> list[np.ndarray]:
        raise NotImplementedError

    def c_accumulator(self, red: Reduction, p: str) -> CAccumulator:
        raise NotImplementedError

    def grad_seeds(
        self, red: Reduction, cotangent: Node, output: Callable[[], Node], extra: Callable[[Reduction], Node]
    ) -> list[tuple[Node, Node]]:
        """``(formula, cotangent)`` pairs whose vector-Jacobian products give a pairwise gradient.

        ``cotangent`` is the incoming gradient as an i-variable, ``output()`` the forward output as
        a new i-variable, ``extra(red)`` the output of another reduction over the same data.
        """
        raise NotImplementedError(f"{self.name} has no pairwise gradient")

    def __repr__(self) -> str:
        return f"<reduction {self.name}>"


#: reduction name -> its kind, in the order they are registered
KINDS: dict[str, ReductionKind] = {}
#: pykeops' other names for some reductions
ALIASES = {"SoftMax": "SumSoftMaxWeight"}
#: pykeops' names for the weighted reduction a weight formula (``formula2``) turns a reduction into
WEIGHTED_ALIASES = {"LogSumExp": "LogSumExpWeight"}


def register(kind: ReductionKind) -> ReductionKind:
    """Add a reduction kind to :data:`KINDS` (its name must be new)."""
    if kind.name in KINDS or kind.name in ALIASES:
        raise ValueError(f"reduction {kind.name!r} is already registered")
    if kind.gradient not in GRADIENTS:
        raise ValueError(f"unknown gradient rule {kind.gradient!r}")
    KINDS[kind.name] = kind
    return kind
