"""CPU benchmark: kernla's compiled engine against its NumPy engine, dense torch and pykeops.

One table per run, all in one process on the same machine: median wall and CPU time of several
runs, billions of pairs per second, and the ratio to pykeops when it is installed
(``pip install pykeops``). Also measured: first call of a never-seen formula (compile included),
a cached kernel loaded in a new process, and the warm call overhead at N = M = 500.

``--curves`` measures each case at several N instead (time against N, for the docs' log-log plots):
every peer runs at growing N until its time at the next N, estimated from its last one (all are
O(N·M)), would exceed ``--cap`` seconds; the rows beyond say "not run", so the slow peers' curves stop
where they would take more than a few seconds, and kernla's compiled engine runs every N (about 3
minutes here).

    python benchmarks/bench_cpu.py [--quick | --curves [--cap 5]] [--json benchmarks/results/bench_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_json_option, machine, measure, optional, plot, table, write_json  # noqa: E402

from kernla import Genred, LazyTensor  # noqa: E402

torch = optional("torch")
pykeops_torch = optional("pykeops.torch")


def gaussian_cases(n: int, rng):
    x = rng.random((n, 3), dtype=np.float32)
    b = rng.random((n, 1), dtype=np.float32)
    g = np.float32(10.0)
    kern = Genred("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"], axis=1)
    cases = {
        "kernla cpu": lambda: kern(x, x, b, g, backend="cpu"),
        "kernla numpy": (lambda: kern(x, x, b, g, backend="numpy")) if n <= 20_000 else None,
    }
    if torch is not None:
        tx, tb = torch.from_numpy(x), torch.from_numpy(b)

        def dense():
            out = torch.empty(n, 1)
            step = max(1, int(2e8) // (4 * n))  # chunks of rows so memory stays ~200 MB
            for i in range(0, n, step):
                out[i : i + step] = torch.exp(-g * torch.cdist(tx[i : i + step], tx) ** 2) @ tb
            return out

        cases["dense torch"] = dense if n <= 20_000 else None
    if pykeops_torch is not None:
        tx, tb = torch.from_numpy(x), torch.from_numpy(b)
        X, Y = pykeops_torch.LazyTensor(tx[:, None, :]), pykeops_torch.LazyTensor(tx[None, :, :])
        K = (-float(g) * ((X - Y) ** 2).sum(-1)).exp()
        cases["pykeops"] = lambda: K @ tb
    return cases


def knn_cases(n: int, d: int, rng):
    x = rng.random((n, d), dtype=np.float32)
    q = rng.random((max(n // 10, 1), d), dtype=np.float32)
    x_i, x_j = LazyTensor(q[:, None, :]), LazyTensor(x[None, :, :])
    D = ((x_i - x_j) ** 2).sum(-1)
    cases = {
        "kernla cpu": lambda: D.argKmin(10, dim=1, backend="cpu"),
        "kernla numpy": (lambda: D.argKmin(10, dim=1, backend="numpy")) if n * d <= 2e6 else None,
    }
    if torch is not None:
        tq, tx = torch.from_numpy(q), torch.from_numpy(x)
        cases["torch cdist+topk"] = lambda: torch.cdist(tq, tx).topk(10, largest=False).indices
    if pykeops_torch is not None:
        tq, tx = torch.from_numpy(q), torch.from_numpy(x)
        P = ((pykeops_torch.LazyTensor(tq[:, None, :]) - pykeops_torch.LazyTensor(tx[None, :, :])) ** 2).sum(-1)
        cases["pykeops"] = lambda: P.argKmin(10, dim=1)
    return cases, q.shape[0] * n


def lse_cases(n: int, rng):
    x = rng.random((n, 3), dtype=np.float32)
    x_i, x_j = LazyTensor(x[:, None, :]), LazyTensor(x[None, :, :])
    S = -((x_i - x_j) ** 2).sum(-1) * 10.0
    cases = {
        "kernla cpu": lambda: S.logsumexp(dim=1, backend="cpu"),
        "kernla numpy": (lambda: S.logsumexp(dim=1, backend="numpy")) if n <= 20_000 else None,
    }
    if torch is not None:
        tx = torch.from_numpy(x)
        cases["dense torch"] = (lambda: torch.logsumexp(-10.0 * torch.cdist(tx, tx) ** 2, 1)) if n <= 20_000 else None
    if pykeops_torch is not None:
        tx = torch.from_numpy(x)
        P = -((pykeops_torch.LazyTensor(tx[:, None, :]) - pykeops_torch.LazyTensor(tx[None, :, :])) ** 2).sum(-1) * 10.0
        cases["pykeops"] = lambda: P.logsumexp(dim=1)
    return cases


def rows_for(label: str, cases: dict, pairs: float, repeat: int, warmup: bool = True, budget: float = 30) -> list:
    """One row per implementation; a case that is None (too slow or too big) or a string (why not) is not run."""
    rows, timings = [], {}
    for name, fn in cases.items():
        if fn is None or isinstance(fn, str):
            rows.append([label, name, "-", "-", "-", fn or "skipped (minutes per run, or too big)"])
            continue
        try:
            # big cases: no warm-up run (every kernel was compiled by the smaller case before)
            t = measure(fn, repeat=repeat, warmup=1 if warmup and pairs < 2e9 else 0, budget=budget)
        except Exception as err:  # a peer failing is reported, not fatal
            rows.append([label, name, "-", "-", "-", f"failed: {type(err).__name__}: {str(err)[:60]}"])
            continue
        timings[name] = t
        rows.append([label, name, t.wall, t.cpu, pairs / t.wall / 1e9, ""])
    ref = timings.get("pykeops")
    for r in rows:
        if ref is not None and r[1] in timings:
            r[5] = f"{ref.wall / timings[r[1]].wall:.1f}x pykeops"
    return rows


#: --curves: the N of each case (argKmin: N points, N / 10 queries)
CURVES = {
    "gauss": (1_000, 3_000, 10_000, 30_000, 100_000),
    "knn3": (3_000, 10_000, 30_000, 100_000, 300_000),
    "knn50": (3_000, 10_000, 30_000, 100_000),
    "lse": (1_000, 3_000, 10_000, 30_000, 100_000),
}


def curve_rows(case: str, rng, repeat: int, cap: float) -> list:
    """The rows of one case at every N of :data:`CURVES`; a peer stops once its next time, estimated from
    its last one, would exceed ``cap`` seconds (or once it failed); kernla's compiled engine runs them all."""
    rows: list = []
    stopped: dict[str, str] = {}  # implementation -> why it does not run at larger N
    last: dict[str, tuple[float, float]] = {}  # implementation -> (pairs, seconds) of its last run
    for n in CURVES[case]:
        if case == "gauss":
            label, cases, pairs = f"Gaussian matvec D=3 N=M={n:.0e}", gaussian_cases(n, rng), n * n
        elif case == "lse":
            label, cases, pairs = f"LogSumExp D=3 N=M={n:.0e}", lse_cases(n, rng), n * n
        else:
            d = 3 if case == "knn3" else 50
            cases, pairs = knn_cases(n, d, rng)
            label = f"argKmin K=10 D={d} {n // 10:.0e}x{n:.0e}"
        for name in cases:
            if name in stopped:
                cases[name] = stopped[name]
            elif name != "kernla cpu" and name in last and last[name][1] * pairs / last[name][0] > cap:
                estimate = last[name][1] * pairs / last[name][0]
                stopped[name] = cases[name] = f"not run: ~{estimate:.2g} s estimated (over --cap {cap:g} s)"
        new = rows_for(label, cases, pairs, repeat, warmup=not last, budget=cap)
        for row in new:
            if isinstance(row[2], float):
                last[row[1]] = (pairs, row[2])
            elif row[5].startswith("failed"):
                stopped.setdefault(row[1], "not run: failed at a smaller N")
        rows += new
        print(f"  done: {label}", file=sys.stderr, flush=True)
    return rows


