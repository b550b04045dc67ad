"""Block conjugate gradients: all right-hand sides at once, each column on its own.

``block_cg(apply, B, ...)`` solves ``A X = B`` for a symmetric positive definite ``A`` given by
``apply(X) -> A @ X`` on (n, k) arrays. Every iteration makes *one* call to ``apply`` with the
columns still running, so a kernel operator pays one reduction per iteration whatever k is.
Each column has its own step sizes (this is k independent CG recurrences sharing their
products, not a block-Krylov method), stops as soon as ``‖b_j − A x_j‖ ≤ tol · ‖b_j‖`` and then
stops moving.

Rounding. When the recursive residuals say "converged", the true residual is computed once (one
more product) and columns that fall short restart from it, so float32 rounding cannot fake
convergence. Products computed in a lower precision than the CG vectors (float32 kernel
products on a GPU) leave a floor under the true residual, about ``eps · cond(A)``, that no
number of iterations crosses while the recursive residual keeps falling. So every
``check_every`` iterations the true residual of the current iterate is computed too — its
product rides along with the iteration's own (two blocks of columns in one ``apply`` call, no
extra kernel pass) — the iterate with the smallest true residual is kept, and a column stops
as *stalled* when its true residual has not halved in ``stall_window`` iterations while the
recursive one has fallen below half of it (the sign of a rounding floor, not of slow
convergence, where both agree). A stalled column (or one whose restarts are used up) returns
its iterate with the smallest true residual, with a :class:`ConvergenceWarning` that names the
floor. A column stopped by ``maxiter`` returns its last iterate: CG's error in the A-norm
decreases at every step, so it is the best iterate in that norm (the residual's 2-norm is not
monotone and can be larger than at the start on ill-conditioned systems).

>>> import numpy as np
>>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
>>> x, info = block_cg(lambda X: A @ X, np.array([[1.0], [2.0]]), tol=1e-12)
>>> bool(np.allclose(A @ x, [[1.0], [2.0]])), info.converged
(True, True)
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputValueError
from ._compute import to_host

#: default maximum number of iterations: min(10 n, DEFAULT_MAXITER)
DEFAULT_MAXITER = 2000

#: how many times a column whose true residual disagrees with its recursive one may restart
_MAX_RESTARTS = 3

#: true residuals are computed every CHECK_EVERY iterations (riding along with the iteration's product)
CHECK_EVERY = 10

#: a column stalls when its true residual has not halved in STALL_WINDOW iterations while its
#: recursive residual is below half of it
STALL_WINDOW = 20


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped (``maxiter`` reached, or the operator is not positive definite)
    before meeting its tolerance; the best iterate found was returned."""


@dataclass
class SolveInfo:
    """What a conjugate-gradient solve did.

    ``iterations``: CG iterations run (the slowest column); ``residual_norms``: final relative
    residuals ``‖b_j − A x_j‖ / ‖b_j‖`` per column; ``converged``: every column met ``tol``;
    ``column_converged`` / ``column_iterations``: per column; ``kernel_products``: calls to the
    operator (each one reduction, whatever the number of columns); ``history``: the relative
    residuals after each iteration; ``time``: seconds in the solver; ``precond``: the
    preconditioner's description and ``precond_time`` its set-up time; ``column_stalled``: columns
    stopped at a rounding floor of their true residual (see the module docstring).
    """

    iterations: int
    residual_norms: np.ndarray
    converged: bool
    column_converged: np.ndarray
    column_iterations: np.ndarray
    kernel_products: int
    tol: float
    history: list = field(default_factory=list, repr=False)
    time: float = 0.0
    precond: str | None = None
    precond_time: float = 0.0
    column_stalled: np.ndarray | None = None


def default_tol(dtype: Any) -> float:
    """1e-6 for float32 data, 1e-10 for float64."""
    return 1e-6 if np.dtype(dtype) == np.float32 else 1e-10


