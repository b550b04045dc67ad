"""Shared helpers for the benchmark scripts: timing (medians of wall and CPU time) and tables.

>>> t = measure(lambda: sum(range(1000)), repeat=3)
>>> t.wall > 0 and t.runs == 3
True
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    wall: float  # median wall-clock seconds
    cpu: float  # median process CPU seconds
    runs: int


def measure(fn: Callable[[], object], repeat: int = 5, warmup: int = 1, budget: float = 20.0) -> Timing:
    """Median wall and CPU time of ``fn()`` over ``repeat`` runs (fewer if ``budget`` seconds run out)."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    start = time.perf_counter()
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if time.perf_counter() - start > budget:
            break
    return Timing(statistics.median(walls), statistics.median(cpus), len(walls))


def optional(module: str):
    """The imported module, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module(module)
    except Exception:  # peers are optional; any import failure means "not available"
        return None


def host(a):
    """A NumPy copy of a NumPy, torch (any device) or CuPy array, in its own dtype (for checks)."""
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


#: every table made in this run (title, headers, rows), for ``--json``
TABLES: list[dict] = []


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """The ``--json PATH`` option: also write this run's tables (and plot specs) there, for the docs' plots."""
    parser.add_argument("--json", metavar="PATH", help="also write the tables to PATH (JSON, for docs/hooks.py)")


def write_json(path: str | None, plots: Sequence[dict] = (), note: str = "") -> None:
    """Write every table made in this run to ``path`` (nothing when it is None).

    ``plots`` says how docs/hooks.py draws time against N from a table: ``{"table": index, "x": column,
    "y": column or [columns], "series": column naming the curve (else one curve per y column),
    "panel": column naming the subplot, "title": ..., "skip_if": {column: value} (rows left out)}``;
    ``"x_regex"`` reads N from inside the x column's label.
    """
    if path is None:
        return
    data = {
        "script": "benchmarks/" + os.path.basename(sys.argv[0]),
        "argv": sys.argv[1:],
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "note": note,
        "load": f"1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores when the run ended",
        "tables": TABLES,
        "plots": list(plots),
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=lambda v: v.item() if hasattr(v, "item") else str(v))
        f.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> str:
    """A plain-text table (also valid Markdown); kept in :data:`TABLES` for ``--json``."""
    TABLES.append({"title": title, "headers": list(headers), "rows": [list(r) for r in rows]})
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(headers))]
    lines = [] if title is None else [f"\n### {title}\n"]
    for n, r in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) < 1e4 else f"{c:.3e}"
    return str(c)
