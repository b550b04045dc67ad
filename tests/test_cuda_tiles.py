"""The CUDA tile paths without a GPU: Gram tiles of inner products and k tile × B tile kernel products.

The kernels of ``kernels_source(..., tile_dim=TILE_DIM, product_tiles=True)`` run under the emulator of
``tests/test_cuda_emulation.py`` (fibers for threads, AddressSanitizer, the engine's launches with and
without j splits) and are compared with float64 NumPy references on odd sizes, at D just below the
threshold (D=31, the exact path), just above it (33) and far above it (130: several operand chunks and a partial
one), in float32, float64 and float16: every registered reduction of a Gaussian, distances as kNN
(ArgKMin) and ``Norm2(X - Y)``, inner products ``(X | Y)`` and ``Sum(X * Y)``, and kernel products of 1,
9, 16 and 40 columns (the ``_w1``, ``_w8`` and ``_wt`` kernels), with and without a Gram site, over i
and over j. Index outputs are checked through the formula's float64 values at the chosen indices: kNN is
exact up to ties within the tile path's error bound. The block-sparse variant of the same kernels is
checked in ``tests/test_ranges_cuda.py``; nvcc compiles them below (sm_90, sm_80).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernla.engines import numpy_engine
from kernla.engines.cuda import source as cs
from kernla.engines.cuda import tiles as cs_tiles
from kernla.formula import CAT_I, CAT_J, Vi, Vj, call
from kernla.formula.evaluate import evaluate
from kernla.reductions import KINDS, REDUCTIONS, Reduction
from tests.test_cuda_emulation import CXX, Batch, _programs, _red, emulate_cases

NVCC = shutil.which("nvcc")
TILE_DIM = 32
OPTIONS = {"tile_dim": TILE_DIM, "product_tiles": True}


def _gauss(d: int, op: str = "Sum", weight: bool = False) -> Reduction:
    aliases = [f"X = Vi({d})", f"Y = Vj({d})", "G = Pm(1)", "B = Vj(2)"]
    kind = KINDS[op]
    return _red("Exp(-G * SqDist(X, Y))", aliases, op, 3 if kind.needs_k else None, "B" if weight else None)


def _cases() -> dict[str, list[tuple[str, Reduction]]]:
    f32 = []
    for d in (TILE_DIM - 1, TILE_DIM + 1):
        f32 += [(f"gauss{d}_{op}", _gauss(d, op, KINDS[op].needs_weight)) for op in REDUCTIONS]
    xy = lambda d: [f"X = Vi({d})", f"Y = Vj({d})"]  # noqa: E731
    product = "Exp(-G * SqDist(X, Y)) * B"
    f32 += [
        ("knn50", _red("SqDist(X, Y)", xy(50), "ArgKMin", 10)),
        ("knn130", _red("SqNorm2(X - Y)", xy(130), "KMin_ArgKMin", 5)),
        ("norm33", _red("Norm2(X - Y)", xy(33), "Min_ArgMin")),
        ("dot40", _red("(X | Y)", xy(40), "Max_ArgMax")),
        ("dot33_lse", _red("Sum(X * Y) * 2", xy(33), "LogSumExp")),
        ("vector_sum", _red("(X - Y) * Exp(-Sum(Square(X - Y)))", xy(33), "Sum")),  # the site and X, Y as well
        ("product33", _red(product, [*xy(33), "G = Pm(1)", "B = Vj(1)"], "Sum")),
        ("product3", _red(product, [*xy(3), "G = Pm(1)", "B = Vj(1)"], "Sum")),  # _wt without a Gram site
        ("product33_axis0", _red(product, [*xy(33), "G = Pm(1)", "B = Vi(1)"], "Sum").swap_ij()),
    ]
    few = ["Sum", "Min_ArgMin", "ArgKMin", "LogSumExp", "SumSoftMaxWeight"]
    f64 = [(f"gauss{d}_{op}", _gauss(d, op, KINDS[op].needs_weight)) for d in (31, 33) for op in few]
    f64 += [(label, red) for label, red in f32 if label in ("knn130", "dot40", "product33", "product3")]
    f16 = [(f"gauss33_{op}", _gauss(33, op, KINDS[op].needs_weight)) for op in ("Sum", "ArgKMin", "LogSumExp")]
    f16 += [(label, red) for label, red in f32 if label in ("knn50", "product33")]
    return {"float32": f32, "float64": f64, "float16": f16}


CASES = _cases()
LABELS = {dtype: dict(cases) for dtype, cases in CASES.items()}


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    return _programs(tmp_path_factory.mktemp("cuda_tiles"), CASES, **OPTIONS)


def _inputs(red: Reduction, nx: int, ny: int, dtype: str, rng, width: int = 0) -> list[np.ndarray]:
    """Points of unit scale whatever D (distances of order 1), positive parameters, B of ``width`` columns."""
    arrays: dict[int, np.ndarray] = {}
    product = red.kernel_product()
    for f in red.formulas:
        for v in f.variables():
            pos, dim, cat = v.params
            if cat in (CAT_I, CAT_J):
                arrays[pos] = rng.normal(size=(nx if cat == CAT_I else ny, dim)) / np.sqrt(dim) + 0.3
            else:
                arrays[pos] = np.abs(rng.normal(size=dim)) + 0.5
    if product and width:
        b = product[1]
        arrays[b.params[0]] = rng.normal(size=(ny if b.params[2] == CAT_J else nx, width))
    return [arrays.get(p, np.zeros(1)).astype(dtype) for p in range(max(arrays) + 1)]


def _pairs(formula, arrays: list[np.ndarray]) -> np.ndarray:
    """The formula's (N, M, dim) values in float64."""
    values = {}
    for v in formula.variables():
        pos, _, cat = v.params
        a = arrays[pos].astype(np.float64)
        values[pos] = a[:, None, :] if cat == CAT_I else a[None, :, :] if cat == CAT_J else a[None, None, :]
    return evaluate(formula, values, np.float64)


