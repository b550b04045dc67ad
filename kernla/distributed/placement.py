"""Where a distributed kernel's points live: row blocks on the workers, scattered once, recomputable.

A :class:`Side` is one side of the matrix (the rows' i-variables, or the columns' j-variables):
its points cut into row blocks, each block one Dask key holding the list of that side's arrays.
Blocks are *tasks*, not scattered data: a NumPy block's task carries its slice (the scheduler
keeps it), a Dask array's block is computed on the cluster from the array's own graph. So when
a worker dies, Dask recomputes its blocks elsewhere instead of losing them. A side that fits a
worker can also be kept whole, one copy per worker (``copies``, separate keys that Dask's
active memory manager leaves alone, unlike replicas of one key).

>>> split_rows(10, 3), split_rows(10, [2, 8])
((0, 3, 7, 10), (0, 2, 10))
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client, Future, wait

from ..errors import InputValueError, ShapeError
from .tasks import concat_rows, to_device


def split_rows(n: int, blocks: int | Sequence[int]) -> tuple[int, ...]:
    """Block boundaries ``(0, …, n)``: ``blocks`` equal-as-possible blocks, or the given block sizes."""
    if isinstance(blocks, bool):
        raise InputValueError(f"blocks must be a number of blocks or a list of block sizes, got {blocks!r}")
    if isinstance(blocks, (int, np.integer)):
        if not 1 <= blocks <= n:
            raise InputValueError(f"the number of blocks must lie in [1, {n}], got {blocks}")
        return tuple(int(b) for b in np.linspace(0, n, int(blocks) + 1).round().astype(int))
    sizes = [int(s) for s in blocks]
    if not sizes or min(sizes) < 1 or sum(sizes) != n:
        raise InputValueError(f"block sizes must be positive and add up to {n}, got {sizes}")
    return tuple(int(b) for b in np.concatenate([[0], np.cumsum(sizes)]))


class DaskBacked(np.ndarray):
    """A zero-stride stand-in of a Dask array's shape and dtype (no memory), carrying the array.

    It lets a Dask array go through kernla's formula bindings and shape checks unchanged; the
    distributed operator takes the array back from ``.dask`` and computes its blocks on the cluster.
    """

    dask: Any = None

    def __array_finalize__(self, obj: Any) -> None:
        self.dask = getattr(obj, "dask", None)


def stand_in(x: Any) -> Any:
    """``x`` itself, or a :class:`DaskBacked` stand-in for a Dask array (1-D arrays become one column)."""
    if not isinstance(x, da.Array):
        return x
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    base = np.lib.stride_tricks.as_strided(np.zeros(1, x.dtype), shape=x.shape, strides=(0,) * x.ndim)
    out = base.view(DaskBacked)
    out.dask = x
    return out


@dataclass
class Side:
    """One side's point variables in row blocks on the cluster (see the module docstring).

    ``bounds``: block boundaries; ``blocks``: one future per block (the list of the side's arrays);
    ``owners``: the worker each block was placed on; ``copies``: worker -> future of the whole
    side (broadcast mode) or None; ``pieces``: keys of short-lived column pieces in flight, with
    their rows (see :meth:`held_rows`); ``dims``: each array's dimension.
    """

    bounds: tuple[int, ...]
    blocks: list[Future]
    owners: list[str]
    copies: dict[str, Future] | None = None
    pieces: dict[Any, tuple[int, int]] = field(default_factory=dict)
    device: str = "cpu"
    sources: list = field(default_factory=list, repr=False)  # Dask chunks the blocks are made from
    dims: tuple[int, ...] = ()  # the dimension of each of the side's arrays

    def settle(self, client: Client) -> None:
        """Wait until the blocks and copies are on their workers, then let Dask recompute them anywhere.

        They are submitted pinned to their workers (strict restrictions: work stealing would move a
        waiting block task to an idle worker, piling blocks up there); once placed, the pin is
        loosened on the scheduler, so that a block whose worker dies is recomputed on another one
        instead of waiting for it. A block that could not be made (a bad Dask array) raises here.
        """
        futures = self.blocks + list((self.copies or {}).values())
        wait(futures)
        for f in futures:
            if f.status == "error":
                f.result()
        keys = [f.key for f in futures]

        def loosen(dask_scheduler: Any) -> None:  # the blocks, the copies and the joins the copies come from
            for key in keys:
                ts = dask_scheduler.tasks.get(key)
                for t in [ts, *ts.dependencies] if ts is not None else []:
                    t.loose_restrictions = True

        client.run_on_scheduler(loosen)
        self.sources.clear()  # the chunks are in the blocks now: Dask may free them

    @property
    def n(self) -> int:
        return self.bounds[-1]

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def rows_of(self, b: int) -> tuple[int, int]:
        return self.bounds[b], self.bounds[b + 1]

    def keys(self) -> dict[Any, tuple[int, int]]:
        """Every key holding rows of this side, with the rows it holds."""
        out = {f.key: self.rows_of(b) for b, f in enumerate(self.blocks)}
        out.update({f.key: (0, self.n) for f in (self.copies or {}).values()})
        out.update(self.pieces.copy())  # (the client may add pieces meanwhile, from another thread)
        return out

    def copy_for(self, client: Client, worker: str, where: dict[Any, list[str]]) -> Future:
        """The whole side's copy on ``worker`` (made there from the blocks if it has none: a new worker)."""
        assert self.copies is not None
        for f in self.copies.values():
            if worker in where.get(f.key, ()):
                return f
        if worker not in self.copies:
            # a worker that joined later (a restarted one): not pinned, so that its loss cannot block a wait
            self.copies[worker] = whole_copy(client, self.blocks, self.device, worker, strict=False)
        return self.copies[worker]


def _key(what: str) -> str:
    return f"kernla-{what}-{uuid.uuid4().hex[:12]}"


def whole_copy(client: Client, blocks: list[Future], device: str, worker: str, strict: bool = True) -> Future:
    """A task that joins the blocks into the whole side on ``worker`` (``strict=False``: or elsewhere)."""
    loose = not strict
    joined = client.submit(concat_rows, blocks, key=_key("join"), workers=[worker], allow_other_workers=loose)
    return client.submit(to_device, joined, device, key=_key("copy"), workers=[worker], allow_other_workers=loose)


def place(
    client: Client,
    arrays: Sequence[Any],
    bounds: tuple[int, ...],
    workers: Sequence[str],
    device: str = "cpu",
    whole: bool = False,
) -> Side:
    """The side made of ``arrays`` (NumPy, or :class:`DaskBacked` stand-ins), cut at ``bounds``.

    Block ``b`` is placed on ``workers[b * len(workers) // n_blocks]`` (contiguous groups, uneven
    sizes allowed); ``whole=True`` adds one copy of the whole side per worker. Call
    :meth:`Side.settle` before using it.
    """
    n_blocks = len(bounds) - 1
    sizes = tuple(bounds[b + 1] - bounds[b] for b in range(n_blocks))
    pieces: list[list[Any]] = [[] for _ in range(n_blocks)]
    sources: list[Any] = []
    for a in arrays:
        if int(a.shape[0]) != bounds[-1]:
            raise ShapeError(f"a block side has {a.shape[0]} rows, expected {bounds[-1]}")
        source = getattr(a, "dask", None)
        if source is None:
            for b in range(n_blocks):
                pieces[b].append(np.ascontiguousarray(a[bounds[b] : bounds[b + 1]]))
            continue
        chunks = source.rechunk({0: sizes, 1: -1}).to_delayed().reshape(-1)
        for b, f in enumerate(client.compute(list(chunks))):
            pieces[b].append(f)
            sources.append(f)
    owners = [workers[b * len(workers) // n_blocks] for b in range(n_blocks)]
    blocks = [
        client.submit(to_device, pieces[b], device, key=_key("block"), workers=[owners[b]]) for b in range(n_blocks)
    ]
    copies = {w: whole_copy(client, blocks, device, w) for w in workers} if whole else None
    dims = tuple(int(a.shape[1]) if len(a.shape) > 1 else 1 for a in arrays)
    return Side(bounds, blocks, owners, copies, device=device, sources=sources, dims=dims)


def held_rows(client: Client, sides: dict[str, Side]) -> dict[str, dict[str, int]]:
    """worker -> side name -> number of distinct rows of that side the worker holds now.

    Counts the blocks, whole copies and in-flight column pieces that Dask reports on each worker
    (``client.who_has``): the check that no worker ever holds all N points.
    """
    spans: dict[str, dict[str, list[tuple[int, int]]]] = {}
    everything = client.who_has()  # every key in memory (pieces have no future on the client)
    for name, side in sides.items():
        for key, rows in side.keys().items():
            for w in everything.get(key, ()):
                spans.setdefault(w, {}).setdefault(name, []).append(rows)
    out: dict[str, dict[str, int]] = {}
    for w, by_side in spans.items():
        out[w] = {}
        for name, ranges in by_side.items():
            covered = np.zeros(sides[name].n, dtype=bool)
            for lo, hi in ranges:
                covered[lo:hi] = True
            out[w][name] = int(covered.sum())
    return out
