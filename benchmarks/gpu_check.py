#!/usr/bin/env python3
"""kernla on a GPU: correctness of the cuda engine against the NumPy engine, then timings.

Run from the repository root on a machine with an NVIDIA GPU, CuPy and (for the baselines) torch::

    PYTHONPATH=. python3 benchmarks/gpu_check.py            # about 3-4 minutes on an H100/H200
    PYTHONPATH=. python3 benchmarks/gpu_check.py --quick    # correctness subset, 1e5 timings only
    PYTHONPATH=. python3 benchmarks/gpu_check.py --out gpu_check.md   # also write the tables
    PYTHONPATH=. python3 benchmarks/gpu_check.py --tiles    # only the tile-path checks and their table
    PYTHONPATH=. python3 benchmarks/gpu_check.py --dry-run  # no GPU: NumPy stands in, tiny sizes

Part 1 prints one ``PASS``/``FAIL`` line per check: every reduction × float16/float32/float64 on
fresh random inputs of odd sizes (N=1, M=1, partial tiles and blocks, N << M which takes the
split-j scheme), vector formulas, the kernel product with 1/3/9 columns, kNN D=50, axis=0, the
Genred path with torch / CuPy / NumPy arrays and a side torch stream, and 64-bit indexing (a
planted minimum past index 2^31, an i-variable with more than 2^31 elements). Values are compared
with tolerances per dtype; an index passes when the formula's float64 value at that index equals
the reference optimum (ties and near-ties may legitimately pick another index).

Part 2 prints a table (median of several runs, synchronised): kernla vs a dense chunked torch
baseline vs torch.cdist + topk, in billions of pairs per second, for the Gaussian matvec D=3 at
N=M=1e5 and 1e6 in float16/32/64. Then one table for the tile paths (kernla.engines.cuda.tiles):
kNN K=10 at 1e5 queries × 1e6 points, D=50 and D=784, and a Gaussian at D=128 (one column, and
200 columns), kernla with the tile paths, with the exact path (``tiles.MIN_DIM = 0``) and with TF32
Gram tiles, against torch.cdist + topk and chunked dense torch: medians and peer / kernla ratios (the
exact path at D=784 is measured on a tenth of the queries and extrapolated, marked "est.").
Baselines that would take too long are skipped with an estimate. Every check and timing catches its
own exception and reports it; the exit status is 1 when anything failed.

``--dry-run`` runs the same code paths on the CPU where CuPy or a GPU is absent: NumPy stands in for
CuPy, the NumPy engine for the cuda engine (float16 data computed in float32, as on the GPU), torch
on the CPU for the peers, at tiny sizes; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import statistics
import sys
import time
import traceback
import types

import numpy as np

START = time.perf_counter()
BUDGET_S = 285.0  # stop starting new work after this (the whole script must stay under 5 minutes)
TILE_BUDGET_S = 420.0  # with --tiles, the tile table's rows stop here (otherwise at BUDGET_S)
CHECK_BUDGET_S = 180.0  # correctness checks stop here, leaving time for the timings
RESULTS: list[tuple[str, bool, str]] = []
TABLE: list[tuple[str, ...]] = []


def elapsed() -> float:
    return time.perf_counter() - START


def report(name: str, ok: bool, detail: str = "") -> None:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""), flush=True)


def check(name: str, fn) -> None:
    """Run one check; any exception is a FAIL with its message (the script goes on)."""
    if elapsed() > CHECK_BUDGET_S:
        print(f"SKIP  {name}  (time budget)", flush=True)
        return
    try:
        detail = fn()
        report(name, True, detail or "")
    except AssertionError as err:
        report(name, False, str(err).strip().replace("\n", " | ")[:600])
    except Exception as err:  # a crash in one check must not stop the others
        tb = traceback.format_exc(limit=3).strip().splitlines()
        report(name, False, f"{type(err).__name__}: {err} [{' / '.join(tb[-3:])}]"[:800])


# ---------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------
def setup():
    import cupy

    import kernla
    from kernla.engines import get_engine

    engine = get_engine("cuda")
    try:
        import torch
    except Exception as err:  # torch is only needed for baselines and the torch checks
        print(f"torch unavailable ({err}); torch checks and baselines are skipped")
        torch = None
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(
        f"GPU: {name} (compute capability {dev.compute_capability}, "
        f"{dev.attributes['MultiProcessorCount']} SMs, {props['totalGlobalMem'] / 2**30:.0f} GiB)"
    )
    print(
        f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
        f"driver {cupy.cuda.runtime.driverGetVersion()}, torch {getattr(torch, '__version__', '-')}, "
        f"NumPy {np.__version__}, kernla {kernla.__version__}"
    )
    return cupy, torch, kernla, engine, name


def sync(cupy, torch=None):
    cupy.cuda.Device().synchronize()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# part 1: correctness
# ---------------------------------------------------------------------------------------------
SCALAR = ("Exp(-G * SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(2)"])
VECTOR = ("(X - Y) * Exp(-SqDist(X, Y) / S)", ["X = Vi(3)", "Y = Vj(3)", "S = Pm(1)"])
GAUSS = ("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"])
KNN = ("SqDist(X, Y)", ["X = Vi(50)", "Y = Vj(50)"])
OPS = [
    "Sum",
    "Min",
    "Max",
    "ArgMin",
    "ArgMax",
    "Min_ArgMin",
    "Max_ArgMax",
    "KMin",
    "ArgKMin",
    "KMin_ArgKMin",
    "LogSumExp",
    "LogSumExpWeight",
    "SumSoftMaxWeight",
]
#: the reductions that also give the values at the indices (for checking indices)
WITH_VALUES = {"ArgMin": "Min_ArgMin", "ArgMax": "Max_ArgMax", "ArgKMin": "KMin_ArgKMin"}
DTYPES = ["float16", "float32", "float64"]
#: (N, M) of the per-reduction checks; the --quick subset; other check and timing sizes
CHECK_SIZES = [(1, 1), (1, 1000), (999, 1), (333, 777), (3, 100003), (2500, 601)]
QUICK_SIZES = [(1, 1), (333, 777), (3, 100003)]
VECTOR_SIZES = [(333, 777), (3, 100003)]
PRODUCT_SIZES = [(777, 1001), (2, 70001)]
KNN_CHECK_SIZES = [(1000, 20000), (7, 60001)]
GAUSS_TIMING_N = [10**5, 10**6]
KNN_TIMING = (10**5, 10**6)
QUICK_KNN_TIMING = (10**4, 10**5)
#: the tile-path table (kNN rows: KNN_TIMING, Gaussian rows: N=M=GAUSS_TIMING_N[0]): B's columns of the wide one
TILE_WIDE = 200
#: the tile checks: D just below and above the Gram-tile threshold and far above it; B widths of the k x B tiles
TILE_DIMS = (31, 33, 130)
TILE_WIDTHS = (16, 40, 200)
TILE_SIZES = [(1, 1), (333, 777), (3, 20001)]
RTOL = {"float16": 3e-3, "float32": 2e-4, "float64": 1e-9}
#: tolerance on the float64 value of the formula at a returned index (the GPU computes in float)
ITOL = {"float16": 1e-4, "float32": 1e-4, "float64": 1e-9}


def reduction(formula, aliases, op, opt=None, formula2=None):
    from kernla.formula import parse, parse_aliases
    from kernla.reductions import Reduction

    al = parse_aliases(aliases)
    return Reduction(op, parse(formula, al), parse(formula2, al) if formula2 else None, opt)


def inputs(red, nx, ny, rng, width=None, positive_j=()):
    """Random inputs exactly representable in float16 (so one float64 reference serves all dtypes)."""
    from kernla.formula import CAT_I, CAT_J

    arrays = {}
    for f in red.formulas:
        for v in f.variables():
            pos, dim, cat = v.params
            shape = (nx, dim) if cat == CAT_I else (ny, dim) if cat == CAT_J else (dim,)
            if cat == CAT_J and width is not None and pos in width:
                shape = (ny, width[pos])
            a = rng.normal(size=shape)
            if cat not in (CAT_I, CAT_J):
                a = 0.5 + np.abs(a)  # positive parameters (scales)
            if pos in positive_j:
                a = 0.1 + np.abs(a)
            arrays[pos] = a.astype(np.float16).astype(np.float64)
    return [arrays.get(p, np.zeros((1,))) for p in range(max(arrays) + 1)]


def values_at(red_formula, arrays, idx, K, D):
    """float64 value of component d of the formula at (i, idx[i, k*D + d]): shape (nx, K, D)."""
    from kernla.formula import CAT_I, CAT_J
    from kernla.formula.evaluate import evaluate

    nx = idx.shape[0]
    idx = idx.reshape(nx, K, D)
    out = np.empty((nx, K, D))
    for d in range(D):
        j = np.clip(idx[:, :, d], 0, None)
        vals = {}
        for v in red_formula.variables():
            pos, dim, cat = v.params
            a = arrays[pos]
            vals[pos] = a[:, None, :] if cat == CAT_I else a[j] if cat == CAT_J else a[None, None, :]
        out[:, :, d] = np.broadcast_to(evaluate(red_formula, vals, np.float64), (nx, K, D))[:, :, d]
    return out


def compare(red, got, ref_red, ref, arrays, dtype, ny):
    """Assert that GPU outputs ``got`` match the reference (``ref`` from ``ref_red``)."""
    rtol = RTOL[dtype]
    name = red.name
    D = red.formula.dim
    K = red.K or 1
    ref_by_kind = {}
    for (_w, kind), r in zip(ref_red.output_dims(), ref):
        ref_by_kind[kind] = r
    msgs = []
    for (w, kind), g in zip(red.output_dims(), got):
        assert g.shape == (ref[0].shape[0], w), f"shape {g.shape}, expected {(ref[0].shape[0], w)}"
        if kind == "index":
            assert g.dtype == np.int64, f"index dtype {g.dtype}"
            assert ((g >= 0) & (g < ny)).all(), f"indices out of [0, {ny}): {g.min()}..{g.max()}"
            best = ref_by_kind["float"].reshape(g.shape[0], K, D)
            at = values_at(red.formula, arrays, g, K, D)
            err = np.abs(at - best) / (1 + np.abs(best))
            bad = ~(err <= ITOL[dtype])
            assert not bad.any(), (
                f"{bad.sum()} of {bad.size} indices are not optimal: value at index "
                f"{at[bad][:3]} vs optimum {best[bad][:3]}"
            )
            msgs.append("indices optimal")
        else:
            r = ref_by_kind["float"]
            g = g.astype(np.float64)
            if name in ("LogSumExp", "LogSumExpWeight"):
                atol = rtol * (1 + np.abs(r))
            elif name == "SumSoftMaxWeight":
                atol = rtol * np.abs(arrays[-1]).max()
            else:
                atol = rtol * max(1.0, float(np.nanmax(np.abs(np.where(np.isfinite(r), r, 0)), initial=0)))
            diff = np.abs(g - r)
            bad = ~((diff <= atol + rtol * np.abs(r)) | (np.isnan(g) & np.isnan(r)) | (g == r))
            assert not bad.any(), (
                f"{bad.sum()} of {bad.size} values differ; worst |diff| "
                f"{np.nanmax(np.where(bad, diff, 0)):.3g}: got {g[bad][:3]} want {r[bad][:3]}"
            )
            finite = np.isfinite(diff)
            used = float(np.max(diff[finite] / (atol + rtol * np.abs(r))[finite], initial=0))
            msgs.append(f"max |err| {float(np.max(diff[finite], initial=0)):.1e} = {used:.0%} of tolerance")
    return ", ".join(msgs)


def product_checks(cupy, engine, dim, width, nx, ny, rng, label):
    """The Gaussian kernel product at dimension ``dim`` with B of ``width`` columns, every dtype, against float64.

    B's declared width: the same CUDA source for every width (it is a run-time argument); at dim > 3 the scale
    is 2^-log2(dim) (representable in float16), so that k is of order 1 whatever dim."""
    aliases = [a.replace("(3)", f"({dim})").replace("Vj(1)", f"Vj({width})") for a in GAUSS[1]]
    prod = reduction(GAUSS[0], aliases, "Sum")
    arrays = inputs(prod, nx, ny, rng)
    if dim > 3:
        arrays[3] = np.array([2.0 ** -int(np.log2(dim))])
    k = np.exp(-arrays[3][0] * ((arrays[0][:, None, :] - arrays[1][None, :, :]) ** 2).sum(-1))
    want, scale = k @ arrays[2], np.abs(k) @ np.abs(arrays[2])
    for dt in DTYPES:

        def run_product(dt=dt):
            got = gpu_run(cupy, engine, prod, arrays, nx, ny, dt)[0].astype(np.float64)
            assert got.shape == want.shape, got.shape
            err = np.abs(got - want) / (scale + 1e-30)
            assert err.max() <= RTOL[dt] * 5, f"max error {err.max():.2e} (relative to sum |k b|)"
            return f"max err {err.max():.1e} of sum |k b|"

        check(f"{label} width={width} {dt:<7} N={nx:<4} M={ny}", run_product)


def dtype_checks(label, cupy, engine, red, ref_red, arrays, nx, ny):
    """``red`` on the GPU in every dtype against the NumPy engine's ``ref_red`` on the float64 ``arrays``."""
    from kernla.engines import numpy_engine  # deferred: kernla is imported after the set-up

    ref = numpy_engine.run(ref_red, arrays, nx, ny)
    for dt in DTYPES:
        check(
            f"{label} {dt:<7} N={nx:<5} M={ny}",
            lambda: compare(red, gpu_run(cupy, engine, red, arrays, nx, ny, dt), ref_red, ref, arrays, dt, ny),
        )


