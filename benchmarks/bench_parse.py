"""Time to parse large formula strings (issue 15: "parse a 512 KB formula in well under a second").

Three shapes of about 512 KB each, with the aliases ``X = Vi(0, 3)``, ``Y = Vj(1, 3)``, ``G = Pm(2, 1)``:

- ``nested``: 524,288 parentheses around ``X`` (deep nesting, one node);
- ``repeated``: ``Exp(-G*SqDist(X,Y))*X`` added 23,831 times (many tokens, few distinct nodes);
- ``distinct``: ``X+X+…+X`` (262,144 terms: as many distinct nodes, each built and interned).

Each run starts with no formula node alive but the aliases' variables, so every run builds its
nodes anew; the time stops before the result is dropped (freeing it is not parsing). Median of
``--repeat`` runs; µs per token counts the tokens of the string, µs per node the distinct nodes of the result.

    python benchmarks/bench_parse.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

from kernla.formula.parser import _TOKEN, parse, parse_aliases  # noqa: E402

CASES = {
    "nested": "(" * 262_144 + "X" + ")" * 262_144,
    "repeated": "+".join(["Exp(-G*SqDist(X,Y))*X"] * 23_831),
    "distinct": "X" + "+X" * 262_143,
}


def _time_parse(text: str, aliases: dict, repeat: int) -> tuple[float, int]:
    """Median seconds of ``parse(text, aliases)`` and the distinct nodes of its result."""
    times, size = [], 0
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        node = parse(text, aliases)
        times.append(time.perf_counter() - t0)
        size = node.size()
        del node
    return statistics.median(times), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    aliases = parse_aliases(["X = Vi(0, 3)", "Y = Vj(1, 3)", "G = Pm(2, 1)"])
    rows = []
    for name, text in CASES.items():
        seconds, nodes = _time_parse(text, aliases, args.repeat)
        tokens = sum(1 for _ in _TOKEN.finditer(text))
        rows.append(
            [name, f"{len(text) / 1024:.0f}", tokens, nodes, seconds, seconds / tokens * 1e6, seconds / nodes * 1e6]
        )
    print(f"{machine()}, load average {os.getloadavg()[0]:.1f}; median of {args.repeat}")
    print(table(["case", "KB", "tokens", "nodes", "seconds", "µs/token", "µs/node"], rows))


if __name__ == "__main__":
    main()
