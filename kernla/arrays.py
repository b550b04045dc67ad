"""Array front ends: NumPy, PyTorch and CuPy in, the same kind out.

kernla computes on NumPy arrays (CPU engines) or CuPy arrays (CUDA engine). This module
recognises what the caller passed, refuses mixtures, converts without copying where it can
(torch CPU ↔ NumPy share memory; torch CUDA ↔ CuPy through DLPack) and turns results back into
the caller's kind, device and dtype.

>>> import numpy as np
>>> kind_of(np.zeros(3)), kind_of(2.0)
('numpy', 'scalar')
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .errors import ArrayKindError, DTypeError

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _torch():
    return sys.modules.get("torch")


def needs_grad(args: Sequence[Any]) -> bool:
    """Whether a call on ``args`` must record a torch graph (grad mode on, a tensor requiring grad).

    Cheap when torch was never imported: then nothing can require grad.
    """
    torch = _torch()
    if torch is None:
        return False
    tensor, wrapped, grad = torch.Tensor, torch._C._functorch.is_functorch_wrapped_tensor, torch.is_grad_enabled()
    for a in args:
        # torch.func transforms (vmap, grad, jvp, …) go through the autograd.Function whatever the grad mode
        if isinstance(a, tensor) and (wrapped(a) or (grad and a.requires_grad)):
            return True
    return False


def _cupy():
    return sys.modules.get("cupy")


#: the kind of each type :func:`kind_of` has seen (a type's kind never changes), for the per-call path
_KIND_OF_TYPE: dict[type, str] = {np.ndarray: "numpy"}


def kind_of(a: Any) -> str:
    """'numpy', 'torch', 'cupy' or 'scalar' (a Python or NumPy number); TypeError otherwise."""
    kind = _KIND_OF_TYPE.get(type(a))
    if kind is None:
        kind = _KIND_OF_TYPE[type(a)] = _kind_of_new_type(a)
    return kind


def signature(a: Any) -> tuple:
    """What the checks of a call read of an argument: its type, dtype, shape and device (a number: its type).

    >>> signature(np.zeros((2, 3), np.float32)), signature(1.5)
    ((<class 'numpy.ndarray'>, dtype('float32'), (2, 3)), (<class 'float'>,))
    """
    t = type(a)
    kind = _KIND_OF_TYPE.get(t)
    if kind is None:
        try:
            kind = kind_of(a)
        except ArrayKindError:  # not an array: the checks refuse it
            return (t,)
    if kind == "numpy":
        return (t, a.dtype, a.shape)
    if kind == "torch":
        return (t, a.dtype, a.shape, a.device)
    if kind == "cupy":
        return (t, a.dtype, a.shape, a.device.id)
    return (t,)


def _kind_of_new_type(a: Any) -> str:
    if type(a) is np.ndarray or isinstance(a, np.ndarray):
        return "numpy"
    if isinstance(a, (int, float, np.integer, np.floating)) and not isinstance(a, bool):
        return "scalar"
    torch = _torch()
    if torch is not None and isinstance(a, torch.Tensor):
        return "torch"
    cupy = _cupy()
    if cupy is not None and isinstance(a, cupy.ndarray):
        return "cupy"
    raise ArrayKindError(f"expected a NumPy, torch or CuPy array (or a number), got {type(a).__name__}")


@dataclass(frozen=True)
class Kind:
    """Where a call's arrays live: ``kind`` ('numpy', 'torch', 'cupy') and torch's device."""

    kind: str
    device: Any = None

    @property
    def on_gpu(self) -> bool:
        return self.kind == "cupy" or (self.kind == "torch" and getattr(self.device, "type", "cpu") == "cuda")


_NUMPY = Kind("numpy")


def common_kind(arrays: dict[str, Any]) -> Kind:
    """The one kind and device of named arrays (numbers go with anything); ArrayKindError if mixed."""
    if all(type(a) is np.ndarray for a in arrays.values()):  # the common case, without per-array checks
        return _NUMPY
    found: dict[tuple, str] = {}
    for name, a in arrays.items():
        try:
            k = kind_of(a)
        except ArrayKindError as err:
            raise ArrayKindError(f"{name!r}: {err}") from None
        if k == "scalar":
            continue
        device = a.device if k == "torch" else None
        if k == "cupy":
            device = a.device.id
        found.setdefault((k, str(device)), name)
        if len(found) > 1:
            (k1, d1), n1 = next(iter(found.items()))
            raise ArrayKindError(
                f"cannot mix array kinds or devices: {n1!r} is {k1}"
                f"{'' if d1 == 'None' else ' on ' + d1} but {name!r} is {k}"
                f"{'' if device is None else ' on ' + str(device)}"
            )
    if not found:
        return Kind("numpy")
    (k, _), name = next(iter(found.items()))
    a = arrays[name]
    return Kind(k, a.device if k in ("torch", "cupy") else None)


def dtype_of(a: Any) -> np.dtype | None:
    """The NumPy dtype of an array (None for Python numbers)."""
    k = kind_of(a)
    if k == "scalar":
        return None
    if k == "torch":
        name = str(a.dtype).replace("torch.", "")
        try:
            return np.dtype(name)
        except TypeError:  # bfloat16, float8 types, …: no NumPy equivalent
            raise DTypeError(
                f"torch dtype {name} is not supported; kernla works on float16, float32 and float64 arrays"
            ) from None
    dt = np.dtype(a.dtype)
    return dt if dt.isnative else dt.newbyteorder("=")  # big-endian data is converted on the way in


def common_dtype(arrays: dict[str, Any]) -> np.dtype:
    """The one float dtype of named arrays; DTypeError if mixed or not floating point."""
    values = list(arrays.values())
    if values and all(type(a) is np.ndarray for a in values):  # the common case, without per-array checks
        dt = values[0].dtype
        if all(a.dtype == dt for a in values) and dt.isnative and dt in FLOAT_DTYPES:
            return dt
    seen: dict[np.dtype, str] = {}
    for name, a in arrays.items():
        try:
            dt = dtype_of(a)
        except DTypeError as err:
            raise DTypeError(f"{name!r}: {err}") from None
        if dt is None:
            continue
        if dt not in FLOAT_DTYPES:
            raise DTypeError(f"{name!r} has dtype {dt}; kernla works on float16, float32 and float64 arrays")
        seen.setdefault(dt, name)
    if len(seen) > 1:
        items = ", ".join(f"{n!r} is {d}" for d, n in seen.items())
        raise DTypeError(f"all arrays must have the same dtype, but {items}")
    return next(iter(seen)) if seen else np.dtype(np.float64)


def to_numpy(a: Any, dtype: DTypeLike | None) -> np.ndarray:
    """A host NumPy array of ``dtype`` (no copy for NumPy and torch CPU arrays of that dtype; None: a's own)."""
    k = kind_of(a)
    if k == "torch":
        if a.requires_grad:
            a = a.detach()
        if a.device.type != "cpu":
            a = a.cpu()
        a = a.numpy()
    elif k == "cupy":
        a = a.get()
    return np.asarray(a, dtype=dtype)


def to_cupy(a: Any, dtype: np.dtype):
    """A CuPy array of ``dtype`` (zero-copy from torch CUDA tensors through DLPack)."""
    import cupy  # optional dependency: only reached for GPU data

    k = kind_of(a)
    if k == "torch":
        a = cupy.from_dlpack(a.detach().contiguous()) if a.device.type == "cuda" else cupy.asarray(a.detach().numpy())
    return cupy.ascontiguousarray(cupy.asarray(a, dtype=dtype))


def wrap(result: Any, kind: Kind, dtype: np.dtype | None = None) -> Any:
    """Turn an engine result (NumPy or CuPy) into the caller's ``kind`` (int64 results keep int64)."""
    if dtype is not None and result.dtype.kind == "f" and result.dtype != dtype:
        result = result.astype(dtype)
    if kind.kind == "numpy":
        return result if isinstance(result, np.ndarray) else result.get()
    if kind.kind == "cupy":
        import cupy  # optional dependency: the caller passed CuPy arrays

        return cupy.asarray(result)
    torch = _torch()
    if isinstance(result, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(result))
        return t if kind.device is None or kind.device.type == "cpu" else t.to(kind.device)
    return torch.from_dlpack(result)
