"""The CUDA engine: generated kernels compiled with NVRTC through CuPy.

``source`` (no CuPy needed) generates the CUDA text from ``cuda_templates/``; ``engine`` (needs
CuPy and a GPU; importing it without them raises ImportError, which
:func:`kernla.engines.get_engine` reports as BackendError) compiles and launches it. The user-level
entry point to the text is :func:`kernla.cuda_source`.

>>> from kernla.engines.cuda.source import build_plan
>>> from kernla.formula import Vi, Vj, call
>>> from kernla.reductions import Reduction
>>> 'extern "C"' in build_plan(Reduction("ArgMin", call("SqDist", Vi(0, 2), Vj(1, 2))), "float32").source
True
"""
