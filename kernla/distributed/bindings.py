"""Formula bindings that accept Dask arrays, and ``KernelOperator(..., client=...)``.

``Vi(x)`` / ``Vj(x)`` are :func:`kernla.Vi` / :func:`kernla.Vj` that also take a Dask array: it
goes through kernla's formula parsing and shape checks as a zero-memory stand-in, and its
blocks are computed on the cluster, where the array lives, never on the client.

>>> import dask.array as da
>>> X = Vi(da.zeros((1000, 3), chunks=250))
>>> X.formula.dim, type(X.variables[0][0]).__name__
(3, 'DaskBacked')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distributed import Client

from .. import lazy
from ..lazy import LazyTensor
from ..linalg import KernelOperator as LocalKernelOperator
from .operator import DistributedKernelOperator, distribute
from .placement import stand_in


def Vi(x: Any) -> LazyTensor:
    """An i-variable from an (N, D) NumPy or Dask array (or (N,) for D = 1)."""
    return lazy.Vi(stand_in(x))


def Vj(x: Any) -> LazyTensor:
    """A j-variable from an (M, D) NumPy or Dask array (or (M,) for D = 1)."""
    return lazy.Vj(stand_in(x))


def KernelOperator(
    formula: str | LazyTensor,
    /,
    *,
    client: Client,
    backend: str | None = None,
    blocks: int | Sequence[int] | None = None,
    broadcast_bytes: int | None = None,
    device: str = "cpu",
    **bindings: Any,
) -> DistributedKernelOperator:
    """:class:`kernla.KernelOperator` on a Dask cluster: the same formula and bindings, plus ``client``.

    The other options are :func:`~kernla.distributed.distribute`'s. Bind Dask arrays with this
    module's :func:`Vi` / :func:`Vj`.

    >>> import numpy as np
    >>> from distributed import Client, LocalCluster
    >>> client = Client(LocalCluster(n_workers=1, processes=False, dashboard_address=":0"))
    >>> x = np.linspace(0, 1, 20)[:, None]
    >>> K = KernelOperator("Exp(-SqDist(X, Y))", X=Vi(x), Y=Vj(x), client=client)
    >>> K.shape, K.broadcast
    ((20, 20), True)
    >>> client.close(); client.cluster.close()
    """
    local = LocalKernelOperator(formula, backend=backend, **bindings)
    return distribute(local, client, blocks=blocks, broadcast_bytes=broadcast_bytes, device=device)
