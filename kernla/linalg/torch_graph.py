"""A kernel operator's products and entries recorded in torch's autograd graph.

When the operator's data (points, a length scale) or the vector are torch tensors that require
grad, products go through :func:`kernla.genred.reduce` on the original tensors, so gradients
flow to them (the backward passes are kernla reductions too). Entries (the diagonal, dense
matrices) are reductions over pairs ``(x_rows[k], y_cols[k])``: O(pairs) memory, no matrix.
Nothing here imports torch: these functions are only called with torch already loaded.

>>> import torch
>>> from kernla import kernels
>>> x = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
>>> K = kernels.gaussian(x)
>>> records_graph(K.kernel), product(K.kernel, K.affine, torch.ones(3, dtype=torch.float64)).grad_fn is not None
(True, True)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .. import arrays as arr
from ..errors import DTypeError, ShapeError
from ..formula import CAT_I, CAT_J, CAT_PARAM, Var, call
from ..genred import Slot, reduce
from ..reductions import Reduction
from . import _compute as compute
from .affine import Affine
from .kernel import BLOCK_ELEMENTS, Kernel


def records_graph(kernel: Kernel, *extra: Any) -> bool:
    """Whether a computation on ``kernel`` (and ``extra`` inputs) must record a torch graph.

    True when grad mode is on and the kernel's data or one of ``extra`` is a torch tensor that
    requires grad. Never imports torch for NumPy/CuPy-only kernels and inputs.
    """
    return arr.needs_grad([*kernel.source, *extra])


def first_tensor(kernel: Kernel) -> Any:
    """The kernel's first torch tensor (for its device)."""
    return next(d for d in kernel.source if compute.is_torch(d))


def _torch_sources(kernel: Kernel, like: Any, sources: Sequence[Any] | None = None) -> list:
    """The kernel's data as torch tensors (numbers kept) on ``like``'s device, in the kernel's dtype.

    Torch data is used as is (its graph is kept); NumPy/CuPy data is converted (constants).
    ``sources`` replaces the kernel's own data (same order), e.g. by fresh leaves.
    """
    torch = sys.modules["torch"]
    tdtype = getattr(torch, kernel.dtype.name)
    kind = arr.Kind("torch", like.device)
    out = []
    for d in kernel.source if sources is None else sources:
        if arr.kind_of(d) == "scalar":
            out.append(d)
        elif compute.is_torch(d):
            out.append(d if d.dtype == tdtype else d.to(tdtype))
        else:
            out.append(arr.wrap(d, kind, kernel.dtype))
    return out


def product(
    kernel: Kernel, affine: Affine, x: Any, transpose: bool = False, sources: Sequence[Any] | None = None
) -> Any:
    """``(c·K + s·I) @ x`` (or with Kᵀ) for a torch tensor x, recorded for torch.autograd.

    One ``Sum`` reduction on the original torch tensors (or on ``sources``, which replace the
    kernel's data). ``x`` is (rows,) or (rows, w); the result has x's shape convention and
    float dtype.
    """
    rows = kernel.shape[0 if transpose else 1]
    n_out = kernel.shape[1 if transpose else 0]
    shape = tuple(x.shape)
    if not (len(shape) in (1, 2) and shape[0] == rows):
        raise ShapeError(
            f"the vector must have shape ({rows},) or ({rows}, k) for a "
            f"{kernel.shape[0]}x{kernel.shape[1]} operator, got {shape}"
        )
    dt = arr.dtype_of(x)
    if dt is not None and dt.kind not in "fiub":
        raise DTypeError(f"the vector has dtype {dt}; kernla's linear algebra works on real arrays")
    out_dtype = compute.output_dtype(x, kernel.dtype)
    torch = sys.modules["torch"]
    V = (x.reshape(rows, 1) if len(shape) == 1 else x).to(getattr(torch, kernel.dtype.name))
    w = int(V.shape[1])
    if w == 0:
        out = V.new_zeros((n_out, 0))
    else:
        cat = CAT_I if transpose else CAT_J
        red = Reduction("Sum", call("Mult", kernel.formula, Var(len(kernel.slots), w, cat)))
        slots = [*kernel.slots, Slot("right-hand side", cat, w)]
        order = kernel.order  # truncate=: the data are stored sorted by cluster
        Vs = V if order is None else V[V.new_tensor(order.into(transpose), dtype=torch.int64)]
        args = [*_torch_sources(kernel, x, sources), Vs]
        KV = reduce(red, slots, args, 0 if transpose else 1, kernel.backend, kernel.sparsity)[0]
        KV = KV if order is None else KV[KV.new_tensor(order.back(transpose), dtype=torch.int64)]
        out = affine.product(KV, V)
    if len(shape) == 1:
        out = out.reshape(-1)
    return out.to(getattr(torch, out_dtype.name))


def pairs(kernel: Kernel, rows: Any, cols: Any) -> Any:
    """``F(x_rows[k], y_cols[k])`` for k < P (index tensors), as a (P,) tensor recorded for autograd.

    The pairs become the rows of a reduction over one dummy column: i-variables are gathered
    with ``rows``, j-variables with ``cols`` and turned into i-variables. O(P) memory and work.
    """
    torch = sys.modules["torch"]
    rows, cols = kernel.positions(rows, cols)
    data = _torch_sources(kernel, first_tensor(kernel))
    args, slots, mapping = [], [], {}
    for pos, (d, slot) in enumerate(zip(data, kernel.slots)):
        if slot.cat == CAT_PARAM:
            args.append(d)
            slots.append(slot)
            continue
        args.append(d[rows if slot.cat == CAT_I else cols])
        slots.append(Slot(slot.name, CAT_I, slot.dim))
        if slot.cat == CAT_J:
            mapping[Var(pos, slot.dim, CAT_J)] = Var(pos, slot.dim, CAT_I)
    ref = next(a for a in args if compute.is_torch(a))
    slots.append(Slot("pair column", CAT_J, 1))
    args.append(torch.zeros((1, 1), dtype=ref.dtype, device=ref.device))
    out = reduce(Reduction("Sum", kernel.formula.replace(mapping)), slots, args, 1, kernel.backend)[0]
    kept = kernel.kept(rows.cpu().numpy(), cols.cpu().numpy())  # block-sparse: entries outside the blocks are 0
    return out.reshape(-1) if kept is None else out.reshape(-1) * torch.as_tensor(kept, device=out.device)


def diagonal(kernel: Kernel) -> Any:
    """``F(x_i, y_i)`` as a (N,) tensor recorded for autograd (square kernels only)."""
    if kernel.shape[0] != kernel.shape[1]:
        raise ShapeError(f"the diagonal is defined for square operators; this one is {kernel.shape}")
    idx = sys.modules["torch"].arange(kernel.shape[0], device=first_tensor(kernel).device)
    return pairs(kernel, idx, idx)


def dense(kernel: Kernel) -> Any:
    """The matrix K as a (N, M) tensor recorded for autograd: F on all pairs, in chunks of rows."""
    torch = sys.modules["torch"]
    n, m = kernel.shape
    device = first_tensor(kernel).device
    cols = torch.arange(m, device=device)
    chunk = max(1, BLOCK_ELEMENTS // m)
    parts = [
        pairs(
            kernel,
            torch.arange(i0, min(n, i0 + chunk), device=device).repeat_interleave(m),
            cols.repeat(min(n, i0 + chunk) - i0),
        )
        for i0 in range(0, n, chunk)
    ]
    return torch.cat(parts).reshape(n, m)
