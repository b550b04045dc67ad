"""mkdocs hooks of the kernla site (mkdocs.yml ``hooks:``): the gallery, the benchmark plots, the API check.

- Gallery: every ``examples/*.py`` (but ``_common.py``) runs as a user runs it, ``python examples/NAME.py``,
  with ``KERNLA_EXAMPLE_SCALE`` (default here 0.1: every example shrinks its N by that factor) and
  ``KERNLA_FIGURES`` (where it writes its figures). Its page ``gallery/NAME.md`` shows the docstring, the
  printed output, the figures and the source; the nav's Gallery section lists them all, so a new example
  needs no edit here or in mkdocs.yml. An example that exits non-zero fails the build. Results are kept in
  ``build/gallery/`` keyed by the example, ``kernla/`` and the scale, so ``mkdocs serve`` reruns only what changed.
- Benchmark plots: ``benchmark_plots.md`` is drawn from ``benchmarks/results/*.json`` (what the benchmark
  scripts write with ``--json PATH``): time against N, log-log, one curve per implementation.
- API check: every name in the ``__all__`` of the modules in ``API_MODULES`` (and ``ENGINE_NAMES``) has an
  entry in the rendered ``api.md`` and a docstring; a missing one is an error.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import griffe
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mkdocs loads this file by path: docs/ is not on sys.path
from griffe_rst import RestToMarkdown, rest_to_markdown  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "build" / "gallery"
SCALE = os.environ.get("KERNLA_EXAMPLE_SCALE", "0.1")
EXAMPLE_TIMEOUT_S = 600

#: the modules whose ``__all__`` the API reference must cover (kernla.numpy and kernla.torch re-export kernla's)
API_MODULES = (
    "kernla",
    "kernla.kernels",
    "kernla.linalg",
    "kernla.linalg.truncation",
    "kernla.cluster.numpy",
    "kernla.cluster.torch",
    "kernla.models",
    "kernla.models.metrics",
    "kernla.distributed",
    "kernla.formula",
    "kernla.formula.ops",
    "kernla.reductions",
)
#: kernla.engines has no ``__all__``: its public names
ENGINE_NAMES = ("BACKENDS", "get_engine", "register_engine", "resolve_backend")

log = logging.getLogger("mkdocs.plugins.kernla")


def examples() -> list[Path]:
    """The gallery's scripts, in name order."""
    return sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def title_of(script: Path) -> str:
    """The first line of the script's docstring."""
    return (inspect.cleandoc(_docstring(script)).splitlines() or [script.stem])[0].rstrip(".:")


def _docstring(script: Path) -> str:
    import ast  # deferred: only the gallery reads the examples' docstrings

    return ast.get_docstring(ast.parse(script.read_text())) or ""


# --- mkdocs events ---------------------------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    """Expand the nav's Gallery entry into the gallery's index and one page per example."""
    pages = [{"Gallery": "gallery/index.md"}] + [{p.stem.replace("_", " "): f"gallery/{p.stem}.md"} for p in examples()]
    for k, item in enumerate(config["nav"] or []):
        if isinstance(item, dict) and "Gallery" in item:
            config["nav"][k] = {"Gallery": pages}
    return config


def on_files(files: Files, config: Any) -> Files:
    """Add the gallery's pages and figures and the benchmark plots page (all generated)."""
    rows = []
    for script in examples():
        result = run_example(script)
        for png in sorted(result.glob("*.png")):
            files.append(File.generated(config, f"gallery/{png.name}", content=png.read_bytes()))
        files.append(File.generated(config, f"gallery/{script.stem}.md", content=gallery_page(script, result)))
        meta = json.loads((result / "meta.json").read_text())
        rows.append(f"| [{title_of(script)}]({script.stem}.md) | `examples/{script.name}` | {meta['seconds']:.1f} s |")
    index = [
        "# Gallery",
        "",
        "Every script in `examples/` ran while this site was built, at a reduced size",
        f"(`KERNLA_EXAMPLE_SCALE={SCALE}`: each example's N times {SCALE}); its page shows what it printed and the",
        "figures it drew. Run one yourself with `python examples/NAME.py` (full size) after",
        '`pip install -e ".[examples]"`; `--help` lists its options.',
        "",
        "| example | script | time here (reduced size) |",
        "|---|---|---|",
        *rows,
        "",
    ]
    files.append(File.generated(config, "gallery/index.md", content="\n".join(index)))
    plots, page = benchmark_plots()
    for name, png in plots.items():
        files.append(File.generated(config, f"benchmark_plots/{name}", content=png))
    files.append(File.generated(config, "benchmark_plots.md", content=page))
    return files


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    """Fail the build when a public name has no entry in the API reference or no docstring."""
    if page.file.src_uri == "api.md":
        missing = [name for name in public_names() if not any(f'id="{a}"' in html for a in anchors(name))]
        if missing:
            raise PluginError(f"api.md has no entry for these public names: {', '.join(missing)}")
        undocumented = [name for name in public_names() if not has_docstring(name)]
        if undocumented:
            raise PluginError(f"public names without a docstring: {', '.join(undocumented)}")
    return html