def tile_checks(cupy, engine, quick):
    """The tile paths against float64: every kind of reduction at D just below / above the Gram-tile threshold
    and far above it, then k tile x B tile products (widths from the threshold up)."""

    rng = np.random.default_rng(33)
    for d in TILE_DIMS:
        aliases = [a.replace("(3)", f"({d})") for a in SCALAR[1]]
        for op in ("Sum", "Min_ArgMin", "ArgKMin", "LogSumExp", "SumSoftMaxWeight"):
            opt, f2 = (5 if "K" in op else None), ("B" if op.endswith("Weight") else None)
            red = reduction(SCALAR[0], aliases, op, opt, f2)
            ref_red = reduction(SCALAR[0], aliases, WITH_VALUES.get(op, op), opt, f2)
            for nx, ny in TILE_SIZES[1:] if quick else TILE_SIZES:
                if (red.K is not None and red.K > ny) or elapsed() > CHECK_BUDGET_S:
                    continue
                arrays = inputs(red, nx, ny, rng)
                arrays[2] = np.array([2.0 ** -int(np.log2(d))])  # distances of order 1
                dtype_checks(f"tiles D={d} {op:<16}", cupy, engine, red, ref_red, arrays, nx, ny)
    for width in TILE_WIDTHS:
        for nx, ny in TILE_SIZES[1:]:
            product_checks(cupy, engine, 33, width, nx, ny, rng, "tiles product D=33")


