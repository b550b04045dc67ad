"""Peak memory of a Gaussian Sum reduction (D=3): memory stays linear in N + M.

Each measurement runs in a fresh subprocess and reports its peak resident memory (ru_maxrss)
minus the interpreter's baseline. Dense float64 would need 8·N·M bytes.

    python benchmarks/bench_memory.py            # N = M = 5e4 (numpy engine) and 1e6 (compiled engine)
    python benchmarks/bench_memory.py --sizes 3000:numpy,10000:numpy,10000:cpu,100000:cpu,300000:cpu --json PATH

``--json PATH`` also writes the table and the plots' specs (peak memory against N beside what a dense
matrix would need, and time against N, log-log) for the docs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_json_option, machine, plot, table, write_json  # noqa: E402

CHILD = r"""
import json, resource, sys, time
import numpy as np
n, backend = int(sys.argv[1]), sys.argv[2]
import kernla
from kernla import Genred
rng = np.random.default_rng(0)
x = rng.random((n, 3), dtype=np.float32); b = rng.random((n, 1), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
g = Genred("Exp(-SqDist(X, Y) * G) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"], axis=1)
t = time.perf_counter(); out = g(x, x, b, np.float32(10.0), backend=backend); t = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": peak / 1024, "extra_mb": (peak - before) / 1024, "seconds": t}))
"""


def run(n: int, backend: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(n), backend], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", default="50000:numpy,1000000:cpu", help="comma-separated N:backend pairs (default %(default)s)"
    )
    add_json_option(parser)
    args = parser.parse_args()
    rows = []
    for item in args.sizes.split(","):
        n, backend = item.split(":")
        r = run(int(float(n)), backend)
        dense_mb = 8 * int(float(n)) ** 2 / 1e6
        if "error" in r:
            rows.append([f"{int(float(n)):.0e}", backend, "-", "-", "-", dense_mb, r["error"]])
        else:
            rows.append([f"{int(float(n)):.0e}", backend, r["peak_mb"], r["extra_mb"], r["seconds"], dense_mb, "ok"])
    print(
        table(
            [
                "N = M",
                "backend",
                "peak RSS (MB)",
                "extra over imports (MB)",
                "time (s)",
                "dense float64 would need (MB)",
                "status",
            ],
            rows,
            title=f"Gaussian Sum reduction, D=3, float32 — {machine()}",
        )
    )
    dense = {"dense float64 would need (MB)": "a dense float64 N × N matrix"}
    axes = dict(series="backend", xlabel="N = M (points)")
    specs = [
        plot(0, "N = M", "peak RSS (MB)", "peak memory of a Gaussian Sum reduction", references=dense, **axes),
        plot(0, "N = M", "time (s)", "time of the same reduction (one run, fresh process)", **axes),
    ]
    specs[0]["ylabel"], specs[1]["ylabel"] = "peak resident memory (MB)", "wall seconds (one run)"
    write_json(args.json, specs, "Each size in a fresh process; peak RSS includes the interpreter and imports.")


if __name__ == "__main__":
    main()
