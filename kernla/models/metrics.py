"""Distance metrics of the neighbour models: a cheap monotone surrogate as a formula, and its conversions.

=================  ========================================================  ===================
name               distance                                                  reduced quantity
=================  ========================================================  ===================
``euclidean``      ``|x − y|``                                               ``|x − y|²``
``sqeuclidean``    ``|x − y|²``                                              same
``manhattan``      ``Σ_d |x_d − y_d|``                                       same
``chebyshev``      ``max_d |x_d − y_d|``                                     same
``minkowski``      ``(Σ_d |x_d − y_d|^p)^(1/p)`` (``p`` ≥ 1; 1, 2, ∞ are     ``Σ_d |x_d − y_d|^p``
                   the three above)
``cosine``         ``1 − ⟨x, y⟩ / (|x| |y|)`` (a zero vector is at 1)        ``−⟨x̂, ŷ⟩``
``hyperbolic``     Poincaré half-space, first coordinate > 0:                ``|x − y|² / (x₀ y₀)``
                   ``arcosh(1 + |x − y|² / (2 x₀ y₀))``
``poincare``       Poincaré ball, ``|x| < 1``:                               ``|x − y|² / ((1 − |x|²)(1 − |y|²))``
                   ``arcosh(1 + 2|x − y|² / ((1 − |x|²)(1 − |y|²)))``
callable           ``metric(x_i, y_j)``: any scalar LazyTensor formula        same
=================  ========================================================  ===================

Each built-in metric reduces a quantity that increases with the distance (so the neighbours are
the same), ``finish`` converts the values found into the metric's units and ``to_surrogate``
turns a radius into a bound on the reduced quantity.

Overflow. Squared differences of large coordinates overflow (``(1e200)² = inf`` in float64,
``(2e19)² = inf`` in float32), and an overflowed distance would make every point equally far.
The metrics whose distance is homogeneous (all but ``cosine``, ``poincare`` and callables) are
therefore evaluated on data multiplied by a power of two ``s`` that brings the largest
coordinate of data and queries near 1: the order of the distances is unchanged (a power of two
scales exactly) and the distances found are divided by ``s^degree`` afterwards.

>>> import numpy as np
>>> m = metric_for("minkowski", p=3)
>>> float(m.finish(np.array([8.0]))[0])
2.0
>>> s = scale_factor(np.array([[1e200]]), np.array([[3.0]]))      # a power of two
>>> 0.5 <= 1e200 * s < 1.0
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import arrays as arr
from ..errors import InputValueError
from ..lazy import LazyTensor
from ._common import host

#: what ``metric=`` accepts: a name of :data:`METRICS`, or a callable (x_i, y_j) -> scalar symbolic distance
MetricSpec = str | Callable[[LazyTensor, LazyTensor], LazyTensor]

#: metric names accepted by the models (a callable (x_i, y_j) -> LazyTensor is accepted as well)
METRICS = ("euclidean", "sqeuclidean", "manhattan", "chebyshev", "minkowski", "cosine", "hyperbolic", "poincare")


def _acosh1p(t: np.ndarray) -> np.ndarray:
    """arcosh(1 + t) for t ≥ 0, accurate for small t: log1p(t + √(t (t + 2)))."""
    t = np.maximum(t, 0.0)
    return np.log1p(t + np.sqrt(t * (t + 2.0)))


def _cosh_minus_1(r: float) -> float:
    """cosh(r) − 1 = 2 sinh²(r/2), accurate for small r, inf beyond float64."""
    return 2.0 * math.sinh(r / 2.0) ** 2 if r < 1400 else math.inf


def _sqdist(a: LazyTensor, b: LazyTensor) -> LazyTensor:
    return ((a - b) ** 2).sum(-1)


def _max_abs(x: Any) -> float:
    """The largest |entry| of an array of any kind, as a float."""
    return float(abs(x).max())


def scale_factor(*arrays: Any) -> float:
    """The power of two that brings the largest |entry| of ``arrays`` into [0.5, 1) (1.0 for all-zero data)."""
    m = max(_max_abs(a) for a in arrays)
    return 1.0 if m == 0.0 else math.ldexp(1.0, -math.frexp(m)[1])


def _normalize_rows(x: Any) -> Any:
    """Rows scaled to unit Euclidean norm (zero rows stay zero), in x's kind; safe from overflow."""
    if arr.kind_of(x) == "torch":
        big = x.abs().amax(dim=1, keepdim=True).clamp_min(np.finfo(np.float64).tiny)
        x = x / big
        return x / x.norm(dim=1, keepdim=True).clamp_min(1.0)
    xp = np if isinstance(x, np.ndarray) else __import__("cupy")  # CuPy data: the array's own module
    big = xp.maximum(abs(x).max(axis=1, keepdims=True), np.finfo(x.dtype).tiny)
    x = x / big
    return x / xp.maximum(xp.sqrt((x * x).sum(axis=1, keepdims=True)), 1.0)