def gpu_run(cupy, engine, red, arrays, nx, ny, dtype):
    dev = [cupy.asarray(a.astype(dtype)) for a in arrays]
    out = engine.run(red, dev, nx, ny)
    return [cupy.asnumpy(o) for o in out]


def section(title: str, fn, *args) -> None:
    """Run one group of checks; an exception outside a check (e.g. in a reference) is one FAIL."""
    if elapsed() > CHECK_BUDGET_S:
        print(f"-- {title}: SKIPPED (time budget)", flush=True)
        return
    print(f"-- {title}", flush=True)
    try:
        fn(*args)
    except Exception as err:
        report(f"section '{title}'", False, f"{type(err).__name__}: {err}"[:500])
        traceback.print_exc()


def correctness(cupy, torch, kernla, engine, quick: bool, device_checks: bool = True):
    """Part 1; ``device_checks``: also the public-API and 64-bit checks (they need CuPy and GPU memory)."""
    from kernla.engines import numpy_engine

    rng = np.random.default_rng(2024)
    sizes = QUICK_SIZES if quick else CHECK_SIZES
    plans = []
    for op in OPS:
        opt = 5 if "K" in op and "Max" not in op else None
        f2 = "B" if op.endswith("Weight") else None
        plans.append((op, reduction(*SCALAR, op, opt, f2)))
    vec = [
        (op, reduction(*VECTOR, op, 2 if "K" in op else None))
        for op in ("Sum", "ArgMin", "KMin_ArgKMin", "LogSumExp", "Max_ArgMax")
    ]
    gauss = reduction(*GAUSS, "Sum")
    knn = reduction(*KNN, "ArgKMin", 10)

    def compile_all():  # in parallel threads: NVRTC runs outside the GIL
        todo = (
            [(r, dt) for _, r in plans + vec for dt in DTYPES]
            + [(gauss, dt) for dt in DTYPES]
            + [(knn, dt) for dt in DTYPES]
        )
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(8) as pool:
            futures = {pool.submit(engine.prepare, r, dt): (r.name, dt) for r, dt in todo}
            errors = [f"{futures[f]}: {f.exception()}" for f in cf.as_completed(futures) if f.exception()]
        report(
            f"compile {len(todo)} modules with NVRTC",
            not errors,
            f"{time.perf_counter() - t0:.1f} s" + (f"; {errors[:3]}" if errors else ""),
        )

    def scalar():
        for op, red in plans:
            ref_red = reduction(*SCALAR, WITH_VALUES[op], red.K) if op in WITH_VALUES else red
            for nx, ny in sizes:
                if (red.K is not None and red.K > ny) or elapsed() > CHECK_BUDGET_S:
                    continue
                arrays = inputs(red, nx, ny, rng, positive_j=(3,) if op == "LogSumExpWeight" else ())
                try:
                    ref = numpy_engine.run(ref_red, arrays, nx, ny)
                except Exception as err:
                    report(f"reference {op} N={nx} M={ny}", False, repr(err))
                    continue
                for dt in DTYPES:
                    check(
                        f"{op:<17} {dt:<7} N={nx:<5} M={ny}",
                        lambda: compare(
                            red, gpu_run(cupy, engine, red, arrays, nx, ny, dt), ref_red, ref, arrays, dt, ny
                        ),
                    )

    def vector():
        for op, red in vec:
            ref_red = reduction(*VECTOR, WITH_VALUES.get(op, op), red.K)
            for nx, ny in VECTOR_SIZES[:1] if quick else VECTOR_SIZES:
                if elapsed() > CHECK_BUDGET_S:
                    return
                dtype_checks(f"vector {op:<13}", cupy, engine, red, ref_red, inputs(red, nx, ny, rng), nx, ny)

    def product():
        for width in (1, 3, 9):
            for nx, ny in PRODUCT_SIZES:
                product_checks(cupy, engine, 3, width, nx, ny, rng, "product")

    def knn_check():
        ref_red = reduction(*KNN, "KMin_ArgKMin", 10)
        for nx, ny in KNN_CHECK_SIZES:
            if elapsed() > CHECK_BUDGET_S:
                return
            arrays = inputs(knn, nx, ny, rng)
            ref = numpy_engine.run(ref_red, arrays, nx, ny)
            for dt in DTYPES:
                check(
                    f"knn D=50 K=10 {dt:<7} N={nx:<4} M={ny}",
                    lambda: compare(knn, gpu_run(cupy, engine, knn, arrays, nx, ny, dt), ref_red, ref, arrays, dt, ny),
                )

    section("compile", compile_all)
    section("every reduction, scalar formula exp(-g|x-y|^2), all dtypes and sizes", scalar)
    section("vector formula (x-y) exp(-|x-y|^2/s), dimension 3", vector)
    section("kernel product sum_j k(x_i, y_j) B_j, B of run-time width", product)
    section("kNN ArgKMin K=10, D=50", knn_check)
    section(
        "tile paths: Gram tiles at D = 31, 33, 130; k x B tiles of 16, 40, 200 columns",
        tile_checks,
        cupy,
        engine,
        quick,
    )
    if device_checks:
        section("public API: Genred with torch / CuPy / NumPy arrays", api_checks, cupy, torch, kernla, rng)
        section("64-bit indexing", int64_checks, cupy, engine, quick)


