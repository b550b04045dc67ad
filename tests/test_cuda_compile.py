"""The CUDA engine without a GPU: its generated sources compile, and asking for cuda fails cleanly.

Every formula / reduction / dtype combination below is generated with the cuda engine's generator
and compiled with ``nvcc -cubin`` (sm_90, and sm_80 for a subset), batched into one translation
unit per arch and dtype (one prelude, kernels with distinct prefixes) and compiled in parallel. The register
and spill report of the Gaussian kernel is printed (``pytest -s`` or ``-rP`` shows it). Skipped when
nvcc is absent. The compile flags mirror CuPy's NVRTC call (-std=c++17, -ftz=true).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import kernla
from kernla.engines.cuda import source as cs
from kernla.formula import parse, parse_aliases
from kernla.reductions import KINDS, REDUCTIONS, Reduction

NVCC = shutil.which("nvcc")
FLAGS = ["-std=c++17", "-ftz=true", "-diag-suppress=177,550"]
GAUSS = ("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"])
SCALAR = ("Exp(-G * SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(2)"])
VECTOR = ("(X - Y) * Exp(-SqDist(X, Y) / S)", ["X = Vi(3)", "Y = Vj(3)", "S = Pm(1)"])
OPS = (
    "Concat(Sin(X) * Cos(Y) + Atan2(X, Y) + Powf(Abs(X) + 1.5, Y) + Pow(X, 3) + Pow(Y, -2),"
    " Round(X, 2) + Floor(Y) + Sign(X - Y) + Rsqrt(SqNorm2(X)) + Sqrt(Abs(Y)) + Log(1 + Abs(X))"
    " + XLogX(Abs(Y)) + SinXDivX(X) + Inv(1 + Square(Y)) + Mod(X, Y + 3, 0.5) + ClampInt(X, -1, 1)"
    " + IfElse(X - Y, Asin(Clamp(X, -1, 1)), Acos(Clamp(Y, -1, 1))) + Atan(X) + Step(X) + ReLU(Y)"
    " + Max(Concat(X, Y)) + Min(Concat(X, Y)) + ArgMin(Concat(X, Y)) + Elem(OneHot(ArgMax(Concat(X, Y)), 4), 1)"
    " + Norm2(Concat(X, Y)) + Extract(Normalize(Concat(X, Y)), 1, 1) + WeightedSqDist(W, Concat(X, X), Concat(Y, Y))"
    " + Sum(MatVecMult(W, Concat(X, Y))) + Sum(TensorProd(X, Y)) + (X | Y) + LessThan(X, Y) + Equal(X, Y))"
)
OPS_ALIASES = ["X = Vi(1)", "Y = Vj(1)", "W = Pm(4)"]


def _cases() -> list[tuple[str, Reduction, tuple[str, ...]]]:
    """(id, reduction, dtypes): every combination the compile tests build."""
    all_dtypes = ("float16", "float32", "float64")
    out = []

    def add(label, formula, aliases, op, opt=None, formula2=None, axis=1, dtypes=all_dtypes):
        al = parse_aliases(aliases)
        red = Reduction(op, parse(formula, al), parse(formula2, al) if formula2 else None, opt)
        out.append((label, red.swap_ij() if axis == 0 else red, dtypes))

    add("gauss_matvec", *GAUSS, "Sum")
    add("gauss_matvec_axis0", *GAUSS, "Sum", axis=0)
    for op in REDUCTIONS:
        opt = 3 if op.startswith("K") or op.startswith("ArgK") else None
        f2 = "B" if KINDS[op].needs_weight else None
        add(f"scalar_{op}", *SCALAR, op, opt, f2)
        if f2 is None and not KINDS[op].needs_scalar:
            add(f"vector_{op}", *VECTOR, op, 2 if opt else None)
    add("knn_d50", "SqDist(X, Y)", ["X = Vi(50)", "Y = Vj(50)"], "ArgKMin", 10)
    add("knn_d50_axis0", "SqDist(X, Y)", ["X = Vi(50)", "Y = Vj(50)"], "KMin_ArgKMin", 10, axis=0)
    add(
        "lse_weighted",
        "-SqDist(X, Y) * G",
        ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(3)"],
        "LogSumExpWeight",
        None,
        "B",
    )
    add(
        "softmax_weighted",
        "-SqDist(X, Y) * G",
        ["X = Vi(3)", "Y = Vj(3)", "G = Pm(1)", "B = Vj(5)"],
        "SumSoftMaxWeight",
        None,
        "B",
    )
    add("laplace_matmat", "Exp(-Sqrt(SqDist(X, Y))) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(7)"], "Sum")
    add("wide_sum_chunks", "X * Y * Exp(-SqNorm2(X - Y))", ["X = Vi(40)", "Y = Vj(40)"], "Sum")
    add("wide_kmin_chunks", "Abs(X - Y)", ["X = Vi(20)", "Y = Vj(20)"], "KMin", 2)
    add("wide_lse_chunks", "-Abs(X - Y)", ["X = Vi(24)", "Y = Vj(24)"], "LogSumExp")
    add("d100_global_i", "SqDist(X, Y)", ["X = Vi(100)", "Y = Vj(100)"], "Min_ArgMin", dtypes=("float32", "float64"))
    add(
        "d400_direct_j",
        "Exp(-SqDist(X, Y)) * B",
        ["X = Vi(400)", "Y = Vj(400)", "B = Vj(2)"],
        "Sum",
        dtypes=("float32",),
    )
    add(
        "many_params",
        "Scalprod(P, X) * Scalprod(P, Y)",
        ["X = Vi(80)", "Y = Vj(80)", "P = Pm(80)"],
        "Max_ArgMax",
        dtypes=("float32",),
    )
    add("all_ops", OPS, OPS_ALIASES, "Sum")
    add("all_ops_argmax", OPS, OPS_ALIASES, "Max_ArgMax", dtypes=("float64",))
    return out


CASES = _cases()
SM80 = {"gauss_matvec", "knn_d50", "scalar_LogSumExp", "scalar_KMin_ArgKMin", "vector_Sum"}


def _units() -> dict[str, tuple[str, str]]:
    """{file stem: (arch, translation unit)}: one unit per arch and dtype with every case's kernels.

    nvcc pays ~0.3 s per call before it compiles anything (it parses the CUDA runtime headers):
    few, large units cost least."""
    units = {}
    for arch in ("sm_90", "sm_80"):
        for dtype in ("float16", "float32", "float64"):
            parts = [cs.prelude(dtype)]
            for n, (label, red, dtypes) in enumerate(CASES):
                if dtype in dtypes and (arch == "sm_90" or label in SM80):
                    parts.append(f"// ---- case {label}\n" + cs.kernels_source(red, dtype, prefix=f"c{n}")[0])
            units[f"{arch}_{dtype}"] = (arch, "\n".join(parts))
    return units


def _nvcc(path: Path, arch: str, extra=()) -> subprocess.Popen:
    cmd = [NVCC, "-cubin", f"-arch={arch}", *FLAGS, *extra, str(path), "-o", str(path.with_suffix(".cubin"))]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _compile_all(jobs: list[tuple[str, Path, str, list[str]]]) -> dict[str, tuple[int, str]]:
    """Run nvcc on (name, path, arch, extra flags) jobs, as many at once as CPUs, largest first.

    Returns {name: (exit status, log)}."""

    def one(job):
        name, path, arch, extra = job
        proc = _nvcc(path, arch, extra)
        log, _ = proc.communicate(timeout=600)
        return name, (proc.returncode, log)

    jobs = sorted(jobs, key=lambda job: -job[1].stat().st_size)
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        return dict(pool.map(one, jobs))


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_every_case_compiles_with_nvcc(tmp_path):
    """All cases, one unit per arch and dtype, compiled without NVVM optimisation (-Xcicc -O0: the
    front end, NVVM's code generation and ptxas still check everything, 30 % faster than at -O1;
    the Gaussian test below compiles at full optimisation)."""
    jobs = []
    for stem, (arch, text) in _units().items():
        path = tmp_path / f"{stem}.cu"
        path.write_text(text)
        jobs.append((stem, path, arch, ["-Xcicc", "-O0", "-Xptxas", "-O1"]))
    failures = [
        f"{stem}: nvcc exited {rc}\n{log[-6000:]}" for stem, (rc, log) in sorted(_compile_all(jobs).items()) if rc != 0
    ]
    assert not failures, "\n\n".join(failures)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_gaussian_register_report(tmp_path):
    """The Gaussian matvec kernels: print ptxas' register / spill report; they must not spill."""
    jobs = []
    for dtype in ("float16", "float32", "float64"):
        path = tmp_path / f"gauss_{dtype}.cu"
        path.write_text(kernla.cuda_source(*GAUSS, dtype=dtype))
        jobs.append((dtype, path, "sm_90", ["-Xptxas", "-v"]))
    report = []
    for dtype, (rc, log) in sorted(_compile_all(jobs).items()):
        assert rc == 0, log
        report.append(
            f"--- Gaussian matvec D=3, {dtype}, sm_90\n"
            + "\n".join(
                line
                for line in log.splitlines()
                if "ptxas info" in line and "Compile time" not in line or "spill" in line
            )
        )
    text = "\n".join(report)
    print(text)
    spills = re.findall(r"Function properties for (\w+)\n\s+(\d+) bytes stack frame, (\d+) bytes spill stores", text)
    assert spills, text
    for name, _, stores in spills:
        if "reduce_w1" in name:
            assert stores == "0", f"{name} spills registers:\n{text}"


