"""Scale-out on Dask: kernel products, solves and kNN with the points spread over worker processes and GPUs.

Install with ``pip install kernla[distributed]`` (``dask[distributed]``); ``import kernla`` never
imports Dask. A :class:`DistributedKernelOperator` keeps the rows' points in blocks on the
workers (placed once, recomputable by Dask if a worker dies) and sends only vectors per product:

- :func:`distribute` (a local :class:`kernla.KernelOperator` onto a cluster) and
  :func:`KernelOperator` (``formula, client=..., X=Vi(x), Y=Vj(y)``, NumPy or Dask arrays with
  this package's :func:`Vi` / :func:`Vj`);
- products (``@``, ``matvec``, ``matmat``, ``rmatvec``, ``.T``), :meth:`~DistributedKernelOperator.solve`
  (kernla's block CG driven from the client, Jacobi or Nyström preconditioning),
  :meth:`~DistributedKernelOperator.kmin` and :func:`knn`;
- :meth:`~DistributedKernelOperator.held_rows`: which points each worker holds.

Modules: ``operator`` (the operator and :func:`distribute`), ``placement`` (blocks on the workers),
``tasks`` (what runs on a worker), ``bindings`` (Dask-aware ``Vi``/``Vj``, ``KernelOperator``),
``knn``. See docs/scaling.md.
"""

from .bindings import KernelOperator, Vi, Vj
from .knn import knn
from .operator import DistributedError, DistributedKernelOperator, distribute
from .placement import split_rows
from .tasks import KernelSpec, merge_kmin

__all__ = [
    "DistributedError",
    "DistributedKernelOperator",
    "KernelOperator",
    "KernelSpec",
    "Vi",
    "Vj",
    "distribute",
    "knn",
    "merge_kmin",
    "split_rows",
]