def api_checks(cupy, torch, kernla, rng):
    """The public path: Genred / LazyTensor with torch, CuPy and NumPy arrays, axis=0, streams."""
    x = rng.normal(size=(1234, 3)).astype(np.float32)
    y = rng.normal(size=(2345, 3)).astype(np.float32)
    b = rng.normal(size=(2345, 4)).astype(np.float32)
    g = np.array([0.7], np.float32)
    f = kernla.Genred(*GAUSS[:1], ["X = Vi(3)", "Y = Vj(3)", "B = Vj(4)", "G = Pm(1)"], reduction_op="Sum", axis=1)
    want = np.exp(-0.7 * ((x[:, None, :].astype(np.float64) - y[None]) ** 2).sum(-1)) @ b

    def close(got, tol=1e-4):
        err = np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max()
        assert err < tol, f"max error {err:.2e}"
        return f"max err {err:.1e}"

    def with_cupy():
        out = f(cupy.asarray(x), cupy.asarray(y), cupy.asarray(b), cupy.asarray(g))
        assert isinstance(out, cupy.ndarray), type(out)
        return close(cupy.asnumpy(out))

    def with_numpy():
        out = f(x, y, b, g, backend="cuda")
        assert isinstance(out, np.ndarray), type(out)
        return close(out)

    check("Genred CuPy arrays in, CuPy out", with_cupy)
    check("Genred NumPy arrays with backend='cuda'", with_numpy)
    fi = kernla.Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="ArgMin", axis=0)

    def axis0():
        out = fi(cupy.asarray(x), cupy.asarray(y))
        d = ((x[:, None, :].astype(np.float64) - y[None]) ** 2).sum(-1)
        got = cupy.asnumpy(out).ravel()
        assert got.shape == (2345,), got.shape
        assert np.allclose(d[got, np.arange(2345)], d.min(0), rtol=1e-5), "not the nearest x for each y"
        return "argmin over i ok"

    check("Genred axis=0 (reduction over i)", axis0)
    if torch is None or not torch.cuda.is_available():
        return
    dev = torch.device("cuda")

    def with_torch():
        out = f(*(torch.from_numpy(a).to(dev) for a in (x, y, b, g)))
        assert isinstance(out, torch.Tensor) and out.device.type == "cuda", (type(out), getattr(out, "device", None))
        return close(out.cpu().numpy())

    def with_torch_half():
        out = f(*(torch.from_numpy(a).to(dev).half() for a in (x, y, b, g)))
        assert out.dtype == torch.float16, out.dtype
        ref16 = np.exp(
            -np.float64(np.float16(0.7))
            * (
                (x.astype(np.float16).astype(np.float64)[:, None] - y.astype(np.float16).astype(np.float64)[None]) ** 2
            ).sum(-1)
        ) @ b.astype(np.float16)
        err = np.abs(out.float().cpu().numpy() - ref16).max() / np.abs(ref16).max()
        assert err < 3e-3, f"max error {err:.2e}"
        return f"max err {err:.1e}"

    def side_stream():
        s = torch.cuda.Stream()
        xt, yt, bt, gt = (torch.from_numpy(a).to(dev) for a in (x, y, b, g))
        torch.cuda.synchronize()
        with torch.cuda.stream(s):
            bt2 = bt * 2  # produced on the side stream just before the call
            out = f(xt, yt, bt2, gt)
            out = out / 2
        s.synchronize()
        return close(out.cpu().numpy())

    def lazy_tensor():
        from kernla import LazyTensor

        xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
        d = ((LazyTensor(xt[:, None, :]) - LazyTensor(yt[None, :, :])) ** 2).sum(dim=2)
        idx = d.argKmin(3, dim=1)
        ref = np.argsort(((x[:, None, :].astype(np.float64) - y[None]) ** 2).sum(-1), axis=1)[:, :3]
        agree = (idx.cpu().numpy() == ref).mean()
        assert agree > 0.999, f"only {agree:.4f} of the indices agree"
        return f"{agree:.4f} of indices agree with NumPy"

    check("Genred torch CUDA tensors in, torch out (DLPack)", with_torch)
    check("Genred torch float16 tensors", with_torch_half)
    check("Genred on a side torch stream", side_stream)
    check("LazyTensor argKmin on torch CUDA tensors", lazy_tensor)


