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
#: the load and the clocks when the script started (``--json`` records them beside the end's)
_START = (os.getloadavg()[0], time.perf_counter(), time.process_time())


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """The ``--json PATH`` option: also write this run's tables (and plot specs) there, for the docs' plots."""
    parser.add_argument("--json", metavar="PATH", help="also write the tables to PATH (JSON, for docs/hooks.py)")


def plot(
    table: int,
    x: str,
    y: str | Sequence[str],
    title: str,
    *,
    series: str | None = None,
    panel: str | None = None,
    xlabel: str = "N",
    ylabel: str = "seconds (median)",
    **more: object,
) -> dict:
    """A plot spec for :func:`write_json`: how docs/hooks.py draws ``y`` against ``x`` (log-log) from a table.

    ``table`` is the table's index in this run; ``y`` one column or several (one curve each); ``series`` a
    column naming the curve of each row (``"kernla"``, ``"pykeops"``…); ``panel`` a column naming the subplot;
    ``xlabel`` and ``ylabel`` say what the axes are, with units. ``more``: ``x_regex`` (N read from inside the x
    column's label, the rest of the label names the panel), ``skip_if`` ({column: value}: rows left out),
    ``labels`` ({y column: legend label}, ``{column}`` fields filled from the row), ``references`` ({column:
    label}: one dashed curve over all rows, e.g. what a dense matrix would need), ``hline`` ({"y": 1.0,
    "label": "parity"}: a dotted level, e.g. for a ratio), ``panel_titles`` ({panel: title}). A cell that is
    not a number (a peer not run at that N) gives no point: that peer's curve stops there.

    >>> plot(0, "N", "wall (s)", "Sum", series="implementation")["series"]
    'implementation'
    """
    spec = {"table": table, "x": x, "y": y if isinstance(y, str) else list(y), "title": title}
    spec.update({"xlabel": xlabel, "ylabel": ylabel, **more})
    spec.update({key: value for key, value in (("series", series), ("panel", panel)) if value is not None})
    return spec


def write_json(path: str | None, plots: Sequence[dict] = (), note: str = "") -> None:
    """Write every table made in this run to ``path`` (nothing when it is None), with :func:`plot` specs.

    The file also records the machine, the date, the command, the load average at the start and the end of
    the run (other jobs may share the box) and the run's wall and process CPU seconds.
    """
    if path is None:
        return
    load, wall, cpu = _START
    data = {
        "script": "benchmarks/" + os.path.basename(sys.argv[0]),
        "argv": sys.argv[1:],
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "note": note,
        "load": f"1-minute load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end of the run, on "
        f"{os.cpu_count()} cores; the run took {time.perf_counter() - wall:.0f} s wall, "
        f"{time.process_time() - cpu:.0f} s CPU (this process)",
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