def compile_costs() -> list:
    """First call of a new formula (compile included) and a cached kernel in a new process."""
    fresh = f"Exp(-G * SqDist(X, Y)) * B + {time.time_ns() % 100000}.5 * B"  # a never-seen formula
    code = (
        "import time, numpy as np; t0 = time.perf_counter(); from kernla import Genred;"
        f"g = Genred({fresh!r}, ['X = Vi(3)', 'Y = Vj(3)', 'B = Vj(1)', 'G = Pm(1)'], axis=1);"
        "x = np.ones((100, 3), np.float32); t = time.perf_counter();"
        "g(x, x, x[:, :1], np.float32(1.0), backend='cpu'); print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, KERNLA_CACHE_DIR=cache)
        first = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout)
        again = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout)
    x = np.ones((500, 3), np.float32)
    kern = Genred("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(1)", "G = Pm(1)"], axis=1)
    warm = measure(lambda: kern(x, x, x[:, :1], np.float32(1.0), backend="cpu"), repeat=200, budget=5)
    return [
        ["first call of a new formula (compile included)", first, "< 1.5 s"],
        ["cached kernel, first call in a new process", again, "< 50 ms"],
        ["warm call, N = M = 500", warm.wall, "< 100 µs"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--curves", action="store_true", help="each case at several N (time against N)")
    parser.add_argument("--cap", type=float, default=5.0, help="--curves: longest run allowed (s, default 5)")
    add_json_option(parser)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    repeat = 3 if args.quick or args.curves else 5
    rows = []
    if args.curves:
        for case in CURVES:
            rows += curve_rows(case, rng, repeat, args.cap)
    else:
        for n in (10_000,) if args.quick else (10_000, 100_000):
            rows += rows_for(f"Gaussian matvec D=3 N=M={n:.0e}", gaussian_cases(n, rng), n * n, repeat)
        for n, d in ((100_000, 3), (20_000, 50)) if not args.quick else ((20_000, 3), (20_000, 50)):
            cases, pairs = knn_cases(n, d, rng)
            rows += rows_for(f"argKmin K=10 D={d} {n // 10:.0e}x{n:.0e}", cases, pairs, repeat)
        n = 20_000 if args.quick else 50_000
        rows += rows_for(f"LogSumExp D=3 N=M={n:.0e}", lse_cases(n, rng), n * n, repeat)
    print(
        table(
            ["case", "implementation", "wall (s)", "CPU (s)", "billion pairs/s", "vs pykeops"],
            rows,
            title=f"CPU reductions, float32, median of {repeat} — {machine()}"
            f"{'' if pykeops_torch else ' (pykeops not installed)'}",
        )
    )
    print(table(["what", "seconds", "target"], compile_costs(), title="Compile and call overheads"))
    n_in_label = r"N=M=(\S+)$|\S+x(\S+)$"  # "... N=M=1e+04" or "... 1e+03x1e+04" (queries x points)
    note = (
        "One process, all implementations side by side at each N; --curves stops a peer where its next run would "
        f"exceed --cap {args.cap:g} s (its later rows say 'not run'). Ratios are same-run; with other jobs on the "
        "box, wall times grow with the load: the CPU-time plot (all threads of this process) is steadier."
    )
    axes = dict(
        series="implementation", x_regex=n_in_label, xlabel="N (N = M points; argKmin: N points, N / 10 queries)"
    )
    title = "CPU reductions, float32: kernla against its NumPy engine, dense torch and pykeops"
    specs = [
        plot(0, "case", "wall (s)", title + " (wall time)", ylabel="wall seconds (median)", **axes),
        # process CPU time (all threads): steadier than wall time when other jobs share the box
        plot(0, "case", "CPU (s)", title + " (CPU time)", ylabel="process CPU seconds, all threads (median)", **axes),
    ]
    write_json(args.json, specs, note if args.curves else "")


if __name__ == "__main__":
    main()
