"""What a user waits for a new formula, and per call: kernla's CPU engine against pykeops, in one run.

One table: the first call of a never-seen Gaussian kernel product ``Exp(-SqDist(X, Y) * Inv(IntCst(c))) * B``
(float32, 7 points, a new integer ``c`` each time) at D ∈ {3, 256, 1024}, each in a new process (median over
``--repeat`` formulas), timed inside that process around the call: kernla with its precompiled prelude
already in the cache ("new formula": what every formula after the first one costs) and with an empty
cache ("first formula": the prelude is precompiled too, once per compiler, flags and dtype), pykeops'
``pykeops.numpy.Genred`` of the same formula in a cache folder where its core module and one warm-up
formula were built beforehand (not timed) — then the call overhead at N = M = 1 of both (median of 5
rounds of the mean over many calls, wall and CPU), through ``Genred`` on NumPy arrays and on torch tensors,
and through a torch ``LazyTensor`` Gaussian built and reduced at each call as users write it
(``x_i = LazyTensor(x[:, None, :])``, ``y_j = LazyTensor(y[None, :, :])``, ``K = (-((x_i - y_j) ** 2).sum(-1)).exp()``,
then ``K.sum(dim=1)``, ``K @ b``, and ``K.sum(dim=1)`` with ``x.requires_grad``: the forward only).
Beside each wall time: the CPU seconds of the process and its compilers (RUSAGE_SELF + RUSAGE_CHILDREN),
which a loaded box does not inflate the way it inflates wall time.

``--baseline PATH`` adds kernla's "new formula" and per-call rows run by the kernla found at PATH (e.g. a
checkout of main), in the same run; ``--calls-only`` runs the per-call rows alone (under a minute).

    python benchmarks/bench_compile.py [--repeat 3] [--baseline /work/main] [--calls-only] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_json_option, machine, optional, table, write_json  # noqa: E402

pykeops = optional("pykeops")
DIMS = (3, 256, 1024)
THREADS = "2"

#: a child process: import first (not timed), then one first call of a new formula (wall, CPU with compilers)
FIRST_CALL = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    peer, d, c = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if peer == "kernla":
        from kernla import Genred
    else:
        from pykeops.numpy import Genred
    x = np.random.default_rng(0).random((7, d), dtype=np.float32)

    def cpu():
        return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
                   for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))

    t0, c0 = time.perf_counter(), cpu()
    g = Genred(f"Exp(-SqDist(X, Y) * Inv(IntCst({c}))) * B", [f"X = Vi({d})", f"Y = Vj({d})", "B = Vj(1)"], axis=1)
    g(x, x, x[:, :1], backend="CPU")
    print(json.dumps([time.perf_counter() - t0, cpu() - c0]))
""")

#: a child process: the N = M = 1 call overhead of one library, through Genred (NumPy, torch) and torch LazyTensor
#: expressions built and reduced at each call as users write them (PER_CALL names the rows, in order)
OVERHEAD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    peer = sys.argv[1]
    if peer == "kernla":
        from kernla import Genred, LazyTensor
        from kernla.torch import Genred as TorchGenred
    else:
        from pykeops.numpy import Genred
        from pykeops.torch import Genred as TorchGenred, LazyTensor
    import torch
    torch.set_num_threads(2)

    def per_call(fn, calls):
        fn()
        walls, cpus = [], []
        for _ in range(5):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            walls.append((time.perf_counter() - t0) / calls)
            cpus.append((time.process_time() - c0) / calls)
        return sorted(walls)[2], sorted(cpus)[2]

    formula, aliases = "Exp(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"]
    g, gt = Genred(formula, aliases, axis=1), TorchGenred(formula, aliases, axis=1)
    x = np.random.default_rng(4).random((1, 3), dtype=np.float32)
    xt, yt, bt = torch.rand(1, 3), torch.rand(1, 3), torch.rand(1, 1)
    xg = xt.clone().requires_grad_()

    def gaussian(x, y):
        x_i, y_j = LazyTensor(x[:, None, :]), LazyTensor(y[None, :, :])
        return (-((x_i - y_j) ** 2).sum(-1)).exp()

    rows = [
        per_call(lambda: g(x, x, backend="CPU"), 2000),
        per_call(lambda: gt(xt, yt, backend="CPU"), 2000),
        per_call(lambda: gaussian(xt, yt).sum(dim=1), 1000),
        per_call(lambda: gaussian(xt, yt) @ bt, 1000),
        per_call(lambda: gaussian(xg, yt).sum(dim=1), 500),
    ]
    print(json.dumps(rows))