# --- the API check ---------------------------------------------------------------------------------------------


def public_names() -> list[str]:
    """Every public name, as ``module.name``."""
    names = []
    for module in API_MODULES:
        mod = importlib.import_module(module)
        names += [f"{module}.{n}" for n in mod.__all__ if not n.startswith("__")]
    return names + [f"kernla.engines.{n}" for n in ENGINE_NAMES]


def anchors(dotted: str) -> list[str]:
    """The ids an entry of ``module.name`` may have: its public path, or where it is defined (a function
    named like its own module, ``kernla.distributed.knn.knn``, is rendered there)."""
    module, name = dotted.rsplit(".", 1)
    obj = getattr(importlib.import_module(module), name)
    where = getattr(obj, "__module__", None)
    return [dotted] + ([f"{where}.{name}"] if isinstance(where, str) and callable(obj) else [])


def has_docstring(dotted: str) -> bool:
    """Whether griffe (what the reference renders) finds a docstring for ``module.name``."""
    module, name = dotted.rsplit(".", 1)
    loaded = _griffe_package()
    obj = loaded[module.removeprefix("kernla.")] if module != "kernla" else loaded
    try:
        target = obj[name]
        doc = target.docstring
    except (KeyError, griffe.AliasResolutionError):
        return False
    return doc is not None and bool(doc.value.strip())


_PACKAGE: Any = None


def _griffe_package() -> Any:
    """kernla as griffe (and so the reference) sees it, with the same extension."""
    global _PACKAGE
    if _PACKAGE is None:
        extensions = griffe.load_extensions(RestToMarkdown)
        _PACKAGE = griffe.load("kernla", search_paths=[str(ROOT)], resolve_aliases=True, extensions=extensions)
    return _PACKAGE


# --- the gallery -----------------------------------------------------------------------------------------------


