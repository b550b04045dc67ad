"""torch.autograd support: the gradient of a kernla reduction is more kernla reductions.

:func:`kernla.genred.reduce` hands a call to :func:`reduce_with_grad` when its arrays are torch
tensors, gradients are enabled and one of them requires grad, so ``Genred``, ``LazyTensor``
reductions and anything else built on ``reduce`` are differentiable. The backward pass never
forms an N×M matrix; with ``F = F(x_i, y_j, p)`` reduced over j and ``G_i`` the incoming
cotangent (a new i-variable):

- ``Sum``: ∂/∂x_i = Σ_j Grad(F, x, G_i); ∂/∂y_j = Σ_i Grad(F, y, G_i) (a reduction over the other
  axis); ∂/∂p = Σ_i Σ_j Grad(F, p, G_i) (reduced over j, then the rows summed in torch). All
  i-variables and parameters share one reduction (their gradients concatenated), all j-variables
  another. These backward reductions go through ``reduce`` again with differentiable inputs, so
  the backward is itself differentiable (Hessian-vector products, double backward).
- ``LogSumExp``: the same with cotangent ``G_i · exp(F - L_i)``, ``L`` the forward output;
  ``LogSumExpWeight`` and ``SumSoftMaxWeight`` likewise (softmax-weighted gradients of F and of
  the weight formula; ``SumSoftMaxWeight`` computes its log-normaliser with one extra
  ``LogSumExp`` reduction).
- ``Min``, ``Max``, ``KMin``, ``Min_ArgMin``, ``Max_ArgMax``, ``KMin_ArgKMin`` (values): the
  forward also records the selected indices; the backward gathers the K·D selected pairs
  (x_i, y_{idx_ik}) and evaluates Grad(F, ·, G) at those pairs only (O(N·K) work, through the
  same engines: one reduction over a single dummy column), then scatters the j-gradients back.
  Ties go to the index the forward chose. pykeops refuses these gradients; kernla gives them.
- ``ArgMin``, ``ArgMax``, ``ArgKMin``: integer outputs, not differentiable (the call simply runs
  without a graph).

:func:`implicit_solve` makes linear solves ``(αI + K(θ)) a = b`` differentiable by the implicit
function theorem (one more solve in the backward); :func:`solve_with_grad` wraps it for
``KernelSolve``-style calls (a formula, its arguments, the right-hand side's position), which
is what ``kernla.linalg`` calls.

>>> import torch
>>> from kernla import LazyTensor
>>> x = torch.randn(5, 1, 2, dtype=torch.float64, requires_grad=True)
>>> y = torch.randn(1, 4, 2, dtype=torch.float64)
>>> out = (-((LazyTensor(x) - LazyTensor(y)) ** 2).sum(-1)).exp().sum(dim=1)
>>> (gx,) = torch.autograd.grad(out.sum(), x)
>>> gx.shape
torch.Size([5, 1, 2])
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import arrays as arr
from .core import Slot, checked
from .core import reduce as reduce_nograd
from .engines.ranges import BlockSparsity, swap_axes
from .errors import ShapeError
from .formula.diff import grad as symbolic_grad
from .formula.diff import vjp
from .formula.tree import CAT_I, CAT_J, CAT_PARAM, IntCst, Node, Var, call, concat
from .reductions import KINDS, Reduction

__all__ = ["DIFFERENTIABLE", "needs_grad", "reduce_with_grad", "implicit_solve", "solve_with_grad"]

#: reductions with a float output that gradients flow through
DIFFERENTIABLE = frozenset(name for name, kind in KINDS.items() if kind.gradient is not None)


def needs_grad(args: Sequence[Any]) -> bool:
    """Whether a call on ``args`` must record a graph: grad mode is on and a tensor requires grad.

    >>> import torch
    >>> needs_grad([torch.zeros(2, requires_grad=True), 1.0]), needs_grad([torch.zeros(2)])
    (True, False)
    """
    return arr.needs_grad(args)


@dataclass(frozen=True)
class _Spec:
    red: Reduction  # written for a reduction over j (the caller's axis already applied)
    slots: tuple  # Slot per argument, categories matching ``red``
    backend: str | None
    ranges: Any = None  # block-sparse ranges in the frame of ``red`` (the caller's turned when axis=0)


def reduce_with_grad(
    red: Reduction,
    slots: Sequence[Slot],
    args: Sequence[Any],
    axis: int = 1,
    backend: str | None = None,
    ranges: Any = None,
) -> list:
    """:func:`kernla.genred.reduce` for torch tensors, recording the graph for torch.autograd.

    Same arguments and outputs as ``reduce``; float outputs carry a ``grad_fn`` whose backward
    runs kernla reductions (see the module docstring). Index outputs are not differentiable.
    With block-sparse ``ranges``, each backward reduction visits the same pairs: a gradient with
    respect to an i-variable reduces over j with the first triple, one with respect to a j-variable
    over i with the second.

    >>> import torch
    >>> from kernla.formula import Vi, Vj, call
    >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64, requires_grad=True)
    >>> y = torch.tensor([[0.5], [3.0]], dtype=torch.float64)
    >>> red = Reduction("Min", call("SqDist", Vi(0, 1), Vj(1, 1)))
    >>> slots = [Slot("x", CAT_I, 1), Slot("y", CAT_J, 1)]
    >>> (m,) = reduce_with_grad(red, slots, [x, y])
    >>> torch.autograd.grad(m.sum(), x)[0].ravel().tolist()      # 2 (x_i - y_nearest)
    [-1.0, 1.0]
    """
    if axis not in (0, 1):
        raise ShapeError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis!r}")
    if len(args) != len(slots):
        raise ShapeError(f"expected {len(slots)} arrays ({', '.join(s.name for s in slots)}), got {len(args)}")
    wrapped = any(isinstance(a, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(a) for a in args)
    if red.kind.gradient is None and not wrapped:  # (under torch.func the node's vmap rule is needed)
        with torch.no_grad():  # index outputs: nothing to differentiate
            return reduce_nograd(red, slots, args, axis, backend, ranges)
    c = checked(red, slots, args, axis)  # (the reduction and slots over j: turned when axis=0)
    tdtype = getattr(torch, c.dtype.name)
    # numbers become 1-element NumPy arrays, then tensors
    rows = [
        torch.as_tensor(a, dtype=tdtype, device=c.kind.device) if isinstance(a, np.ndarray) else a
        for a in c.rows_of(args)
    ]
    red = c.red
    if axis == 0:
        ranges = ranges.swapped() if isinstance(ranges, BlockSparsity) else swap_axes(ranges)
    outs = _KernlaReduction.apply(_Spec(red, c.slots, backend, ranges), *rows)
    if red.kind.gradient == "selection" and red.with_indices() != red:
        return [outs[0]]  # the indices were computed for the backward only
    return list(outs)


#: torch's private ``unwrap_dead_wrappers`` (what ``Function.apply`` does outside torch.func), if this torch has it
_UNWRAP = (
    getattr(getattr(getattr(torch, "_functorch", None), "utils", None), "unwrap_dead_wrappers", None)
    if hasattr(torch._C, "_are_functorch_transforms_active")
    else None
)


class _KernlaReduction(torch.autograd.Function):
    """One kernla reduction over j as a torch.autograd node (inputs in row layout).

    Written for torch.func too: ``setup_context``, a ``vmap`` rule (the mapped dimension becomes a
    leading kernla batch dimension) and a forward-mode ``jvp`` (one more reduction).
    A selection (Min, KMin, …) always returns its indices as a second output, for the backward.
    """

    @classmethod
    def apply(cls, *args):
        """``torch.autograd.Function.apply`` without its per-call binding of ``forward``'s signature to the arguments
        (``inspect.signature``: a quarter of a small call), which ``forward`` does not need: it has no default.
        The short cut uses two private torch names; where this torch lacks them, or under torch.func, the full path."""
        if _UNWRAP is None or torch._C._are_functorch_transforms_active():
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*_UNWRAP(args))

    @staticmethod
    def forward(spec: _Spec, *rows):
        red = spec.red
        run = red.with_indices() if red.kind.gradient == "selection" else red
        return tuple(reduce_nograd(run, spec.slots, rows, 1, spec.backend, spec.ranges))

    @staticmethod
    def setup_context(ctx, inputs, output):
        spec, *rows = inputs
        ctx.spec = spec
        ctx.n_in = len(rows)
        if spec.red.kind.gradient is None:
            ctx.mark_non_differentiable(*output)
        elif spec.red.kind.gradient == "selection":
            ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(*rows, *output)
        ctx.save_for_forward(*rows, *output)

    @staticmethod
    def vmap(info, in_dims, spec: _Spec, *rows):
        """The mapped dimension of each input becomes kernla's first batch dimension."""
        dims = in_dims[1:]
        lead = [r.dim() - (d is not None) - (1 if s.cat == CAT_PARAM else 2) for r, d, s in zip(rows, dims, spec.slots)]
        nb = max(lead)
        moved = []
        for r, d, n in zip(rows, dims, lead):
            r = r.movedim(d, 0) if d is not None else r.unsqueeze(0)
            moved.append(r.reshape((r.shape[0],) + (1,) * (nb - n) + tuple(r.shape[1:])))
        outs = _KernlaReduction.apply(spec, *moved)
        return outs, (0,) * len(outs)

    @staticmethod
    def jvp(ctx, _spec_tangent, *tangents):
        saved = ctx.saved_tensors
        if ctx.spec.red.kind.gradient is None:
            return (None,) * (len(saved) - ctx.n_in)
        if ctx.spec.red.kind.gradient == "selection":
            return _selection_jvp(ctx.spec, saved[: ctx.n_in], saved[ctx.n_in + 1], tangents)
        return _pairwise_jvp(ctx.spec, saved[: ctx.n_in], saved[ctx.n_in], tangents)

    @staticmethod
    def backward(ctx, *grad_outs):
        saved = ctx.saved_tensors
        rows, outs = saved[: ctx.n_in], saved[ctx.n_in :]
        targets = [k for k in range(ctx.n_in) if ctx.needs_input_grad[k + 1]]
        g = grad_outs[0]
        if g is None or not targets:
            return (None,) * (ctx.n_in + 1)
        if ctx.spec.red.kind.gradient == "selection":
            grads = _selection_backward(ctx.spec, rows, outs[1], g, targets)
        else:
            grads = _pairwise_backward(ctx.spec, rows, outs[0], g, targets)
        return (None, *grads)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _reduce(
    red: Reduction, slots: Sequence[Slot], args: Sequence[Any], axis: int, backend: str | None, ranges: Any = None
) -> list:
    """A backward reduction: recorded for torch.autograd when its inputs require grad (double backward)."""
    if needs_grad(args):
        return reduce_with_grad(red, slots, args, axis, backend, ranges)
    return reduce_nograd(red, slots, args, axis, backend, ranges)


