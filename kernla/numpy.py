"""pykeops-compatible names for NumPy users: ``from kernla.numpy import LazyTensor, Genred``."""

from . import *  # noqa: F401,F403
from . import __all__  # noqa: F401
