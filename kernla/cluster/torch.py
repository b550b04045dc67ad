"""pykeops' clustering helpers (``pykeops.torch.cluster``) for torch tensors.

The bookkeeping is :mod:`kernla.cluster.numpy`'s, on host copies; results are tensors on the input's
device, with pykeops' dtypes (labels int32, ranges and slices int64, centroids in the points' dtype).
``sort_clusters`` indexes the tensors themselves, so gradients flow through the sorted points.

>>> import torch
>>> x = torch.tensor([[0.0], [5.0], [0.4], [0.3], [2.0]])
>>> lab = grid_cluster(x, 1.0)
>>> x_sorted, lab_sorted = sort_clusters(x, lab)
>>> lab_sorted.tolist(), cluster_ranges(lab_sorted).tolist()
([0, 0, 0, 1, 2], [[0, 3], [3, 4], [4, 5]])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import numpy as host

Ranges = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _host(a: Any) -> Any:
    """A NumPy copy of a tensor (numbers and arrays as they are)."""
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


def _device(*tensors: Any) -> torch.device:
    return next((t.device for t in tensors if isinstance(t, torch.Tensor)), torch.device("cpu"))


def _back(a: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), device=device, dtype=dtype)


def grid_cluster(x: torch.Tensor, size: Any) -> torch.Tensor:
    """int32 labels of the cubic cells (side ``size``) holding the points ``x`` (M, D).

    The grid starts at the points' minimum (as pykeops.torch); labels are compact, in the cells'
    lexicographic order.

    >>> grid_cluster(torch.tensor([[0.0], [0.1], [0.9], [0.05], [0.5]]), 0.2).tolist()
    [0, 0, 2, 0, 1]
    """
    return _back(host.grid_labels(_host(x), _host(size), None), _device(x), torch.int32)


def sort_clusters(x: Any, lab: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """``x`` (a tensor, or a tuple or list of tensors with M rows) and ``lab`` sorted by label, stably.

    >>> x, lab = sort_clusters(torch.tensor([[0.0], [5.0], [0.4]]), torch.tensor([0, 1, 0]))
    >>> x.ravel().tolist(), lab.tolist()
    ([0.0, 0.4000000059604645, 5.0], [0, 0, 1])
    """
    perm = _back(host.stable_order(_host(lab)), lab.device)
    labels = lab.reshape(-1)[perm]
    if isinstance(x, tuple):
        return tuple(a[perm] for a in x), labels
    if isinstance(x, list):
        return [a[perm] for a in x], labels
    return x[perm], labels


def cluster_ranges(lab: torch.Tensor, Nlab: Any = None) -> torch.Tensor:  # noqa: N803 (pykeops' name)
    """The ``[start, end)`` slice of each cluster in sorted points: a (C, 2) int64 tensor.

    >>> cluster_ranges(torch.tensor([0, 0, 0, 1, 2])).tolist()
    [[0, 3], [3, 4], [4, 5]]
    """
    return _back(host.cluster_ranges(_host(lab), _host(Nlab)), _device(lab), torch.int64)


def cluster_centroids(
    x: torch.Tensor,
    lab: torch.Tensor,
    Nlab: Any = None,  # noqa: N803 (pykeops' name)
    weights: Any = None,
    weights_c: Any = None,
) -> torch.Tensor:
    """The (weighted) mean of each cluster's points: a (C, D) tensor in x's dtype and device.

    >>> x = torch.tensor([[0.0], [1.0], [4.0], [5.0], [6.0]])
    >>> w = torch.tensor([0.5, 0.5, 2.0, 1.0, 1.0])
    >>> cluster_centroids(x, torch.tensor([0, 0, 1, 1, 1]), weights=w).ravel().tolist()
    [0.5, 4.75]
    """
    c = host.cluster_centroids(_host(x), _host(lab), _host(Nlab), _host(weights), _host(weights_c))
    return _back(c, x.device, x.dtype)


def cluster_ranges_centroids(
    x: torch.Tensor, lab: torch.Tensor, weights: Any = None, min_weight: float = 1e-9
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each cluster's ``[start, end)`` slice, centroid and total weight (count by default).

    Weights below ``min_weight`` count as ``min_weight`` (as pykeops.torch, for stable centroids).

    >>> r, c, w = cluster_ranges_centroids(torch.tensor([[0.0], [0.5], [1.0], [2.0], [3.0]]),
    ...                                    torch.tensor([0, 0, 1, 1, 1]))
    >>> r.tolist(), c.ravel().tolist(), w.tolist()
    ([[0, 2], [2, 5]], [0.25, 2.0], [2.0, 3.0])
    """
    w = None if weights is None else np.maximum(_host(weights).astype(np.float64), min_weight)
    r, c, total = host.cluster_ranges_centroids(_host(x), _host(lab), w)
    dtype = x.dtype if weights is None else weights.dtype
    return _back(r, x.device, torch.int64), _back(c, x.device, x.dtype), _back(total, x.device, dtype)


def from_matrix(ranges_i: torch.Tensor, ranges_j: torch.Tensor, keep: torch.Tensor) -> Ranges:
    """The ranges 6-tuple (int64 tensors) of the cluster pairs ``(k, l)`` with ``keep[k, l]`` true.

    >>> t = from_matrix(torch.tensor([[2, 5], [7, 12]]), torch.tensor([[1, 4], [4, 9], [20, 30]]),
    ...                 torch.tensor([[True, True, False], [False, True, False]]))
    >>> t[1].tolist(), t[2].tolist(), t[4].tolist(), t[5].tolist()
    ([2, 3], [[1, 4], [4, 9], [4, 9]], [1, 3, 3], [[2, 5], [2, 5], [7, 12]])
    """
    out = host.from_matrix(_host(ranges_i), _host(ranges_j), _host(keep))
    device = _device(ranges_i, ranges_j, keep)
    return tuple(_back(a, device, torch.int64) for a in out)  # type: ignore[return-value]


#: pykeops' ``swap_axes`` only reorders the tuple: the same for tensors
swap_axes = host.swap_axes

__all__ = list(host.__all__)
