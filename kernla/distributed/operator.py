"""``DistributedKernelOperator``: a kernel operator whose points live on Dask workers.

The rows' points are cut into blocks placed on the workers once (:mod:`kernla.distributed.placement`);
a product sends only the vectors. Two ways to meet the columns:

- *broadcast* (the columns' points fit a worker): every worker keeps a copy of all columns, and
  each row block is one task ``K(x_a, y) @ V`` on the worker that holds it;
- *partitioned* (beyond ``broadcast_bytes``): the columns are cut into blocks too, and each
  worker reduces its row blocks against the column blocks one at a time, each streamed from its
  holder as a short-lived piece (with its slice of the vectors) that Dask frees once used; the
  partial results are merged by the reduction's merge (a sum for products, an exact merge of
  candidate lists for the k smallest values). A worker then holds its own rows plus one column
  block, never all N points.

Products are computed by each worker's own engine (compiled CPU, or CUDA for ``device="cuda"``
with dask-cuda), the solve is kernla's block CG driven from the client with this operator's
products (per iteration: the vectors out and back), and every result is that of the
single-process :class:`~kernla.linalg.KernelOperator` up to rounding (sums in another order).

>>> import numpy as np
>>> from distributed import Client, LocalCluster
>>> from kernla import kernels
>>> client = Client(LocalCluster(n_workers=1, processes=False, dashboard_address=":0"))
>>> K = kernels.gaussian(np.linspace(0, 1, 30)[:, None], sigma=0.2)
>>> D = distribute(K, client, blocks=3)
>>> bool(np.allclose(D @ np.ones(30), K @ np.ones(30), rtol=1e-13))
True
>>> client.close(); client.cluster.close()
"""

from __future__ import annotations

import math
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask import delayed
from distributed import Client, Future, wait
from distributed.client import CancelledError
from distributed.scheduler import KilledWorker
from scipy.sparse.linalg import LinearOperator

from ..engines import resolve_backend
from ..errors import InputValueError, KernlaError, ShapeError
from ..formula import CAT_I, CAT_J
from ..linalg import KernelOperator as LocalKernelOperator
from ..linalg import _compute as compute
from ..linalg.affine import Affine
from ..linalg.kernel import COLUMN_CHUNK
from ..linalg.operator_solve import _solve_plain
from ..linalg.precond import make_preconditioner
from . import tasks
from .placement import Side, held_rows, place, split_rows, stand_in, whole_copy
from .tasks import KernelSpec

#: default broadcast limit, as a fraction of the smallest worker memory limit
BROADCAST_FRACTION = 0.1

#: seconds between checks that the workers a computation is pinned to are still there
PIN_CHECK_SECONDS = 0.5

#: a computation is made again (on the recomputed blocks) at most this many times when workers leave
ATTEMPTS = 3

#: broadcast limit when the workers report no memory limit (bytes)
BROADCAST_DEFAULT = 256 << 20


class DistributedError(KernlaError, RuntimeError):
    """A distributed computation failed in a way Dask could not repair (e.g. every worker lost)."""


def _key(what: str) -> str:
    return f"kernla-{what}-{uuid.uuid4().hex[:12]}"


