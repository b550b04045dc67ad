"""Clustering helpers for block-sparse reductions, with pykeops' names and behaviour.

:mod:`kernla.cluster.numpy` works on NumPy arrays and :mod:`kernla.cluster.torch` on torch
tensors (the same logic: the torch functions compute their integer bookkeeping with the NumPy
ones and give tensors back on the input's device). They build the ``ranges`` tuple of a
block-sparse reduction: label the points (:func:`~kernla.cluster.numpy.grid_cluster`), sort them so
that each cluster is contiguous (``sort_clusters``), take each cluster's ``[start, end)`` slice and
centroid (``cluster_ranges_centroids``), decide which cluster pairs interact (a boolean matrix) and
turn that into the 6-tuple (``from_matrix``). See docs/block_sparse.md.

>>> import numpy as np
>>> from kernla.cluster.numpy import grid_cluster
>>> grid_cluster(np.array([[0.0], [0.1], [0.9], [0.05], [0.5]]), 0.2).tolist()
[0, 0, 2, 0, 1]
"""
