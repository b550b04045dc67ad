"""The wheel a user installs: built from this tree, unpacked away from it, imported and run.

It must carry the CUDA templates inside the package (``kernla/cuda_templates/``, not a stray
top-level ``cuda_templates`` in site-packages), the CPU engine's C++ files and ``py.typed``, and work
without the source tree: one reduction on the compiled CPU engine (or the NumPy engine where no
compiler is found) checked against dense NumPy, and ``cuda_source(...)`` (which reads the templates).
Marked ``slow`` (a wheel build and one kernel compile, ~15 s on 2 cores): ``-m 'not slow'`` skips it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = (".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__", ".hypothesis", "*.png")

SCRIPT = """
import sys
from pathlib import Path
import numpy as np
import kernla
from kernla.engines import resolve_backend

assert Path(kernla.__file__).is_relative_to(sys.argv[1]), kernla.__file__
rng = np.random.default_rng(7)
x, y, b = rng.random((53, 3)), rng.random((41, 3)), rng.random((41, 2))
gauss = kernla.Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(2)"], reduction_op="Sum", axis=1)
engine = resolve_backend(None, False)
out = gauss(x, y, b, backend=engine)
dense = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b
np.testing.assert_allclose(out, dense, rtol=1e-10)
src = kernla.cuda_source("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)"])
assert 'extern "C" __global__' in src
print("ok", engine)
"""


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    # built from a copy: setuptools' build/ folder would otherwise keep (and ship) files deleted since the last build
    src, dist = tmp_path / "src", tmp_path / "dist"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    (wheel,) = dist.glob("kernla-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"kernla/py.typed", "kernla/engines/cpu/template.cpp", "kernla/cuda_templates/reduce.cu"} <= set(names)
    assert not [n for n in names if n.startswith("cuda_templates/")], "stray top-level cuda_templates in the wheel"

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel: unpacking it is installing it
    env = {**os.environ, "PYTHONPATH": str(site), "KERNLA_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(site)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok")
