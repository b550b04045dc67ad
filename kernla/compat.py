"""Running pykeops clients (GeoMLoss, GPyTorch's KeOps kernels, pykeops scripts) on kernla unchanged.

After :func:`install_as_pykeops`, ``import pykeops`` gives a small ``pykeops`` module and every
``pykeops.<name>`` resolves to ``kernla.<name>``: ``pykeops.torch`` is :mod:`kernla.torch`,
``pykeops.numpy`` :mod:`kernla.numpy`, ``pykeops.config`` :mod:`kernla.config`,
``pykeops.torch.cluster`` ``kernla.torch.cluster`` and so on (a name kernla lacks raises the usual
``ModuleNotFoundError``). It refuses when the real pykeops is already imported: two libraries
cannot both be ``pykeops``. docs/pykeops.md says what is and is not compatible.

>>> import sys, kernla.compat
>>> pykeops = kernla.compat.install_as_pykeops()
>>> import pykeops.numpy, pykeops.torch
>>> pykeops.torch.LazyTensor is kernla.LazyTensor, sys.modules["pykeops.numpy"] is sys.modules["kernla.numpy"]
(True, True)
>>> kernla.compat.uninstall_pykeops()
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import config
from ._version import __version__ as kernla_version
from .errors import KernlaError
from .genred import Genred

__all__ = ["install_as_pykeops", "uninstall_pykeops", "PYKEOPS_VERSION"]

#: the pykeops release whose interface kernla follows
PYKEOPS_VERSION = "2.3"
_NAME = "pykeops"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``pykeops.<name>`` as the already-importable ``kernla.<name>`` (the same module object)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None):
        if not fullname.startswith(_NAME + "."):
            return None
        target_name = "kernla" + fullname[len(_NAME) :]
        if importlib.util.find_spec(target_name) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return importlib.import_module("kernla" + spec.name[len(_NAME) :])

    def exec_module(self, module) -> None:
        """Nothing to run: the kernla module is imported already."""


_FINDER = _Alias()


def install_as_pykeops() -> types.ModuleType:
    """Make ``import pykeops`` (and its submodules) load kernla; returns the ``pykeops`` module.

    Call it before importing a library that imports pykeops. Calling it again is harmless. Raises
    :class:`kernla.errors.KernlaError` when the real pykeops is already imported.
    """
    current = sys.modules.get(_NAME)
    if current is not None and getattr(current, "__kernla__", False):
        return current
    if current is not None:
        raise KernlaError(
            "the real pykeops is already imported; install_as_pykeops() must run before anything imports pykeops "
            "(two libraries cannot both be 'pykeops')"
        )
    module = types.ModuleType(_NAME, f"kernla {kernla_version} answering for pykeops {PYKEOPS_VERSION}")
    names = {
        "__path__": [],  # a package, so that pykeops.torch and friends are found (by _FINDER)
        "__version__": PYKEOPS_VERSION,
        "__kernla__": True,
        "config": config,
        "set_verbose": config.set_verbose,
        "get_build_folder": config.get_build_folder,
        "test_numpy_bindings": _check_bindings,
        "test_torch_bindings": _check_torch_bindings,
    }
    for name, value in names.items():
        setattr(module, name, value)
    sys.meta_path.insert(0, _FINDER)
    sys.modules[_NAME] = module
    sys.modules[_NAME + ".config"] = config
    return module


def uninstall_pykeops() -> None:
    """Undo :func:`install_as_pykeops`: forget the ``pykeops`` names (kernla's modules stay imported)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    if getattr(sys.modules.get(_NAME), "__kernla__", False):
        for name in [n for n in sys.modules if n == _NAME or n.startswith(_NAME + ".")]:
            del sys.modules[name]


def _check_bindings() -> bool:
    """pykeops' installation check: one small reduction against NumPy."""
    x = np.arange(6.0).reshape(3, 2)
    out = Genred("SqNorm2(X - Y)", ["X = Vi(2)", "Y = Vj(2)"], axis=1)(x, x)
    ok = bool(np.allclose(out[:, 0], ((x[:, None] - x[None]) ** 2).sum((1, 2))))
    print("pyKeOps with numpy bindings is working!" if ok else "kernla gave a wrong result")
    return ok


def _check_torch_bindings() -> bool:
    """The same check with torch tensors."""
    import torch  # optional dependency: only this check needs it

    x = torch.arange(6.0, dtype=torch.float64).reshape(3, 2)
    out = Genred("SqNorm2(X - Y)", ["X = Vi(2)", "Y = Vj(2)"], axis=1)(x, x)
    ok = bool(torch.allclose(out[:, 0], ((x[:, None] - x[None]) ** 2).sum((1, 2))))
    print("pyKeOps with torch bindings is working!" if ok else "kernla gave a wrong result")
    return ok
