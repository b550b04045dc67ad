"""The NumPy engine: tiled reference evaluation of any formula and reduction.

Rows are processed in blocks and columns in tiles, so memory stays linear in N + M whatever the
sizes; it is the reference the compiled engines are tested against.

>>> import numpy as np
>>> from kernla.formula import Vi, Vj, call
>>> from kernla.reductions import Reduction
>>> x = np.arange(3.0).reshape(3, 1); y = np.array([[0.5], [2.5]])
>>> run(Reduction("ArgMin", call("SqDist", Vi(0, 1), Vj(1, 1))), [x, y], 3, 2)[0].ravel()
array([0, 0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..formula.evaluate import evaluate
from ..formula.tree import CAT_I, CAT_J, walk_many
from ..reductions import Reduction
from .ranges import Blocks

name = "numpy"

#: target number of scalar values in one tile's largest intermediate
_TILE_ELEMENTS = 1 << 17
#: most scalar values of all of one tile's intermediates together (evaluation keeps each node's value)
_TILE_TOTAL_ELEMENTS = 1 << 22


def _tiles(red: Reduction, nx: int, ny: int) -> tuple[int, int]:
    """Rows and columns per tile: the widest intermediate within ``_TILE_ELEMENTS`` values, all of them
    within ``_TILE_TOTAL_ELEMENTS`` (a tile of one pair at least).

    >>> from kernla.formula import Vi, Vj, call
    >>> _tiles(Reduction("Sum", call("SqDist", Vi(0, 3), Vj(1, 3))), 10**6, 10**6)
    (10, 4096)
    >>> _tiles(Reduction("Sum", call("Sum", call("ElemT", Vi(0, 1), params=(10**4, 0)))), 10**6, 10**6)
    (1, 13)
    """
    nodes = list(walk_many(red.formulas))
    widest = max(max(n.dim for n in nodes), red.K or 1)
    total = sum(n.dim for n in nodes) + (red.K or 1)
    pairs = max(1, min(_TILE_ELEMENTS // widest, _TILE_TOTAL_ELEMENTS // total))
    tj = max(1, min(ny, 4096, pairs))
    ti = max(1, min(nx, pairs // tj))
    return ti, tj


def run(
    red: Reduction,
    arrays: Sequence[np.ndarray],
    nx: int,
    ny: int,
    out: list[np.ndarray] | None = None,
    ranges: Blocks | None = None,
) -> list[np.ndarray]:
    """Reduce over j for rows 0..nx-1; ``arrays[pos]`` is (nx, D), (ny, D) or (D,) by category.

    ``ranges``: visit only these blocks (:class:`kernla.engines.ranges.Blocks`), else every pair.
    """
    dtype = np.result_type(*arrays) if len(arrays) else np.dtype(np.float64)
    if out is None:
        out = [np.empty((nx, w), dtype if kind == "float" else np.int64) for w, kind in red.output_dims()]
    variables = {v.params[0]: v.params[2] for f in red.formulas for v in f.variables()}
    ti, tj = _tiles(red, nx, ny)
    if ranges is None:
        blocks = [((0, nx), [(0, ny)])]
    else:
        blocks = [
            ((int(a), int(b)), ranges.cols[s0:s1].tolist())
            for (a, b), s0, s1 in zip(ranges.rows, ranges.starts, ranges.slices)
        ]
    for (r0, r1), cols in blocks:
        for i0 in range(r0, r1, ti):
            i1 = min(r1, i0 + ti)
            base = {  # the i-variables' rows of this tile and the parameters; j-variables are sliced per j-tile
                pos: arrays[pos][i0:i1, None, :] if cat == CAT_I else arrays[pos][None, None, :]
                for pos, cat in variables.items()
                if cat != CAT_J
            }
            state = red.np_init(i1 - i0, dtype)
            for c0, c1 in cols:
                for j0 in range(c0, c1, tj):
                    j1 = min(c1, j0 + tj)
                    values = {
                        pos: (arrays[pos][None, j0:j1, :] if cat == CAT_J else base[pos])
                        for pos, cat in variables.items()
                    }
                    shape = (i1 - i0, j1 - j0)
                    evals = [np.broadcast_to(evaluate(f, values, dtype), shape + (f.dim,)) for f in red.formulas]
                    red.np_update(state, evals[0], evals[1] if len(evals) > 1 else None, j0)
            for o, r in zip(out, red.np_finalize(state, dtype)):
                o[i0:i1] = r
    return out
