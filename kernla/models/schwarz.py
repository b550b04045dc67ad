"""Two-level solver of the projected interpolation system: overlapping local blocks plus a deflated coarse level.

Conditionally positive definite kernels (thin-plate splines, ...) have slowly decaying spectra:
a rank-r Nyström preconditioner alone leaves a condition number of about ``(N / r)²`` and
thousands of CG iterations at N = 10⁴. Two levels, as in the domain decomposition methods for
RBF interpolation (Beatson, Light & Billings 2000):

- **fine level** (the preconditioner): the points are split into spatial boxes of at most
  ``block`` points (recursive median splits along the widest axis), each grown by ``overlap``
  (20 %) of its width on every side; each diagonal block ``K_II`` of a grown box (dense) is
  replaced by ``|K_II|`` (its eigenvectors with the absolute eigenvalues, plus the smoothing): a
  conditionally positive definite kernel's block has at most a few negative eigenvalues, and
  the absolute value makes every block positive definite. ``M⁻¹ = Π Σ_I R_Iᵀ (|K_II| + S_I)⁻¹ R_I Π``
  is positive definite on range(Π), which is all projected CG needs. It resolves the local,
  oscillating modes (the small eigenvalues), not the smooth global ones.
- **coarse level** (deflation): the interpolation problem on about N/40 well-spread landmarks L
  (one per spatial box), i.e. the coarse space ``Z = E_L W`` of coefficient vectors carried by
  the landmarks and orthogonal to the tail there (so Z ⊂ range(Π)), with ``Zᵀ A Z = I``
  (A = Π(K + S)Π). Deflated CG (Nicolaides; Saad, Yeung, Erhel & Guyomarc'h 2000) solves
  ``(I − A Z Zᵀ) A x̄ = (I − A Z Zᵀ) b`` with the fine preconditioner, then
  ``c = Z Zᵀ b + x̄ − Z (A Z)ᵀ x̄``: the error on the coarse space is removed exactly at every
  step. The columns of ``A Z`` are kernel columns at the landmarks, so each product with
  ``A Z`` or its transpose is a reduction over N × |L| pairs (2 % of a CG product at N = 10⁵),
  and nothing N × |L| is stored.

Measured (thin-plate splines, uniform points in the unit square, Franke's function, smoothing 0,
tol 1e-10, CG iterations): blocks alone 42 / 62 / 97 at N = 5000 / 10⁴ / 2·10⁴; blocks + an
additive projected-Nyström coarse term (the previous default) 45 / 69 / 97 — the random-landmark
Nyström level hardly helps, at any rank —; blocks + deflation **16-17** from N = 2000 to 10⁴, 13
at 5·10⁴, 14 at 10⁵ (docs/models.md). Set-up cost: about 2·N·block kernel entries and N·block² flops for
the blocks, |L|² entries and an |L|³ eigendecomposition for the coarse level; each iteration
O(N·block) plus two N × |L| reductions.

>>> import numpy as np
>>> boxes = spatial_blocks(np.random.default_rng(0).uniform(size=(1000, 2)), 128)
>>> len(boxes), max(len(b) for b in boxes) <= 128, sorted(np.concatenate(boxes).tolist()) == list(range(1000))
(8, True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg

#: default number of points per fine-level block (before the overlap)
BLOCK = 256

#: default overlap of the blocks, as a fraction of their width on each side
OVERLAP = 0.2

#: points per landmark of the coarse level
COARSE_SPACING = 40

#: largest coarse level (landmarks)
COARSE_MAX = 2000


def spatial_blocks(x: np.ndarray, block: int) -> list[np.ndarray]:
    """Index sets of at most ``block`` points, by recursive median splits along the widest axis."""
    out: list[np.ndarray] = []
    stack = [np.arange(x.shape[0])]
    while stack:
        idx = stack.pop()
        if idx.size <= block:
            out.append(idx)
            continue
        pts = x[idx]
        axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
        order = idx[np.argsort(pts[:, axis], kind="stable")]
        half = order.size // 2
        stack += [order[half:], order[:half]]
    return out


def overlapping(x: np.ndarray, blocks: list[np.ndarray], overlap: float) -> list[np.ndarray]:
    """Each block grown to the points of its bounding box enlarged by ``overlap`` × its width on every side."""
    out = []
    for idx in blocks:
        lo, hi = x[idx].min(axis=0), x[idx].max(axis=0)
        pad = overlap * (hi - lo)
        out.append(np.flatnonzero(((x >= lo - pad) & (x <= hi + pad)).all(axis=1)))
    return out


def block_inverses(
    blocks: list[np.ndarray], dense_block: Callable[[np.ndarray], np.ndarray], smoothing: np.ndarray
) -> list[np.ndarray]:
    """``(|K_II| + S_I)⁻¹`` for each block (``dense_block(idx)``: the dense host block ``K[idx][:, idx]``)."""
    inverses = []
    for idx in blocks:
        lam, V = scipy.linalg.eigh(dense_block(idx))
        a = np.abs(lam) + smoothing[idx].mean()
        a = np.maximum(a, 1e-14 * a.max())
        inverses.append((V / a) @ V.T)
    return inverses


def local_blocks(
    proj: Callable[[np.ndarray], np.ndarray], blocks: list[np.ndarray], inverses: list[np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """The fine level ``R -> Π Σ_I R_Iᵀ (|K_II| + S_I)⁻¹ R_I Π R`` (module docstring)."""

    def apply(R: np.ndarray) -> np.ndarray:
        R = proj(R)
        Z = np.zeros_like(R)
        for idx, inv in zip(blocks, inverses):
            Z[idx] += inv @ R[idx]
        return proj(Z)

    return apply


def coarse_size(n: int) -> int:
    """Number of landmarks of the coarse level: one per :data:`COARSE_SPACING` points, 100 to :data:`COARSE_MAX`."""
    return int(min(n, max(100, min(COARSE_MAX, n // COARSE_SPACING))))


def landmarks(x: np.ndarray, size: int) -> np.ndarray:
    """About ``size`` well-spread points (sorted indices): in each spatial box, the point nearest the box's mean."""
    out = []
    for idx in spatial_blocks(x, max(1, -(-x.shape[0] // size))):
        pts = x[idx]
        out.append(idx[np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1))])
    return np.sort(np.array(out))


class CoarseDeflation:
    """Deflation of projected CG by the interpolation problem on landmarks (module docstring).

    ``L``: landmark indices; ``P_L``: the tail's rows at L; ``K_LL`` (dense) and the operators
    ``K_XL`` (N×|L|) and ``K_LX`` (|L|×N) of the kernel between all points and the landmarks;
    ``proj``: Π; ``smoothing``: S's diagonal. The coarse space is ``Z = E_L W``, where the
    columns of W span the coefficient vectors on L orthogonal to the tail (so Z ⊂ range(Π)),
    scaled so that ``Zᵀ A Z = I`` (A = Π(K + S)Π; directions with a coarse eigenvalue below
    1e-12 of the largest are left out). Products with ``A Z`` and ``(A Z)ᵀ`` are reductions over
    N × |L| pairs, not N × N.
    """

    def __init__(
        self,
        L: np.ndarray,
        P_L: np.ndarray,
        K_LL: np.ndarray,
        K_XL: Any,
        K_LX: Any,
        proj: Callable[[np.ndarray], np.ndarray],
        smoothing: np.ndarray,
    ):
        self.L, self.K_XL, self.K_LX, self.proj, self.s_L = L, K_XL, K_LX, proj, smoothing[L][:, None]
        N_L = scipy.linalg.null_space(P_L.T) if P_L.shape[1] else np.eye(L.size)
        theta, V = scipy.linalg.eigh(N_L.T @ (K_LL + np.diag(smoothing[L])) @ N_L)
        keep = theta > 1e-12 * theta.max(initial=0.0)
        self.W = N_L @ (V[:, keep] / np.sqrt(theta[keep]))
        self.n = smoothing.shape[0]

    @property
    def size(self) -> int:
        """Dimension of the coarse space."""
        return int(self.W.shape[1])

    def _scatter(self, V_L: np.ndarray) -> np.ndarray:
        out = np.zeros((self.n, V_L.shape[1]))
        out[self.L] = V_L
        return out

    def _AZ(self, w: np.ndarray) -> np.ndarray:
        c_L = self.W @ w
        return self.proj(np.asarray(self.K_XL.matmat(c_L), dtype=np.float64) + self._scatter(self.s_L * c_L))

    def deflate(self, V: np.ndarray) -> np.ndarray:
        """``(I − A Z Zᵀ) V``: V with its component on A·span(Z) removed (applied after each product A p)."""
        return V - self._AZ(self.W.T @ V[self.L])

    def solution(self, X: np.ndarray, B: np.ndarray) -> np.ndarray:
        """The solution of ``A c = B`` from the deflated system's ``X`` (in range(Π)): ``Z Zᵀ B + X − Z (A Z)ᵀ X``."""
        AX_L = np.asarray(self.K_LX.matmat(X), dtype=np.float64) + self.s_L * X[self.L]
        return X + self._scatter(self.W @ (self.W.T @ (B[self.L] - AX_L)))


__all__ = [
    "BLOCK",
    "OVERLAP",
    "COARSE_SPACING",
    "COARSE_MAX",
    "spatial_blocks",
    "overlapping",
    "block_inverses",
    "local_blocks",
    "coarse_size",
    "landmarks",
    "CoarseDeflation",
]