def _key(script: Path) -> str:
    digest = hashlib.sha256(SCALE.encode())
    for path in [script, EXAMPLES / "_common.py", *sorted((ROOT / "kernla").rglob("*.py"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_example(script: Path) -> Path:
    """Run one example (or reuse its cached run); the folder holding its output, figures and meta.json."""
    folder = CACHE / script.stem
    key = _key(script)
    meta = folder / "meta.json"
    if meta.exists() and json.loads(meta.read_text()).get("key") == key:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    env = {**os.environ, "KERNLA_EXAMPLE_SCALE": SCALE, "KERNLA_FIGURES": str(folder), "MPLBACKEND": "Agg"}
    log.info("gallery: running examples/%s (KERNLA_EXAMPLE_SCALE=%s)", script.name, SCALE)
    start = time.perf_counter()
    try:
        run = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise PluginError(f"examples/{script.name} ran over {EXAMPLE_TIMEOUT_S} s") from None
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise PluginError(f"examples/{script.name} failed (exit {run.returncode}):\n{run.stdout}\n{run.stderr}")
    if not any(folder.glob("*.png")):
        raise PluginError(f"examples/{script.name} wrote no figure into $KERNLA_FIGURES")
    (folder / "stdout.txt").write_text(run.stdout.replace(str(folder), "$KERNLA_FIGURES"))
    meta.write_text(json.dumps({"key": key, "seconds": seconds, "scale": SCALE}))
    return folder


def gallery_page(script: Path, result: Path) -> str:
    """The Markdown page of one example."""
    doc = inspect.cleandoc(_docstring(script)).splitlines()
    meta = json.loads((result / "meta.json").read_text())
    stdout = (result / "stdout.txt").read_text().rstrip()
    figures = [f"![{title_of(script)}]({png.name})" for png in sorted(result.glob("*.png"))]
    source = script.read_text().rstrip()
    return "\n".join(
        [
            f"# {title_of(script)}",
            "",
            rest_to_markdown("\n".join(doc[1:]).strip()),
            "",
            f"Source: `examples/{script.name}`. Ran here in {meta['seconds']:.1f} s with",
            f"`KERNLA_EXAMPLE_SCALE={meta['scale']}` (sizes times {meta['scale']}); "
            f"`python examples/{script.name}` runs the full size.",
            "",
            "## Output",
            "",
            "```text",
            stdout,
            "```",
            "",
            "## Figure" if len(figures) == 1 else "## Figures",
            "",
            *figures,
            "",
            "## Source",
            "",
            f'??? note "examples/{script.name}"',
            "",
            "    ```python",
            *("    " + line if line else "" for line in source.splitlines()),
            "    ```",
            "",
        ]
    )


# --- the benchmark plots ---------------------------------------------------------------------------------------


def benchmark_plots() -> tuple[dict[str, bytes], str]:
    """PNG files and the page for ``benchmarks/results/*.json``."""
    page = [
        "# Benchmark plots",
        "",
        "Drawn while the site is built from `benchmarks/results/*.json`, which the benchmark scripts write",
        "next to their printed table (`python benchmarks/bench_X.py --json benchmarks/results/bench_X.json`).",
        "Time against N (or D), log-log: one curve per implementation, all measured in the same run on the machine",
        "named under each plot, with the load average of the box during the run (it is shared with other jobs, so",
        "ratios within a plot are more trustworthy than absolute times). A curve that stops early is a peer that",
        "was not run at larger sizes (too slow or too big there: the table says which). The tables and what they",
        "mean are on [the measured figures](benchmarks.md) page.",
        "",
    ]
    images: dict[str, bytes] = {}
    results = sorted(RESULTS.glob("*.json"))
    if not results:
        page.append("No result files yet: run a benchmark with `--json`.")
    for path in results:
        data = json.loads(path.read_text())
        for k, spec in enumerate(data.get("plots", [])):
            png = draw(curves(data["tables"][spec["table"]], spec), spec, data["script"])
            if png is None:
                continue
            name = f"{path.stem}_{k}.png"
            images[name] = png
            title = spec.get("title", data["script"])
            page += [
                f"## {title}",
                "",
                f"[![{title}](benchmark_plots/{name})](benchmark_plots/{name})",  # a click opens it full size
                "",
                f"`{data['script']} {' '.join(data.get('argv', []))}` (`benchmarks/results/{path.name}`) — "
                f"{data['machine']}, {data['date']}."
                + (f" {data['load']}." if data.get("load") else "")
                + (f" {data['note']}" if data.get("note") else ""),
                "",
            ]
    return images, "\n".join(page)


def draw(panels: dict[str, dict[str, list[tuple[float, float]]]], spec: dict, script: str) -> bytes | None:
    """One figure (PNG bytes) of :func:`curves`' panels: log-log, a legend, labelled axes; None if empty.

    A series missing at an N that its panel has, between two of its own points, is drawn with a gap there;
    the ``references`` curves are dashed; ``hline`` ({"y": value, "label": text}) draws a dotted level
    (a ratio's parity); the title wraps to the figure's width.
    """
    import matplotlib  # deferred: only the plots page draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        return None
    references = set(spec.get("references", {}).values())
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (panel, series) in zip(axes.flat, panels.items()):
        every_x = sorted({x for points in series.values() for x, _ in points})
        for label, points in sorted(series.items(), key=lambda item: item[0] in references):  # references last
            xs, ys = zip(*gapped(points, every_x))
            style = dict(linestyle="--", color="grey", marker="") if label in references else dict(marker="o")
            ax.plot(xs, ys, label=label, **style)
        if "hline" in spec:
            ax.axhline(spec["hline"]["y"], color="black", linewidth=0.8, linestyle=":", label=spec["hline"]["label"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(spec.get("panel_titles", {}).get(panel, panel), fontsize=10)
        ax.set_xlabel(spec.get("xlabel", "N"))
        ax.set_ylabel(spec.get("ylabel", "seconds (median)"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(spec.get("title", script), 70 * cols))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def gapped(points: list[tuple[float, float]], every_x: list[float]) -> list[tuple[float, float]]:
    """A series' points in x order, with NaN (a gap in the line) at the panel's x values it lacks inside its range.

    >>> gapped([(1.0, 2.0), (100.0, 3.0)], [1.0, 10.0, 100.0, 1000.0])
    [(1.0, 2.0), (10.0, nan), (100.0, 3.0)]
    """
    own = dict(points)
    lo, hi = min(own), max(own)
    return [(x, own.get(x, float("nan"))) for x in every_x if lo <= x <= hi]


def curves(table: dict, spec: dict) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """panel -> series -> [(N, seconds)] from one table and its plot spec (see ``plot`` in benchmarks/_common.py).

    Cells that are not positive numbers (a peer not run there, "-") give no point; the ``references``
    columns give one curve each over all rows (a value per x).
    """
    headers = table["headers"]
    out: dict[str, dict[str, dict[float, float]]] = {}
    ys = spec["y"] if isinstance(spec["y"], list) else [spec["y"]]
    references = spec.get("references", {})
    for row in table["rows"]:
        cells = dict(zip(headers, row))
        if any(cells.get(column) == value for column, value in spec.get("skip_if", {}).items()):
            continue  # e.g. a solve stopped by its time budget: its time is not comparable
        x, panel = cells[spec["x"]], str(cells.get(spec.get("panel", ""), ""))
        if "x_regex" in spec:  # N written inside a label: the label without it names the panel
            match = re.search(spec["x_regex"], str(x))
            if not match:
                continue
            panel, x = re.sub(spec["x_regex"], "", str(x)).strip(), next(g for g in match.groups() if g)
        for column in [*ys, *references]:
            if column in references:
                label = references[column]
            elif "series" in spec:
                label = str(cells[spec["series"]]) + (f", {column}" if len(ys) > 1 else "")
            else:
                label = spec.get("labels", {}).get(column, column).format_map(cells)
            value = cells.get(column)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                out.setdefault(panel, {}).setdefault(label, {})[float(x)] = float(value)
    return {panel: {label: sorted(p.items()) for label, p in series.items()} for panel, series in out.items()}
