"""What a user waits for a new formula, and per call: kernla's CPU engine against pykeops, in one run.

One table: the first call of a never-seen Gaussian kernel product ``Exp(-SqDist(X, Y) * Inv(IntCst(c))) * B``
(float32, 7 points, a new integer ``c`` each time) at D ∈ {3, 256, 1024}, each in a new process (median over
``--repeat`` formulas), timed inside that process around the call: kernla with its precompiled prelude
already in the cache ("new formula": what every formula after the first one costs) and with an empty
cache ("first formula": the prelude is precompiled too, once per compiler, flags and dtype), pykeops'
``pykeops.numpy.Genred`` of the same formula in a cache folder where its core module and one warm-up
formula were built beforehand (not timed) — then the call overhead at N = M = 1 of both (median of 5
rounds of the mean over many calls, wall and CPU), through ``Genred`` on NumPy arrays and through torch
``LazyTensor``.
Beside each wall time: the CPU seconds of the process and its compilers (RUSAGE_SELF + RUSAGE_CHILDREN),
which a loaded box does not inflate the way it inflates wall time.

``--baseline PATH`` adds kernla's "new formula" rows run by the kernla found at PATH (e.g. a checkout of
main, without the precompiled prelude), in the same run.

    python benchmarks/bench_compile.py [--repeat 3] [--baseline /work/main] [--json PATH]
"""

from __future__ import annotations

import argparse
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

#: a child process: the N = M = 1 call overhead of one library through Genred (NumPy) and LazyTensor (torch)
OVERHEAD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    peer = sys.argv[1]
    if peer == "kernla":
        from kernla import Genred, LazyTensor
    else:
        from pykeops.numpy import Genred
        from pykeops.torch import LazyTensor
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

    x = np.random.default_rng(4).random((1, 3), dtype=np.float32)
    g = Genred("Exp(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"], axis=1)
    xt = torch.rand(1, 1, 3)
    lazy = lambda: (-((LazyTensor(xt) - LazyTensor(xt.transpose(0, 1))) ** 2).sum(-1)).exp().sum(1)
    print(json.dumps([per_call(lambda: g(x, x, backend="CPU"), 2000), per_call(lazy, 1000)]))
""")


def child(code: str, *args: object, env: dict) -> list[float]:
    run = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"the benchmark's child failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])  # (pykeops' messages may come first)


def first_calls(peer: str, d: int, repeat: int, env: dict, empty: bool) -> tuple[float, float]:
    """Median (wall, CPU) of ``repeat`` first calls of new formulas; ``empty``: each in an empty cache.

    Otherwise one warm-up formula first (not timed) builds kernla's precompiled prelude, or pykeops'
    core module, in a private cache folder (``KERNLA_CACHE_DIR``, ``KEOPS_CACHE_FOLDER``) the new ones share.
    """
    var = {"kernla": "KERNLA_CACHE_DIR", "pykeops": "KEOPS_CACHE_FOLDER"}[peer]
    runs = []
    with tempfile.TemporaryDirectory() as warm:
        if not empty:
            child(FIRST_CALL, peer, d, new_constant(), env={**env, var: warm})
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as fresh:
                runs.append(child(FIRST_CALL, peer, d, new_constant(), env={**env, var: fresh if empty else warm}))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def new_constant() -> str:
    """An integer no formula compiled before has (so that the formula is new; pykeops takes no float literal)."""
    return str(2 + uuid.uuid4().int % 10**9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="new formulas per row (median)")
    ap.add_argument("--baseline", help="a kernla checkout whose new-formula times to add")
    add_json_option(ap)
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": THREADS}
    load0 = os.getloadavg()[0]
    rows = []
    for d in DIMS:
        new, first = first_calls("kernla", d, args.repeat, env, False), first_calls("kernla", d, args.repeat, env, True)
        peer: tuple[float | None, float | None] = (None, None)
        if pykeops is not None:
            peer = first_calls("pykeops", d, args.repeat, env, False)
        ratio = None if peer[0] is None else peer[0] / new[0]
        base = (None, None)
        if args.baseline:
            base = first_calls("kernla", d, args.repeat, {**env, "PYTHONPATH": args.baseline}, False)
        rows.append([f"new formula, D={d}", *new, *first, *peer, ratio, *base])
    mine = child(OVERHEAD, "kernla", env=env)
    with tempfile.TemporaryDirectory() as folder:  # pykeops builds its kernels in a folder of its own
        theirs = child(OVERHEAD, "pykeops", env={**env, "KEOPS_CACHE_FOLDER": folder}) if pykeops else [None, None]
    for k, via in enumerate(("Genred on NumPy", "LazyTensor on torch")):
        us, peer_us = [t * 1e6 for t in mine[k]], [None, None] if theirs[k] is None else [t * 1e6 for t in theirs[k]]
        ratio = None if peer_us[0] is None else peer_us[0] / us[0]
        rows.append([f"call overhead N=M=1 µs, {via}", *us, None, None, *peer_us, ratio, None, None])
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
