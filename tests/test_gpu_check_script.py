"""benchmarks/gpu_check.py stays runnable without a GPU.

Its checks and timing tables run here with NumPy standing in for CuPy and the NumPy engine (in
float32 for float16 data, as the GPU computes) standing in for the cuda engine, at tiny sizes:
every correctness check of the reduction, vector, product and kNN sections must pass (which tests
the script's own comparison logic), and nothing may crash.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture
def gc():
    spec = importlib.util.spec_from_file_location("kernla_gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.STAND_IN = mod.stand_in()  # NumPy for CuPy, the NumPy engine for the cuda engine
    mod.CHECK_SIZES = [(1, 1), (1, 300), (299, 1), (33, 77), (3, 3001)]
    mod.VECTOR_SIZES = [(33, 77), (2, 2001)]
    mod.PRODUCT_SIZES = [(77, 101)]
    mod.KNN_CHECK_SIZES = [(40, 500)]
    mod.GAUSS_TIMING_N = [200, 300]
    mod.KNN_TIMING = (30, 200)
    mod.RESULTS.clear()
    mod.TABLE.clear()
    return mod


def test_gpu_check_logic_runs_on_cpu(gc, capsys):
    cp, _, kernla, engine, _ = gc.STAND_IN
    gc.correctness(cp, None, kernla, engine, quick=False)
    gc.timings(cp, None, kernla, engine, quick=False)
    out = capsys.readouterr().out
    sections = ("Sum", "Min", "Max", "Arg", "KMin", "LogSumExp", "SumSoftMax", "vector", "product", "knn", "compile")
    core = [r for r in gc.RESULTS if r[0].split()[0].startswith(sections)]
    assert len(core) > 150, out[-3000:]
    failed = [r for r in core if not r[1]]
    assert not failed, failed[:5]
    # the int64 checks need GPU memory: the stand-in has none, so they report FAIL, not crash
    int64 = [r for r in gc.RESULTS if "2^31" in r[0]]
    assert len(int64) == 2 and all("memory" in r[2] for r in int64)
    assert "gauss D=3" in out and "knn K=10" in out
    assert any(row[0].startswith("gauss D=3") and row[2] != "FAILED" for row in gc.TABLE)


def test_gpu_check_reports_a_wrong_engine(gc, capsys):
    """A broken engine (off by a little, wrong index) is caught: FAIL lines, not exceptions."""

    cp, _, kernla, engine, _ = gc.STAND_IN

    class Broken(engine):
        @staticmethod
        def run(red, arrays, nx, ny, out=None):
            outs = engine.run(red, arrays, nx, ny)
            return [o * 1.01 if o.dtype.kind == "f" else (o + 1) % max(ny, 1) for o in outs]

    gc.CHECK_SIZES = [(33, 77)]
    gc.correctness(cp, None, kernla, Broken, quick=False)
    core = {r[0].split()[0]: r for r in gc.RESULTS if r[0].split()[0] in ("Sum", "ArgMin", "KMin_ArgKMin")}
    assert core and not any(r[1] for r in core.values()), core
