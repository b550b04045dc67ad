"""pykeops-compatible names for PyTorch users: ``from kernla.torch import LazyTensor, Genred``.

The same names as ``pykeops.torch``: ``LazyTensor``, ``Vi``/``Vj``/``Pm``, ``Genred``, ``KernelSolve``
(also in ``operations``) and the ``generic_*`` constructors.
Arrays are returned as torch tensors on the inputs' device.

>>> from kernla.torch import generic_argkmin, operations
>>> operations.KernelSolve is KernelSolve
True
"""

from .. import *  # noqa: F401,F403
from .. import __all__  # noqa: F401
from . import cluster, operations  # noqa: F401
