"""Two-level preconditioner of the projected interpolation system: local blocks plus a Nyström coarse space.

Conditionally positive definite kernels (thin-plate splines, ...) have slowly decaying spectra:
a rank-r Nyström preconditioner alone leaves a condition number of about ``(N / r)²`` and
thousands of CG iterations at N = 10⁴. The small eigenvalues belong to local, oscillating
modes, which a block-diagonal preconditioner captures. So, additively (two-level additive
Schwarz):

- **fine level**: the points are split into spatial boxes of at most ``block`` points (recursive
  median splits along the widest axis), each grown by ``overlap`` (20 %) of its width on every
  side; each diagonal block ``K_II`` of a grown box (dense) is replaced by ``|K_II|`` (its
  eigenvectors with the absolute eigenvalues, plus the smoothing):
  a conditionally positive definite kernel's block has at most a few negative eigenvalues, and
  the absolute value makes every block positive definite;
- **coarse level**: the projected Nyström approximation ``U Λ Uᵀ`` of ``Π K Π`` (see
  :func:`kernla.models.saddle.projected_nystrom`), inverted on its range only.

``M⁻¹ = Π (Σ_I R_Iᵀ (|K_II| + S_I)⁻¹ R_I + U Λ⁻¹ Uᵀ) Π`` is symmetric positive definite on
range(Π), which is all projected CG needs. The overlap matters: thin-plate splines at N = 2000
need 1127 CG iterations with the Nyström level alone, 309 with non-overlapping blocks, 34 with
20 % overlap (52 at N = 5000, 99 at N = 20 000). Set-up cost: about 2·N·block kernel entries
and N·block² flops for the blocks, N·r entries for the coarse level; each application
O(N·(block + r)).

>>> import numpy as np
>>> boxes = spatial_blocks(np.random.default_rng(0).uniform(size=(1000, 2)), 128)
>>> len(boxes), max(len(b) for b in boxes) <= 128, sorted(np.concatenate(boxes).tolist()) == list(range(1000))
(8, True, True)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg

#: default number of points per fine-level block (before the overlap)
BLOCK = 256

#: default overlap of the blocks, as a fraction of their width on each side
OVERLAP = 0.2


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


def two_level(
    proj: Callable[[np.ndarray], np.ndarray],
    blocks: list[np.ndarray],
    inverses: list[np.ndarray],
    U: np.ndarray,
    lam: np.ndarray,
) -> Callable[[np.ndarray], np.ndarray]:
    """The preconditioner ``R -> Π (blockdiag⁻¹ + U Λ⁻¹ Uᵀ) Π R`` (module docstring)."""
    inv_lam = (1.0 / lam)[:, None]

    def apply(R: np.ndarray) -> np.ndarray:
        R = proj(R)
        Z = U @ (inv_lam * (U.T @ R))
        for idx, inv in zip(blocks, inverses):
            Z[idx] += inv @ R[idx]
        return proj(Z)

    return apply


__all__ = ["BLOCK", "OVERLAP", "spatial_blocks", "overlapping", "block_inverses", "two_level"]
