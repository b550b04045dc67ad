"""Linear algebra on kernel matrices that are never stored.

- :class:`KernelOperator`: ``K_ij = F(x_i, y_j)`` as a ``scipy.sparse.linalg.LinearOperator``
  (products are kernla reductions), with ``solve`` (preconditioned block conjugate gradients),
  ``eigsh`` (thick-restart Lanczos), ``diag``, ``to_dense``, scaling and ``+ alpha·I``;
- :class:`KernelSolve`: pykeops' formula-string interface to the same solver;
- :func:`block_cg`, the preconditioners :class:`Jacobi` / :class:`Nystrom` (built, they are
  scipy LinearOperators ``M⁻¹``), and :func:`eigsh` for any operator given as a function;
- :func:`slq_logdet`, a stochastic estimate of ``log det (K + alpha·I)``.

Importing it also gives :class:`~kernla.LazyTensor` its ``solve`` method (:func:`lazy_solve`).

Modules: ``operator`` (the LinearOperator), ``kernel`` (formula, data, products and entries of
K), ``affine`` (``scale · K + shift · I``), ``bindings`` (formula strings and their bindings),
``identity``, ``array_kinds`` (scipy's wrappers, keeping torch and CuPy arrays), ``torch_graph``
(products recorded for torch.autograd), ``operator_solve`` and
``cg`` (block conjugate gradients), ``lanczos`` (eigsh), ``precond``, ``slq``, ``solve``
(KernelSolve).

>>> import numpy as np, kernla
>>> x = np.random.default_rng(0).uniform(size=(200, 2))
>>> K = kernla.kernels.gaussian(x, sigma=0.3)
>>> a = K.solve(np.ones(200), alpha=0.1, precond="nystrom")
>>> bool(np.linalg.norm(K @ a + 0.1 * a - 1) < 1e-8 * np.sqrt(200))
True
"""

from .cg import ConvergenceWarning, SolveInfo, block_cg
from .identity import ScaledIdentity, eye
from .lanczos import eigsh
from .operator import KernelOperator
from .precond import Jacobi, Nystrom, Preconditioner, PreconditionerOperator, pivoted_cholesky
from .slq import slq_logdet
from .solve import KernelSolve, lazy_solve

__all__ = [
    "KernelOperator",
    "KernelSolve",
    "ConvergenceWarning",
    "SolveInfo",
    "block_cg",
    "eigsh",
    "ScaledIdentity",
    "eye",
    "Jacobi",
    "Nystrom",
    "Preconditioner",
    "PreconditionerOperator",
    "pivoted_cholesky",
    "slq_logdet",
    "lazy_solve",
]
