"""``pykeops.numpy.cluster``: the clustering helpers of :mod:`kernla.cluster.numpy`, under pykeops' module path.

>>> from kernla.numpy.cluster import grid_cluster, sort_clusters
>>> grid_cluster is __import__("kernla.cluster.numpy", fromlist=["grid_cluster"]).grid_cluster
True
"""

from ..cluster.numpy import *  # noqa: F401,F403
from ..cluster.numpy import __all__  # noqa: F401