def _check(red: Reduction, got, arrays: list[np.ndarray], nx: int, ny: int, dtype: str, label, tol: float = 0.0):
    """Against the float64 NumPy engine; indices through the formula's values at them (ties within the bound).
    ``tol``: the relative tolerance (default: the dtype's)."""
    product = red.kernel_product()
    if product:  # any width of B: the reference is k @ B
        ref = [_pairs(product[0], arrays)[..., 0] @ arrays[product[1].params[0]].astype(np.float64)]
    else:
        ref = numpy_engine.run(red, [a.astype(np.float64) for a in arrays], nx, ny)
    tol = tol or {"float16": 2e-2, "float32": 1e-4, "float64": 1e-10}[dtype]
    assert len(got) == len(ref), label
    for g, r in zip(got, ref):
        assert g.shape == r.shape, (label, g.shape, r.shape)
        if r.dtype == np.int64:
            values = _pairs(red.formula, arrays)[..., 0]
            assert (g >= 0).all() and (g < ny).all(), label
            scale = 1 + np.abs(values).max()
            np.testing.assert_allclose(
                np.take_along_axis(values, g, 1), np.take_along_axis(values, r, 1), rtol=tol, atol=tol * scale
            )
        else:
            big = np.nanmax(np.abs(np.where(np.isinf(r), 0, r)), initial=0)
            np.testing.assert_allclose(g.astype(np.float64), r, rtol=tol, atol=tol * (1 + big), err_msg=label)


def test_the_tile_path_is_taken_where_it_should():
    """Sites at D ≥ the threshold (one, with variable operands) get the Gram tile; below, the exact path."""
    plans = {label: cs.build_plan(red, "float32", **OPTIONS) for label, red in CASES["float32"]}
    for label, plan in plans.items():
        tiled = not label.startswith(f"gauss{TILE_DIM - 1}") and label != "product3"
        assert (plan.gram is not None) == tiled, label
        assert ("kl_gram_tile" in plan.source.split('extern "C"', 1)[1]) == tiled, label  # called by a kernel
    assert [k.name for k in plans["product3"].kernels] == ["kl_reduce_w1", "kl_reduce_w8", "kl_reduce_wt"]
    assert plans["norm33"].gram.site.kind == "sqdist" and "kl_sqrt" in plans["norm33"].source
    assert plans["dot40"].gram.operands == (3, 4)  # a dot product needs no norms
    # the default build (and kernla.cuda_source) is the exact path; an operand that is not a variable too
    assert cs.build_plan(CASES["float32"][-1][1], "float32").gram is None
    y = Vj(1, 40)
    assert cs_tiles.gram_plan((call("SqDist", Vi(0, 40), y * 2),), 2, TILE_DIM, "float32") is None


def test_operands_centre_and_refuse_non_finite_data():
    red = LABELS["float32"]["knn50"]
    gram = cs.build_plan(red, "float32", **OPTIONS).gram
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 50)).astype(np.float32) + 100, rng.normal(size=(9, 50)).astype(np.float32) + 100
    a, b, na, nb = cs_tiles.operands(gram, [x, y], "float32", len(x), len(y))
    assert a.dtype == np.float32 and abs(b.mean(0)).max() < 1e-4
    d = na[:, None] + nb[None, :] - 2 * a @ b.T
    np.testing.assert_allclose(d, ((x[:, None].astype(float) - y[None]) ** 2).sum(-1), rtol=1e-4)
    y[3, 4] = np.inf
    assert cs_tiles.operands(gram, [x, y], "float32", len(x), len(y)) is None


SIZES = [(1, 1), (300, 257), (37, 700), (513, 33)]


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_emulated_tile_kernels_match_float64(programs, dtype):
    full = ("knn", "product33", "gauss33_Sum")
    emulate_cases(
        programs,
        dtype,
        CASES[dtype],
        lambda label: SIZES if label.startswith(full) else SIZES[1:3],
        _inputs,
        _check,
        lambda red: (1, 9, 16, 40) if red.kernel_product() else (0,),
        seed=11,
    )