def _quiet_submit(client: Client, *args: Any, **kwargs: Any) -> Future:
    """``client.submit`` without Dask's "large graph" warning: vectors travel in their task on purpose
    (a task's data stays with the scheduler, so Dask can recompute the task if a worker dies)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ll]arge.*")
        return client.submit(*args, **kwargs)


class DistributedKernelOperator(LinearOperator):
    """``scale · K + shift · I`` with the points of K on a Dask cluster (see the module docstring).

    Build it with :func:`distribute` (from a local operator) or :func:`KernelOperator` (from a
    formula and bindings, NumPy or Dask arrays). ``matvec``, ``matmat``, ``rmatvec``, ``rmatmat``,
    ``@``, ``.T``, scaling and :meth:`shifted` work as on the local operator, on NumPy or Dask
    vectors; :meth:`solve` runs preconditioned block CG; :meth:`kmin` gives the k smallest entries
    of each row (a kNN search when F is a distance).
    """

    def __init__(self, client: Client, spec: KernelSpec, rows: Side, cols: Side, affine: Affine | None = None):
        super().__init__(spec.dtype, (rows.n, cols.n))
        self.client = client
        self.spec = spec
        self.rows = rows
        self.cols = cols
        self._affine = Affine() if affine is None else affine
        if self._affine.shift != 0.0 and rows.n != cols.n:
            raise ShapeError(f"a shift s · I needs a square kernel; this one is {self.shape}")

    # -- what the linear algebra asks of an operator (see kernla.linalg.operator_solve) ------------
    @property
    def affine(self) -> Affine:
        return self._affine

    @property
    def scale(self) -> float:
        return self._affine.scale

    @property
    def shift(self) -> float:
        return self._affine.shift

    @property
    def backend(self) -> str | None:
        return self.spec.backend

    @property
    def xp(self) -> Any:
        """The client's vectors are host NumPy arrays (the workers may compute on GPUs)."""
        return np

    @property
    def on_gpu(self) -> bool:
        return False

    @property
    def broadcast(self) -> bool:
        """Whether every worker keeps all the columns (else they are partitioned and streamed)."""
        return self.cols.copies is not None

    def __repr__(self) -> str:
        n, m = self.shape
        mode = "broadcast" if self.broadcast else "partitioned"
        text = self._affine.describe(str(self.spec.formula))
        return (
            f"<{n}x{m} DistributedKernelOperator {text}, dtype={self.dtype}, {self.rows.n_blocks} row blocks, "
            f"columns {mode}>"
        )

    def _with(self, affine: Affine) -> DistributedKernelOperator:
        return DistributedKernelOperator(self.client, self.spec, self.rows, self.cols, affine)

    def _transpose(self) -> DistributedKernelOperator:
        """Kᵀ on the same blocks (rows and columns exchanged; nothing moves)."""
        return DistributedKernelOperator(self.client, self.spec.transposed(), self.cols, self.rows, self._affine)

    def _adjoint(self) -> DistributedKernelOperator:
        return self._transpose()

    def with_rows(self, *arrays: Any, blocks: int | Sequence[int] | None = None) -> DistributedKernelOperator:
        """K on new rows against the same columns (already on the workers: nothing of theirs moves).

        ``arrays``: the new rows' i-variables in the formula's order (NumPy, or Dask stand-ins), e.g.
        a model's prediction points against its training points. The scale is kept, the shift
        dropped (a cross kernel has no diagonal).

        >>> import numpy as np
        >>> from distributed import Client, LocalCluster
        >>> from kernla import kernels
        >>> client = Client(LocalCluster(n_workers=1, processes=False, dashboard_address=":0"))
        >>> x, new = np.linspace(0, 1, 20)[:, None], np.array([[0.5], [2.0]])
        >>> D = distribute(kernels.gaussian(x, sigma=0.3).shifted(1.0), client)
        >>> bool(np.allclose(D.with_rows(new) @ np.ones(20), kernels.gaussian(new, x, sigma=0.3) @ np.ones(20)))
        True
        >>> client.close(); client.cluster.close()
        """
        if len(arrays) != len(self.spec.positions(CAT_I)):
            raise ShapeError(f"the formula has {len(self.spec.positions(CAT_I))} row variable(s), got {len(arrays)}")
        arrays = tuple(
            a if getattr(stand_in(a), "dask", None) is not None else np.asarray(a, self.dtype).reshape(len(a), -1)
            for a in arrays
        )
        n = int(arrays[0].shape[0])
        workers = sorted(self.client.scheduler_info()["workers"])
        bounds = split_rows(n, blocks if blocks is not None else min(n, len(workers)))
        rows = place(self.client, [stand_in(a) for a in arrays], bounds, workers, self.rows.device)
        rows.settle(self.client)
        return DistributedKernelOperator(self.client, self.spec, rows, self.cols, Affine(self.scale, 0.0))

    def with_kernel(self, op: LocalKernelOperator) -> DistributedKernelOperator:
        """Another formula on the points already on the workers: nothing of theirs moves.

        ``op``: a local operator whose i- and j-variables are those this one was made from (in the
        same order; their data are not looked at, the workers' blocks are used), with other
        parameters or another formula — e.g. a Gaussian process's kernel at new hyper-parameters.

        >>> import numpy as np
        >>> from distributed import Client, LocalCluster
        >>> from kernla import Vi, Vj
        >>> client = Client(LocalCluster(n_workers=1, processes=False, dashboard_address=":0"))
        >>> x = np.linspace(0, 1, 20)[:, None]
        >>> K = lambda g: LocalKernelOperator("Exp(-G * SqDist(X, Y))", X=Vi(x), Y=Vj(x), G=g)
        >>> D = distribute(K(1.0), client).with_kernel(K(5.0))
        >>> bool(np.allclose(D @ np.ones(20), K(5.0) @ np.ones(20), rtol=1e-13))
        True
        >>> client.close(); client.cluster.close()
        """
        if not isinstance(op, LocalKernelOperator) or op.kernel.sparsity is not None:
            raise InputValueError("with_kernel takes a dense kernla.KernelOperator")
        spec = KernelSpec.of(op.kernel).with_dtype(self.dtype)
        self._check_points(spec, op.shape)
        return DistributedKernelOperator(self.client, spec, self.rows, self.cols, op.affine)

    def _check_points(self, spec: KernelSpec, shape: tuple) -> None:
        """That ``spec``'s first i- and j-variables are, by their dimensions, the points placed here."""
        dims = spec.dims()
        for cat, side in ((CAT_I, self.rows), (CAT_J, self.cols)):
            got = [dims.get(k) for k in spec.positions(cat)][: len(side.dims)]
            if got != list(side.dims):
                raise ShapeError(
                    f"the formula's {'row' if cat == CAT_I else 'column'} variables have dimensions {got}; "
                    f"the points on the workers have {list(side.dims)}"
                )
        if tuple(shape) != self.shape:
            raise ShapeError(f"the kernel is {shape[0]}x{shape[1]}, the points on the workers make {self.shape}")

    def pair_sum(self, spec: KernelSpec, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        """``Σ_i Σ_j F(x_i, U_i; y_j, V_j)`` for a vector formula F on the points placed here plus
        per-call vectors: U (n, c), F's last i-variable, and V (m, c'), its last j-variable.

        One reduction over all pairs (the weighted derivative sums of a Gaussian process's
        marginal likelihood); each worker sends back the sums of its blocks. ``spec``:
        :meth:`KernelSpec.build` with the placed points as the first i- and j-variables.
        """
        U = np.ascontiguousarray(U, dtype=spec.dtype)
        V = np.ascontiguousarray(V, dtype=spec.dtype)
        self._check_points(spec, self.shape)
        op = DistributedKernelOperator(self.client, spec, self.rows, self.cols)
        if self.cols.copies is None:
            finals = op._partitioned(tasks.chain_pair_sum, V, (), row_vectors=U)
            return np.sum([res for _, res in finals], axis=0)
        vec = _quiet_submit(self.client, tasks.identity, V, key=_key("vector"), pure=False)

        def args(b: int, w: str, where: dict) -> tuple:
            lo, hi = self.rows.rows_of(b)
            return self._copy(w, where), U[lo:hi], vec

        return np.sum(op._per_block("pairsum", tasks.block_pair_sum, args), axis=0)

    def astype(self, dtype: Any) -> DistributedKernelOperator:
        """The same operator computing in ``dtype`` on the workers (the blocks are cast in each task)."""
        op = DistributedKernelOperator(self.client, self.spec.with_dtype(dtype), self.rows, self.cols, self._affine)
        return op

    def shifted(self, alpha: float) -> DistributedKernelOperator:
        """``self + alpha · I`` (square operators only)."""
        return self._with(self._affine.plus(compute.finite_number(alpha, "the shift alpha")))

    def __mul__(self, x: Any) -> Any:
        if compute.is_number(x):
            return self._with(self._affine.times(compute.finite_number(x, "the scale factor")))
        return self.dot(x)

    def __rmul__(self, x: Any) -> Any:
        if compute.is_number(x):
            return self.__mul__(x)
        return super().__rmul__(x)

    def __neg__(self) -> DistributedKernelOperator:
        return self.__mul__(-1.0)

    # -- placement ---------------------------------------------------------------------------
    def held_rows(self) -> dict[str, dict[str, int]]:
        """worker -> {"rows": …, "columns": …}: how many distinct points of each side it holds now.

        The same block storage serves both sides of a kernel built on one set of points (x = y).
        """
        return held_rows(self.client, {"rows": self.rows, "columns": self.cols})

    def _where(self, futures: Sequence[Future]) -> dict[Any, list[str]]:
        return {k: list(v) for k, v in self.client.who_has(list(futures)).items()}

    def _holder(self, f: Future, where: dict[Any, list[str]], owner: str) -> str:
        """The worker a task on ``f`` runs on: its intended ``owner`` if that holds it (blocks have short-lived
        replicas, e.g. while the columns' copies are made), else one that does, else the owner."""
        held = where.get(f.key) or [owner]
        return owner if owner in held else held[0]

    def _gather(self, futures: Any) -> Any:
        """The futures' results; a loss Dask could not repair becomes a :class:`DistributedError`."""
        try:
            return self.client.gather(futures)
        except KilledWorker as err:
            raise DistributedError(
                f"a kernla task ({err.task}) was running on workers that died {err.allowed_failures + 1} times "
                "(Dask's distributed.scheduler.allowed-failures); its blocks could not be recomputed"
            ) from err
        except CancelledError as err:
            raise DistributedError(f"a distributed kernel computation was cancelled: {err}") from err

    # -- running tasks pinned to the workers that hold their blocks --------------------------------
    def _run(self, submit: Callable[[], tuple[list[Future], set[str]]]) -> list:
        """The results of the tasks ``submit()`` makes, each pinned to a worker (the pinned set returned).

        Tasks are pinned to the worker holding their row block (strict restrictions): Dask's work
        stealing would otherwise move a task, with the blocks it reads, to another worker, which
        would then hold more than its share (all N points, in the end). A task pinned to a worker
        that dies waits for ever, so the wait watches the workers: when one leaves, the tasks are
        cancelled and made again on the blocks as Dask recomputed them.
        """
        for _ in range(ATTEMPTS):
            futures, pinned = submit()
            try:
                got = self._gather_pinned(futures, pinned)
            finally:
                self.cols.pieces.clear()
            if got is not None:
                return got
        raise DistributedError(f"workers left during each of {ATTEMPTS} attempts at a distributed kernel computation")

    def _gather_pinned(self, futures: list[Future], pinned: set[str]) -> list | None:
        """The futures' results, or None (the futures cancelled) when one of the ``pinned`` workers left."""
        while True:
            try:
                wait(futures, timeout=PIN_CHECK_SECONDS)
            except TimeoutError:
                if pinned <= set(self.client.scheduler_info()["workers"]):
                    continue
                self.client.cancel(futures)
                return None
            return self._gather(futures)

    def _placed(self, side: Side) -> dict[Any, list[str]]:
        """Where the side's blocks (and the columns' copies) are, once they are all in memory."""
        futures = side.blocks + list((self.cols.copies or {}).values())
        wait(futures)  # blocks being recomputed after a loss: their new place first
        return self._where(futures)

    def _per_block(self, what: str, task: Callable, args: Callable[[int, str, dict], tuple]) -> list:
        """``task(spec, block_b, *args(b, worker, where))`` for each row block b, on its worker; in block order."""

        def submit() -> tuple[list[Future], set[str]]:
            where = self._placed(self.rows)
            futures, pinned = [], set()
            for b, block in enumerate(self.rows.blocks):
                w = self._holder(block, where, self.rows.owners[b])
                extra = args(b, w, where)
                futures.append(_quiet_submit(self.client, task, self.spec, block, *extra, key=_key(what), workers=[w]))
                pinned.add(w)
            return futures, pinned

        return self._run(submit)

    def _copy(self, w: str, where: dict) -> Future:
        assert self.cols.copies is not None
        return self.cols.copy_for(self.client, w, where)

    # -- K's products ----------------------------------------------------------------------------
    def _kv(self, V: np.ndarray) -> np.ndarray:
        """``K @ V`` (no scale or shift) for a host (m, w) array."""
        if self.cols.copies is None:
            finals = self._partitioned(tasks.chain_product, V, ())
            return np.concatenate([f for _, res in finals for f in res], axis=0)[self._order(finals)]
        vec = _quiet_submit(self.client, tasks.identity, V, key=_key("vector"), pure=False)
        # one task K(x_a, y) @ V per row block, on the worker holding the block and a copy of y
        parts = self._per_block("matvec", tasks.block_product, lambda b, w, where: (self._copy(w, where), vec))
        return np.concatenate(parts, axis=0)

    def _kTu(self, U: np.ndarray) -> np.ndarray:
        """``Kᵀ @ U`` for a host (n, w) array: partial products of the row blocks, summed."""
        if self.cols.copies is None:  # partitioned: the transposed operator's product streams the rows
            return self._transpose()._kv(U)

        def args(b: int, w: str, where: dict) -> tuple:
            lo, hi = self.rows.rows_of(b)
            return self._copy(w, where), np.ascontiguousarray(U[lo:hi]), True

        return np.sum(self._per_block("rmatvec", tasks.block_product, args), axis=0)

    def _order(self, finals: list[tuple[list[int], list]]) -> np.ndarray:
        """Row permutation from the per-worker concatenation of :meth:`_partitioned` back to row order."""
        pieces = [np.arange(*self.rows.rows_of(b)) for own, _ in finals for b in own]
        return np.argsort(np.concatenate(pieces), kind="stable")

    def _partitioned(
        self, step: Callable, V: np.ndarray | None, args: tuple, row_vectors: np.ndarray | None = None
    ) -> list[tuple[list[int], Any]]:
        """Each worker's row blocks reduced against every column block, one streamed piece at a time.

        ``step(spec, blocks, piece, *args, offset, acc)`` folds one piece (a column block and its slice
        of ``V``, made on the block's worker and freed by Dask once the step ran) into the worker's
        accumulators; the steps of a worker form a chain, so that it holds one foreign block at a
        time. With ``row_vectors`` (n, c), the worker's slices of them (a list, one per row block,
        sent to it once) come before ``args``. Returns ``(row block indices, result)`` per worker.
        """
        rows, cols = self.rows, self.cols
        groups: dict[str, list[int]] = {}

        def submit() -> tuple[list[Future], set[str]]:
            where = {**self._placed(rows), **self._placed(cols)}
            groups.clear()
            for b, block in enumerate(rows.blocks):
                groups.setdefault(self._holder(block, where, rows.owners[b]), []).append(b)
            holders = [self._holder(f, where, cols.owners[c]) for c, f in enumerate(cols.blocks)]
            chains: list[Any] = []
            for w, own in groups.items():
                # one graph per worker: only its last step is a future of the client, so Dask frees each
                # piece (and its copy on w), and each intermediate result, as soon as the next step ran
                acc = None
                blocks = [rows.blocks[b] for b in own]
                extra: tuple = ()
                if row_vectors is not None:
                    slices = [np.ascontiguousarray(row_vectors[slice(*rows.rows_of(b))]) for b in own]
                    with dask.annotate(workers=[w], allow_other_workers=False):
                        extra = (delayed(tasks.identity, pure=False)(slices, dask_key_name=_key("rowvec")),)
                # its own column blocks first (no transfer), then the others in column order
                for c in sorted(range(cols.n_blocks), key=lambda c: (holders[c] != w, c)):
                    lo, hi = cols.rows_of(c)
                    vec = None if V is None else np.ascontiguousarray(V[lo:hi])
                    name = _key("piece")
                    cols.pieces[name] = (lo, hi)
                    with dask.annotate(workers=[holders[c]], allow_other_workers=False):
                        piece = delayed(tasks.with_vector, pure=False)(cols.blocks[c], vec, dask_key_name=name)
                    with dask.annotate(workers=[w], allow_other_workers=False):
                        step_of = delayed(step, pure=False)
                        acc = step_of(self.spec, blocks, piece, *extra, *args, lo, acc, dask_key_name=_key("step"))
                with warnings.catch_warnings():  # the vectors travel in the graph on purpose (see _quiet_submit)
                    warnings.filterwarnings("ignore", message=".*[Ll]arge.*")
                    chains.append(self.client.compute(acc, optimize_graph=False))
            return chains, set(groups) | set(holders)

        results = self._run(submit)
        return [(own, res) for own, res in zip(groups.values(), results)]

    # -- the operator's products -----------------------------------------------------------------
    def product(self, V: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``(c·K + s·I) @ V`` (or with Kᵀ) for a host (n, w) array; the kernel part on the cluster."""
        V = np.ascontiguousarray(V, dtype=self.dtype)
        n_out = self.shape[1 if transpose else 0]
        if V.shape[1] == 0:
            return np.zeros((n_out, 0), dtype=self.dtype)
        KV = self._kTu(V) if transpose else self._kv(V)
        return self._affine.product(KV.astype(self.dtype, copy=False), V)

    def _columns_of(self, x: Any, transpose: bool, what: str) -> tuple[np.ndarray, bool, Any]:
        """(host (rows, w) array, was a vector, Dask chunks of the result or None) for a NumPy or Dask x."""
        rows = self.shape[0 if transpose else 1]
        chunks = None
        if isinstance(x, da.Array):
            chunks = x.chunks[0]
            x = self.client.compute(x).result()
        V, vector = compute.as_columns(np.asarray(x), rows, False, self.dtype, what, self.shape)
        return V, vector, chunks

    def _on_cluster(self, x: da.Array, transpose: bool, what: str) -> da.Array:
        """``(c·K + s·I) @ x`` (or with Kᵀ) for a Dask ``x``, with the columns broadcast: made on the workers.

        Neither ``x`` nor the result passes through the client: x is joined (K x) or cut into the row
        blocks' slices (Kᵀ x) by tasks, each row block's product is a task on its worker, and the
        result is a Dask array of those tasks' futures. Their restrictions are loose, so that Dask
        can recompute a lost piece on another worker when the result is computed.
        """
        rows = self.shape[0 if transpose else 1]
        if any(math.isnan(n) for n in x.shape):
            raise ShapeError(f"{what} has unknown chunk sizes (call its compute_chunk_sizes() first)")
        if x.ndim not in (1, 2) or x.shape[0] != rows:  # as_columns raises the operator's shape error
            compute.as_columns(
                np.broadcast_to(np.zeros((), self.dtype), x.shape), rows, False, self.dtype, what, self.shape
            )
        X = (x.reshape(rows, 1) if x.ndim == 1 else x).astype(self.dtype)
        width = X.shape[1]
        where = self._placed(self.rows)
        sizes = tuple(hi - lo for lo, hi in map(self.rows.rows_of, range(self.rows.n_blocks)))

        def submit(b: int, *args: Any) -> Future:
            w = self._holder(self.rows.blocks[b], where, self.rows.owners[b])
            return self.client.submit(
                tasks.block_product,
                self.spec,
                self.rows.blocks[b],
                self._copy(w, where),
                *args,
                key=_key("rmatvec" if transpose else "matvec"),
                workers=[w],
                allow_other_workers=True,
            )

        if transpose:  # partial products Kᵀ_a U_a of the row blocks, summed on a worker
            pieces = self.client.compute(list(X.rechunk((sizes, width)).to_delayed()[:, 0]))
            parts = [submit(b, piece, True) for b, piece in enumerate(pieces)]
            total = self.client.submit(sum, parts, key=_key("rmatvec-sum"))
            KX = da.from_delayed(delayed(total), shape=(self.shape[1], width), dtype=self.dtype)
        else:
            whole = self.client.compute(X)  # joined on a worker, not on the client
            parts = [submit(b, whole) for b in range(self.rows.n_blocks)]
            KX = da.concatenate(
                [da.from_delayed(delayed(f), shape=(n, width), dtype=self.dtype) for f, n in zip(parts, sizes)]
            )
        out = self._affine.product(KX, X) if width else da.zeros((KX.shape[0], 0), dtype=self.dtype)
        out = out.reshape(-1) if x.ndim == 1 else out
        if sum(x.chunks[0]) == out.shape[0]:  # square: the result in the same row chunks as x
            out = out.rechunk((x.chunks[0],) + out.chunks[1:])
        return out

    def _apply(self, x: Any, transpose: bool, what: str) -> Any:
        if isinstance(x, da.Array) and self.cols.copies is not None:
            return self._on_cluster(x, transpose, what)
        V, vector, chunks = self._columns_of(x, transpose, what)
        out = self.product(V, transpose)
        if vector:
            out = out.reshape(-1)
        if chunks is not None:  # a Dask array in, a Dask array out (in the same row chunks when square)
            n_out = out.shape[0]
            return da.from_array(out, chunks=(chunks if sum(chunks) == n_out else "auto",) + out.shape[1:])
        return out

    def _matvec(self, x):
        return self._apply(x.reshape(-1, 1), False, "the vector").reshape(-1)

    def _matmat(self, X):
        return self._apply(X, False, "the matrix")

    def _rmatvec(self, x):
        return self._apply(x.reshape(-1, 1), True, "the vector").reshape(-1)

    def _rmatmat(self, X):
        return self._apply(X, True, "the matrix")

    def matvec(self, x):
        return self._apply(x, False, "the vector") if isinstance(x, da.Array) else super().matvec(x)

    def matmat(self, X):
        return self._apply(X, False, "the matrix") if isinstance(X, da.Array) else super().matmat(X)

    def rmatvec(self, x):
        return self._apply(x, True, "the vector") if isinstance(x, da.Array) else super().rmatvec(x)

    def rmatmat(self, X):
        return self._apply(X, True, "the matrix") if isinstance(X, da.Array) else super().rmatmat(X)

    def dot(self, x):
        if compute.is_number(x):
            return self.__mul__(x)
        if isinstance(x, da.Array):
            return self._apply(x, False, "the vector" if x.ndim == 1 else "the matrix")
        return super().dot(x)

    # -- entries (for preconditioners) -------------------------------------------------------------
    def host_diagonal(self) -> np.ndarray:
        """``c · F(x_i, y_i) + s`` for each i (square operators), evaluated block by block on the workers."""
        if self.shape[0] != self.shape[1]:
            raise ShapeError(f"the diagonal is defined for square operators; this one is {self.shape}")
        rows, cols = self.rows, self.cols
        if cols.copies is None and cols.bounds != rows.bounds:
            raise ShapeError("the diagonal of a partitioned operator needs its rows and columns in the same blocks")

        def args(b: int, w: str, where: dict) -> tuple:
            lo, hi = rows.rows_of(b)
            if cols.copies is not None:
                return self._copy(w, where), lo, hi
            return cols.blocks[b], 0, hi - lo  # the same points' block: on the same worker

        d = np.concatenate(self._per_block("diagonal", tasks.block_diagonal, args))
        return self._affine.product(d.astype(self.dtype, copy=False), 1.0)

    def _column_points(self, index: np.ndarray) -> list:
        """The columns' points at ``index`` (host arrays, gathered from the blocks that hold them)."""
        cols = self.cols
        block_of = np.searchsorted(np.asarray(cols.bounds), index, side="right") - 1
        wanted = [(int(c), np.flatnonzero(block_of == c)) for c in np.unique(block_of)]

        def submit() -> tuple[list[Future], set[str]]:
            where = self._placed(cols)
            holders = [self._holder(cols.blocks[c], where, cols.owners[c]) for c, _ in wanted]
            futures = [
                self.client.submit(
                    tasks.take_rows, cols.blocks[c], index[sel] - cols.bounds[c], key=_key("take"), workers=[w]
                )
                for (c, sel), w in zip(wanted, holders)
            ]
            return futures, set(holders)

        got = self._run(submit)
        order = np.argsort(np.concatenate([sel for _, sel in wanted]), kind="stable")
        return [np.concatenate([g[k] for g in got])[order] for k in range(len(got[0]))]

    def columns(self, cols: Sequence[int], chunk: int = COLUMN_CHUNK) -> np.ndarray:
        """The columns ``c · K[:, cols]`` (no shift) as a host float64 array: each row block multiplies
        the selected points by an indicator block on its worker — taken from its copy of the columns
        (broadcast: one round trip, e.g. per pivot of a pivoted Cholesky factor), or gathered first."""
        index = np.asarray(cols, dtype=np.int64).reshape(-1)
        n, m = self.shape
        if index.size and (index.min() < 0 or index.max() >= m):
            raise InputValueError(f"column indices must lie in [0, {m}), got {index.min()}..{index.max()}")
        out = np.empty((n, index.size))
        for c0 in range(0, index.size, chunk):
            sel = index[c0 : c0 + chunk]
            if self.cols.copies is not None:
                parts = self._per_block("columns", tasks.block_columns, lambda b, w, where: (self._copy(w, where), sel))
            else:
                points = self._column_points(sel)
                eye = np.eye(sel.size, dtype=self.dtype)
                parts = self._per_block("columns", tasks.block_product, lambda b, w, where: (points, eye))
            out[:, c0 : c0 + sel.size] = np.concatenate(parts)
        return self._affine.entries(out)

    # -- solves and k-selections -----------------------------------------------------------------
    def solve(
        self,
        b: Any,
        alpha: float = 0.0,
        tol: float | None = None,
        maxiter: int | None = None,
        precond: Any = None,
        rank: int | None = None,
        x0: Any = None,
        callback: Callable[[int, np.ndarray], Any] | None = None,
        return_info: bool = False,
        verbose: bool = False,
    ):
        """Solve ``(self + alpha·I) a = b`` by kernla's (preconditioned) block CG, driven from the client.

        The options are those of :meth:`kernla.linalg.KernelOperator.solve` (``precond``: None,
        ``"jacobi"``, ``"nystrom"`` — its N×rank basis lives on the client —, ``"auto"`` or a
        callable). Each iteration sends the current directions to the workers and gets their
        products back: O(N·k) numbers, never the points. float32 operators solve with float64
        products (the workers cast their blocks). ``b`` may be NumPy or Dask (gathered: the CG
        vectors live on the client); a Dask ``b`` gives a Dask solution.
        """
        if self.shape[0] != self.shape[1]:
            raise ShapeError(f"solve needs a square operator; this one is {self.shape[0]}x{self.shape[1]}")
        alpha = compute.finite_number(alpha, "alpha")
        chunks = b.chunks[0] if isinstance(b, da.Array) else None
        if chunks is not None:
            b = self.client.compute(b).result()
        work = self.astype(np.float64) if self.dtype == np.float32 else self
        M = make_preconditioner(precond, work, alpha, rank=rank)
        out = _solve_plain(self, b, alpha, tol, maxiter, M, x0, callback, return_info, verbose, work=work)
        if chunks is None:
            return out
        x, info = out if return_info else (out, None)
        x = da.from_array(x, chunks=(chunks,) + x.shape[1:])
        return (x, info) if return_info else x

    def kmin(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` smallest values of ``F(x_i, y_j)`` in each row, sorted, and their column indices.

        Exactly the single-process ``KMin_ArgKMin`` reduction (ties keep the smaller index); the
        scale and shift are not applied. With F a squared distance this is the k-nearest-neighbour search.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.shape[1]:
            raise InputValueError(f"k must be an integer in [1, {self.shape[1]}], got {k!r}")
        k = int(k)
        if self.cols.copies is not None:
            got = self._per_block("kmin", tasks.block_kmin, lambda b, w, where: (self._copy(w, where), k))
        else:
            finals = self._partitioned(tasks.chain_kmin, None, (k,))
            order = self._order(finals)
            flat = [r for _, res in finals for r in res]
            got = [(np.concatenate([v for v, _ in flat])[order], np.concatenate([i for _, i in flat])[order])]
        return np.concatenate([v for v, _ in got]), np.concatenate([i for _, i in got])


def _bytes(arrays: Sequence[Any]) -> int:
    return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in arrays)


def _broadcast_limit(client: Client) -> int:
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    limits = [m for m in limits if m > 0]
    return int(BROADCAST_FRACTION * min(limits)) if limits else BROADCAST_DEFAULT


def distribute(
    op: LocalKernelOperator,
    client: Client,
    *,
    blocks: int | Sequence[int] | None = None,
    broadcast_bytes: int | None = None,
    device: str = "cpu",
) -> DistributedKernelOperator:
    """The operator ``op`` with its points placed on the workers of ``client``, once.

    ``blocks``: the number of row blocks, or their sizes (uneven allowed); default one per worker
    when the columns are broadcast, two per worker when partitioned (so that a worker's rows plus
    one streamed column block stay under all N). ``broadcast_bytes``: the columns' size up to
    which every worker keeps a copy of them (default a tenth of the smallest worker memory
    limit; 0 forces the partitioned path). ``device``: ``"cpu"``, or ``"cuda"`` to keep the blocks
    as CuPy arrays on each worker's GPU (one GPU per worker: dask-cuda's ``LocalCUDACluster``).
    Points given as Dask arrays (:func:`Vi` / :func:`Vj`) are computed where they are.
    """
    if not isinstance(op, LocalKernelOperator):
        raise InputValueError(f"distribute takes a kernla.KernelOperator, got {type(op).__name__}")
    if device not in ("cpu", "cuda"):
        raise InputValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if op.kernel.sparsity is not None:
        raise InputValueError(
            "distribute does not take block-sparse operators yet (ranges= or truncate=): their blocks would be "
            "ignored on the workers; distribute the dense operator or run the block-sparse one here"
        )
    if op.kernel.has_torch or op.on_gpu:
        raise InputValueError("distribute takes an operator on host NumPy (or Dask) data")
    kernel = op.kernel
    spec = KernelSpec.of(kernel)
    # each worker's engine is chosen there, for the arrays it holds (backend None: cuda for CuPy blocks)
    if device == "cuda" and resolve_backend(spec.backend, True) != "cuda":
        raise InputValueError(f"device='cuda' computes with the workers' cuda engine, not backend={spec.backend!r}")
    # a Dask array's stand-in carries the array (its data, the compute copy, is a zero-stride view)
    side_arrays = {
        cat: [
            s if getattr(s, "dask", None) is not None else d
            for s, d, c in zip(kernel.source, kernel.data, kernel.cats)
            if c == cat
        ]
        for cat in (CAT_I, CAT_J)
    }
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise DistributedError("the Dask cluster has no workers")
    limit = _broadcast_limit(client) if broadcast_bytes is None else int(broadcast_bytes)
    whole = _bytes(side_arrays[CAT_J]) <= limit
    n, m = kernel.shape
    rows_bounds = split_rows(n, blocks if blocks is not None else min(n, len(workers) * (1 if whole else 2)))
    rows = place(client, side_arrays[CAT_I], rows_bounds, workers, device)
    # the same points on both sides (K(x, x); for Dask, the same array behind two stand-ins): one storage
    ids_i, ids_j = ([id(getattr(a, "dask", a)) for a in side_arrays[c]] for c in (CAT_I, CAT_J))
    same = ids_i == ids_j
    if same:
        cols = rows
        if whole:
            rows.copies = {w: whole_copy(client, rows.blocks, device, w) for w in workers}
    else:
        cols_bounds = rows_bounds if m == n else split_rows(m, min(m, rows.n_blocks))
        cols = place(client, side_arrays[CAT_J], cols_bounds, workers, device, whole=whole)
    D = DistributedKernelOperator(client, spec, rows, cols, op.affine)
    for side in {id(rows): rows, id(cols): cols}.values():
        side.settle(client)
    return D
