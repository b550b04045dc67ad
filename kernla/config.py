"""The settings pykeops scripts read from ``pykeops.config``, answered for kernla.

``gpu_available`` says whether kernla's cuda engine runs here (CuPy and a GPU);
``get_build_folder()`` is the folder of the compiled CPU kernels.

>>> import kernla.config
>>> isinstance(kernla.config.gpu_available, bool)
True
"""

from __future__ import annotations

import importlib.util

from .engines import get_engine
from .engines.cpu.compiler import cache_dir
from .errors import BackendError

__all__ = ["gpu_available", "numpy_found", "torch_found", "verbose", "get_build_folder", "set_verbose"]

numpy_found = importlib.util.find_spec("numpy") is not None
torch_found = importlib.util.find_spec("torch") is not None
#: kernla compiles quietly; pykeops' switch is kept for scripts that set it
verbose = False


def _cuda_usable() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        get_engine("cuda")
    except BackendError:
        return False
    return True


gpu_available = _cuda_usable()


def get_build_folder() -> str:
    """The folder holding kernla's compiled CPU kernels."""
    return str(cache_dir())


def set_verbose(val: bool) -> None:
    """pykeops' verbosity switch (kernla prints nothing either way)."""
    global verbose
    verbose = bool(val)
