"""Covariance kernels with hyper-parameters for Gaussian-process regression.

A kernel is a small tree — :class:`RBF`, :class:`Matern` (ν = 1/2, 3/2, 5/2), :class:`Laplacian`,
:class:`RationalQuadratic`, :class:`ExpSineSquared` (periodic), :class:`DotProduct` (linear),
:class:`ConstantKernel` (an output scale), :class:`WhiteKernel` (noise), and their sums and
products (``k1 + k2``, ``k1 * k2``, ``2.0 * k``) — whose hyper-parameters are **values**, never
compiled constants: length scales divide the inputs before they reach the engine (one scaled
copy per stationary factor, so ARD costs nothing in the kernel), the other parameters are
kernla parameters (``Pm``) of a formula whose structure does not depend on them. Changing any
hyper-parameter therefore never compiles a kernel.

The names, arguments and conventions are scikit-learn's (``sklearn.gaussian_process.kernels``):
``theta`` is the vector of the logs of the free hyper-parameters, ``bounds`` its (n, 2) log
bounds, a bound ``"fixed"`` keeps a parameter out of ``theta``; :func:`as_gp_kernel` translates a
scikit-learn kernel object into these. Each hyper-parameter may carry a prior
(:class:`LogNormalPrior`, :class:`GammaPrior`) that training adds to the log marginal likelihood.

Derivatives. For the weighted sums ``Σ_ij E_ij ∂k(x_i, x_j)/∂log θ`` that the gradient of the
marginal likelihood needs, each kernel writes ``E·∂k/∂log θ`` as more formulas (hand-derived,
simplified forms: no 0/0 at r = 0). With ``E_ij = u_i·v_j`` (low rank) they are one kernla
reduction for all parameters (:func:`pair_gradient`); with a dense E (the exact path) they are
evaluated by NumPy in blocks of rows (:func:`dense_gradient`; :func:`symmetric_gradient` for a symmetric E, over one
triangle).

>>> import numpy as np
>>> k = ConstantKernel(2.0) * Matern(length_scale=[0.5, 2.0], nu=2.5) + WhiteKernel(0.1)
>>> k
ConstantKernel(constant_value=2.0) * Matern(length_scale=[0.5, 2.0], nu=2.5) + WhiteKernel(noise_level=0.1)
>>> np.exp(k.theta).round(3).tolist(), k.white_noise()
([2.0, 0.5, 2.0, 0.1], 0.1)
>>> X = np.random.default_rng(0).uniform(size=(5, 2))
>>> K = k.operator(X).to_dense()
>>> bool(np.allclose(np.diag(K), 2.0)), bool(np.allclose(k.diag(X), 2.0))
(True, True)
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from .. import arrays as arr
from ..core import Slot
from ..errors import InputValueError
from ..formula import CAT_I, CAT_J, CAT_PARAM, Var, call, concat
from ..formula.evaluate import evaluate
from ..formula.tree import Node
from ..genred import reduce
from ..linalg import KernelOperator
from ..linalg.kernel import Kernel
from ..reductions import Reduction

#: target number of scalars of one intermediate when dense blocks (values, the exact gradient) are evaluated by
#: NumPy: 2 MB, so that they stay in cache (measured at N = 5000: 1.5x faster than 2^22 for the values and the
#: gradient sums, 2^16-2^18 alike, 2^14 slower again)
_BLOCK_ENTRIES = 1 << 18

#: keeps e^{-r}·d²/r finite at r = 0 (where d² = 0) in the Matérn-1/2 length-scale derivative
_TINY = 1e-30


# -- priors ------------------------------------------------------------------------------------------
class LogNormalPrior:
    """A normal prior on ``log θ``: ``log p = −(log θ − loc)² / (2 scale²)`` (+ a constant).

    >>> LogNormalPrior(0.0, 1.0).log_prob(np.array([1.0]))
    (-0.5, array([-1.]))
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0):
        if not scale > 0:
            raise InputValueError(f"the prior's scale must be positive, got {scale!r}")
        self.loc, self.scale = float(loc), float(scale)

    def log_prob(self, log_theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The log density of ``log θ`` (up to a constant) and its gradient in ``log θ``."""
        z = (log_theta - self.loc) / self.scale
        return float(-0.5 * (z * z).sum()), -z / self.scale

    def __repr__(self) -> str:
        return f"LogNormalPrior({self.loc!r}, {self.scale!r})"


class GammaPrior:
    """A Gamma(concentration, rate) prior on θ, as a density of ``log θ``: ``a log θ − b θ`` (+ const).

    >>> value, grad = GammaPrior(2.0, 1.0).log_prob(np.array([0.0]))
    >>> value, grad.tolist()
    (-1.0, [1.0])
    """

    def __init__(self, concentration: float = 2.0, rate: float = 1.0):
        if not (concentration > 0 and rate > 0):
            raise InputValueError("the Gamma prior's concentration and rate must be positive")
        self.concentration, self.rate = float(concentration), float(rate)

    def log_prob(self, log_theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The log density of ``log θ`` (the Jacobian of θ = e^{log θ} included) and its gradient."""
        theta = np.exp(log_theta)
        return float((self.concentration * log_theta - self.rate * theta).sum()), self.concentration - self.rate * theta

    def __repr__(self) -> str:
        return f"GammaPrior({self.concentration!r}, {self.rate!r})"


class Hyperparameter:
    """One hyper-parameter: ``name``, ``n_elements``, ``bounds`` ((low, high) or ``"fixed"``), ``prior``."""

    def __init__(self, name: str, n_elements: int, bounds: Any, prior: Any = None):
        self.name, self.n_elements, self.prior = name, int(n_elements), prior
        self.fixed = isinstance(bounds, str) and bounds == "fixed"
        if not self.fixed:
            b = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
            if not (np.all(b > 0) and np.all(b[:, 0] <= b[:, 1])):
                raise InputValueError(f"the bounds of {name} must be 0 < low <= high or 'fixed', got {bounds!r}")
            bounds = np.broadcast_to(b, (self.n_elements, 2)).copy()
        self.bounds = bounds

    def __repr__(self) -> str:
        return f"Hyperparameter({self.name!r}, n_elements={self.n_elements}, bounds={self.bounds!r})"


# -- formula assembly ------------------------------------------------------------------------------
class FormulaBuilder:
    """The variables of a kernel formula as they are created: ``(data, category)`` pairs and names.

    ``cache`` keeps each kernel's value node (and what its derivatives reuse) by ``id``.
    """

    def __init__(self, dense: bool = False, placed: bool = False) -> None:
        self.variables: list[tuple[Any, int]] = []
        self.names: list[str] = []
        self.cache: dict[Any, Any] = {}
        # dense=True: for NumPy evaluation of dense blocks — squared distances as placeholders filled by
        # matrix products, ARD derivatives as SquaredDifferenceSum
        self.dense = dense
        self.pairwise: dict[int, tuple[int, int, bool]] = {}  # placeholder -> (x, y, same points)
        # placed=True: the points are the first i- and j-variable, shared by every factor, and length scales
        # parameters multiplying them in the formula (points kept on a cluster's workers: only parameters change)
        self.placed = placed
        self.shared: dict[int, Node] = {}

    def points(self, x: Any, y: Any, scale: np.ndarray | None = None) -> tuple[Node, Node]:
        """The i-variable of the points x and the j-variable of y (``None``: x), each column times
        ``scale``: scaled copies, or (placed mode) the shared variables times a parameter."""
        if not self.placed:
            xs = x if scale is None else _scaled(x, scale)
            ys = xs if y is None else y if scale is None else _scaled(y, scale)
            return self.var(xs, CAT_I, "x"), self.var(ys, CAT_J, "y")
        if not self.shared:
            self.shared = {CAT_I: self.var(x, CAT_I, "x"), CAT_J: self.var(x if y is None else y, CAT_J, "y")}
        xi, yj = self.shared[CAT_I], self.shared[CAT_J]
        if scale is None:
            return xi, yj
        s = self.var(np.ascontiguousarray(scale) if scale.size > 1 else float(scale[0]), CAT_PARAM, "scale")
        return xi * s, yj * s

    def sqdist(self, xi: Node, yj: Node, same: bool) -> Node:
        """``|x_i − y_j|²``: the formula, or (dense mode) a placeholder computed blockwise by GEMM."""
        if not self.dense:
            return call("SqDist", xi, yj)
        v = self.var(np.zeros((1, 1)), CAT_I, "sqdist")
        self.pairwise[v.params[0]] = (xi.params[0], yj.params[0], same)
        return v

    def var(self, data: Any, cat: int, name: str) -> Node:
        """A new variable holding ``data`` (a number for a scalar parameter)."""
        dim = 1 if arr.kind_of(data) == "scalar" else int(data.shape[-1])
        self.variables.append((data, cat))
        self.names.append(f"{name}{len(self.names)}")
        return Var(len(self.variables) - 1, dim, cat)

    def param(self, value: float, name: str) -> Node:
        return self.var(float(value), CAT_PARAM, name)


class SquaredDifferenceSum:
    """An ARD length-scale derivative ``w_ij · (x_i − y_j)²`` (a D-vector per pair) kept factored:
    the dense path sums it against its scalar weight ``w`` with matrix products,
    ``Σ_ij w_ij (x_id − y_jd)² = Σ_i x_id² (w 1)_i + Σ_j y_jd² (wᵀ1)_j − 2 (xᵀ w y)_dd``."""

    def __init__(self, weight: Node, x: Node, y: Node):
        self.weight, self.x, self.y = weight, x, y
        self.dim = x.dim


def _exp(a: Node) -> Node:
    return call("Exp", a)


def _scaled(x: Any, scale: np.ndarray) -> Any:
    """The points ``x`` (any array kind) with each column multiplied by ``scale``."""
    if scale.size == 1:
        return x * float(scale[0])
    return x * arr.wrap(np.ascontiguousarray(scale), arr.common_kind({"x": x}), arr.dtype_of(x))


# -- kernels -----------------------------------------------------------------------------------------
class GPKernel:
    """Base class of the hyper-parameter kernels (see the module docstring)."""

    # structure and parameters ------------------------------------------------------------------
    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        raise NotImplementedError  # pragma: no cover - interface

    def _values(self) -> list[np.ndarray]:
        """The current value of each hyper-parameter (as 1-D arrays), in :attr:`hyperparameters` order."""
        raise NotImplementedError  # pragma: no cover - interface

    def _with_values(self, values: list[np.ndarray]) -> GPKernel:
        raise NotImplementedError  # pragma: no cover - interface

    @property
    def n_dims(self) -> int:
        return int(sum(h.n_elements for h in self.hyperparameters if not h.fixed))

    @property
    def theta(self) -> np.ndarray:
        """The logs of the free hyper-parameters, concatenated (scikit-learn's ``theta``)."""
        parts = [np.log(v) for h, v in zip(self.hyperparameters, self._values()) if not h.fixed]
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def bounds(self) -> np.ndarray:
        """The (n_dims, 2) log bounds of :attr:`theta`."""
        parts = [np.log(h.bounds) for h in self.hyperparameters if not h.fixed]
        return np.vstack(parts) if parts else np.zeros((0, 2))

    def clone_with_theta(self, theta: np.ndarray) -> GPKernel:
        """A copy with the free hyper-parameters set to ``exp(theta)``."""
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        if theta.size != self.n_dims:
            raise InputValueError(f"theta has {theta.size} values, the kernel {self!r} has {self.n_dims}")
        values, pos = [], 0
        for h, v in zip(self.hyperparameters, self._values()):
            if h.fixed:
                values.append(v)
            else:
                values.append(np.exp(theta[pos : pos + h.n_elements]))
                pos += h.n_elements
        return self._with_values(values)

    def log_prior(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Sum of the priors' log densities at ``theta`` and its gradient (0 without priors)."""
        total, grad, pos = 0.0, np.zeros(theta.size), 0
        for h in self.hyperparameters:
            if h.fixed:
                continue
            sl = slice(pos, pos + h.n_elements)
            if h.prior is not None:
                value, g = h.prior.log_prob(theta[sl])
                total += value
                grad[sl] += g
            pos += h.n_elements
        return total, grad

    def white_noise(self) -> float:
        """The white-noise variance this kernel adds to the training covariance's diagonal."""
        return 0.0

    def white_mask(self) -> np.ndarray:
        """Which entries of :attr:`theta` are white-noise levels (their gradient is not a pair formula)."""
        return np.zeros(self.n_dims, dtype=bool)

    # formulas ------------------------------------------------------------------------------------
    def node(self, b: FormulaBuilder, x: Any, y: Any) -> Node | None:
        """The value formula ``k(x_i, y_j)`` (None: a white-noise kernel, zero off the diagonal)."""
        raise NotImplementedError  # pragma: no cover - interface

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        """``e · ∂k/∂log θ`` per free hyper-parameter (after :meth:`node`); None for white noise."""
        raise NotImplementedError  # pragma: no cover - interface

    def diag(self, x: Any) -> np.ndarray:
        """``k(x_i, x_i)`` without white noise, host float64."""
        raise NotImplementedError  # pragma: no cover - interface

    def operator(
        self, x: Any, y: Any = None, backend: str | None = None, power: int = 1, placed: bool = False
    ) -> KernelOperator:
        """The kernel matrix ``k(x_i, y_j)`` (``y=None``: y = x) as a :class:`~kernla.KernelOperator`;
        ``power=2``: the entries squared; ``placed``: on the points themselves, as their only i- and
        j-variables (the hyper-parameters all parameters: what a cluster's operator changes per step)."""
        b = FormulaBuilder(placed=placed)
        node = self.node(b, x, y)
        if node is None:
            raise InputValueError(f"the kernel {self!r} is white noise only: it has no off-diagonal part")
        return KernelOperator.from_kernel(
            Kernel.build(node if power == 1 else node * node, b.variables, b.names, backend)
        )

    def dense(self, x: Any, y: Any = None) -> np.ndarray:
        """The dense host float64 matrix ``k(x_i, y_j)`` (NumPy, squared distances by matrix products)."""
        return dense_value(self, x, y)

    def dense_upper(self, x: Any) -> np.ndarray:
        """``k(x_i, x_j)`` for i ≤ j and zeros below the diagonal (host float64, C order): what a
        Cholesky factorisation of its Fortran-ordered transpose reads, at half the work of :meth:`dense`."""
        return dense_value(self, x, upper=True)

    # composition ---------------------------------------------------------------------------------
    def __add__(self, other: Any) -> GPKernel:
        return Sum(self, as_gp_kernel(other))

    def __radd__(self, other: Any) -> GPKernel:
        return Sum(as_gp_kernel(other), self)

    def __mul__(self, other: Any) -> GPKernel:
        return Product(self, as_gp_kernel(other))

    def __rmul__(self, other: Any) -> GPKernel:
        return Product(as_gp_kernel(other), self)


class _Leaf(GPKernel):
    """A kernel with its own hyper-parameters, named in ``_PARAMS`` (attributes ``p``, ``p_bounds``, ``p_prior``)."""

    _PARAMS: tuple[str, ...] = ()

    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        return [
            Hyperparameter(p, np.size(getattr(self, p)), getattr(self, f"{p}_bounds"), getattr(self, f"{p}_prior"))
            for p in self._PARAMS
        ]

    def _values(self) -> list[np.ndarray]:
        return [np.atleast_1d(np.asarray(getattr(self, p), dtype=np.float64)) for p in self._PARAMS]

    def _with_values(self, values: list[np.ndarray]) -> GPKernel:
        new = copy.copy(self)
        for p, v in zip(self._PARAMS, values):
            setattr(new, p, float(v[0]) if np.ndim(getattr(self, p)) == 0 else [float(t) for t in v])
        return new

    def _set(self, p: str, value: Any, bounds: Any, prior: Any) -> None:
        """Store hyper-parameter ``p`` with its bounds and prior (scikit-learn's attribute names)."""
        setattr(self, p, value)
        setattr(self, f"{p}_bounds", bounds)
        setattr(self, f"{p}_prior", prior)

    def _value(self, p: str) -> np.ndarray:
        v = np.atleast_1d(np.asarray(getattr(self, p), dtype=np.float64))
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise InputValueError(f"{type(self).__name__}'s {p} must be positive and finite, got {getattr(self, p)!r}")
        return v

    def __repr__(self) -> str:
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in self._repr_params())
        return f"{type(self).__name__}({args})"

    def _repr_params(self) -> tuple[str, ...]:
        return self._PARAMS

    def _free(self, grads: list[Node | None]) -> list[Node | None]:
        """Keep the derivatives of the free hyper-parameters only."""
        return [g for g, h in zip(grads, self.hyperparameters) if not h.fixed]


class _Stationary(_Leaf):
    """``φ(s)`` of the scaled squared distance ``s = Σ_d (x_d − y_d)² / ℓ_d²`` (ARD when ℓ is a list)."""

    _PARAMS: tuple[str, ...] = ("length_scale",)

    def __init__(self, length_scale: Any = 1.0, length_scale_bounds: Any = (1e-5, 1e5), length_scale_prior: Any = None):
        self.length_scale = length_scale
        self.length_scale_bounds = length_scale_bounds
        self.length_scale_prior = length_scale_prior

    def _phi(self, b: FormulaBuilder, s: Node) -> Node:
        raise NotImplementedError  # pragma: no cover - interface

    def _g(self, b: FormulaBuilder, s: Node) -> Node:
        """``−2 φ'(s)``: the derivative in ``log ℓ_d`` is ``g(s) · (x_d − y_d)² / ℓ_d²``."""
        raise NotImplementedError  # pragma: no cover - interface

    def _extra_grads(self, b: FormulaBuilder, s: Node, value: Node) -> list[Node]:
        return []

    def _bounded_g(self) -> bool:
        """Whether g(s) is bounded at s = 0 (else the factored form would cancel huge diagonal terms)."""
        return True

    def node(self, b: FormulaBuilder, x: Any, y: Any) -> Node:
        ls = self._value("length_scale")
        if ls.size > 1 and ls.size != int(x.shape[1]):
            raise InputValueError(
                f"{type(self).__name__} has {ls.size} length scales (ARD) for points of dimension {x.shape[1]}"
            )
        xi, yj = b.points(x, y, 1.0 / ls)
        s = b.sqdist(xi, yj, y is None)
        value = self._phi(b, s)
        b.cache[id(self)] = (value, s, xi - yj, ls.size > 1)
        return value

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        value, s, d, ard = b.cache[id(self)]
        g = self._g(b, s)
        if ard and b.dense and self._bounded_g():
            xi, yj = d.args
            ls_grad: Any = SquaredDifferenceSum(e * g, xi, yj)
        else:
            ls_grad = e * (g * call("Square", d) if ard else g * s)
        return self._free([ls_grad, *[e * t for t in self._extra_grads(b, s, value)]])

    def diag(self, x: Any) -> np.ndarray:
        return np.ones(int(x.shape[0]))


class RBF(_Stationary):
    """Squared exponential ``exp(−s/2)``, ``s = |x − y|²/ℓ²`` (scikit-learn's ``RBF``).

    >>> float(RBF(2.0).operator(np.zeros((1, 1)), np.full((1, 1), 2.0)).to_dense()[0, 0])  # exp(-1/2)
    0.6065306597126334
    """

    def _phi(self, b: FormulaBuilder, s: Node) -> Node:
        return _exp(-0.5 * s)

    def _g(self, b: FormulaBuilder, s: Node) -> Node:
        return _exp(-0.5 * s)


class Matern(_Stationary):
    """Matérn kernel for ν ∈ {1/2, 3/2, 5/2} (scikit-learn's ``Matern``), r = √s.

    ν = 1/2: ``e^{−r}``; ν = 3/2: ``(1 + √3 r) e^{−√3 r}``; ν = 5/2: ``(1 + √5 r + 5 r²/3) e^{−√5 r}``.

    >>> k = Matern(length_scale=1.0, nu=1.5).operator(np.zeros((1, 1)), np.full((1, 1), 0.7)).to_dense()[0, 0]
    >>> bool(np.isclose(k, (1 + np.sqrt(3) * 0.7) * np.exp(-np.sqrt(3) * 0.7)))
    True
    """

    def __init__(
        self,
        length_scale: Any = 1.0,
        length_scale_bounds: Any = (1e-5, 1e5),
        nu: float = 1.5,
        length_scale_prior: Any = None,
    ):
        super().__init__(length_scale, length_scale_bounds, length_scale_prior)
        self.nu = nu

    def _repr_params(self) -> tuple[str, ...]:
        return ("length_scale", "nu")

    def _bounded_g(self) -> bool:
        return self.nu != 0.5

    def _check_nu(self) -> float:
        if self.nu not in (0.5, 1.5, 2.5):
            raise InputValueError(f"Matern supports nu = 0.5, 1.5 or 2.5 (closed forms), got nu={self.nu!r}")
        return float(self.nu)

    def _phi(self, b: FormulaBuilder, s: Node) -> Node:
        nu = self._check_nu()
        r = call("Sqrt", s)
        if nu == 0.5:
            return _exp(-r)
        a = math.sqrt(2 * nu) * r
        return (1 + a) * _exp(-a) if nu == 1.5 else (1 + a + (5.0 / 3.0) * s) * _exp(-a)

    def _g(self, b: FormulaBuilder, s: Node) -> Node:
        nu = self._check_nu()
        r = call("Sqrt", s)
        if nu == 0.5:
            return _exp(-r) * call("Inv", r + _TINY)
        a = math.sqrt(2 * nu) * r
        return 3.0 * _exp(-a) if nu == 1.5 else (5.0 / 3.0) * (1 + a) * _exp(-a)


class Laplacian(Matern):
    """Laplacian (exponential) kernel ``exp(−|x − y|/ℓ)``: the Matérn kernel with ν = 1/2.

    >>> float(Laplacian(2.0).operator(np.zeros((1, 1)), np.full((1, 1), 2.0)).to_dense()[0, 0])  # exp(-1)
    0.36787944117144233
    """

    def __init__(self, length_scale: Any = 1.0, length_scale_bounds: Any = (1e-5, 1e5), length_scale_prior: Any = None):
        super().__init__(length_scale, length_scale_bounds, 0.5, length_scale_prior)

    def _repr_params(self) -> tuple[str, ...]:
        return ("length_scale",)


class RationalQuadratic(_Stationary):
    """Rational quadratic ``(1 + s/(2α))^{−α}`` (scikit-learn's ``RationalQuadratic``; ARD allowed here).

    >>> k = RationalQuadratic(1.0, alpha=2.0).operator(np.zeros((1, 1)), np.ones((1, 1))).to_dense()[0, 0]
    >>> bool(np.isclose(k, 1.25 ** -2))
    True
    """

    _PARAMS = ("length_scale", "alpha")

    def __init__(
        self,
        length_scale: Any = 1.0,
        alpha: float = 1.0,
        length_scale_bounds: Any = (1e-5, 1e5),
        alpha_bounds: Any = (1e-5, 1e5),
        length_scale_prior: Any = None,
        alpha_prior: Any = None,
    ):
        super().__init__(length_scale, length_scale_bounds, length_scale_prior)
        self._set("alpha", alpha, alpha_bounds, alpha_prior)

    def _phi(self, b: FormulaBuilder, s: Node) -> Node:
        alpha = float(self._value("alpha")[0])
        a, q = b.param(alpha, "alpha"), b.param(0.5 / alpha, "half_inv_alpha")
        base = 1 + q * s
        b.cache[("rq", id(self))] = (a, q, base)
        return _exp(-a * call("Log", base))

    def _g(self, b: FormulaBuilder, s: Node) -> Node:
        a, _, base = b.cache[("rq", id(self))]
        return _exp(-(a + 1) * call("Log", base))

    def _extra_grads(self, b: FormulaBuilder, s: Node, value: Node) -> list[Node]:
        a, q, base = b.cache[("rq", id(self))]
        return [value * (q * a * s * call("Inv", base) - a * call("Log", base))]


class ExpSineSquared(_Leaf):
    """Periodic kernel ``exp(−2 sin²(π r / p) / ℓ²)`` (scikit-learn's ``ExpSineSquared``), r = |x − y|.

    >>> k = ExpSineSquared(1.0, periodicity=2.0).operator(np.zeros((1, 1)), np.full((1, 1), 4.0)).to_dense()
    >>> bool(np.isclose(k[0, 0], 1.0))  # two full periods apart
    True
    """

    _PARAMS = ("length_scale", "periodicity")

    def __init__(
        self,
        length_scale: float = 1.0,
        periodicity: float = 1.0,
        length_scale_bounds: Any = (1e-5, 1e5),
        periodicity_bounds: Any = (1e-5, 1e5),
        length_scale_prior: Any = None,
        periodicity_prior: Any = None,
    ):
        self._set("length_scale", length_scale, length_scale_bounds, length_scale_prior)
        self._set("periodicity", periodicity, periodicity_bounds, periodicity_prior)

    def node(self, b: FormulaBuilder, x: Any, y: Any) -> Node:
        ls, p = self._value("length_scale"), self._value("periodicity")
        if ls.size > 1 or p.size > 1:
            raise InputValueError("ExpSineSquared takes one length scale and one periodicity")
        il2, w = b.param(1.0 / ls[0] ** 2, "inv_l2"), b.param(math.pi / p[0], "freq")
        r = call("Sqrt", b.sqdist(*b.points(x, y), y is None))
        sn = call("Sin", w * r)
        value = _exp(-2.0 * il2 * call("Square", sn))
        b.cache[id(self)] = (value, il2, w, r, sn)
        return value

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        value, il2, w, r, sn = b.cache[id(self)]
        ev = e * value * (4.0 * il2)
        return self._free([ev * call("Square", sn), ev * sn * call("Cos", w * r) * w * r])

    def diag(self, x: Any) -> np.ndarray:
        return np.ones(int(x.shape[0]))


class DotProduct(_Leaf):
    """Linear kernel ``σ₀² + x·y`` (scikit-learn's ``DotProduct``).

    >>> float(DotProduct(1.0).operator(np.ones((1, 2)), np.ones((1, 2))).to_dense()[0, 0])
    3.0
    """

    _PARAMS = ("sigma_0",)

    def __init__(self, sigma_0: float = 1.0, sigma_0_bounds: Any = (1e-5, 1e5), sigma_0_prior: Any = None):
        self.sigma_0, self.sigma_0_bounds, self.sigma_0_prior = sigma_0, sigma_0_bounds, sigma_0_prior

    def node(self, b: FormulaBuilder, x: Any, y: Any) -> Node:
        s2 = b.param(float(self._value("sigma_0")[0]) ** 2, "sigma0_sq")
        b.cache[id(self)] = s2
        xi, yj = b.points(x, y)
        return s2 + (xi | yj)

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        return self._free([2.0 * e * b.cache[id(self)]])

    def diag(self, x: Any) -> np.ndarray:
        xh = arr.to_numpy(x, np.dtype(np.float64))
        return float(self._value("sigma_0")[0]) ** 2 + (xh * xh).sum(axis=1)


class ConstantKernel(_Leaf):
    """A constant ``c`` — as a factor, the output scale (signal variance) of the other factor.

    >>> float((ConstantKernel(3.0) * RBF()).operator(np.zeros((1, 1))).to_dense()[0, 0])
    3.0
    """

    _PARAMS = ("constant_value",)

    def __init__(
        self, constant_value: float = 1.0, constant_value_bounds: Any = (1e-5, 1e5), constant_value_prior: Any = None
    ):
        self.constant_value = constant_value
        self.constant_value_bounds = constant_value_bounds
        self.constant_value_prior = constant_value_prior

    def node(self, b: FormulaBuilder, x: Any, y: Any) -> Node:
        c = b.param(float(self._value("constant_value")[0]), "c")
        b.cache[id(self)] = c
        return c

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        return self._free([e * b.cache[id(self)]])

    def diag(self, x: Any) -> np.ndarray:
        return np.full(int(x.shape[0]), float(self._value("constant_value")[0]))


class WhiteKernel(_Leaf):
    """White noise: ``noise_level`` on the diagonal of the training covariance, 0 elsewhere.

    Only as a term of a sum (its level joins the diagonal shift of the solves). The predictive
    std includes it with ``include_noise=True``.
    """

    _PARAMS = ("noise_level",)

    def __init__(self, noise_level: float = 1.0, noise_level_bounds: Any = (1e-5, 1e5), noise_level_prior: Any = None):
        self.noise_level = noise_level
        self.noise_level_bounds = noise_level_bounds
        self.noise_level_prior = noise_level_prior

    def white_noise(self) -> float:
        v = float(self.noise_level)
        if not (math.isfinite(v) and v >= 0):
            raise InputValueError(f"WhiteKernel's noise_level must be non-negative and finite, got {v!r}")
        return v

    def white_mask(self) -> np.ndarray:
        return np.ones(self.n_dims, dtype=bool)

    def node(self, b: FormulaBuilder, x: Any, y: Any) -> None:
        return None

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        return [None] * self.n_dims

    def diag(self, x: Any) -> np.ndarray:
        return np.zeros(int(x.shape[0]))


class _Pair(GPKernel):
    """A sum or product of two kernels; hyper-parameters named ``k1__…`` and ``k2__…``."""

    _SYMBOL = ""

    def __init__(self, k1: GPKernel, k2: GPKernel):
        self.k1, self.k2 = as_gp_kernel(k1), as_gp_kernel(k2)

    @property
    def hyperparameters(self) -> list[Hyperparameter]:
        out = []
        for prefix, k in (("k1", self.k1), ("k2", self.k2)):
            for h in k.hyperparameters:
                out.append(Hyperparameter(f"{prefix}__{h.name}", h.n_elements, h.bounds, h.prior))
        return out

    def _values(self) -> list[np.ndarray]:
        return [*self.k1._values(), *self.k2._values()]

    def _with_values(self, values: list[np.ndarray]) -> GPKernel:
        n1 = len(self.k1.hyperparameters)
        return type(self)(self.k1._with_values(values[:n1]), self.k2._with_values(values[n1:]))

    def white_mask(self) -> np.ndarray:
        return np.concatenate([self.k1.white_mask(), self.k2.white_mask()])

    def __repr__(self) -> str:
        return f"{self.k1!r} {self._SYMBOL} {self.k2!r}"


class Sum(_Pair):
    """``k1 + k2``."""

    _SYMBOL = "+"

    def white_noise(self) -> float:
        return self.k1.white_noise() + self.k2.white_noise()

    def node(self, b: FormulaBuilder, x: Any, y: Any) -> Node | None:
        n1, n2 = self.k1.node(b, x, y), self.k2.node(b, x, y)
        return n2 if n1 is None else n1 if n2 is None else n1 + n2

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        return [*self.k1.grads(b, e), *self.k2.grads(b, e)]

    def diag(self, x: Any) -> np.ndarray:
        return self.k1.diag(x) + self.k2.diag(x)


class Product(_Pair):
    """``k1 * k2`` (white noise is not allowed inside a product)."""

    _SYMBOL = "*"

    def node(self, b: FormulaBuilder, x: Any, y: Any) -> Node:
        n1, n2 = self.k1.node(b, x, y), self.k2.node(b, x, y)
        if n1 is None or n2 is None:
            raise InputValueError(f"a WhiteKernel can only be a term of a sum, not a factor of {self!r}")
        b.cache[id(self)] = (n1, n2)
        return n1 * n2

    def grads(self, b: FormulaBuilder, e: Node) -> list[Node | None]:
        n1, n2 = b.cache[id(self)]
        return [*self.k1.grads(b, e * n2), *self.k2.grads(b, e * n1)]

    def diag(self, x: Any) -> np.ndarray:
        return self.k1.diag(x) * self.k2.diag(x)


# -- conversions --------------------------------------------------------------------------------------
_SKLEARN_SIMPLE = {"RBF", "RationalQuadratic", "ExpSineSquared", "DotProduct", "ConstantKernel", "WhiteKernel"}


def as_gp_kernel(kernel: Any) -> GPKernel:
    """A :class:`GPKernel` from one, from a positive number (a :class:`ConstantKernel`), or from a
    scikit-learn kernel object (``RBF``, ``Matern`` with ν ∈ {0.5, 1.5, 2.5}, ``RationalQuadratic``,
    ``ExpSineSquared``, ``DotProduct``, ``ConstantKernel``, ``WhiteKernel``, sums and products),
    with its values and bounds.

    >>> from sklearn.gaussian_process import kernels as sk
    >>> as_gp_kernel(sk.ConstantKernel(2.0) * sk.RBF([1.0, 3.0]) + sk.WhiteKernel(0.5))
    ConstantKernel(constant_value=2.0) * RBF(length_scale=[1.0, 3.0]) + WhiteKernel(noise_level=0.5)
    """
    if isinstance(kernel, GPKernel):
        return kernel
    if isinstance(kernel, (int, float, np.floating, np.integer)) and not isinstance(kernel, bool):
        return ConstantKernel(float(kernel))
    name = type(kernel).__name__
    if not type(kernel).__module__.startswith("sklearn.gaussian_process"):
        raise InputValueError(
            f"cannot use {name} as a GP kernel: pass a kernla.models.gp_kernels kernel or a scikit-learn one"
        )
    params = kernel.get_params(deep=False)
    if "k1" in params and "k2" in params:  # scikit-learn's Sum and Product
        return (Product if name == "Product" else Sum)(as_gp_kernel(params["k1"]), as_gp_kernel(params["k2"]))
    if name == "Matern":
        return Matern(_listed(params["length_scale"]), params["length_scale_bounds"], nu=float(params["nu"]))
    if name in _SKLEARN_SIMPLE:
        cls = globals()[name]
        return cls(**{k: _listed(v) for k, v in params.items()})
    raise InputValueError(
        f"the scikit-learn kernel {name} has no kernla translation; "
        f"use sums and products of {sorted(_SKLEARN_SIMPLE | {'Matern'})}"
    )


def _listed(v: Any) -> Any:
    """Arrays of length scales become lists (reprs and copies stay simple)."""
    if isinstance(v, np.ndarray):
        return v.tolist() if v.ndim else float(v)
    return float(v) if isinstance(v, np.floating) else v


def legacy_kernel(name: str, sigma: Any, amplitude: float, nu: float, learnable: bool = False) -> GPKernel:
    """The kernel ``amplitude · k_name(σ)`` of the named kernels of :func:`kernla.models._common.make_kernel`,
    with fixed hyper-parameters unless ``learnable`` (then bounded by 1e-5 and 1e5; σ may be a
    list: ARD). Cauchy and inverse multiquadric are rational quadratics with α = 1 and 1/2.

    >>> legacy_kernel("cauchy", 0.5, 2.0, 1.5)
    ConstantKernel(constant_value=2.0) * RationalQuadratic(length_scale=0.35355339059327373, alpha=1.0)
    """
    s = np.asarray(sigma, dtype=np.float64)
    fixed: Any = (1e-5, 1e5) if learnable else "fixed"
    base: GPKernel
    if name in ("gaussian", "rbf"):
        base = RBF(sigma, fixed)
    elif name == "laplacian":
        base = Laplacian(sigma, fixed)
    elif name == "matern":
        base = Matern(sigma, fixed, nu=nu)
    elif name == "cauchy":
        base = RationalQuadratic(_listed(s / math.sqrt(2.0)), 1.0, fixed, "fixed")
    elif name == "inverse_multiquadric":
        base = RationalQuadratic(sigma, 0.5, fixed, "fixed")
    else:
        raise InputValueError(f"unknown kernel {name!r}")
    return Product(ConstantKernel(amplitude, fixed), base)


# -- derivative sums ----------------------------------------------------------------------------------
def _pair_nodes(kernel: GPKernel, b: FormulaBuilder, e: Node) -> tuple[list[Any], np.ndarray]:
    """The non-white derivative formulas and where their entries go in ``theta``."""
    grads = kernel.grads(b, e)
    hp = [h for h in kernel.hyperparameters if not h.fixed]
    nodes: list[Any] = []
    where: list[int] = []
    pos = 0
    for g, h in zip(grads, hp):
        if g is not None:
            nodes.append(g)
            where.extend(range(pos, pos + h.n_elements))
        pos += h.n_elements
    return nodes, np.asarray(where, dtype=np.int64)


def _dense_blocks(
    b: FormulaBuilder, formula: Node, n: int, m: int, weight: tuple[int, Any] | None = None, upper: bool = False
):
    """``(i0, i1, j0, block, host)``: ``formula`` evaluated by NumPy on rows i0:i1 and columns j0:m (block
    (i1−i0, m−j0, dim)), the squared-distance placeholders filled by matrix products (0 on the diagonal of same
    points). Columns from j0 = 0, or with ``upper`` (the same points: n = m) from j0 = i0: the blocks covering the
    upper triangle. ``weight = (position, fn)`` binds a pair variable to the block ``fn(i0, i1, j0)``. Blocks of
    about ``_BLOCK_ENTRIES`` entries, so that the intermediates stay in cache."""
    host = [np.atleast_1d(np.asarray(arr.to_numpy(d, np.dtype(np.float64)))) for d, _ in b.variables]
    widest = max(node.dim for node in formula.walk())
    norms = {p: (host[p] ** 2).sum(axis=1) for xp, yp, _ in b.pairwise.values() for p in (xp, yp)}
    i0 = 0
    while i0 < n:
        j0 = i0 if upper else 0
        i1 = min(n, i0 + max(1, _BLOCK_ENTRIES // max(1, (m - j0) * widest)))
        local = {}
        for pos, (data, (_, cat)) in enumerate(zip(host, b.variables)):
            local[pos] = data[i0:i1, None, :] if cat == CAT_I else data[None, j0:, :] if cat == CAT_J else data
        for pos, (xp, yp, same) in b.pairwise.items():
            sq = norms[xp][i0:i1, None] + norms[yp][None, j0:] - 2.0 * (host[xp][i0:i1] @ host[yp][j0:].T)
            np.maximum(sq, 0.0, out=sq)
            if same:
                sq[np.arange(i1 - i0), np.arange(i0, i1) - j0] = 0.0
            local[pos] = sq[:, :, None]
        if weight is not None:
            local[weight[0]] = weight[1](i0, i1, j0)[:, :, None]
        block = evaluate(formula, local, np.dtype(np.float64))
        yield i0, i1, j0, np.broadcast_to(block, (i1 - i0, m - j0, formula.dim)), host
        i0 = i1


def dense_value(kernel: GPKernel, x: Any, y: Any = None, upper: bool = False) -> np.ndarray:
    """The dense matrix ``k(x_i, y_j)`` (host float64) by NumPy in blocks of rows (squared distances by
    matrix products). ``upper`` (y None): only the entries i ≤ j are computed, zeros below the diagonal
    (half the work; the lower triangle of the Fortran-ordered transpose, as LAPACK reads it)."""
    b = FormulaBuilder(dense=True)
    xh = arr.to_numpy(x, np.dtype(np.float64))
    yh = None if y is None else arr.to_numpy(y, np.dtype(np.float64))
    node = kernel.node(b, xh, yh)
    if node is None:
        raise InputValueError(f"the kernel {kernel!r} is white noise only: it has no off-diagonal part")
    n, m = xh.shape[0], (xh if yh is None else yh).shape[0]
    upper = upper and yh is None
    out = np.zeros((n, m)) if upper else np.empty((n, m))
    for i0, i1, j0, block, _ in _dense_blocks(b, node, n, m, upper=upper):
        out[i0:i1, j0:] = block[..., 0]
        if upper:
            h = np.arange(i1 - i0)
            out[i0:i1, i0:i1][h[:, None] > h[None, :]] = 0.0
    return out


def _weighted_sums(kernel: GPKernel, x: Any, weight: Any, upper: bool) -> np.ndarray:
    """``Σ_ij W_ij ∂k(x_i, x_j)/∂log θ`` over the blocks of :func:`_dense_blocks` (``weight(i0, i1, j0)``:
    W's block), in the factored form of the ARD derivatives (:class:`SquaredDifferenceSum`)."""
    b = FormulaBuilder(dense=True)
    xh = arr.to_numpy(x, np.dtype(np.float64))
    kernel.node(b, xh, None)
    e = b.var(np.zeros((1, 1)), CAT_I, "weight")
    parts, where = _pair_nodes(kernel, b, e)
    out = np.zeros(kernel.n_dims)
    if not parts:
        return out
    plain = [p for p in parts if isinstance(p, Node)]
    factored = [p for p in parts if isinstance(p, SquaredDifferenceSum)]
    formula = concat([*plain, *(f.weight for f in factored)])
    n = xh.shape[0]
    n_plain = sum(p.dim for p in plain)
    totals = [np.zeros(p.dim) for p in parts]
    for i0, i1, j0, block, host in _dense_blocks(b, formula, n, n, (e.params[0], weight), upper):
        sums = block[..., :n_plain].sum(axis=(0, 1))
        col, fcol = 0, n_plain
        for k, p in enumerate(parts):
            if isinstance(p, SquaredDifferenceSum):
                M = block[..., fcol]
                a, yv = host[p.x.params[0]][i0:i1], host[p.y.params[0]][j0:]
                totals[k] += (
                    (a * a * M.sum(axis=1)[:, None]).sum(0) + M.sum(axis=0) @ (yv * yv) - 2 * (a * (M @ yv)).sum(0)
                )
                fcol += 1
            else:
                totals[k] += sums[col : col + p.dim]
                col += p.dim
    out[where] = np.concatenate(totals)
    return out


def dense_gradient(kernel: GPKernel, x: Any, W: np.ndarray) -> np.ndarray:
    """``Σ_ij W_ij ∂k(x_i, x_j)/∂log θ`` for each entry of ``theta`` (0 for white-noise levels).

    The derivative formulas are evaluated by NumPy in blocks of rows (host float64), the ARD
    length-scale ones in their factored form (:class:`SquaredDifferenceSum`: one scalar formula
    and three matrix products per block): O(N²·(P + D)) work, O(block) memory.
    """
    return _weighted_sums(kernel, x, lambda i0, i1, j0: W[i0:i1, j0:], upper=False)


def symmetric_gradient(kernel: GPKernel, x: Any, weight: Any) -> np.ndarray:
    """:func:`dense_gradient` for a symmetric W given by its upper triangle, on half the entries.

    ``weight(i0, i1)`` returns the rows i0:i1 of W from column i0 on, as a new array (it is modified:
    what lies below the diagonal is ignored). The sum is twice that over ``i < j`` plus the diagonal,
    each derivative matrix being symmetric.

    >>> k = Matern(length_scale=[0.5, 2.0], nu=2.5)
    >>> x = np.random.default_rng(1).uniform(size=(7, 2))
    >>> W = np.cov(np.random.default_rng(2).normal(size=(7, 9)))
    >>> bool(np.allclose(symmetric_gradient(k, x, lambda i0, i1: W[i0:i1, i0:].copy()), dense_gradient(k, x, W)))
    True
    """

    def halved(i0: int, i1: int, j0: int) -> np.ndarray:
        w = weight(i0, i1)
        h = np.arange(i1 - i0)
        w[:, : i1 - i0][h[:, None] > h[None, :]] = 0.0
        w[h, h] *= 0.5
        return w

    return 2.0 * _weighted_sums(kernel, x, halved, upper=True)


def _local_pair_sum(formula: Node, variables: list, names: list, backend: str | None) -> np.ndarray:
    """``Σ_ij formula`` by one kernla reduction over j (then a sum over i)."""
    slots = [
        Slot(name, cat, 1 if arr.kind_of(d) == "scalar" else int(d.shape[-1]))
        for name, (d, cat) in zip(names, variables)
    ]
    res = reduce(Reduction("Sum", formula), slots, [d for d, _ in variables], 1, backend)[0]
    return arr.to_numpy(res, np.dtype(np.float64)).sum(axis=0)


def pair_gradient(
    kernel: GPKernel,
    x: Any,
    U: np.ndarray,
    V: np.ndarray,
    backend: str | None = None,
    pair_sum: Any = None,
) -> np.ndarray:
    """``Σ_ij (u_i·v_j) ∂k(x_i, x_j)/∂log θ`` (U, V: host (N, c)) as **one** kernla reduction over j.

    The weight ``W = U Vᵀ`` of rank c is never formed; 0 for white-noise levels. ``pair_sum``:
    ``(formula, variables, names) -> Σ_ij formula`` on the points themselves (the placed mode of
    :class:`FormulaBuilder`; e.g. on a cluster), instead of one reduction here.
    """
    b = FormulaBuilder(placed=pair_sum is not None)
    kernel.node(b, x, None)
    xp_kind = arr.common_kind({"x": x})
    dtype = arr.dtype_of(x)
    u = b.var(arr.wrap(np.ascontiguousarray(U), xp_kind, dtype), CAT_I, "u")
    v = b.var(arr.wrap(np.ascontiguousarray(V), xp_kind, dtype), CAT_J, "v")
    nodes, where = _pair_nodes(kernel, b, u | v)
    out = np.zeros(kernel.n_dims)
    if not nodes:
        return out
    formula = concat(nodes)
    total = (
        _local_pair_sum(formula, b.variables, b.names, backend)
        if pair_sum is None
        else pair_sum(formula, b.variables, b.names)
    )
    out[where] = total
    return out


__all__ = [
    "GPKernel",
    "Hyperparameter",
    "LogNormalPrior",
    "GammaPrior",
    "RBF",
    "Matern",
    "Laplacian",
    "RationalQuadratic",
    "ExpSineSquared",
    "DotProduct",
    "ConstantKernel",
    "WhiteKernel",
    "Sum",
    "Product",
    "as_gp_kernel",
    "legacy_kernel",
    "dense_gradient",
    "dense_value",
    "pair_gradient",
    "symmetric_gradient",
]
