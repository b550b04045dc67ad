"""Common kernels as :class:`~kernla.linalg.KernelOperator` objects.

Each function takes points ``x`` (N, D) (or (N,) for D = 1), optional points ``y`` (M, D)
(``y=None`` means y = x, a square symmetric operator), a length scale ``sigma`` and a
``backend``; r = |x − y| is the Euclidean distance.

==========================  ===========================================================
``gaussian``                exp(−r² / (2σ²))
``laplacian``               exp(−r / σ)
``matern`` (nu=0.5)         exp(−r / σ)
``matern`` (nu=1.5)         (1 + √3 r/σ) · exp(−√3 r/σ)
``matern`` (nu=2.5)         (1 + √5 r/σ + 5r²/(3σ²)) · exp(−√5 r/σ)
``cauchy``                  1 / (1 + r²/σ²)
``inverse_multiquadric``    1 / √(1 + r²/σ²)
==========================  ===========================================================

The Matérn kernels are scikit-learn's ``Matern(length_scale=sigma, nu=nu)``.

``truncate=eps`` drops the blocks of point pairs where the kernel is at most eps
(:mod:`kernla.linalg.truncation`), with the certified bound ``‖K b − K_t b‖_∞ ≤ eps · ‖b‖_1``;
``K.truncation_info`` says what was kept.

With torch points, ``sigma`` may be a one-element tensor that requires grad: products, ``diag``,
``to_dense`` and ``solve`` are then differentiable in σ as well as in the points (e.g. to fit a
length scale by gradient descent).

>>> import numpy as np
>>> x = np.array([[0.0], [1.0]])
>>> gaussian(x, sigma=1.0).to_dense().round(4)
array([[1.    , 0.6065],
       [0.6065, 1.    ]])
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .errors import InputValueError
from .lazy import Vi, Vj
from .linalg import KernelOperator
from .linalg.truncation import Truncation
from .linalg.truncation import truncate as truncation_of


def _sigma(sigma: Any, x: Any = None) -> Any:
    """σ as a float, or as a one-element torch tensor (in x's dtype) when it requires grad.

    A tensor that requires grad keeps its graph, so the operator's products and solves are
    differentiable in σ (the kernel parameters are then torch expressions of it).
    """
    torch = sys.modules.get("torch")
    tensor = torch is not None and isinstance(sigma, torch.Tensor)
    try:
        s = float(sigma.detach()) if tensor else float(sigma)
    except (TypeError, ValueError, RuntimeError):
        raise InputValueError(f"sigma must be a positive number, got {sigma!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise InputValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if torch is not None and tensor and sigma.requires_grad:  # torch is not None: implied by tensor, said for mypy
        dtype = x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else sigma.dtype
        return sigma.reshape(1).to(dtype)
    return s


def _points(x: Any, y: Any):
    return Vi(x), Vj(x if y is None else y)


def _truncation(x: Any, y: Any, kernel: str, sigma: Any, eps: float | None, nu: float = 1.5) -> Truncation | None:
    """``truncate=eps``: the certified truncation of this kernel on these points (None: none)."""
    if eps is None:
        return None
    s = _sigma(sigma, x)
    return truncation_of(x, y, kernel=kernel, sigma=s if isinstance(s, float) else float(s.detach()), eps=eps, nu=nu)


def gaussian(
    x: Any, y: Any | None = None, sigma: float = 1.0, backend: str | None = None, truncate: float | None = None
) -> KernelOperator:
    """Gaussian (RBF) kernel ``exp(−|x − y|² / (2σ²))``.

    >>> import numpy as np
    >>> float(gaussian(np.zeros((1, 2)), np.ones((1, 2)), sigma=1.0).to_dense()[0, 0])  # exp(-1)
    0.36787944117144233
    """
    X, Y = _points(x, y)
    t = _truncation(x, y, "gaussian", sigma, truncate)
    return KernelOperator(
        "Exp(-G * SqDist(X, Y))", X=X, Y=Y, G=1.0 / (2.0 * _sigma(sigma, x) ** 2), backend=backend, truncate=t
    )


def laplacian(
    x: Any, y: Any | None = None, sigma: float = 1.0, backend: str | None = None, truncate: float | None = None
) -> KernelOperator:
    """Laplacian (exponential) kernel ``exp(−|x − y| / σ)``.

    >>> import numpy as np
    >>> float(laplacian(np.zeros((1, 1)), np.full((1, 1), 2.0), sigma=2.0).to_dense()[0, 0])  # exp(-1)
    0.36787944117144233
    """
    X, Y = _points(x, y)
    t = _truncation(x, y, "laplacian", sigma, truncate)
    return KernelOperator("Exp(-G * Norm2(X - Y))", X=X, Y=Y, G=1.0 / _sigma(sigma, x), backend=backend, truncate=t)


def matern(
    x: Any,
    y: Any | None = None,
    sigma: float = 1.0,
    nu: float = 1.5,
    backend: str | None = None,
    truncate: float | None = None,
) -> KernelOperator:
    """Matérn kernel for ``nu`` in {0.5, 1.5, 2.5}, as scikit-learn's ``Matern(length_scale=sigma, nu=nu)``.

    >>> import numpy as np
    >>> r = 0.7
    >>> k = matern(np.zeros((1, 1)), np.full((1, 1), r), sigma=1.0, nu=1.5).to_dense()[0, 0]
    >>> bool(np.isclose(k, (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)))
    True
    """
    s = _sigma(sigma, x)
    X, Y = _points(x, y)
    t = _truncation(x, y, "matern", sigma, truncate, nu) if nu in (0.5, 1.5, 2.5) else None
    if nu == 0.5:
        return KernelOperator("Exp(-G * Norm2(X - Y))", X=X, Y=Y, G=1.0 / s, backend=backend, truncate=t)
    if nu == 1.5:
        return KernelOperator(
            "(1 + G * Norm2(X - Y)) * Exp(-G * Norm2(X - Y))",
            X=X,
            Y=Y,
            G=math.sqrt(3.0) / s,
            backend=backend,
            truncate=t,
        )
    if nu == 2.5:
        return KernelOperator(
            "(1 + G * Norm2(X - Y) + H * SqDist(X, Y)) * Exp(-G * Norm2(X - Y))",
            X=X,
            Y=Y,
            G=math.sqrt(5.0) / s,
            H=5.0 / (3.0 * s * s),
            backend=backend,
            truncate=t,
        )
    raise InputValueError(f"matern supports nu = 0.5, 1.5 or 2.5 (closed forms), got nu={nu!r}")


def cauchy(
    x: Any, y: Any | None = None, sigma: float = 1.0, backend: str | None = None, truncate: float | None = None
) -> KernelOperator:
    """Cauchy kernel ``1 / (1 + |x − y|²/σ²)``.

    >>> import numpy as np
    >>> float(cauchy(np.zeros((1, 1)), np.ones((1, 1)), sigma=1.0).to_dense()[0, 0])
    0.5
    """
    X, Y = _points(x, y)
    t = _truncation(x, y, "cauchy", sigma, truncate)
    return KernelOperator(
        "Inv(1 + G * SqDist(X, Y))", X=X, Y=Y, G=1.0 / _sigma(sigma, x) ** 2, backend=backend, truncate=t
    )


def inverse_multiquadric(
    x: Any, y: Any | None = None, sigma: float = 1.0, backend: str | None = None, truncate: float | None = None
) -> KernelOperator:
    """Inverse multiquadric kernel ``1 / √(1 + |x − y|²/σ²)``.

    >>> import numpy as np
    >>> float(inverse_multiquadric(np.zeros((1, 1)), np.full((1, 1), 3.0), sigma=1.0).to_dense()[0, 0])
    0.31622776601683794
    """
    X, Y = _points(x, y)
    t = _truncation(x, y, "inverse_multiquadric", sigma, truncate)
    return KernelOperator(
        "Rsqrt(1 + G * SqDist(X, Y))", X=X, Y=Y, G=1.0 / _sigma(sigma, x) ** 2, backend=backend, truncate=t
    )


__all__ = ["gaussian", "laplacian", "matern", "cauchy", "inverse_multiquadric"]
