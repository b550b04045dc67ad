"""Exact k-nearest neighbours on a Dask cluster: the k smallest squared distances per query.

The queries are the rows (split in blocks on the workers), the points the columns (a copy per
worker while they fit, else partitioned and streamed); each block runs kernla's
``KMin_ArgKMin`` reduction on its worker, and candidate lists of column blocks are merged
exactly (:func:`kernla.distributed.tasks.merge_kmin`), so the result is the single-process one.

>>> import numpy as np
>>> from distributed import Client, LocalCluster
>>> client = Client(LocalCluster(n_workers=1, processes=False, dashboard_address=":0"))
>>> points = np.array([[0.0], [1.0], [3.0], [7.0]])
>>> dist, idx = knn(np.array([[2.9], [0.2]]), points, 2, client, broadcast_bytes=0)
>>> idx, dist.round(2)
(array([[2, 1],
       [0, 1]]), array([[0.1, 1.9],
       [0.2, 0.8]]))
>>> client.close(); client.cluster.close()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from distributed import Client

from ..errors import InputValueError
from .bindings import KernelOperator, Vi, Vj


def knn(
    queries: Any,
    points: Any,
    k: int,
    client: Client,
    *,
    metric: str = "euclidean",
    blocks: int | Sequence[int] | None = None,
    broadcast_bytes: int | None = None,
    device: str = "cpu",
    backend: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, indices)`` of the ``k`` nearest ``points`` of each query, nearest first.

    ``queries`` (n, D) and ``points`` (m, D) are NumPy or Dask arrays (pass the same array twice
    for a self-search: it is stored once); ``metric`` is ``"euclidean"`` or ``"sqeuclidean"``.
    Ties keep the smaller index, as :class:`kernla.models.NearestNeighbors` does.
    """
    if metric not in ("euclidean", "sqeuclidean"):
        raise InputValueError(f"the distributed kNN supports metric 'euclidean' or 'sqeuclidean', got {metric!r}")
    X, Y = Vi(queries), Vj(points) if points is not queries else None
    if Y is None:  # one array for both sides: the same stand-in, so one storage on the cluster
        Y = Vj(X.variables[0][0])
    op = KernelOperator(
        "SqDist(X, Y)",
        X=X,
        Y=Y,
        client=client,
        blocks=blocks,
        broadcast_bytes=broadcast_bytes,
        device=device,
        backend=backend,
    )
    d2, idx = op.kmin(k)
    return (np.sqrt(np.maximum(d2, 0.0)) if metric == "euclidean" else np.maximum(d2, 0.0)), idx
