"""Linear algebra on kernel matrices that are never stored.

- :class:`KernelOperator`: ``K_ij = F(x_i, y_j)`` as a ``scipy.sparse.linalg.LinearOperator``
  (products are kernla reductions), with ``solve`` (preconditioned block conjugate gradients),
  ``eigsh`` (thick-restart Lanczos), ``diag``, ``to_dense``, scaling and ``+ alpha·I``;
- :class:`KernelSolve`: pykeops' formula-string interface to the same solver;
- :func:`block_cg`, the preconditioners :class:`Jacobi` / :class:`Nystrom`, and :func:`eigsh`
  for any operator given as a function.

>>> import numpy as np, kernla
>>> x = np.random.default_rng(0).uniform(size=(200, 2))
>>> K = kernla.kernels.gaussian(x, sigma=0.3)
>>> a = K.solve(np.ones(200), alpha=0.1, precond="nystrom")
>>> bool(np.linalg.norm(K @ a + 0.1 * a - 1) < 1e-8 * np.sqrt(200))
True
"""

from .cg import ConvergenceWarning, SolveInfo, block_cg
from .lanczos import eigsh
from .operator import KernelOperator, ScaledIdentity, eye
from .precond import Jacobi, Nystrom, Preconditioner, pivoted_cholesky
from .solve import KernelSolve, lazy_solve

__all__ = ["KernelOperator", "KernelSolve", "ConvergenceWarning", "SolveInfo", "block_cg", "eigsh",
           "ScaledIdentity", "eye", "Jacobi", "Nystrom", "Preconditioner", "pivoted_cholesky", "lazy_solve"]
