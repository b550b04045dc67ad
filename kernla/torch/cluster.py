"""``pykeops.torch.cluster``: the clustering helpers of :mod:`kernla.cluster.torch`, under pykeops' module path.

>>> from kernla.torch.cluster import grid_cluster, sort_clusters
>>> grid_cluster is __import__("kernla.cluster.torch", fromlist=["grid_cluster"]).grid_cluster
True
"""

from ..cluster.torch import *  # noqa: F401,F403
from ..cluster.torch import __all__  # noqa: F401