def _check_half_space(x: Any, what: str) -> Any:
    if not bool((host(x[:, 0]) > 0).all()):
        raise InputValueError(
            f"the 'hyperbolic' metric (Poincaré half-space) needs points whose first coordinate "
            f"is > 0; {what} has some that are not"
        )
    return x


def _check_ball(x: Any, what: str) -> Any:
    h = host(x)
    if not bool(((h * h).sum(axis=1) < 1).all()):
        raise InputValueError(
            f"the 'poincare' metric (Poincaré ball) needs points of norm < 1; {what} has some that are not"
        )
    return x


def _keep(x: Any, what: str) -> Any:
    return x


def _identity(v: np.ndarray) -> np.ndarray:
    return v


@dataclass(frozen=True)
class Metric:
    """A metric as the search needs it.

    ``surrogate(x_i, y_j)``: the reduced scalar LazyTensor; ``finish``: host surrogate values →
    distances; ``to_surrogate``: a distance → the surrogate value at that distance; ``prepare``:
    data → data (checks, normalisation); ``degree``: the distance is homogeneous of this degree
    in the data (``None``: not homogeneous, no rescaling against overflow).
    """

    name: str
    surrogate: Callable[[LazyTensor, LazyTensor], LazyTensor]
    finish: Callable[[np.ndarray], np.ndarray] = _identity
    to_surrogate: Callable[[float], float] = float
    prepare: Callable[[Any, str], Any] = _keep
    degree: float | None = None


def _minkowski(p: float) -> Metric:
    if p == 1:
        return _BUILTIN["manhattan"]
    if p == 2:
        return _BUILTIN["euclidean"]
    if math.isinf(p):
        return _BUILTIN["chebyshev"]
    return Metric(
        "minkowski",
        lambda a, b: ((a - b).abs() ** float(p)).sum(-1),
        lambda v: np.maximum(v, 0.0) ** (1.0 / p),
        lambda r: r**p,
        degree=1,
    )


_BUILTIN = {
    "euclidean": Metric("euclidean", _sqdist, lambda v: np.sqrt(np.maximum(v, 0.0)), lambda r: r * r, degree=1),
    "sqeuclidean": Metric("sqeuclidean", _sqdist, lambda v: np.maximum(v, 0.0), degree=2),
    "manhattan": Metric("manhattan", lambda a, b: (a - b).abs().sum(-1), degree=1),
    "chebyshev": Metric("chebyshev", lambda a, b: (a - b).abs().max(-1), degree=1),
    "cosine": Metric(
        "cosine",
        lambda a, b: -(a | b),
        lambda v: np.clip(1.0 + v, 0.0, 2.0),
        lambda r: r - 1.0,
        lambda x, what: _normalize_rows(x),
    ),
    "hyperbolic": Metric(
        "hyperbolic",
        lambda a, b: _sqdist(a, b) / (a[..., 0] * b[..., 0]),
        lambda v: _acosh1p(v / 2.0),
        lambda r: 2.0 * _cosh_minus_1(r),
        _check_half_space,
        degree=0,
    ),
    "poincare": Metric(
        "poincare",
        lambda a, b: _sqdist(a, b) / ((1 - a.sqnorm2()) * (1 - b.sqnorm2())),
        lambda v: _acosh1p(2.0 * v),
        lambda r: _cosh_minus_1(r) / 2.0,
        _check_ball,
    ),
}


def check_p(p: Any) -> float:
    """The Minkowski exponent: a number ≥ 1 (``inf`` allowed), else InputValueError."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise InputValueError(f"p must be a number >= 1, got {p!r}") from None
    if not value >= 1:
        raise InputValueError(f"p must be a number >= 1 (Minkowski distance), got {p!r}")
    return value


def metric_for(metric: MetricSpec, p: Any = 2) -> Metric:
    """The :class:`Metric` of a name (``p`` for ``"minkowski"``) or of a callable ``(x_i, y_j) -> LazyTensor``."""
    if isinstance(metric, str):
        if metric == "minkowski":
            return _minkowski(check_p(p))
        if metric not in _BUILTIN:
            raise InputValueError(
                f"unknown metric {metric!r}; choose one of {', '.join(METRICS)} or pass a "
                "callable (x_i, y_j) -> scalar LazyTensor"
            )
        return _BUILTIN[metric]
    if callable(metric):
        return Metric(getattr(metric, "__name__", "custom"), metric)
    raise InputValueError(f"metric must be a name or a callable, got {type(metric).__name__}")


__all__ = ["METRICS", "Metric", "MetricSpec", "metric_for", "check_p", "scale_factor"]