def _sum_to(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Sum the broadcast dimensions of ``t`` away so that it has ``shape``."""
    shape = tuple(shape)
    while t.dim() > len(shape):
        t = t.sum(0)
    for k, s in enumerate(shape):
        if s == 1 and t.shape[k] != 1:
            t = t.sum(k, keepdim=True)
    return t


@functools.lru_cache(maxsize=512)
def _vjp(seeds: tuple, targets: tuple) -> list:
    """:func:`kernla.formula.diff.vjp`, memoised: training loops differentiate the same formulas."""
    return vjp(seeds, targets)


def _var(slot: Slot, pos: int) -> Node:
    return Var(pos, slot.dim, slot.cat)


def _grads_from(out: torch.Tensor, parts: Sequence[tuple[int, Node]], slots: Sequence[Slot], rows, finish) -> dict:
    """Split the columns of one backward reduction's output into per-argument gradients."""
    grads, col = {}, 0
    for k, f in parts:
        piece = out[..., col : col + f.dim]
        col += f.dim
        grads[k] = _sum_to(finish(k, piece), rows[k].shape)
    return grads


# ---------------------------------------------------------------------------------------------
# Sum and the log-sum-exp family: gradients are Sum reductions over the other index
# ---------------------------------------------------------------------------------------------
def _pairwise_backward(spec: _Spec, rows, out: torch.Tensor, g: torch.Tensor, targets: list[int]) -> list:
    red, slots, backend, ranges = spec.red, list(spec.slots), spec.backend, spec.ranges
    extra: list[torch.Tensor] = []

    def new_ivar(t: torch.Tensor) -> Node:
        extra.append(t)
        return Var(len(slots) + len(extra) - 1, int(t.shape[-1]), CAT_I)

    G = new_ivar(g)
    if ranges is not None:  # rows with no pair (a softmax's NaN there) take no part in the backward
        out = torch.nan_to_num(out, nan=0.0, posinf=torch.inf, neginf=-torch.inf)
    seeds = red.kind.grad_seeds(
        red, G, lambda: new_ivar(out), lambda other: new_ivar(_reduce(other, slots, rows, 1, backend, ranges)[0])
    )

    all_slots = slots + [Slot(f"backward input {n}", CAT_I, int(t.shape[-1])) for n, t in enumerate(extra)]
    all_args = list(rows) + extra
    grads: dict[int, torch.Tensor] = {}
    i_side = [k for k in targets if slots[k].cat != CAT_J]
    j_side = [k for k in targets if slots[k].cat == CAT_J]
    for group, axis in ((i_side, 1), (j_side, 0)):
        if not group:
            continue
        formulas = _vjp(tuple(seeds), tuple(_var(slots[k], k) for k in group))
        parts = [(k, f) for k, f in zip(group, formulas) if f is not None]
        if not parts:
            continue
        (res,) = _reduce(Reduction("Sum", concat([f for _, f in parts])), all_slots, all_args, axis, backend, ranges)
        grads.update(_grads_from(res, parts, slots, rows, lambda k, t: t.sum(-2) if slots[k].cat == CAT_PARAM else t))
    return [grads.get(k, torch.zeros_like(rows[k]) if k in targets else None) for k in range(len(rows))]


def _pairwise_jvp(spec: _Spec, rows, out: torch.Tensor, tangents: Sequence[torch.Tensor | None]) -> tuple:
    """Forward mode: the tangent of the output, as one Sum reduction (the transpose of the backward).

    With ``G`` a symbolic cotangent (a parameter) and ``T_k`` the tangent of argument k, the pair
    term ``h_ij = Σ_k <vjp of the gradient seeds(G) wrt v_k, T_k>`` is linear in G, so the output
    tangent is ``Σ_j ∂h_ij/∂G``: the reverse-mode rules serve forward mode too.
    """
    red, slots, backend = spec.red, list(spec.slots), spec.backend
    all_slots, all_args = list(slots), list(rows)

    def new_var(t: torch.Tensor, cat: int) -> Node:
        all_slots.append(Slot(f"tangent input {len(all_args)}", cat, int(t.shape[-1])))
        all_args.append(t)
        return Var(len(all_args) - 1, int(t.shape[-1]), cat)

    width = int(out.shape[-1])
    G = new_var(torch.zeros(width, dtype=out.dtype, device=out.device), CAT_PARAM)  # linear in G: any value
    seeds = red.kind.grad_seeds(
        red, G, lambda: new_var(out, CAT_I), lambda other: new_var(_reduce(other, slots, rows, 1, backend)[0], CAT_I)
    )
    given = {k: t for k, t in enumerate(tangents) if t is not None}
    f = _tangent_formula(
        tuple(seeds), G, [_var(slots[k], k) for k in given], [new_var(t, slots[k].cat) for k, t in given.items()]
    )
    if f is None:
        return (torch.zeros_like(out),)
    (res,) = _reduce(Reduction("Sum", f), all_slots, all_args, 1, backend)
    return (res,)


def _tangent_formula(seeds: tuple, G: Node, variables: Sequence[Node], tangents: Sequence[Node]) -> Node | None:
    """``∂h/∂G`` for ``h = Σ_k <vjp of seeds(G) wrt variables[k], tangents[k]>`` (None: no variable reached).

    ``h`` is linear in the symbolic cotangent ``G``, so this is the forward-mode tangent of what the
    seeds differentiate: the reverse-mode rules serve forward mode.
    """
    formulas = _vjp(seeds, tuple(variables)) if variables else []
    terms = [call("Scalprod", f, t) for f, t in zip(formulas, tangents) if f is not None]
    if not terms:
        return None
    h = terms[0]
    for t in terms[1:]:
        h = h + t
    return symbolic_grad(h, G, IntCst(1))


# ---------------------------------------------------------------------------------------------
# Min / Max / KMin values: gradients at the selected pairs only
# ---------------------------------------------------------------------------------------------
class _SelectedPairs:
    """The pair problem of a selection (Min, KMin, …): one row per selected pair, no column to reduce.

    Row ``r·N + i`` holds pair (i, idx[i, r]): the j-variables become i-variables gathered at the
    selected columns (``formula`` is the selection's formula with them renamed), so that derivatives
    at the selected pairs are a Sum over one dummy column. Output column r of the selection is
    component ``comp[r]`` of the formula (r = k·d + c).
    """

    def __init__(self, spec: _Spec, rows, idx: torch.Tensor):
        red, slots = spec.red, spec.slots
        self.d = d = red.formula.dim
        self.R = R = (red.K or 1) * d  # selected pairs per row
        self.batch, self.N = tuple(idx.shape[:-2]), int(idx.shape[-2])
        self.slots, self.rows = slots, rows
        self.valid = idx >= 0  # -1: no finite candidate, nothing to differentiate
        self.flat_idx = idx.clamp_min(0).transpose(-1, -2).reshape(self.batch + (R * self.N,))
        self.flat_valid = self.valid.transpose(-1, -2).reshape(self.batch + (R * self.N, 1))
        self.comp = torch.arange(R, device=idx.device) % d
        mapping = {Var(k, s.dim, CAT_J): Var(k, s.dim, CAT_I) for k, s in enumerate(slots) if s.cat == CAT_J}
        self.formula = red.formula.replace(mapping)
        self.pair_slots = [s if s.cat == CAT_PARAM else Slot(s.name, CAT_I, s.dim) for s in slots]

    def layout(self, k: int, t: torch.Tensor) -> torch.Tensor:
        """Argument ``k``'s data (or tangent) ``t`` in the pair rows."""
        s, batch, N, R = self.slots[k], self.batch, self.N, self.R
        if s.cat == CAT_PARAM:
            return t
        D = s.dim
        if s.cat == CAT_I:
            return t.expand(batch + (N, D)).unsqueeze(-3).expand(batch + (R, N, D)).reshape(batch + (R * N, D))
        M = int(self.rows[k].shape[-2])  # gather column idx: the j-variable became an i-variable
        return torch.gather(t.expand(batch + (M, D)), -2, self.flat_idx.unsqueeze(-1).expand(batch + (R * N, D)))

    def dummy_column(self, dtype: torch.dtype, device: Any) -> tuple[Slot, torch.Tensor]:
        """The one column that the pair problem's Sum reduces over."""
        return Slot("pair column", CAT_J, 1), torch.zeros((1, 1), dtype=dtype, device=device)


def _selection_backward(spec: _Spec, rows, idx: torch.Tensor, g: torch.Tensor, targets: list[int]) -> list:
    slots, backend = list(spec.slots), spec.backend
    P = _SelectedPairs(spec, rows, idx)
    batch, N, R, d = P.batch, P.N, P.R, P.d
    gsel = torch.where(P.valid, g, torch.zeros((), dtype=g.dtype, device=g.device))
    gsel = gsel.transpose(-1, -2).reshape(batch + (R * N, 1))
    onehot = torch.eye(d, dtype=g.dtype, device=g.device)[P.comp].repeat_interleave(N, dim=0)  # (R·N, d)
    E = gsel * onehot  # cotangent of F at each selected pair

    n = len(slots)
    column = P.dummy_column(g.dtype, g.device)
    pair_slots = P.pair_slots + [Slot("backward cotangent", CAT_I, d), column[0]]
    pair_args = [P.layout(k, a) for k, a in enumerate(rows)] + [E, column[1]]
    formulas = _vjp(((P.formula, Var(n, d, CAT_I)),), tuple(_var(pair_slots[k], k) for k in targets))
    parts = [(k, f) for k, f in zip(targets, formulas) if f is not None]
    grads: dict[int, torch.Tensor] = {}
    if parts:
        (res,) = _reduce(Reduction("Sum", concat([f for _, f in parts])), pair_slots, pair_args, 1, backend)
        res = torch.where(P.flat_valid, res, torch.zeros((), dtype=res.dtype, device=res.device))

        def finish(k, t):
            s = slots[k]
            if s.cat == CAT_PARAM:
                return t.sum(-2)
            if s.cat == CAT_I:
                return t.reshape(batch + (R, N, s.dim)).sum(-3)
            M = int(rows[k].shape[-2])
            out = torch.zeros(batch + (M, s.dim), dtype=t.dtype, device=t.device)
            return out.scatter_add(-2, P.flat_idx.unsqueeze(-1).expand(batch + (R * N, s.dim)), t)

        grads = _grads_from(res, parts, slots, rows, finish)
    return [grads.get(k, torch.zeros_like(rows[k]) if k in targets else None) for k in range(len(rows))]


def _selection_jvp(spec: _Spec, rows, idx: torch.Tensor, tangents: Sequence[torch.Tensor | None]) -> tuple:
    """Forward mode of a selection: the formula's tangent at each selected pair (0 where none was selected).

    With ``G`` a symbolic cotangent, ``h = Σ_k <vjp of F(G) wrt v_k, T_k>`` at the pair, and
    ``∂h/∂G`` is the tangent of F there: one Sum over the pair problem's single column.
    """
    P = _SelectedPairs(spec, rows, idx)
    given = {k: t for k, t in enumerate(tangents) if t is not None}
    dtype, device = rows[0].dtype, rows[0].device
    zero = torch.zeros(P.batch + (P.N, P.R), dtype=dtype, device=device)
    if not given:
        return zero, None
    slots, args = list(P.pair_slots), [P.layout(k, a) for k, a in enumerate(rows)]

    def new_var(t: torch.Tensor, cat: int) -> Node:
        slots.append(Slot(f"tangent input {len(args)}", cat, int(t.shape[-1])))
        args.append(t)
        return Var(len(args) - 1, int(t.shape[-1]), cat)

    G = new_var(torch.zeros(P.d, dtype=dtype, device=device), CAT_PARAM)  # h is linear in G: any value
    cat = {k: CAT_PARAM if spec.slots[k].cat == CAT_PARAM else CAT_I for k in given}
    variables = [_var(slots[k], k) for k in given]
    f = _tangent_formula(((P.formula, G),), G, variables, [new_var(P.layout(k, t), cat[k]) for k, t in given.items()])
    if f is None:
        return zero, None
    column = P.dummy_column(dtype, device)
    (res,) = _reduce(Reduction("Sum", f), slots + [column[0]], args + [column[1]], 1, spec.backend)
    # pair row r·N + i, component comp[r]  ->  output (i, r)
    picked = (
        res.reshape(P.batch + (P.R, P.N, P.d))
        .gather(-1, P.comp.view(-1, 1, 1).expand(P.batch + (P.R, P.N, 1)))
        .squeeze(-1)
    )
    out = picked.transpose(-1, -2)
    return torch.where(P.valid, out, torch.zeros((), dtype=out.dtype, device=out.device)), None


# ---------------------------------------------------------------------------------------------
# linear solves: the implicit function theorem
# ---------------------------------------------------------------------------------------------
Solver = Callable[[torch.Tensor, bool], torch.Tensor]


def implicit_solve(
    solve: Solver,
    matvec: Callable[..., torch.Tensor],
    b: torch.Tensor,
    params: Sequence[torch.Tensor] = (),
    alpha: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Differentiable solution ``a`` of ``(α I + K(θ)) a = b`` (for ``KernelSolve``).

    - ``solve(rhs, transpose)`` returns the solution of ``(α I + K(θ)) z = rhs`` (of ``(α I +
      K(θ))ᵀ z = rhs`` when ``transpose``; for a symmetric kernel the same thing), by any method
      (conjugate gradients, a preconditioner, …); it is called without a graph.
    - ``matvec(v, *params)`` returns ``K(θ) v`` computed through kernla (``Genred``, a
      ``LazyTensor`` product, …) so that it is differentiable in ``params`` (the data x and
      kernel parameters that require grad).
    - ``b`` and ``alpha`` may require grad too.

    Backward (the implicit function theorem): with ``ā`` the cotangent of ``a`` and
    ``λ = solve(ā, True)``: ``b̄ = λ``, ``θ̄ = -∂_θ ⟨λ, K(θ) a⟩`` (one differentiable ``matvec``),
    ``ᾱ = -⟨λ, a⟩``. The result is differentiable once (not twice).

    >>> import torch
    >>> K = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)   # K(s) = s·K
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    >>> a = implicit_solve(lambda r, t: torch.linalg.solve(s.detach() * K + torch.eye(2), r),
    ...                    lambda v, s: s * (K @ v), b, [s], alpha=1.0)
    >>> a.sum().backward()
    >>> ref_s, ref_b = s.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    >>> torch.linalg.solve(ref_s * K + torch.eye(2), ref_b).sum().backward()
    >>> bool(torch.allclose(s.grad, ref_s.grad) and torch.allclose(b.grad, ref_b.grad))
    True
    """
    params = tuple(params)
    alpha_t = alpha if isinstance(alpha, torch.Tensor) else None  # a number: no gradient
    return _ImplicitSolve.apply(solve, matvec, b, alpha_t, *params)


def solve_with_grad(
    solve: Callable[[list], torch.Tensor],
    apply: Callable[[list], torch.Tensor],
    args: Sequence[Any],
    var_pos: int,
    alpha: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """A differentiable ``KernelSolve`` call: ``a`` with ``(α I + K(args)) a = args[var_pos]``.

    This is the hook for :mod:`kernla.linalg`: when a solve gets torch tensors of which one
    requires grad (:func:`needs_grad`), it returns ``solve_with_grad(solve, apply, args, var_pos,
    alpha)`` instead of solving directly.

    - ``args``: the call's arguments (one per alias), ``args[var_pos]`` the right-hand side b;
    - ``solve(call_args)``: the caller's own solver (CG, preconditioned, …) returning ``a`` for
      ``call_args`` (``args`` with tensors detached, ``call_args[var_pos]`` the right-hand side);
      it is run without a graph, in the forward and once more in the backward;
    - ``apply(call_args)``: ``K a`` for ``a = call_args[var_pos]`` as one Sum reduction through
      :func:`kernla.genred.reduce` (so differentiable in the other arguments), any shape that
      reshapes to ``a``'s.

    Gradients flow to b, to every other tensor argument that requires grad (points, kernel
    parameters) and to ``alpha`` when it is a tensor. The operator must be symmetric (KernelSolve's
    requirement): the backward's transposed solve is ``solve`` again. Differentiable once.

    >>> import torch
    >>> from kernla.formula import parse, parse_aliases
    >>> from kernla.genred import reduce, slots_of
    >>> al = parse_aliases(["X = Vi(1)", "Y = Vj(1)", "B = Vj(1)"])
    >>> f = parse("Exp(-SqDist(X, Y)) * B", al); slots = slots_of(al, [f])
    >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)[:, None].requires_grad_()
    >>> b = torch.ones(5, 1, dtype=torch.float64)
    >>> def dense_solve(ca):                       # any solver; here a dense one
    ...     k = torch.exp(-(ca[0] - ca[1].T) ** 2)
    ...     return torch.linalg.solve(k + 0.1 * torch.eye(5, dtype=torch.float64), ca[2])
    >>> a = solve_with_grad(dense_solve, lambda ca: reduce(Reduction("Sum", f), slots, ca, 1, "numpy")[0],
    ...                     [x, x, b], 2, alpha=0.1)
    >>> a.requires_grad, torch.autograd.grad(a.sum(), x)[0].shape
    (True, torch.Size([5, 1]))
    """
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    params_idx = [k for k, a in enumerate(args) if k != var_pos and isinstance(a, torch.Tensor) and a.requires_grad]

    def run_solve(rhs: torch.Tensor, transpose: bool) -> torch.Tensor:
        call_args = list(detached)
        call_args[var_pos] = rhs
        return solve(call_args)

    def matvec(v: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        call_args = list(detached)
        call_args[var_pos] = v
        for k, p in zip(params_idx, params):
            call_args[k] = p
        return apply(call_args).reshape(v.shape)

    b = args[var_pos]
    if not isinstance(b, torch.Tensor):
        raise ShapeError(f"the right-hand side must be a torch tensor here, got {type(b).__name__}")
    return implicit_solve(run_solve, matvec, b, [args[k] for k in params_idx], alpha)


class _ImplicitSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, solve, matvec, b, alpha_t, *params):
        with torch.no_grad():
            a = solve(b.detach(), False)
        ctx.solve, ctx.matvec = solve, matvec
        ctx.save_for_backward(a, *params)
        return a

    @staticmethod
    def backward(ctx: Any, abar: torch.Tensor) -> tuple:
        a, *params = ctx.saved_tensors
        with torch.no_grad():
            lam = ctx.solve(abar.detach(), True)
        grad_b = lam if ctx.needs_input_grad[2] else None
        grad_alpha = -(lam * a).sum() if ctx.needs_input_grad[3] else None
        want = [k for k, p in enumerate(params) if ctx.needs_input_grad[4 + k]]
        grad_params: list = [None] * len(params)
        if want:
            with torch.enable_grad():
                leaves = [p.detach().requires_grad_(k in want) for k, p in enumerate(params)]
                r = ctx.matvec(a.detach(), *leaves)
                found = torch.autograd.grad(-(lam * r).sum(), [leaves[k] for k in want], allow_unused=True)
            for k, gk in zip(want, found):
                grad_params[k] = torch.zeros_like(params[k]) if gk is None else gk
        return (None, None, grad_b, grad_alpha, *grad_params)
