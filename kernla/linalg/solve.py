"""``KernelSolve``: solve ``(alpha·Id + K) a = b`` with a formula string, as in KeOps.

``KernelSolve(formula, aliases, varinvalias, axis=1)`` takes a formula *linear* in the variable
named ``varinvalias``, e.g. ``"Exp(-G * SqDist(X, Y)) * B"``; called with one array per alias it
returns the ``a`` such that ``alpha·a + Σ_j F(x_i, y_j, a_j) = b`` where ``b`` is the array passed
in the ``varinvalias`` slot. For ``axis=1`` the unknown follows j (a ``Vj`` alias) and the sum runs
over j; ``axis=0`` exchanges the roles. The operator must be symmetric positive (semi-)definite.

When the formula is ``k(x, y) * B`` with a scalar kernel ``k`` (the usual case), the solve runs as
a :class:`~kernla.linalg.KernelOperator` block CG: the D components of B are D columns solved
together, one reduction per iteration, and preconditioners work. Any other linear formula is
solved by CG on the flattened unknown (no preconditioner).

>>> import numpy as np
>>> Kinv = KernelSolve("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(1)", "Y = Vj(1)", "B = Vj(1)", "G = Pm(1)"], "B", axis=1)
>>> x = np.linspace(0, 1, 20)[:, None]; b = np.sin(4 * x)
>>> a = Kinv(x, x, b, np.array([10.0]), alpha=0.5)
>>> K = np.exp(-10.0 * (x - x.T) ** 2)
>>> bool(np.allclose(K @ a + 0.5 * a, b))
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import arrays as arr
from ..errors import FormulaError, InputValueError, ShapeError
from ..formula import CAT_I, CAT_J, CAT_PARAM, parse, parse_aliases
from ..formula.tree import Node
from ..genred import _check_compat, reduce, slots_of
from ..lazy import LazyTensor
from ..reductions import Reduction
from . import _compute as compute
from ._compute import is_torch
from .cg import block_cg, default_tol
from .kernel import Kernel
from .operator import KernelOperator


def _split_scalar_kernel(formula: Node, var: Node) -> Node | None:
    """k if ``formula`` is ``k * var`` or ``var * k`` with a scalar k free of ``var``, else None."""
    if formula.op != "Mult":
        return None
    a, b = formula.args
    for k, v in ((a, b), (b, a)):
        if v is var and k.dim == 1 and var not in set(k.variables()):
            return k
    return None


class KernelSolve:
    """A kernel linear system ``(alpha·Id + K) a = b`` compiled from a formula string (pykeops semantics).

    ``KernelSolve(formula, aliases, varinvalias, axis=None)``; ``axis`` defaults to the unknown's
    category (1, over j, for a ``Vj`` unknown; 0 for a ``Vi`` one, pykeops' default). Call it as
    ``Kinv(*arrays, alpha=1e-10, tol=None, maxiter=None, precond=None, rank=None, x0=None,
    callback=None, return_info=False, verbose=False, backend="auto", ranges=None)`` with one array per alias
    in alias order and ``b`` in the ``varinvalias`` slot. ``eps`` is accepted as pykeops' name for
    ``tol``. ``ranges=`` (pykeops' block-sparse 6-tuple, in the formula's i, j frame; the mask must be
    symmetric) makes every product of the solve block-sparse, the backward's included. Returns ``a``
    with b's shape and kind (and ``(a, info)`` with ``return_info=True``).

    Differentiable with torch: when b, the points, the parameters or ``alpha`` (a 0-d tensor)
    require grad, ``a`` carries a ``grad_fn`` whose backward is one more solve of the same system
    (the implicit function theorem) and one differentiable reduction ``K(θ) a`` — never a matrix.

    >>> import torch
    >>> Kinv = KernelSolve("Exp(-SqDist(X, Y)) * B", ["X = Vi(1)", "Y = Vj(1)", "B = Vj(1)"], "B", axis=1)
    >>> x = torch.linspace(0, 1, 6, dtype=torch.float64)[:, None].requires_grad_()
    >>> b = torch.ones(6, 1, dtype=torch.float64, requires_grad=True)
    >>> a = Kinv(x, x, b, alpha=0.1)
    >>> gx, gb = torch.autograd.grad(a.sum(), (x, b))
    >>> gx.shape, gb.shape
    (torch.Size([6, 1]), torch.Size([6, 1]))
    """

    def __init__(self, formula: str, aliases: Sequence[str], varinvalias: str, axis: int | None = None, **compat: Any):
        _check_compat(compat)
        self.aliases = parse_aliases(aliases)
        self.formula = parse(formula, self.aliases)
        if varinvalias not in self.aliases:
            raise FormulaError(f"varinvalias {varinvalias!r} is not one of the aliases ({', '.join(self.aliases)})")
        var = self.aliases[varinvalias]
        pos, dim, cat = var.params
        if axis is None:
            axis = 0 if cat == CAT_I else 1
        if axis not in (0, 1):
            raise ShapeError(f"axis must be 0 (reduce over i) or 1 (reduce over j), got {axis!r}")
        want = CAT_J if axis == 1 else CAT_I
        if cat != want:
            raise FormulaError(
                f"with axis={axis} the unknown {varinvalias!r} must be a "
                f"{'Vj' if axis == 1 else 'Vi'} variable (indexed by the reduced index), "
                f"it is {'Vi' if cat == CAT_I else 'Vj' if cat == CAT_J else 'Pm'}"
            )
        if self.formula.dim != dim:
            raise FormulaError(
                f"the formula has dimension {self.formula.dim} but the unknown {varinvalias!r} "
                f"has dimension {dim}: a linear system needs them equal"
            )
        if var not in set(self.formula.variables()):
            raise FormulaError(f"the formula does not use the unknown {varinvalias!r}")
        self.varinvalias = varinvalias
        self.axis = axis
        self.var = var
        self.varinv_pos = pos
        self.slots = slots_of(self.aliases, [self.formula])
        self.kernel = _split_scalar_kernel(self.formula, var)

    def __repr__(self) -> str:
        return f"KernelSolve({self.formula}, unknown {self.varinvalias!r}, axis={self.axis})"

    def __call__(
        self,
        *args: Any,
        alpha: Any = 1e-10,
        tol: float | None = None,
        eps: float | None = None,
        maxiter: int | None = None,
        precond: Any = None,
        rank: int | None = None,
        x0: Any = None,
        callback: Callable | None = None,
        return_info: bool = False,
        verbose: bool = False,
        backend: str = "auto",
        ranges: Any = None,
        **compat: Any,
    ):
        _check_compat(compat)
        if len(args) != len(self.slots):
            raise ShapeError(
                f"expected {len(self.slots)} arrays ({', '.join(s.name for s in self.slots)}), got {len(args)}"
            )
        if tol is None and eps is not None:
            tol = eps
        b = args[self.varinv_pos]
        for slot, a in zip(self.slots, args):
            if arr.kind_of(a) != "scalar" and slot.cat != CAT_PARAM and len(a.shape) > 2:
                raise ShapeError(
                    f"KernelSolve does not take batch dimensions: {slot.describe()} has shape {tuple(a.shape)}"
                )
        options = dict(
            alpha=alpha, tol=tol, maxiter=maxiter, x0=x0, callback=callback, return_info=return_info, verbose=verbose
        )
        if self.kernel is not None:
            op = self._operator(self.kernel, args, backend, ranges)
            return op.solve(b, precond=precond, rank=rank, **options)
        if precond is not None or rank is not None:
            raise InputValueError(
                f"preconditioners need a formula of the form k(x, y) * B with a scalar kernel k; {self.formula} is not"
            )
        if arr.needs_grad([*args, alpha]):
            return self._generic_graph(args, backend, ranges, **options)
        return self._generic(args, backend, ranges, **options)

    def _generic_graph(
        self, args: Sequence[Any], backend: str, ranges: Any, *, alpha, tol, maxiter, x0, callback, return_info, verbose
    ):
        """:meth:`_generic` recorded for torch.autograd (:func:`kernla.autograd.solve_with_grad`).

        The backward is one more CG solve with the same options (the operator is symmetric) and
        one differentiable ``Sum`` reduction of the formula for the points and parameters.
        """
        import torch  # optional dependency: this path only runs with torch tensors that require grad

        from ..autograd import solve_with_grad  # imports torch (as above)

        if is_torch(alpha):
            if alpha.numel() != 1:
                raise InputValueError(f"alpha must be a number or a one-element tensor, got shape {tuple(alpha.shape)}")
            alpha_value, alpha = float(alpha.detach()), alpha.reshape(())
        else:
            alpha_value = alpha = float(alpha)
        args = list(args)
        b = args[self.varinv_pos]
        if not is_torch(b):  # the solution must be a tensor to carry the gradients of the others
            ref = next(a for a in (*args, alpha) if is_torch(a))
            dtype = arr.dtype_of(ref) or np.dtype(np.float64)
            args[self.varinv_pos] = torch.as_tensor(compute.to_compute(b, False, dtype), device=ref.device)
        found: dict[str, Any] = {}
        red = Reduction("Sum", self.formula)

        def solve(call_args: list) -> Any:
            if "info" in found:  # the backward's adjoint solve
                return self._generic(
                    call_args,
                    backend,
                    ranges,
                    alpha=alpha_value,
                    tol=tol,
                    maxiter=maxiter,
                    x0=None,
                    callback=None,
                    return_info=False,
                    verbose=False,
                )
            a, found["info"] = self._generic(
                call_args,
                backend,
                ranges,
                alpha=alpha_value,
                tol=tol,
                maxiter=maxiter,
                x0=x0,
                callback=callback,
                return_info=True,
                verbose=verbose,
            )
            return a

        a = solve_with_grad(
            solve, lambda ca: reduce(red, self.slots, ca, self.axis, backend, ranges)[0], args, self.varinv_pos, alpha
        )
        return (a, found["info"]) if return_info else a

    def _operator(self, kernel: Node, args: Sequence[Any], backend: str, ranges: Any) -> KernelOperator:
        """The operator ``kernel(x_i, y_j)`` on the call's arrays (``self.kernel``, split off when it exists),
        block-sparse with ``ranges`` (pykeops' tuple in the i, j frame; the transpose for ``axis=0``)."""
        variables, names = [], []
        for slot, a in zip(self.slots, args):
            data: Any
            if arr.kind_of(a) == "scalar":
                data = float(a)
            elif slot.cat == CAT_PARAM:
                data = a.reshape(1) if len(a.shape) == 0 else a
            else:
                data = a.reshape(-1, 1) if len(a.shape) == 1 else a
            if arr.kind_of(data) != "scalar" and int(data.shape[-1]) != slot.dim:
                raise ShapeError(f"{slot.describe()} got an array of shape {tuple(a.shape)}")
            variables.append((data, slot.cat))
            names.append(slot.name)
        op = KernelOperator.from_kernel(Kernel.build(kernel, variables, names, backend, ranges))
        return op.T if self.axis == 0 else op

    def _generic(
        self, args: Sequence[Any], backend: str, ranges: Any, *, alpha, tol, maxiter, x0, callback, return_info, verbose
    ):
        b = args[self.varinv_pos]
        named = {s.name: a for s, a in zip(self.slots, args)}
        kind = arr.common_kind(named)
        dtype = arr.common_dtype(named)
        xp, on_gpu = compute.namespace(kind.on_gpu)
        # float32 data on the host: the products run on float64 copies (see KernelOperator.solve)
        work = dtype if on_gpu else np.dtype(np.float64)
        data = [
            a if arr.kind_of(a) == "scalar" else compute.to_compute(a, on_gpu, work, s.name)
            for s, a in zip(self.slots, args)
        ]
        shape = tuple(b.shape)
        n = shape[0]
        d = self.var.params[1]
        red = Reduction("Sum", self.formula)
        alpha = float(alpha)

        def product(x):
            call_args = list(data)
            call_args[self.varinv_pos] = x.reshape(n, d).astype(work)
            out = reduce(red, self.slots, call_args, self.axis, backend, ranges)[0]
            return out.astype(np.float64).reshape(n * d) + alpha * x

        def apply(X):  # (n·d, w): one reduction per column (the formula is linear in B, not a kernel product)
            return xp.stack([product(X[:, j]) for j in range(X.shape[1])], axis=1)

        B = data[self.varinv_pos].astype(np.float64).reshape(n * d, 1)
        compute.check_finite(B, xp, repr(self.varinvalias))
        X0 = None if x0 is None else compute.to_compute(x0, on_gpu, np.dtype(np.float64), "x0").reshape(n * d, 1)
        with compute.blas_single_thread(backend, on_gpu):
            X, info = block_cg(
                apply,
                B,
                tol=default_tol(dtype) if tol is None else tol,
                maxiter=maxiter,
                x0=X0,
                callback=callback,
                verbose=verbose,
                xp=xp,
            )
        out = compute.from_compute(X.reshape(shape), kind, dtype)
        return (out, info) if return_info else out


def lazy_solve(K: Any, b: Any, alpha: float = 1e-10, **options: Any):
    """``K.solve(b, alpha)`` of a LazyTensor K: solve ``(alpha·Id + K) a = b`` for a scalar symbolic K.

    ``b`` is an array (N,) or (N, D) — the unknown follows K's j index and the sum runs over j —
    or a LazyTensor holding one variable: an i-variable (``Vi(b)``, pykeops style: sum over j) or a
    j-variable (sum over i). Options are those of :meth:`KernelOperator.solve` (``tol``,
    ``precond``, …) by conjugate gradients; with torch tensors that require grad (K's data, b, a
    tensor ``alpha``) the solution is differentiable (implicit function theorem: the backward is
    one more solve).

    >>> import numpy as np
    >>> from kernla import Vi, Vj
    >>> x = np.linspace(0, 1, 5)[:, None]
    >>> a = lazy_solve((-Vi(x).sqdist(Vj(x))).exp(), np.ones(5), alpha=1.0)
    >>> bool(np.allclose(np.exp(-(x - x.T) ** 2) @ a + a, 1.0))
    True
    >>> K = (-LazyTensor(x[:, None, :]).sqdist(LazyTensor(x[None, :, :]))).exp()
    >>> bool(np.allclose(K.solve(np.ones(5), alpha=1.0), a))
    True
    """
    op = KernelOperator(K)
    if hasattr(b, "formula") and hasattr(b, "variables"):
        if len(b.variables) != 1 or not b.formula.is_var:
            raise ShapeError(
                "LazyTensor.solve takes an array or a LazyTensor made of one variable (e.g. Vi(b)) as right-hand side"
            )
        data, cat = b.variables[0]
        if cat == CAT_PARAM:
            raise ShapeError("the right-hand side of LazyTensor.solve must be indexed by i or j, not a parameter")
        if cat == CAT_J:
            op = op.T
        b = data
    return op.solve(b, alpha=alpha, **options)


# linalg sits above the user API (kernla.lazy) in the layers: it adds the method, lazy.py never imports linalg
LazyTensor.solve = lazy_solve