@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
def test_emulated_close_points_stay_exact_up_to_the_bound(programs):
    """Near duplicates far from the origin: the centred expansion keeps the nearest neighbour (float64 reference)."""
    rng = np.random.default_rng(5)
    nx, ny = 40, 300
    y = (rng.normal(size=(ny, 50)) * 0.1 + 50).astype(np.float32)
    x = (y[rng.integers(0, ny, nx)] + rng.normal(size=(nx, 50)) * 1e-3).astype(np.float32)
    red = LABELS["float32"]["knn50"]
    batch = Batch(programs, "float32")
    runs = [batch.add("knn50", [x, y], nx, ny, splits=s) for s in (None, 3)]
    d = ((x[:, None].astype(np.float64) - y[None]) ** 2).sum(-1)
    for got in batch.run():
        (idx,) = got
        np.testing.assert_array_equal(idx[:, 0], d.argmin(1))
        _check(red, got, [x, y], nx, ny, "float32", "close points")
    assert len(runs) == 2


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_tile_kernels_compile_with_nvcc(tmp_path, arch):
    """Every case's tile kernels, dense and block-sparse (and the TF32 variant), one unit per dtype; the
    dense reduction kernels do not spill registers."""
    procs = {}
    for dtype, cases in CASES.items():
        parts = [cs.prelude(dtype)]
        for n, (_, red) in enumerate(cases):
            for ranges in (False, True):
                parts.append(cs.kernels_source(red, dtype, prefix=f"c{n}{'r' * ranges}", ranges=ranges, **OPTIONS)[0])
        if dtype == "float32":  # and the TF32 tensor-core variant
            for n, (_, red) in enumerate(TF32_CASES[dtype]):
                parts.append(cs.kernels_source(red, dtype, prefix=f"t{n}", **TF32_OPTIONS)[0])
        path = tmp_path / f"{dtype}.cu"
        path.write_text("\n".join(parts))
        cmd = [NVCC, "-cubin", f"-arch={arch}", "-std=c++17", "-ftz=true", "-diag-suppress=177,550", "-Xptxas", "-v"]
        cmd += ["-Xcicc", "-O0", str(path), "-o", str(path.with_suffix(".cubin"))]
        procs[dtype] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for dtype, proc in procs.items():
        log, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{dtype}: {log[-6000:]}"
        spills = re.findall(r"Function properties for (\w+)\n\s+\d+ bytes stack frame, (\d+) bytes spill stores", log)
        # the dense reduction kernels (block-sparse ones spill a few words, on the exact path too; merges as before)
        spilled = [
            name for name, stores in spills if stores != "0" and not re.match(r"c\d+r_", name) and "_reduce" in name
        ]
        assert spills and not spilled, f"{dtype}: {spilled} spill registers:\n{log[-6000:]}"


def test_gpu_check_dry_run_runs_the_tile_rows():
    """benchmarks/gpu_check.py --dry-run (NumPy for CuPy, tiny sizes): the tile checks pass and the table prints."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    env = dict(os.environ, PYTHONPATH=str(script.parents[1]))
    proc = subprocess.run(
        [sys.executable, str(script), "--dry-run", "--tiles", "--quick"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== tile paths" in proc.stdout and "knn K=10 D=784" in proc.stdout and "200 col" in proc.stdout
    assert "PASS  tiles product D=33 width=200" in proc.stdout


#: the opt-in TF32 Gram tiles (float32 data): kNN, a Gaussian sum, inner products, kernel products
TF32_CASES = {
    "float32": [(label, LABELS["float32"][label]) for label in ("knn50", "gauss33_Sum", "dot40", "product33")]
}
TF32_OPTIONS = {**OPTIONS, "tf32": True}


@pytest.fixture(scope="module")
def tf32_programs(tmp_path_factory):
    return _programs(tmp_path_factory.mktemp("cuda_tf32"), TF32_CASES, **TF32_OPTIONS)


def test_tf32_is_an_opt_in_for_float32_only():
    red = LABELS["float32"]["knn50"]
    assert not cs.build_plan(red, "float32", **OPTIONS).gram.tf32
    assert cs.build_plan(red, "float32", **TF32_OPTIONS).gram.tf32
    assert "kl_gram_tile_tf32(a" in cs.build_plan(red, "float32", **TF32_OPTIONS).source
    for dtype in ("float16", "float64"):
        assert not cs.build_plan(red, dtype, **TF32_OPTIONS).gram.tf32


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="g++ is not installed")
def test_emulated_tf32_gram_tiles_within_their_bound(tf32_programs):
    """Operands rounded to TF32 as cvt.rna does, each lane's mma accumulators computed on the host: the
    fragment layout and the tile are checked, against float64 with the TF32 bound (about 2^-10 relative)."""

    def check(red, got, arrays, nx, ny, dtype, name):
        _check(red, got, arrays, nx, ny, dtype, name, tol=1e-2)

    emulate_cases(
        tf32_programs,
        "float32",
        TF32_CASES["float32"],
        lambda label: SIZES,
        _inputs,
        check,
        lambda red: (1, 9, 40) if red.kernel_product() else (0,),
        seed=13,
    )
