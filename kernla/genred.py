"""``Genred``: generic reductions from formula strings; ``reduce``, the call path ``Genred``,
``LazyTensor`` and the linear algebra share (with torch.autograd when a tensor requires grad);
``cuda_source``, the CUDA text of a reduction.

>>> import numpy as np
>>> from kernla import Genred
>>> f = Genred("SqDist(X, Y)", ["X = Vi(2)", "Y = Vj(2)"], reduction_op="ArgMin", axis=1)
>>> x = np.array([[0.0, 0.0], [5.0, 5.0]]); y = np.array([[4.0, 4.0], [1.0, 0.0], [9.0, 9.0]])
>>> f(x, y, backend="numpy").ravel()
array([1, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import arrays as arr
from . import core
from .core import Slot, slots_of
from .engines.cuda.source import build_plan, dtype_name
from .errors import ArgumentTypeError, FormulaError, ShapeError
from .formula import parse, parse_aliases
from .formula.tree import Node
from .reductions import Reduction

__all__ = ["Genred", "Slot", "cuda_source", "reduce", "slots_of"]

#: pykeops keyword arguments accepted for compatibility and ignored
_PYKEOPS_IGNORED = {
    "dtype",
    "dtype_acc",
    "use_double_acc",
    "sum_scheme",
    "enable_chunks",
    "rec_multVar_highdim",
    "cuda_type",
    "device_id",
    "use_fast_math",
}


def reduce(
    red: Reduction,
    slots: Sequence[Slot],
    args: Sequence[Any],
    axis: int = 1,
    backend: str | None = None,
    ranges: Any = None,
) -> list:
    """Check ``args`` against ``slots``, run ``red`` over ``axis`` and return outputs in the caller's kind.

    ``red`` is written for a reduction over j (axis=1); axis=0 exchanges the roles of i and j.
    Outputs have shape (*batch, n_rows, width). With torch tensors, grad mode on and one of them
    requiring grad, the outputs carry a torch.autograd graph (:mod:`kernla.autograd`).
    ``ranges``: a block-sparse reduction (pykeops' ranges tuple, see :mod:`kernla.engines.ranges`).
    """
    if arr.needs_grad(args):
        from .autograd import reduce_with_grad  # optional dependency: torch (already imported here)

        return reduce_with_grad(red, slots, args, axis, backend, ranges)
    return core.reduce(red, slots, args, axis, backend, ranges)


def _reduction(
    formula: str, aliases: Sequence[str], reduction_op: str, axis: int, opt_arg: int | None, formula2: str | None
) -> tuple[dict[str, Node], Reduction, tuple[Node, ...]]:
    """The parsed aliases, the reduction a formula string describes (pykeops' arguments) and its inline variables."""
    if axis not in (0, 1):
        raise ShapeError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis!r}")
    if not isinstance(reduction_op, str):
        raise FormulaError(
            f"reduction_op must be the name of a reduction, like 'Sum', got {type(reduction_op).__name__}"
        )
    al = parse_aliases(aliases)
    declared: list[Node] = []  # inline variables keep their argument slots even when simplified away
    f = parse(formula, al, declared)
    f2 = parse(formula2, al, declared) if formula2 is not None else None
    return al, Reduction(reduction_op, f, f2, opt_arg), tuple(declared)


class Genred:
    """A reduction compiled from a formula string, called on arrays.

    ``Genred(formula, aliases, reduction_op="Sum", axis=0, opt_arg=None, formula2=None)`` builds
    ``out = ⋆_{axis} F(...)``; call it with one array per alias (in alias order):
    i-variables (N, D), j-variables (M, D), parameters (D,) or numbers, with optional leading batch
    dimensions. Returns the caller's array kind; ``*_Arg*`` reductions return int64 indices and
    ``Min_ArgMin``-style reductions a (values, indices) tuple. ``ranges=`` (pykeops' 6-tuple of
    integer arrays) makes the reduction block-sparse (:mod:`kernla.engines.ranges`).

    >>> import numpy as np
    >>> s = Genred("X * Y", ["X = Vi(1)", "Y = Vj(1)"], axis=1)
    >>> x, y = np.ones((3, 1)), np.arange(4.0)[:, None]
    >>> r = ([[0, 2]], [1], [[2, 4]], [[2, 4]], [1], [[0, 2]])   # rows 0-1 meet columns 2-3
    >>> s(x, y, ranges=r, backend="numpy").ravel()
    array([5., 5., 0.])
    """

    def __init__(
        self,
        formula: str,
        aliases: Sequence[str],
        reduction_op: str = "Sum",
        axis: int = 0,
        dtype: Any = None,
        opt_arg: int | None = None,
        formula2: str | None = None,
        **compat: Any,
    ):
        _check_compat(compat)
        self.aliases, self.reduction, declared = _reduction(formula, aliases, reduction_op, axis, opt_arg, formula2)
        self.formula, self.formula2 = self.reduction.formula, self.reduction.weight
        self.axis = axis
        self.slots = slots_of(self.aliases, self.reduction.formulas + declared)

    def __call__(self, *args: Any, backend: str = "auto", ranges: Any = None, out: Any = None, **compat: Any):
        _check_compat(compat)
        res = reduce(self.reduction, self.slots, args, self.axis, backend, ranges)
        result = res[0] if len(res) == 1 else tuple(res)
        return result if out is None else write_out(out, result)

    def __repr__(self) -> str:
        return (
            f"Genred({self.reduction.name} over {'ij'[self.axis]} of {self.formula}"
            + (f", weight {self.formula2}" if self.formula2 is not None else "")
            + ")"
        )


def write_out(out: Any, result: Any) -> Any:
    """pykeops' ``out=``: copy ``result`` into the caller's array ``out`` (same size) and return ``out``."""
    if isinstance(result, tuple) or getattr(out, "shape", None) is None:
        raise ShapeError("out= takes one array, for a reduction with one output")
    if int(np.prod(out.shape)) != int(np.prod(result.shape)):
        raise ShapeError(f"out= has shape {tuple(out.shape)}, the result has shape {tuple(result.shape)}")
    if arr.kind_of(out) == "torch":
        out.copy_(result.reshape(out.shape))
    else:
        out[...] = result.reshape(out.shape)
    return out


def _check_compat(kwargs: dict) -> None:
    """ArgumentTypeError for keywords that are neither ignored pykeops options nor ``ranges=None``
    (callers that run block-sparse reductions take ``ranges`` out first)."""
    if not kwargs:  # the common case, at every call
        return
    if kwargs.get("ranges") is not None:
        raise ArgumentTypeError("ranges= (a block-sparse reduction) is not taken by this call")
    unknown = set(kwargs) - _PYKEOPS_IGNORED - {"ranges"}
    if unknown:
        raise ArgumentTypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")


def cuda_source(
    formula: str,
    aliases: Sequence[str],
    reduction_op: str = "Sum",
    axis: int = 1,
    dtype: str = "float32",
    opt_arg: int | None = None,
    formula2: str | None = None,
) -> str:
    """The complete, self-contained CUDA source of a reduction, as the cuda engine compiles it.

    Arguments as for :class:`Genred` (``axis=1`` reduces over j, ``axis=0`` over i); ``dtype`` is
    the data type ('float16', 'float32' or 'float64'). The source includes no file, so it compiles
    anywhere (``nvcc -cubin -arch=sm_90 file.cu`` or NVRTC); its kernels are ``extern "C"``. No
    GPU or CuPy is needed.

    >>> src = cuda_source("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"])
    >>> 'extern "C" __global__' in src and "kl_reduce_w1" in src
    True
    """
    _, red, _ = _reduction(formula, aliases, reduction_op, axis, opt_arg, formula2)
    if axis == 0:
        red = red.swap_ij()
    return build_plan(red, dtype_name(dtype)).source