def test_sources_are_self_contained_and_complete():
    for label, red, dtypes in CASES:
        for dtype in dtypes:
            plan = cs.build_plan(red, dtype)
            src = plan.source
            assert "#include" not in src, label
            assert not re.search(r"@[A-Z_]+@", src), label
            for k in plan.kernels:
                assert f"{k.name}(" in src and f"{k.merge}(" in src, (label, k)
            assert src.count('extern "C" __global__') == 2 * len(plan.kernels), label


def test_kernel_product_source_does_not_depend_on_width():
    """Σ_j k_ij B_j compiles once for every number of columns of B (the width is a run-time argument)."""
    a = kernla.cuda_source("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"])
    b = kernla.cuda_source("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(17)"])
    assert a == b
    plan = cs.build_plan(
        Reduction("Sum", parse("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(17)"])), "float32"
    )
    assert plan.product and [k.cw for k in plan.kernels] == list(cs.PRODUCT_WIDTHS)


def test_source_options():
    src = kernla.cuda_source(*GAUSS, dtype="float16")
    assert "#define KL_DTYPE_F16" in src and "kl_exp2f" in src
    assert "#define KL_DTYPE_F64" in kernla.cuda_source(*GAUSS, dtype="float64")
    swapped = kernla.cuda_source(*GAUSS, axis=0)
    assert swapped != kernla.cuda_source(*GAUSS)
    with pytest.raises(kernla.DTypeError):
        kernla.cuda_source(*GAUSS, dtype="int32")
    with pytest.raises(kernla.ShapeError):
        kernla.cuda_source(*GAUSS, axis=2)
    with pytest.raises(kernla.FormulaError):
        kernla.cuda_source("Foo(X)", ["X = Vi(1)"])


