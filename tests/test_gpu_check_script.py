"""benchmarks/gpu_check.py stays runnable without a GPU.

Its checks and timing tables run here with NumPy standing in for CuPy and the NumPy engine (in
float32 for float16 data, as the GPU computes) standing in for the cuda engine, at tiny sizes:
every correctness check of the reduction, vector, product and kNN sections must pass (which tests
the script's own comparison logic), and nothing may crash.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest

import kernla
from kernla.engines import numpy_engine

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _fake_cupy():
    cp = types.SimpleNamespace()
    cp.__version__ = "stand-in"
    cp.ndarray = np.ndarray
    cp.float16, cp.float32, cp.float64 = np.float16, np.float32, np.float64
    cp.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype)
    cp.asnumpy = np.asarray
    cp.ones, cp.zeros = np.ones, np.zeros

    class Device:
        id = 0
        compute_capability = "00"
        attributes = {"MultiProcessorCount": 1}

        def __init__(self, *args):
            pass

        def synchronize(self):
            pass

    cp.cuda = types.SimpleNamespace(
        Device=Device,
        runtime=types.SimpleNamespace(
            getDeviceProperties=lambda i: {"name": b"CPU stand-in", "totalGlobalMem": 2**30},
            runtimeGetVersion=lambda: 0,
            driverGetVersion=lambda: 0,
            memGetInfo=lambda: (0, 0),
        ),
    )

    class RNG:
        def __init__(self, seed):
            self.r = np.random.default_rng(seed)

        def standard_normal(self, shape, dtype=np.float64):
            return self.r.standard_normal(shape).astype(dtype)

    cp.random = types.SimpleNamespace(default_rng=RNG)
    return cp


class _Engine:
    """The NumPy engine with the cuda engine's dtype behaviour (float16 data computed in float32)."""

    name = "stand-in"

    @staticmethod
    def run(red, arrays, nx, ny, out=None):
        dtype = np.result_type(*arrays)
        compute = np.float32 if dtype == np.float16 else dtype
        outs = numpy_engine.run(red, [np.asarray(a, compute) for a in arrays], nx, ny)
        return [o.astype(dtype) if o.dtype.kind == "f" else o for o in outs]

    @staticmethod
    def prepare(red, dtype="float32", device=None):
        return None


@pytest.fixture
def gc():
    spec = importlib.util.spec_from_file_location("kernla_gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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
    cp = _fake_cupy()
    gc.correctness(cp, None, kernla, _Engine, quick=False)
    gc.timings(cp, None, kernla, _Engine, quick=False)
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

    class Broken(_Engine):
        @staticmethod
        def run(red, arrays, nx, ny, out=None):
            outs = _Engine.run(red, arrays, nx, ny)
            return [o * 1.01 if o.dtype.kind == "f" else (o + 1) % max(ny, 1) for o in outs]

    cp = _fake_cupy()
    gc.CHECK_SIZES = [(33, 77)]
    gc.correctness(cp, None, kernla, Broken, quick=False)
    core = {r[0].split()[0]: r for r in gc.RESULTS if r[0].split()[0] in ("Sum", "ArgMin", "KMin_ArgKMin")}
    assert core and not any(r[1] for r in core.values()), core
