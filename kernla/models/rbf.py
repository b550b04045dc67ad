"""scipy ``RBFInterpolator``'s kernels and polynomial tails, as kernla operators and small host arrays.

With ``r = ε·|x − y|`` (``E = ε²`` is the formula's parameter):

========================  ================  ==========================  ================
kernel                    φ(r)              formula                     default degree
========================  ================  ==========================  ================
``thin_plate_spline``     r² log r          ``XLogX(E·|x−y|²) / 2``     1 (scipy's default kernel)
``cubic``                 r³                                            1
``quintic``               −r⁵                                           2
``linear``                −r                                            0
``multiquadric``          −√(1 + r²)                                    0
``inverse_multiquadric``  1/√(1 + r²)                                   0
``inverse_quadratic``     1/(1 + r²)                                    0
``gaussian``              exp(−r²)                                      0
========================  ================  ==========================  ================

The first five are conditionally positive definite of order ``min degree + 1`` (with the signs
above): positive definite on the coefficients orthogonal to the polynomials of degree
``min degree``, where the saddle-point system has a unique solution. The polynomial tail is
that of scipy: monomials of total degree ≤ ``degree`` in the coordinates shifted and scaled to
[−1, 1] over the data (which changes nothing in the interpolant, only the conditioning).

>>> import numpy as np
>>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
>>> float(rbf_operator("thin_plate_spline", x, x, 1.0).to_dense()[1, 2])   # r = √5: 5 log √5
4.023594781085251
>>> monomial_powers(2, 1).tolist()
[[0, 0], [1, 0], [0, 1]]
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..lazy import Vi, Vj
from ..linalg import KernelOperator

_R2 = "E * SqDist(X, Y)"

#: scipy's kernels: formula of φ(ε|x − y|) with E = ε²
FORMULAS = {
    "thin_plate_spline": f"XLogX({_R2}) / 2",
    "cubic": f"Sqrt({_R2}) * {_R2}",
    "quintic": f"-(Sqrt({_R2}) * Square({_R2}))",
    "linear": f"-Sqrt({_R2})",
    "multiquadric": f"-Sqrt(1 + {_R2})",
    "inverse_multiquadric": f"Rsqrt(1 + {_R2})",
    "inverse_quadratic": f"Inv(1 + {_R2})",
    "gaussian": f"Exp(-{_R2})",
}

#: scipy's minimum polynomial degree of the conditionally positive definite kernels (-1: positive definite)
MIN_DEGREE = {"multiquadric": 0, "linear": 0, "thin_plate_spline": 1, "cubic": 1, "quintic": 2}

#: kernels that need no shape parameter (ε defaults to 1)
SCALE_INVARIANT = ("linear", "thin_plate_spline", "cubic", "quintic")


def rbf_operator(kernel: str, x: Any, y: Any, epsilon: float, backend: str | None = None) -> KernelOperator:
    """The operator ``φ(ε |x_i − y_j|)`` of one of scipy's kernels (:data:`FORMULAS`)."""
    return KernelOperator(FORMULAS[kernel], X=Vi(x), Y=Vj(y), E=float(epsilon) ** 2, backend=backend)


def default_degree(kernel: str) -> int:
    """scipy's default degree: ``max(min degree, 0)`` (1 for thin-plate splines)."""
    return max(MIN_DEGREE.get(kernel, -1), 0)


def monomial_powers(dim: int, degree: int) -> np.ndarray:
    """The exponents (m, dim) of the monomials of total degree ≤ ``degree``, in scipy's order."""
    rows = [np.zeros(dim, dtype=np.int64)] if degree >= 0 else []
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(dim), d):
            row = np.zeros(dim, dtype=np.int64)
            for k in combo:
                row[k] += 1
            rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(len(rows), dim)


def polynomial_frame(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)`` mapping the data's bounding box onto [−1, 1] (scale 1 along flat axes)."""
    lo, hi = x.min(axis=0), x.max(axis=0)
    scale = (hi - lo) / 2
    return (hi + lo) / 2, np.where(scale > 0, scale, 1.0)


def polynomial_matrix(x: np.ndarray, shift: np.ndarray, scale: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """The (n, m) matrix of the monomials at host points x (n, D), in the scaled frame."""
    z = (x - shift) / scale
    return np.prod(z[:, None, :] ** powers[None, :, :], axis=2)


__all__ = [
    "FORMULAS",
    "MIN_DEGREE",
    "SCALE_INVARIANT",
    "rbf_operator",
    "default_degree",
    "monomial_powers",
    "polynomial_frame",
    "polynomial_matrix",
]
