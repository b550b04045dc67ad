"""Helpers shared by the example scripts (imported as ``_common``: each script's folder is on sys.path)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from kernla.linalg.truncation import truncate


def figure_path(name: str, out: str | None) -> Path:
    """Where to write a figure: ``out``, else ``$KERNLA_FIGURES/name``, else in the examples folder."""
    if out:
        return Path(out)
    folder = os.environ.get("KERNLA_FIGURES")
    return Path(folder) / name if folder else Path(__file__).resolve().parent / name


def scaled(n: int, least: int = 10) -> int:
    """A default size times ``$KERNLA_EXAMPLE_SCALE`` (default 1), at least ``least``.

    The docs' gallery runs every example with ``KERNLA_EXAMPLE_SCALE=0.1``: one variable shrinks them all.
    Sizes given on the command line are used as given.
    """
    return max(least, round(n * float(os.environ.get("KERNLA_EXAMPLE_SCALE", "1"))))


class Truncated:
    """An interpolation made block-sparse (``--truncate EPS``): samples and evaluation points sorted by cluster.

    ``x``, ``b``: the samples in cluster order, with ``ranges`` for the system K(x, x) (every dropped
    pair has k ≤ eps: ‖K v − K_t v‖_∞ ≤ eps·‖v‖_1); :meth:`evaluate` computes the interpolant at
    the evaluation points with the ranges of K(points, x), in the points' own order.
    """

    def __init__(self, x: np.ndarray, b: np.ndarray, points: np.ndarray, kernel: str, sigma: float, eps: float):
        t0 = time.perf_counter()
        system = truncate(x, kernel=kernel, sigma=sigma, eps=eps)
        evaluation = truncate(points, x, kernel=kernel, sigma=sigma, eps=eps)
        self.seconds = time.perf_counter() - t0
        self.eps, self.system, self.evaluation = eps, system.info, evaluation.info
        self.x, self.b, self.ranges = x[system.perm_x], b[system.perm_x], system.ranges
        self._points, self._eval_ranges = points[evaluation.perm_x], evaluation.ranges
        self._columns = np.argsort(system.perm_x)[evaluation.perm_y]  # sorted sample of each evaluation column
        self._unsort = np.argsort(evaluation.perm_x)

    def evaluate(self, K, a: np.ndarray, *params: np.ndarray) -> np.ndarray:
        """``K(points, x, a, *params)`` (``a`` in the sorted samples' order), in the points' order."""
        cols = self._columns
        return K(self._points, self.x[cols], a[cols], *params, ranges=self._eval_ranges)[self._unsort]

    def report(self, alpha: float) -> str:
        """The kept fractions, the product bound and what it implies for the solution of (K + αI) a = b."""
        eps, kept, n = self.eps, self.system, len(self.x)
        lines = [
            f"truncation (eps = {eps:g}, cutoff radius {kept.radius:.3g}, clustering {self.seconds:.2f} s): "
            f"system {kept.fraction_kept:.2%} of the pairs kept ({kept.pairs_kept:,}), evaluation "
            f"{self.evaluation.fraction_kept:.2%}; certified ‖K b − K_t b‖_∞ ≤ {eps:g} · ‖b‖_1 for every product"
        ]
        if eps * n < alpha:  # ‖K − K_t‖_2 ≤ eps·n, every dropped entry being at most eps
            lines.append(
                f"  so the solution of the truncated system: ‖a − a_t‖_2 ≤ {eps * n / (alpha - eps * n):.2e} ‖a_t‖_2"
            )
        return "\n".join(lines)