def test_accumulator_state_layout_round_trips():
    """Split-j partial states: every reduction's declaration is laid out, saved and loaded word by word."""
    for label, red, _ in CASES:
        acc = red.c_accumulator("acc")
        save, words = cs._save_state(acc)
        load = cs._load_state(red.c_accumulator("kl_q"))
        assert words >= 1 and save.count("kl_st") >= 1 and load.count("kl_st") >= 1, label


def test_large_dimensions_are_chunked_or_read_from_memory():
    by = {label: red for label, red, _ in CASES}
    wide = cs.build_plan(by["wide_sum_chunks"], "float32")
    assert len(wide.kernels) == 3  # 40 components in chunks of 16
    d100 = cs.build_plan(by["d100_global_i"], "float32").source
    assert "kl_x0_" not in d100 and "kl_ld(a0 + kl_ii0 * 100" in d100  # i-variable read in place
    d400 = cs.build_plan(by["d400_direct_j"], "float32")
    assert d400.kernels[0].tj == 0 and "__shared__" not in d400.source  # j-variables from global memory
    gauss = cs.build_plan(by["gauss_matvec"], "float32")
    assert gauss.kernels[0].rows == 2 and gauss.kernels[0].tj == cs.BLOCK


def test_exp_is_prescaled():
    src = kernla.cuda_source(*GAUSS)
    assert "kl_exp2f(t1 * t5)" in src.replace("u1 * u5", "t1 * t5")
    assert "kl_exp(" not in src.split("// kernla tiled reduction kernel", 1)[1]
    # float64 keeps the accurate exp
    assert "kl_exp2f(" not in kernla.cuda_source(*GAUSS, dtype="float64").split("// kernla tiled", 1)[1]


def test_choose_splits():
    assert cs.choose_splits(3907, 660, 10**6, 256, 128) == 1  # 5.9 waves: no split
    assert cs.choose_splits(4000, 660, 10**6, 256, 128) == 3  # 6.06 waves: split to trim the tail
    assert cs.choose_splits(196, 660, 10**5, 256, 128) == 10
    assert cs.choose_splits(1, 660, 10**6, 256, 128) > 64
    assert cs.choose_splits(1, 660, 300, 256, 128) == 1  # too few columns to split
    assert cs.choose_splits(1, 660, 10**6, 256, 4) == 4  # capped


def _engine_available() -> bool:
    try:
        from kernla.engines import get_engine

        get_engine("cuda")
        return True
    except kernla.BackendError:
        return False


@pytest.mark.skipif(_engine_available(), reason="a GPU is available: the cuda backend works here")
def test_cuda_backend_without_gpu_raises_backend_error():
    x = np.random.default_rng(0).normal(size=(5, 3))
    f = kernla.Genred("SqDist(X, Y)", ["X = Vi(3)", "Y = Vj(3)"], reduction_op="Min", axis=1)
    with pytest.raises(kernla.BackendError, match="cuda"):
        f(x, x, backend="cuda")
    assert f(x, x, backend="numpy").shape == (5, 1)  # everything else still works
