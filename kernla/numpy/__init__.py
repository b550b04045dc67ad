"""pykeops-compatible names for NumPy users: ``from kernla.numpy import LazyTensor, Genred``.

The same names as ``pykeops.numpy``: ``LazyTensor``, ``Vi``/``Vj``/``Pm``, ``Genred``, ``KernelSolve``
(also in ``operations``) and the ``generic_*`` constructors.

>>> from kernla.numpy import generic_argkmin, operations
>>> operations.KernelSolve is KernelSolve
True
"""

from .. import *  # noqa: F401,F403
from .. import __all__  # noqa: F401
from . import cluster, operations  # noqa: F401
