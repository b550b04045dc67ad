"""The CUDA engine: generated kernels compiled with NVRTC through CuPy.

``source`` (no CuPy needed) generates the CUDA text from ``cuda_templates/``; ``engine`` (needs
CuPy and a GPU; importing it without them raises ImportError, which
:func:`kernla.engines.get_engine` reports as BackendError) compiles and launches it.

>>> from kernla.engines.cuda import cuda_source
>>> "extern \\"C\\"" in cuda_source("SqDist(X, Y)", ["X = Vi(2)", "Y = Vj(2)"], "ArgMin")
True
"""

from .source import cuda_source

__all__ = ["cuda_source"]