def default_maxiter(n: int) -> int:
    return int(min(10 * n, DEFAULT_MAXITER))


def _progress(verbose: bool, total: int):
    """A tqdm progress bar, or None when not verbose or tqdm is not installed."""
    if not verbose:
        return None
    try:
        from tqdm.auto import tqdm  # optional dependency: the progress bar of verbose solves
    except ImportError:
        return None
    return tqdm(total=total, desc="kernla CG", unit="it", leave=False)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside kernla and torch.

    Frames of the torch package are skipped too: under autograd, a solve runs inside
    ``torch.autograd.Function.apply`` (and its backward inside torch's engine), and a warning
    pointing there would name torch's source instead of the user's line.
    """
    roots = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep]
    torch_file = getattr(sys.modules.get("torch"), "__file__", None)
    if torch_file:
        roots.append(os.path.dirname(os.path.abspath(torch_file)) + os.sep)
    roots_t = tuple(roots)
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(roots_t):
        frame, level = frame.f_back, level + 1
    return level  # the outermost frame when the stack is all kernla/torch (a backward on torch's thread)


def block_cg(
    apply: Callable[[Any], Any],
    B: Any,
    *,
    tol: float = 1e-10,
    maxiter: int | None = None,
    x0: Any = None,
    precond: Callable[[Any], Any] | None = None,
    callback: Callable[[int, np.ndarray], Any] | None = None,
    verbose: bool = False,
    xp: Any = np,
    check_every: int = CHECK_EVERY,
    stall_window: int = STALL_WINDOW,
) -> tuple[Any, SolveInfo]:
    """Solve ``A X = B`` column by column with shared products; returns ``(X, info)``.

    ``apply(X)`` returns ``A @ X`` for an (n, j) array of the same namespace ``xp`` (NumPy or
    CuPy), for any number of columns j; ``precond(R)`` returns ``M⁻¹ R`` (M ≈ A, symmetric
    positive definite). ``tol`` is relative to each column's norm; ``x0`` warm-starts;
    ``callback(iteration, residual_norms)`` receives the relative residuals of all columns after
    each iteration; ``verbose`` shows a tqdm progress bar if tqdm is installed. ``check_every``
    (0: never) and ``stall_window`` set the true-residual checks and the stall test (module
    docstring). A column that does not converge comes back with a :class:`ConvergenceWarning`:
    after ``maxiter`` iterations as its last iterate (the best in the A-norm), after a stall at a
    rounding floor above ``tol`` as its iterate with the smallest true residual seen.

    >>> A = np.diag([1.0, 10.0, 100.0])
    >>> X, info = block_cg(lambda X: A @ X, np.eye(3), tol=1e-12)
    >>> info.column_iterations.tolist()
    [1, 1, 1]
    """
    start = time.perf_counter()
    if B.ndim != 2:
        raise InputValueError(f"block_cg needs a 2-D right-hand side (n, k), got shape {tuple(B.shape)}")
    tol = float(tol)
    if not (tol > 0 and np.isfinite(tol)):
        raise InputValueError(f"tol must be a positive number, got {tol}")
    n, k = B.shape
    if maxiter is None:
        maxiter = default_maxiter(n)
    if not isinstance(maxiter, (int, np.integer)) or isinstance(maxiter, bool) or maxiter < 0:
        raise InputValueError(f"maxiter must be a non-negative integer, got {maxiter!r}")
    maxiter = int(maxiter)
    check_every, stall_window = int(check_every), int(stall_window)

    def norms(R):
        return to_host(xp.sqrt((R * R).sum(axis=0)))

    bnorm = norms(B)
    safe_bnorm = np.where(bnorm > 0, bnorm, 1.0)
    thresh = tol * bnorm
    products = 0
    X = xp.zeros_like(B) if x0 is None else x0.copy()
    if x0 is None:
        R = B.copy()
    else:
        R = B - apply(X)
        products += 1
    rnorm = norms(R)
    zero = bnorm == 0
    if zero.any():  # the solution of A x = 0 is 0, whatever x0 said
        X[:, xp.asarray(np.flatnonzero(zero))] = 0
        R[:, xp.asarray(np.flatnonzero(zero))] = 0
        rnorm[zero] = 0.0
    done = rnorm <= thresh  # frozen: converged (verified) or given up
    verified = done.copy()  # converged by a true residual
    failed = np.zeros(k, dtype=bool)  # gave up (not positive definite, or residual floor)
    stalled = np.zeros(k, dtype=bool)  # gave up at a rounding floor of the true residual
    restarts = np.zeros(k, dtype=int)
    col_iters = np.zeros(k, dtype=int)
    not_pd = False
    # the iterate with the smallest true residual so far, and the last time that residual halved
    X_best = X.copy()
    best_true = rnorm.copy()
    ref_true = rnorm.copy()
    ref_it = np.zeros(k, dtype=int)

    def record_true(cols: np.ndarray, tn: np.ndarray, Xc: Any) -> None:
        """Note the true residuals ``tn`` of the iterates ``Xc`` of columns ``cols``."""
        better = tn < best_true[cols]
        if better.any():
            X_best[:, xp.asarray(cols[better])] = Xc[:, xp.asarray(np.flatnonzero(better))]
            best_true[cols[better]] = tn[better]
        halved = tn <= 0.5 * ref_true[cols]
        ref_true[cols[halved]] = tn[halved]
        ref_it[cols[halved]] = it

    P = xp.zeros_like(B)
    rz = np.zeros(k)

    def start_columns(cols: np.ndarray) -> None:
        """(Re)start CG on ``cols`` from their current residual."""
        if cols.size == 0:
            return
        c = xp.asarray(cols)
        Rc = R[:, c]
        Z = Rc if precond is None else precond(Rc)
        P[:, c] = Z
        rz[cols] = to_host((Rc * Z).sum(axis=0))

    start_columns(np.flatnonzero(~done))
    history = []
    bar = _progress(verbose, maxiter)
    it = 0
    try:
        while True:
            active = np.flatnonzero(~done)
            if active.size == 0:
                # every column converged by its recursive residual: check the true residuals once
                check = np.flatnonzero(~verified & ~failed)
                if check.size == 0:
                    break
                c = xp.asarray(check)
                Xc = X[:, c]
                Rt = B[:, c] - apply(Xc)
                products += 1
                tn = norms(Rt)
                record_true(check, tn, Xc)
                R[:, c] = Rt
                rnorm[check] = tn
                good = tn <= thresh[check]
                verified[check[good]] = True
                bad = check[~good]
                restarts[bad] += 1
                give_up = bad[restarts[bad] > _MAX_RESTARTS]
                failed[give_up] = True
                stalled[give_up] = True
                again = bad[restarts[bad] <= _MAX_RESTARTS]
                if again.size and it < maxiter:
                    done[again] = False
                    start_columns(again)
                    continue
                failed[again] = True
                break
            if it >= maxiter:
                break
            it += 1
            c = xp.asarray(active)
            Pa = P[:, c]
            if check_every > 0 and it % check_every == 0:
                # the true residual of the current iterates, computed in the same product
                Xa = X[:, c]
                both = apply(xp.concatenate([Pa, Xa], axis=1))
                AP, AX = both[:, : active.size], both[:, active.size :]
                tn = norms(B[:, c] - AX)
                record_true(active, tn, Xa)
                rec = rnorm[active]
                truly = tn <= thresh[active]
                stuck = ~truly & (rec <= 0.5 * tn) & (it - ref_it[active] >= stall_window)
                if truly.any() or stuck.any():
                    verified[active[truly]] = True
                    failed[active[stuck]] = True
                    stalled[active[stuck]] = True
                    done[active[truly | stuck]] = True
                    rnorm[active[truly]] = tn[truly]
                    keep = np.flatnonzero(~(truly | stuck))
                    active = active[keep]
                    c = xp.asarray(active)
                    Pa, AP = Pa[:, xp.asarray(keep)], AP[:, xp.asarray(keep)]
            else:
                AP = apply(Pa)
            products += 1
            if active.size:
                pap = to_host((Pa * AP).sum(axis=0))
                ok = np.isfinite(pap) & (pap > 0)
                if not ok.all():
                    # a direction of non-positive curvature: A is not positive definite on this column
                    not_pd = True
                    failed[active[~ok]] = True
                    done[active[~ok]] = True
                step = np.where(ok, rz[active] / np.where(ok, pap, 1.0), 0.0)
                s = xp.asarray(step.astype(B.dtype))
                X[:, c] += s * Pa
                R[:, c] -= s * AP
                rn = norms(R[:, c])
                rnorm[active] = rn
                col_iters[active[ok]] += 1
                conv = ok & (rn <= thresh[active])
                done[active[conv]] = True
                cont = active[ok & ~conv]
                if cont.size:
                    cc = xp.asarray(cont)
                    Rc = R[:, cc]
                    Z = Rc if precond is None else precond(Rc)
                    rz_new = to_host((Rc * Z).sum(axis=0))
                    beta = rz_new / np.where(rz[cont] != 0, rz[cont], 1.0)
                    P[:, cc] = Z + xp.asarray(beta.astype(B.dtype)) * P[:, cc]
                    rz[cont] = rz_new
            rel = rnorm / safe_bnorm
            history.append(rel.copy())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    residual=f"{rel[~done].max() if (~done).any() else rel.max():.2e}", running=int((~done).sum())
                )
            if callback is not None:
                callback(it, rel.copy())
    finally:
        if bar is not None:
            bar.close()

    converged_cols = verified & ~failed
    if not converged_cols.all():
        # the true residual of each unfinished column. A column stopped by maxiter keeps its last
        # iterate (CG's error in the A-norm decreases at every step, while the residual's 2-norm
        # need not: after a few steps on an ill-conditioned system it can exceed ‖b‖); a column
        # stopped at a rounding floor, where that monotonicity is lost, takes the iterate with the
        # smallest true residual seen
        todo = np.flatnonzero(~converged_cols)
        c = xp.asarray(todo)
        Xc = X[:, c]
        tn = norms(B[:, c] - apply(Xc))
        products += 1
        record_true(todo, tn, Xc)
        rnorm[todo] = tn
        use = todo[stalled[todo] & (best_true[todo] < tn)]
        if use.size:
            X[:, xp.asarray(use)] = X_best[:, xp.asarray(use)]
            rnorm[use] = best_true[use]
        converged_cols[todo] = rnorm[todo] <= thresh[todo]
    rel = rnorm / safe_bnorm
    info = SolveInfo(
        iterations=it,
        residual_norms=rel,
        converged=bool(converged_cols.all()),
        column_converged=converged_cols,
        column_iterations=col_iters,
        kernel_products=products,
        tol=tol,
        history=history,
        time=time.perf_counter() - start,
        column_stalled=stalled & ~converged_cols,
    )
    if not info.converged:
        bad = np.flatnonzero(~converged_cols)
        floor = stalled[bad]
        if not_pd:
            reason = "the operator is not positive definite (a non-positive curvature p·Ap ≤ 0 appeared)"
        elif floor.any():
            reason = (
                f"the true residual stalled at {rel[bad[floor]].min():.3g} (relative), the rounding floor of "
                "the products (about their precision times the condition number of the system; float32 "
                "products stop near 1e-7·cond); ask for a tol above it, or solve with float64 data"
            )
        else:
            reason = f"maxiter={maxiter} reached"
        warnings.warn(
            f"conjugate gradients did not converge for {bad.size} of {k} column(s): {reason}; "
            f"returning the best iterate, relative residual {rel[bad].max():.3g} > tol={tol:g}",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    return X, info