""")
#: the rows of OVERHEAD
PER_CALL = (
    "Genred on NumPy",
    "Genred on torch",
    "LazyTensor on torch, K.sum(dim=1)",
    "LazyTensor on torch, K @ b",
    "LazyTensor on torch, x.requires_grad, K.sum(dim=1)",
)


def child(code: str, *args: object, env: dict) -> list:
    run = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"the benchmark's child failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])  # (pykeops' messages may come first)


#: where each library keeps what it compiles
CACHE_VAR = {"kernla": "KERNLA_CACHE_DIR", "pykeops": "KEOPS_CACHE_FOLDER"}


def warmed(peer: str, env: dict, folder: str) -> dict:
    """``env`` with ``peer``'s cache in ``folder``, where one warm-up formula (not timed) built kernla's
    precompiled prelude or pykeops' core module, which every later formula shares."""
    env = {**env, CACHE_VAR[peer]: folder}
    child(FIRST_CALL, peer, 3, new_constant(), env=env)
    return env


def first_calls(peer: str, d: int, repeat: int, env: dict, empty: bool = False) -> tuple[float, float]:
    """Median (wall, CPU) of ``repeat`` first calls of new formulas in ``env``'s cache (``empty``: a new one each)."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as fresh:
            where = {**env, CACHE_VAR[peer]: fresh} if empty else env
            runs.append(child(FIRST_CALL, peer, d, new_constant(), env=where))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def new_constant() -> str:
    """An integer no formula compiled before has (so that the formula is new; pykeops takes no float literal)."""
    return str(2 + uuid.uuid4().int % 10**9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="new formulas per row (median)")
    ap.add_argument("--baseline", help="a kernla checkout whose new-formula times to add")
    ap.add_argument("--calls-only", action="store_true", help="only the per-call rows (under a minute)")
    add_json_option(ap)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": THREADS}
    load0 = os.getloadavg()[0]
    rows = []
    with contextlib.ExitStack() as stack:
        folders = [stack.enter_context(tempfile.TemporaryDirectory()) for _ in range(3)]
        warm = not args.calls_only
        mine_env = warmed("kernla", env, folders[0]) if warm else env
        peer_env = warmed("pykeops", env, folders[1]) if warm and pykeops is not None else None
        base_env = (
            warmed("kernla", {**env, "PYTHONPATH": args.baseline}, folders[2]) if warm and args.baseline else None
        )
        for d in () if args.calls_only else DIMS:
            new, first = (
                first_calls("kernla", d, args.repeat, mine_env),
                first_calls("kernla", d, args.repeat, env, True),
            )
            peer = (None, None) if peer_env is None else first_calls("pykeops", d, args.repeat, peer_env)
            ratio = None if peer[0] is None else peer[0] / new[0]
            base = (None, None) if base_env is None else first_calls("kernla", d, args.repeat, base_env)
            rows.append([f"new formula, D={d}", *new, *first, *peer, ratio, *base])
    mine = child(OVERHEAD, "kernla", env=env)
    theirs: list = [None] * len(PER_CALL)
    if pykeops is not None:
        with tempfile.TemporaryDirectory() as folder:  # pykeops builds its kernels in a folder of its own
            theirs = child(OVERHEAD, "pykeops", env={**env, "KEOPS_CACHE_FOLDER": folder})
    base = child(OVERHEAD, "kernla", env={**env, "PYTHONPATH": args.baseline}) if args.baseline else None
    for k, via in enumerate(PER_CALL):
        us = [t * 1e6 for t in mine[k]]
        peer_us: list[float | None] = [None, None] if theirs[k] is None else [t * 1e6 for t in theirs[k]]
        ratio = None if peer_us[0] is None else peer_us[0] / us[0]
        base_us = [None, None] if base is None else [t * 1e6 for t in base[k]]
        rows.append([f"call overhead N=M=1 µs, {via}", *us, None, None, *peer_us, ratio, *base_us])
    print(
        f"machine: {machine()}; OMP threads {THREADS}; load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs may share this box); median of {args.repeat} formulas"
    )
    headers = ["row", "kernla s", "kernla CPU s", "first formula s", "first CPU s", "pykeops s", "pykeops CPU s"]
    headers += ["pykeops / kernla", "baseline kernla s", "baseline CPU s"]
    print(table(headers, rows, "bench_compile: a new formula's first call, and per call"))
    write_json(args.json)


if __name__ == "__main__":
    main()