def int64_checks(cupy, engine, quick):
    """64-bit indexing: more than 2^31 columns, and an i-variable of more than 2^31 elements."""
    free = cupy.cuda.runtime.memGetInfo()[0]

    def past_2_31():
        m = 2**31 + 1001
        assert free > 6 * 2**30, "not enough free GPU memory (needs 6 GiB)"
        red = reduction("SqDist(X, Y)", ["X = Vi(1)", "Y = Vj(1)"], "Min_ArgMin")
        y = cupy.ones((m, 1), cupy.float16)
        y[m - 7] = 0.25
        y[5] = 0.5
        x = cupy.zeros((2, 1), cupy.float16)
        vals, idx = engine.run(red, [x, y], 2, m)
        got = cupy.asnumpy(idx).ravel()
        del y
        assert (got == m - 7).all(), f"argmin {got}, expected {m - 7}"
        return f"argmin = {m - 7} > 2^31"

    def big_i():
        n = 2**25 + 3
        assert free > 6 * 2**30, "not enough free GPU memory (needs 6 GiB)"
        red = reduction("Scalprod(X, Y)", ["X = Vi(64)", "Y = Vj(64)"], "Sum")
        x = cupy.random.standard_normal((n, 64), dtype=cupy.float32).astype(cupy.float16)
        y = cupy.random.standard_normal((2, 64), dtype=cupy.float32).astype(cupy.float16)
        out = engine.run(red, [x, y], n, 2)[0]
        rows = np.array([0, 1, n // 2, n - 2, n - 1])
        xs = cupy.asnumpy(x[rows]).astype(np.float64)
        want = xs @ cupy.asnumpy(y).astype(np.float64).sum(0)
        got = cupy.asnumpy(out[rows]).astype(np.float64).ravel()
        del x
        assert np.allclose(got, want, rtol=3e-3, atol=3e-2), f"rows {rows}: {got} vs {want}"
        return f"{n} x 64 = {n * 64} > 2^31 elements"

    if quick:
        return
    check("argmin over 2^31 + 1001 columns (float16)", past_2_31)
    check("i-variable of 2^31 + 192 elements (float16)", big_i)


# ---------------------------------------------------------------------------------------------
# part 2: timings
# ---------------------------------------------------------------------------------------------
def timeit(fn, sync_fn, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    sync_fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync_fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(*cells):
    TABLE.append(tuple(str(c) for c in cells))
    print("  ".join(f"{c:<42}" if k == 0 else f"{c:>14}" for k, c in enumerate(cells)), flush=True)


def timed(label, n_pairs, fn, sync_fn, repeat, est_from=None):
    """A table row: seconds and billion pairs/s, or the failure / skip reason."""
    if elapsed() > BUDGET_S:
        row(label, "skipped", "(time budget)")
        return None
    try:
        t = timeit(fn, sync_fn, repeat)
        row(label, f"{t:.4f} s", f"{n_pairs / t / 1e9:,.1f}")
        return t
    except Exception as err:
        report(f"timing {label}", False, f"{type(err).__name__}: {err}"[:300])
        row(label, "FAILED", type(err).__name__)
        return None


def timings(cupy, torch, kernla, engine, quick, peers_on_cpu: bool = False):
    print("\n== timings (median, synchronised); rate in billion pairs / second", flush=True)
    row("what", "time", "Gpairs/s")
    gauss = reduction(*GAUSS, "Sum")
    sizes = GAUSS_TIMING_N[:1] if quick else GAUSS_TIMING_N
    have_torch = torch is not None and (peers_on_cpu or torch.cuda.is_available())
    dense_rate = {}
    for n in sizes:
        for dt in DTYPES:
            rng = cupy.random.default_rng(0)
            x = (rng.standard_normal((n, 3), dtype=cupy.float32) * 3).astype(dt)
            y = (rng.standard_normal((n, 3), dtype=cupy.float32) * 3).astype(dt)
            b = rng.standard_normal((n, 1), dtype=cupy.float32).astype(dt)
            g = cupy.asarray([0.5], dt)
            repeat = 5 if n <= GAUSS_TIMING_N[0] else (3 if dt != "float64" else 2)
            timed(
                f"gauss D=3 N=M={n:.0e} {dt} kernla",
                n * n,
                lambda: engine.run(gauss, [x, y, b, g], n, n),
                lambda: sync(cupy),
                repeat,
            )
            if dt == "float32":
                f = kernla.Genred(*GAUSS, reduction_op="Sum", axis=1)
                if have_torch:
                    xt, yt, bt, gt = (torch.from_dlpack(a) for a in (x, y, b, g))
                    timed(
                        "  same, Genred on torch", n * n, lambda: f(xt, yt, bt, gt), lambda: sync(cupy, torch), repeat
                    )
            if not have_torch:
                continue
            if n <= GAUSS_TIMING_N[0]:
                xt, yt, bt, gt = (torch.from_dlpack(a) for a in (x, y, b, g))
                t = timed(
                    f"  dense chunked torch {dt}",
                    n * n,
                    lambda: dense_torch(torch, xt, yt, bt, gt),
                    lambda: sync(cupy, torch),
                    3,
                )
                if t:
                    dense_rate[dt] = n * n / t
            else:
                est = n * n / dense_rate[dt] if dt in dense_rate else float("nan")
                row(f"  dense chunked torch {dt}", "skipped", f"(est. {est:.0f} s)")
    tile_timings(cupy, torch if have_torch else None, engine, quick, have_torch)


def dense_torch(torch, x, y, b, g):
    """The dense baseline: exp(-g |x_i - y_j|^2) @ b by blocks of rows (each block an N_b × M matrix)."""
    n, m = x.shape[0], y.shape[0]
    rows = max(1, (1 << 28) // m)
    y2 = (y * y).sum(1)
    out = torch.empty((n, b.shape[1]), dtype=x.dtype, device=x.device)
    for i0 in range(0, n, rows):
        xc = x[i0 : i0 + rows]
        d2 = (xc * xc).sum(1)[:, None] + y2[None, :] - 2 * xc @ y.T
        out[i0 : i0 + rows] = torch.exp(-g * d2) @ b
    return out


#: the tile-path table: (what, kernla tiles, kernla exact, peer name, peer, peer / kernla)
TILE_TABLE: list[tuple[str, ...]] = []


def trow(*cells) -> None:
    TILE_TABLE.append(tuple(str(c) for c in cells))
    print("  ".join(f"{c:<40}" if k == 0 else f"{c:>14}" for k, c in enumerate(cells)), flush=True)


def measure(fn, sync_fn, scale: float = 1.0, repeat: int = 3) -> tuple[float | None, str]:
    """(median seconds, cell text) of ``fn`` (its first call warms up: compiles), times ``scale`` when ``fn``
    runs a fraction of the work (the cell says "est."); (None, reason) past the budget or on an error."""
    if elapsed() > TILE_BUDGET_S:
        return None, "skipped"
    try:
        t = timeit(fn, sync_fn, repeat) * scale
    except Exception as err:
        report("timing", False, f"{type(err).__name__}: {err}"[:300])
        return None, f"FAILED {type(err).__name__}"
    return t, f"{t:.3f} s" + (" est." if scale != 1 else "")


@contextlib.contextmanager
def tile_settings(**values):
    """A context in which ``kernla.engines.cuda.tiles`` has these settings (the engine reads them per call):
    ``MIN_DIM=0, PRODUCT_TILE_MIN=1 << 62`` the exact kernels, ``TF32=True`` the TF32 Gram tiles."""
    from kernla.engines.cuda import tiles  # deferred: kernla is imported after the set-up

    saved = {name: getattr(tiles, name) for name in values}
    for name, value in values.items():
        setattr(tiles, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(tiles, name, value)


def tile_row(label, kernla_fn, peer_name, peer_fn, sync_fn, scale_exact=1.0, scale_peer=1.0, repeat=3):
    """One row: kernla with the tile paths, with the exact path and with TF32 Gram tiles, and the peer; the
    ratio peer / kernla (the default: the tile paths in float32)."""
    t, cell = measure(kernla_fn(1.0), sync_fn, repeat=repeat)
    with tile_settings(MIN_DIM=0, PRODUCT_TILE_MIN=1 << 62):
        _, exact = measure(kernla_fn(1 / scale_exact), sync_fn, scale_exact, repeat=repeat)
    with tile_settings(TF32=True):
        _, tf32 = measure(kernla_fn(1.0), sync_fn, repeat=repeat)
    tp, peer = measure(peer_fn(1 / scale_peer), sync_fn, scale_peer, repeat=repeat) if peer_fn else (None, "-")
    trow(label, cell, exact, tf32, peer_name, peer, f"{tp / t:.2f}" if t and tp else "-")


def tile_timings(cupy, torch, engine, quick, have_torch):
    """The tile-path table: kNN at D=50 and D=784, a Gaussian at D=128 (1 and TILE_WIDE columns)."""
    q_full, p = QUICK_KNN_TIMING if quick else KNN_TIMING
    print(f"\n== tile paths (median, synchronised; peer / kernla > 1: kernla faster); kNN K=10, {p:.0e} points")
    trow("what", "kernla", "kernla exact", "kernla TF32", "peer", "peer time", "peer / kernla")
    rng = cupy.random.default_rng(1)
    sync_fn = lambda: sync(cupy, torch if have_torch else None)  # noqa: E731
    for d in (50, 784):
        knn = reduction("SqDist(X, Y)", [f"X = Vi({d})", f"Y = Vj({d})"], "ArgKMin", 10)
        pts = rng.standard_normal((p, d), dtype=cupy.float32)
        qs = rng.standard_normal((q_full, d), dtype=cupy.float32)
        res = {}

        def kernla_knn(frac, knn=knn, pts=pts, qs=qs):
            q = max(1, int(q_full * frac))
            return lambda: res.__setitem__("kernla", engine.run(knn, [qs[:q], pts], q, p)[0])

        def torch_knn(frac, pts=pts, qs=qs):
            q = max(1, int(q_full * frac))
            pt, qt = torch.from_dlpack(pts), torch.from_dlpack(qs[:q])

            def run():
                rows = max(1, (1 << 31) // p)  # 8 GiB of distances per block
                out = torch.empty((q, 10), dtype=torch.int64, device=qt.device)
                for i0 in range(0, q, rows):
                    out[i0 : i0 + rows] = torch.cdist(qt[i0 : i0 + rows], pt).topk(10, dim=1, largest=False).indices
                res["torch"] = out

            return run

        slow = 1.0 if d < 100 or quick else 10.0  # the exact path at D=784: a tenth of the queries, extrapolated
        tile_row(
            f"knn K=10 D={d} {q_full:.0e}x{p:.0e} f32",
            kernla_knn,
            "torch.cdist+topk",
            torch_knn if torch is not None else None,
            sync_fn,
            scale_exact=slow,
            repeat=3 if d < 100 else 2,
        )
        if "kernla" in res and "torch" in res:
            check(f"kNN D={d}: kernla vs torch.cdist+topk neighbours", lambda res=res: recall(res, q_full))
    n = GAUSS_TIMING_N[0] // (10 if quick else 1)
    for width in (1, TILE_WIDE):
        red = reduction(GAUSS[0], ["X = Vi(128)", "Y = Vj(128)", f"B = Vj({width})", "G = Pm(1)"], "Sum")
        x = rng.standard_normal((n, 128), dtype=cupy.float32) / 8
        y = rng.standard_normal((n, 128), dtype=cupy.float32) / 8
        b = rng.standard_normal((n, width), dtype=cupy.float32)
        g = cupy.asarray([0.5], cupy.float32)

        def kernla_gauss(frac, red=red, x=x, y=y, b=b, g=g):
            m = max(1, int(n * frac))
            return lambda: engine.run(red, [x[:m], y, b, g], m, n)

        def torch_gauss(frac, x=x, y=y, b=b, g=g):
            m = max(1, int(n * frac))
            xt, yt, bt, gt = (torch.from_dlpack(a) for a in (x[:m], y, b, g))
            return lambda: dense_torch(torch, xt, yt, bt, gt)

        tile_row(
            f"gauss D=128 N=M={n:.0e} {width} col f32",
            kernla_gauss,
            "dense chunked torch",
            torch_gauss if torch is not None else None,
            sync_fn,
        )


def recall(res, q):
    """The share of kernla's 10 neighbours that torch.cdist + topk finds too, on the first 2000 queries."""
    a = np.asarray(cupy_numpy(res["kernla"]))[:2000]
    b = res["torch"][:2000].cpu().numpy()
    same = np.mean([len(set(u) & set(v)) / 10 for u, v in zip(a, b)])
    assert same > 0.99, f"kernla and torch agree on {same:.4f} of the neighbours"
    return f"{same:.4f} of the 10 neighbours agree on {min(q, 2000)} queries"


def cupy_numpy(a):
    """A CuPy (or, in a dry run, NumPy) array on the host."""
    return a.get() if hasattr(a, "get") else a


# ---------------------------------------------------------------------------------------------
# --dry-run: NumPy for CuPy, the NumPy engine for the cuda engine, torch on the CPU, tiny sizes
# ---------------------------------------------------------------------------------------------
def stand_in():
    """(cupy, torch or None, kernla, engine, name) for a run without a GPU; every size shrunk."""
    import kernla  # deferred: as in setup()
    from kernla.engines import numpy_engine  # deferred: as in setup()

    global CHECK_SIZES, QUICK_SIZES, VECTOR_SIZES, PRODUCT_SIZES, KNN_CHECK_SIZES, GAUSS_TIMING_N, KNN_TIMING
    global QUICK_KNN_TIMING, TILE_SIZES
    CHECK_SIZES = QUICK_SIZES = [(1, 1), (33, 77)]
    VECTOR_SIZES, PRODUCT_SIZES, KNN_CHECK_SIZES, TILE_SIZES = [(33, 77)], [(37, 51)], [(40, 500)], [(1, 1), (33, 77)]
    GAUSS_TIMING_N, KNN_TIMING, QUICK_KNN_TIMING = [300, 400], (30, 400), (30, 400)

    class RNG:
        def __init__(self, seed):
            self.r = np.random.default_rng(seed)

        def standard_normal(self, shape, dtype=np.float64):
            return self.r.standard_normal(shape).astype(dtype)

    class Device:
        id, compute_capability, attributes = 0, "-", {"MultiProcessorCount": 1}

        def __init__(self, *args):
            pass

        def synchronize(self):
            pass

    cupy = types.SimpleNamespace(
        __version__="NumPy stand-in",
        ndarray=np.ndarray,
        float16=np.float16,
        float32=np.float32,
        float64=np.float64,
        asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype),
        asnumpy=np.asarray,
        ones=np.ones,
        zeros=np.zeros,
        random=types.SimpleNamespace(default_rng=RNG),
        cuda=types.SimpleNamespace(
            Device=Device,
            runtime=types.SimpleNamespace(memGetInfo=lambda: (0, 0)),  # no GPU memory: the 2^31 checks FAIL, not crash
        ),
    )

    class Engine:
        """The NumPy engine computing float16 data in float32, as the cuda engine does."""

        name = "numpy stand-in"

        @staticmethod
        def run(red, arrays, nx, ny, out=None):
            dtype = np.result_type(*arrays)
            work = np.float32 if dtype == np.float16 else dtype
            outs = numpy_engine.run(red, [np.asarray(a, work) for a in arrays], nx, ny)
            return [o.astype(dtype) if o.dtype.kind == "f" else o for o in outs]

        @staticmethod
        def prepare(red, dtype="float32", device=None):
            return None

    try:
        import torch
    except ImportError:  # optional: the peers' rows say "-"
        torch = None
    print("DRY RUN: NumPy stands in for CuPy and the cuda engine, torch runs on the CPU; the figures mean nothing")
    return cupy, torch, kernla, Engine, "dry run (CPU)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer checks, 1e5 timings only")
    ap.add_argument("--tiles", action="store_true", help="only the tile-path checks and their table")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: NumPy stands in, tiny sizes")
    ap.add_argument("--out", help="also write the results as Markdown to this file")
    args = ap.parse_args()
    global TILE_BUDGET_S
    TILE_BUDGET_S = TILE_BUDGET_S if args.tiles else BUDGET_S  # the whole script stays under 5 minutes
    try:
        cupy, torch, kernla, engine, gpu = stand_in() if args.dry_run else setup()
    except Exception as err:
        print(f"FAIL  set-up: {type(err).__name__}: {err}")
        traceback.print_exc()
        return 1
    if args.dry_run:
        cupy.cuda.runtime = None  # the 64-bit and API checks need a GPU: not run
    print("\n== part 1: correctness against the NumPy engine", flush=True)
    try:
        if args.tiles:
            section("tile paths", tile_checks, cupy, engine, args.quick)
        else:
            correctness(cupy, torch, kernla, engine, args.quick, device_checks=not args.dry_run)
    except Exception as err:
        report("correctness section", False, f"{type(err).__name__}: {err}")
        traceback.print_exc()
    print(f"(part 1 done at {elapsed():.0f} s)", flush=True)
    try:
        if args.tiles:
            have_torch = torch is not None and (args.dry_run or torch.cuda.is_available())
            tile_timings(cupy, torch if have_torch else None, engine, args.quick, have_torch)
        else:
            timings(cupy, torch, kernla, engine, args.quick, peers_on_cpu=args.dry_run)
    except Exception as err:
        report("timing section", False, f"{type(err).__name__}: {err}")
        traceback.print_exc()
    failed = [r for r in RESULTS if not r[1]]
    print(f"\n== {len(RESULTS) - len(failed)} passed, {len(failed)} failed ({elapsed():.0f} s, {gpu})")
    for name, _, detail in failed:
        print(f"FAILED: {name}: {detail}")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(f"# gpu_check on {gpu}\n\n| what | time | Gpairs/s |\n|---|---:|---:|\n")
            for cells in TABLE[1:]:
                fh.write("| " + " | ".join(cells) + " |\n")
            fh.write("\n| " + " | ".join(TILE_TABLE[0]) + " |\n|---|" + "---:|" * (len(TILE_TABLE[0]) - 1) + "\n")
            for cells in TILE_TABLE[1:]:
                fh.write("| " + " | ".join(cells) + " |\n")
            fh.write(f"\n{len(RESULTS) - len(failed)} checks passed, {len(failed)} failed.\n")
            for name, _, detail in failed:
                fh.write(f"- FAILED {name}: {detail}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
