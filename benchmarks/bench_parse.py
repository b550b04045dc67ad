"""Time to parse large formula strings (issue 15: "parse a 512 KB formula in well under a second").

Three shapes of about 512 KB each, with the aliases ``X = Vi(0, 3)``, ``Y = Vj(1, 3)``, ``G = Pm(2, 1)``:

- ``nested``: 524,288 parentheses around ``X`` (deep nesting, one node);
- ``repeated``: ``Exp(-G*SqDist(X,Y))*X`` added 23,831 times (many tokens, few distinct nodes);
- ``distinct``: ``X+X+…+X`` (262,144 terms: as many distinct nodes, each built and interned).

Each run starts with no formula node alive but the aliases' variables, so every run builds its
nodes anew; the time stops before the result is dropped (freeing it is not parsing). Medians of
``--repeat`` runs of wall time, CPU time (the box may be shared: CPU time is the steadier figure) and
of ``GC after``: a young-generation collection just after the parse (``gc.collect(1)``), the work a
parse leaves to the young collections when it paused the collector (see
``kernla.formula.parser._collector_paused``: since session 22 a long parse moves its objects to the oldest
generation, which only full collections visit, so it leaves them none);
µs per token counts the tokens of the string, µs per node the distinct nodes of the result, both from
wall time plus ``GC after``.

``--against REV`` runs the same cases, interleaved, on the kernla of git revision ``REV`` too (its
``kernla/`` folder exported to a temporary folder), each case in a fresh process per tree, and prints
both, one row per case and tree, with the ratio of REV's CPU time to the row's.

``--bytecodes`` adds a figure that does not depend on the load of a shared box: the Python bytecodes
the parse interprets per token (``sys.settrace`` counting opcodes), on the same shape 1/32 the
size (tracing is slow). It leaves out the C-level work (allocations, dict inserts), a good part of the time.

    python benchmarks/bench_parse.py [--repeat 3] [--against REV] [--bytecodes]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _cases(scale: int = 1) -> dict[str, str]:
    """The three formula strings, about 512 KB each (``scale`` times shorter)."""
    return {
        "nested": "(" * (262_144 // scale) + "X" + ")" * (262_144 // scale),
        "repeated": "+".join(["Exp(-G*SqDist(X,Y))*X"] * (23_831 // scale)),
        "distinct": "X" + "+X" * (262_144 // scale - 1),
    }


CASES = _cases()
#: how much shorter the strings whose bytecodes --bytecodes counts are
BYTECODE_SCALE = 32


def _bytecodes_per_token(text: str) -> float:
    """The Python bytecodes that ``parse(text, aliases)`` interprets, per token of ``text``."""
    from kernla.formula.parser import _TOKEN, parse, parse_aliases  # the kernla on sys.path: this tree's or REV's

    aliases = parse_aliases(["X = Vi(0, 3)", "Y = Vj(1, 3)", "G = Pm(2, 1)"])
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        frame.f_trace_opcodes = True
        count += event == "opcode"
        return trace

    sys.settrace(trace)
    try:
        node = parse(text, aliases)
    finally:
        sys.settrace(None)
    del node
    return count / sum(1 for _ in _TOKEN.finditer(text))


def _time_parse(text: str, repeat: int) -> dict:
    """Medians of wall, CPU and after-parse collection seconds of ``parse(text, aliases)``, and its node count."""
    from kernla.formula.parser import _TOKEN, parse, parse_aliases  # the kernla on sys.path: this tree's or REV's

    aliases = parse_aliases(["X = Vi(0, 3)", "Y = Vj(1, 3)", "G = Pm(2, 1)"])
    walls, cpus, after, size = [], [], [], 0
    for _ in range(repeat):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        node = parse(text, aliases)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        t0 = time.perf_counter()
        gc.collect(1)
        after.append(time.perf_counter() - t0)
        size = node.size()
        del node
    tokens = sum(1 for _ in _TOKEN.finditer(text))
    med = statistics.median
    return {"wall": med(walls), "cpu": med(cpus), "after": med(after), "nodes": size, "tokens": tokens}


def _run_case(case: str, repeat: int, kernla_root: Path, bytecodes: bool) -> dict:
    """:func:`_time_parse` of ``case`` in a fresh process that imports kernla from ``kernla_root``."""
    env = dict(os.environ, PYTHONPATH=str(kernla_root))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--repeat", str(repeat)]
    cmd += ["--bytecodes"] if bytecodes else []
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=kernla_root).stdout
    return json.loads(out.splitlines()[-1])


def _export(rev: str, into: Path) -> Path:
    """The ``kernla/`` folder of git revision ``rev``, written under ``into``."""
    archive = into / "kernla.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "kernla"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--against", metavar="REV", help="a git revision to measure side by side")
    ap.add_argument("--bytecodes", action="store_true", help="count the bytecodes interpreted per token")
    ap.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)  # one case, JSON out: for --against
    args = ap.parse_args()
    if args.worker:
        result = _time_parse(CASES[args.worker], args.repeat)
        if args.bytecodes:
            result["bytecodes"] = _bytecodes_per_token(_cases(BYTECODE_SCALE)[args.worker])
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT}
        if args.against:
            trees = {args.against: _export(args.against, Path(tmp)), **trees}
        rows = []
        for name, text in CASES.items():
            r = {label: _run_case(name, args.repeat, root, args.bytecodes) for label, root in trees.items()}
            for label, t in r.items():
                total = t["wall"] + t["after"]
                row: list = [name, f"{len(text) / 1024:.0f}", t["tokens"], t["nodes"], label, t["wall"], t["cpu"]]
                row += [t["after"], total / t["tokens"] * 1e6, total / t["nodes"] * 1e6]
                if args.bytecodes:
                    row.append(f"{t['bytecodes']:.0f}")
                if args.against:
                    row.append(f"{r[args.against]['cpu'] / t['cpu']:.2f}")
                rows.append(row)
    heads = ["case", "KB", "tokens", "nodes", "kernla", "seconds", "CPU s", "GC after", "µs/token", "µs/node"]
    heads += [f"bytecodes/token (1/{BYTECODE_SCALE} size)"] if args.bytecodes else []
    heads += [f"CPU ratio {args.against} / row"] if args.against else []
    print(f"{machine()}, load average {os.getloadavg()[0]:.1f}; median of {args.repeat}")
    print(table(heads, rows))


if __name__ == "__main__":
    main()
