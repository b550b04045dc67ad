"""``KernelOperator.solve``: ``(A + alpha·I) a = b`` by preconditioned block CG, for any array kind.

The right-hand side is converted to the operator's compute namespace, solved in float64 by
:func:`~kernla.linalg.cg.block_cg` with one kernel product per iteration, and returned in the
caller's kind and dtype. With torch tensors that require grad, the solve is recorded for
torch.autograd by :func:`kernla.autograd.implicit_solve` (the backward is one more solve).

>>> import numpy as np
>>> from kernla import kernels
>>> K = kernels.gaussian(np.linspace(0, 1, 20)[:, None], sigma=0.2)
>>> a = operator_solve(K, np.ones(20), alpha=0.1)
>>> bool(np.allclose(K @ a + 0.1 * a, 1.0))
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import arrays as arr
from ..errors import InputValueError, ShapeError
from . import _compute as compute
from . import torch_graph
from .cg import block_cg, default_tol
from .precond import make_preconditioner


def operator_solve(
    op: Any,
    b: Any,
    alpha: Any = 0.0,
    tol: float | None = None,
    maxiter: int | None = None,
    precond: Any = None,
    rank: int | None = None,
    x0: Any = None,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    return_info: bool = False,
    verbose: bool = False,
):
    """Solve ``(self + alpha·I) a = b`` by (preconditioned) block conjugate gradients.

    ``b`` is (N,) or (N, k): all k columns are solved together, one reduction per iteration,
    each column with its own step sizes, stopping on its own once
    ``‖b_j − A a_j‖ ≤ tol · ‖b_j‖`` (``tol`` defaults to 1e-6 for float32 data, 1e-10 for
    float64). ``precond``: None, ``"jacobi"``, ``"nystrom"`` (rank ``rank``, pivoted-Cholesky
    landmarks), ``"auto"``, a :class:`~kernla.linalg.precond.Preconditioner`, a built one (a
    LinearOperator ``M⁻¹``) or a callable ``R -> M⁻¹R``. The operator must be symmetric positive
    (semi-)definite. Beyond ``maxiter`` iterations the best iterate is returned with a
    :class:`~kernla.linalg.ConvergenceWarning`. ``return_info=True`` returns ``(a, info)`` (see
    :class:`~kernla.linalg.cg.SolveInfo`).

    float32 data: block CG always runs in float64, but float32 products would leave a floor
    of about ``1e-7 · cond(A)`` under the true residual, often above the default tol of
    1e-6. On the host, the solve's products therefore run on float64 copies of the data
    (O(N·D) memory, cast once per solve; the operator itself is unchanged) and the solution
    is returned in the caller's dtype (``info.residual_norms`` are those of the float64
    solution, before that rounding). On a GPU the products stay in float32; when the true
    residual stalls at its floor above ``tol``, the solve stops there and returns its best
    iterate with a ConvergenceWarning naming the floor, instead of running to ``maxiter``.

    Differentiable with torch: when ``b``, ``alpha`` (a 0-d tensor) or the operator's torch
    data require grad, ``a`` carries a ``grad_fn`` whose backward is one more solve (the
    implicit function theorem: ``b̄ = (A + αI)⁻ᵀ ā``, ``θ̄ = −∂_θ⟨b̄, K(θ) a⟩`` by one
    differentiable product, ``ᾱ = −⟨b̄, a⟩``), with the same ``tol``, ``maxiter`` and
    preconditioner; a NumPy ``b`` is then taken as a constant torch tensor.

    >>> import numpy as np
    >>> from kernla import kernels
    >>> x = np.linspace(0, 1, 50)[:, None]
    >>> K = kernels.gaussian(x, sigma=0.2)
    >>> a, info = K.solve(np.ones(50), alpha=1e-2, precond="nystrom", return_info=True)
    >>> bool(info.converged), bool(np.linalg.norm(K @ a + 1e-2 * a - 1) < 1e-8 * np.sqrt(50))
    (True, True)
    """
    if op.shape[0] != op.shape[1]:
        raise ShapeError(f"solve needs a square operator; this one is {op.shape[0]}x{op.shape[1]}")
    alpha_value = compute.finite_number(alpha.detach() if compute.is_torch(alpha) else alpha, "alpha")
    if isinstance(b, (list, tuple)):
        b = np.asarray(b, dtype=op.dtype)
    grad = torch_graph.records_graph(op.kernel, b, alpha)
    if grad:  # check b before a preconditioner is built
        compute.as_columns(
            b.detach() if compute.is_torch(b) else b,
            op.shape[0],
            op.on_gpu,
            op.dtype,
            "the right-hand side b",
            op.shape,
        )
    work = _solver_operator(op)
    M = make_preconditioner(precond, work, alpha_value, rank=rank)
    options = dict(tol=tol, maxiter=maxiter, precond=M)
    if not grad:
        return _solve_plain(
            op, b, alpha_value, x0=x0, callback=callback, return_info=return_info, verbose=verbose, work=work, **options
        )
    return _solve_graph(
        op,
        b,
        alpha,
        alpha_value,
        x0=x0,
        callback=callback,
        return_info=return_info,
        verbose=verbose,
        work=work,
        **options,
    )


def _solver_operator(op: Any) -> Any:
    """The operator whose products a solve uses: float64 copies of float32 host data, else ``op``.

    Block CG runs in float64; with float32 products its true residual cannot go below about
    ``1e-7 · cond(A)``, often above the default tol of 1e-6. On the host the copies cost
    O(N·D) memory, made once per solve, and a float64 product about twice a float32 one.
    On a GPU the products stay in float32 (block CG stops at the floor instead).
    """
    if op.on_gpu or op.dtype != np.float32:
        return op
    return type(op).from_kernel(op.kernel.host_copy(np.float64), op.affine)


def _solve_plain(
    op: Any,
    b: Any,
    alpha: float,
    tol: float | None,
    maxiter: int | None,
    precond: Any,
    x0: Any,
    callback: Callable | None,
    return_info: bool,
    verbose: bool,
    work: Any = None,
):
    """Block CG on ``(op + alpha·I) a = b`` (``precond``: the callable built by make_preconditioner;
    ``work``: :func:`_solver_operator`, made here when not given)."""
    if work is None:
        work = _solver_operator(op)
    n = op.shape[0]
    kind = compute.kind_of_array(b, "the right-hand side b")
    B, vector = compute.as_columns(b, n, op.on_gpu, op.dtype, "the right-hand side b", op.shape)
    cg_dtype = np.dtype(np.float64)
    B = B.astype(cg_dtype)
    compute.check_finite(B, op.xp, "the right-hand side b")
    X0 = None
    if x0 is not None:
        X0, _ = compute.as_columns(x0, n, op.on_gpu, op.dtype, "x0", op.shape)
        if X0.shape != B.shape:
            raise ShapeError(f"x0 must have the shape of b, {tuple(b.shape)}; got {tuple(x0.shape)}")
        X0 = X0.astype(cg_dtype)
        compute.check_finite(X0, op.xp, "x0")
    op_dtype = work.dtype

    def apply(X):
        out = work.product(X.astype(op_dtype, copy=False)).astype(cg_dtype, copy=False)
        if alpha != 0.0:
            out += alpha * X
        return out

    with compute.blas_single_thread(op.backend, op.on_gpu):
        X, info = block_cg(
            apply,
            B,
            tol=default_tol(op.dtype) if tol is None else tol,
            maxiter=maxiter,
            x0=X0,
            precond=precond,
            callback=callback,
            verbose=verbose,
            xp=op.xp,
        )
    if vector:
        X = X.reshape(-1)
    out = compute.from_compute(X, kind, compute.output_dtype(b, op.dtype))
    return (out, info) if return_info else out


def _solve_graph(
    op: Any,
    b: Any,
    alpha: Any,
    alpha_value: float,
    tol: float | None,
    maxiter: int | None,
    precond: Any,
    x0: Any,
    callback: Callable | None,
    return_info: bool,
    verbose: bool,
    work: Any = None,
):
    """:func:`operator_solve` recorded for torch.autograd by :func:`kernla.autograd.implicit_solve`.

    The forward is the plain block CG (with ``x0``, ``callback``, ``verbose``); the backward
    solves the transposed system once with the same tolerance and preconditioner, and
    differentiates one product ``K(θ) a`` (:func:`kernla.linalg.torch_graph.product`) for the
    operator's data.
    """
    from ..autograd import implicit_solve  # imports torch: only for solves that record a graph

    sources = op.kernel.source
    if not compute.is_torch(b):  # the operator's data or alpha requires grad: the solution must be a tensor
        ref = next(d for d in (alpha, *sources) if compute.is_torch(d))
        b = arr.wrap(
            compute.to_compute(b, False, compute.output_dtype(b, op.dtype), "the right-hand side b"),
            arr.Kind("torch", ref.device),
        )
    targets = [k for k, d in enumerate(sources) if compute.is_torch(d) and d.requires_grad]
    found: dict[str, Any] = {}

    def run(rhs: Any, transpose: bool) -> Any:
        if transpose:  # the adjoint system (the same one for a symmetric operator)
            if "T" not in found:  # (the transpose, and that of the float64 copy the forward used)
                found["T"] = (op.T, None if work is None or work is op else work.T)
            T, work_T = found["T"]
            return _solve_plain(T, rhs, alpha_value, tol, maxiter, precond, None, None, False, False, work_T)
        a, found["info"] = _solve_plain(op, rhs, alpha_value, tol, maxiter, precond, x0, callback, True, verbose, work)
        return a

    def matvec(v: Any, *params: Any) -> Any:
        replaced = list(sources)
        for k, p in zip(targets, params):
            replaced[k] = p
        return torch_graph.product(op.kernel, op.affine, v, sources=replaced)

    if compute.is_torch(alpha):
        if alpha.numel() != 1:
            raise InputValueError(f"alpha must be a number or a one-element tensor, got shape {tuple(alpha.shape)}")
        alpha = alpha.reshape(())
    else:
        alpha = alpha_value
    a = implicit_solve(run, matvec, b, [sources[k] for k in targets], alpha)
    return (a, found["info"]) if return_info else a
