"""A Gaussian process's kernel products on a Dask cluster: the training points placed once.

:class:`ClusterProducts` gives what :class:`kernla.models.gp_evidence.LocalProducts` gives — K on the
training points X, K(X_new, X) and the weighted derivative sums of the marginal likelihood's
gradient — as products of a :class:`~kernla.distributed.DistributedKernelOperator`. X's blocks go
to the workers on the first product; a new hyper-parameter value (each optimiser step) is a new
formula on the same blocks (:meth:`~kernla.distributed.DistributedKernelOperator.with_kernel`:
the kernels' placed mode makes every hyper-parameter, length scales included, a formula
parameter), so only vectors travel per step. Used by
:class:`~kernla.models.GaussianProcessRegressor` with ``client=``; importing it imports Dask.

>>> import numpy as np
>>> from distributed import Client, LocalCluster
>>> from kernla.models import gp_kernels as gk
>>> client = Client(LocalCluster(n_workers=1, processes=False, dashboard_address=":0"))
>>> X = np.random.default_rng(0).uniform(size=(40, 2))
>>> on_cluster = ClusterProducts(client, X)
>>> k = gk.RBF([0.5, 2.0])
>>> bool(np.allclose(on_cluster.operator(k) @ np.ones(40), k.operator(X) @ np.ones(40), rtol=1e-13))
True
>>> client.close(); client.cluster.close()
"""

from __future__ import annotations

from typing import Any

import numpy as np
from distributed import Client

from .. import arrays as arr
from ..distributed import DistributedKernelOperator, KernelSpec, distribute
from ..errors import InputValueError
from ..formula.tree import Node
from ._client import check_host_data
from ._common import host
from .gp_kernels import GPKernel, pair_gradient


class ClusterProducts:
    """The kernel products of a Gaussian process on the workers of ``client`` (module docstring).

    ``X``: the training points, host NumPy (their blocks are made from it once); ``backend``: the
    workers' engine (None: each worker's automatic choice); ``broadcast_bytes``:
    :func:`~kernla.distributed.distribute`'s (0: the points partitioned, never all on one worker).
    """

    def __init__(self, client: Client, X: Any, backend: str | None = None, broadcast_bytes: int | None = None):
        check_host_data(X)
        self.client, self.X, self.backend, self.broadcast_bytes = client, X, backend, broadcast_bytes
        self._placed: DistributedKernelOperator | None = None

    def operator(self, kernel: GPKernel) -> DistributedKernelOperator:
        """``kernel`` on the training points, computed on the workers (X placed on the first call)."""
        if not isinstance(kernel, GPKernel) or type(kernel).operator is not GPKernel.operator:
            raise InputValueError(
                "client= needs a kernel with a formula (a kernla or scikit-learn kernel, or a named one), "
                f"got {kernel!r}"
            )
        local = kernel.operator(self.X, backend=self.backend, placed=True)
        if self._placed is None:
            self._placed = distribute(local, self.client, broadcast_bytes=self.broadcast_bytes)
            return self._placed
        return self._placed.with_kernel(local)

    def cross(self, kernel: GPKernel, X_new: Any) -> DistributedKernelOperator:
        """``K(X_new, X)``: the new points placed as rows against the training points already there."""
        return self.operator(kernel).with_rows(host(X_new, arr.dtype_of(self.X)))

    def pair_gradient(self, kernel: GPKernel, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        """:func:`~kernla.models.gp_kernels.pair_gradient` as one reduction on the workers' blocks."""
        placed = self.operator(kernel)

        def pair_sum(formula: Node, variables: list, names: list) -> np.ndarray:
            spec = KernelSpec.build(formula, variables, names, self.backend, placed.dtype)
            return placed.pair_sum(spec, U, V)

        return pair_gradient(kernel, self.X, U, V, self.backend, pair_sum=pair_sum)


__all__ = ["ClusterProducts"]
