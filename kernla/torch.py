"""pykeops-compatible names for PyTorch users: ``from kernla.torch import LazyTensor, Genred``.

Arrays are returned as torch tensors on the inputs' device.
"""

from . import *  # noqa: F401,F403
from . import __all__  # noqa: F401
