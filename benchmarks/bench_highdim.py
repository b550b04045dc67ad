"""High-dimensional formulas and wide products: kernla's CPU engine against chunked dense torch, faiss and pykeops.

One table per run, all peers in the same process (median wall time of a few runs): Gaussian
matvecs ``(-|x_i - y_j|²).exp() @ b`` over D ∈ {3, 8, 16, 32, 100, 256, 784, 1024}, kNN (k = 10,
``ArgKMin`` of ``SqDist``) against faiss-cpu ``IndexFlatL2``, the 200-column float64 product against
numpy's matmul on the *precomputed* K, the inner-product part alone (``Sum((x|y))``, x and y two
arrays) against a plain sgemm of the same shape, ``x @ y.T`` (the physical reference; numpy's
``x @ x.T`` of one array is a syrk of half the flops, shown beside it), a new formula's compile time at D = 1024
(and pykeops' compile, separately), and the N = M = 1 call overhead against pykeops.

``--exact`` adds kernla with the tiles off (the per-component path: the threshold's evidence);
``--baseline PATH`` adds the same kernla rows run by the kernla found at PATH (e.g. a checkout of
main) in a subprocess, for the low-dimensional rows only (its per-component kernels at large D take
minutes to compile). ``--full`` uses the sizes of issue 10's table (tens of minutes here); ``--quick``
the same N for every D (time against D for the docs' plots, about 2 minutes here); ``--json PATH``
also writes the tables and the plots' specs (time and peer / kernla against D, log-log). The ``dot``
rows give kernla's share of two sgemm flop rates of the same shape, numpy's (its OpenBLAS) and torch's;
``KERNLA_CPU_BLAS=off`` runs kernla's micro-kernel instead of BLAS on the tiles.

    python benchmarks/bench_highdim.py [--full | --quick] [--exact] [--baseline /work/main] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_json_option, machine, measure, optional, plot, table, write_json  # noqa: E402

torch = optional("torch")
faiss = optional("faiss")
pykeops_torch = optional("pykeops.torch")
THREADS = 2


def sizes(full: bool, quick: bool = False) -> dict:
    if quick:  # one N per kind, so that times against D compare
        return {
            "gauss": [(d, 4000) for d in (3, 8, 16, 32, 100, 256, 1024)],
            "knn": [(d, 2000, 20000) for d in (3, 50, 128)],
            "prod": 4000,
        }
    if full:
        return {
            "gauss": [
                (3, 20000),
                (8, 20000),
                (16, 20000),
                (32, 20000),
                (100, 20000),
                (256, 10000),
                (784, 10000),
                (1024, 10000),
            ],
            "knn": [(3, 20000, 200000), (50, 20000, 100000), (128, 10000, 50000)],
            "prod": 4000,
        }
    return {
        "gauss": [(3, 8000), (8, 8000), (16, 8000), (32, 8000), (100, 8000), (256, 4000), (784, 4000), (1024, 4000)],
        "knn": [(3, 4000, 40000), (50, 4000, 20000), (128, 2000, 10000)],
        "prod": 4000,
    }


def data(d: int, n: int, m: int, seed: int = 0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(d)  # distances of order 1 whatever D
    return (rng.random((n, d)) * scale).astype(dtype), (rng.random((m, d)) * scale).astype(dtype)


def kernla_rows(cfg: dict, exact: bool) -> dict:
    """{row name: median seconds} of kernla's rows (also what a --baseline subprocess prints)."""
    from kernla import Genred  # deferred: a --baseline subprocess imports another kernla

    tiles = optional("kernla.engines.cpu.tiles")  # None in a baseline checkout without tiles
    out = {}
    default = tiles.MIN_DIM if tiles is not None else 0
    for d, n in cfg["gauss"]:
        if cfg.get("max_d", 1 << 30) < d:
            continue
        x, _ = data(d, n, 0)
        b = np.random.default_rng(1).random((n, 1), dtype=np.float32)
        g = Genred("Exp(-SqDist(X, Y)) * B", [f"X = Vi({d})", f"Y = Vj({d})", "B = Vj(1)"], axis=1)
        out[f"gauss D={d}"] = measure(lambda: g(x, x, b, backend="cpu"), repeat=3, budget=20)
        if exact and tiles is not None and 3 < d <= 32:  # the other path: the threshold's evidence
            tiled = 0 < default <= d
            tiles.MIN_DIM = 0 if tiled else 1
            tag = " exact" if tiled else " tiles"
            out[f"gauss D={d}{tag}"] = measure(lambda: g(x, x, b, backend="cpu"), repeat=3, budget=20)
            tiles.MIN_DIM = default
        if d >= 32:
            xd, yd = data(d, n, n)  # two arrays: x @ x.T would let numpy run a syrk (half the flops)
            ip = Genred("(X|Y)", [f"X = Vi({d})", f"Y = Vj({d})"], axis=1)
            out[f"dot D={d}"] = measure(lambda: ip(xd, yd, backend="cpu"), repeat=3, budget=20)
    for d, n, m in cfg["knn"]:
        if cfg.get("max_d", 1 << 30) < d:
            continue
        x, y = data(d, n, m, seed=2)
        knn = Genred("SqDist(X, Y)", [f"X = Vi({d})", f"Y = Vj({d})"], reduction_op="ArgKMin", opt_arg=10, axis=1)
        out[f"knn D={d}"] = measure(lambda: knn(x, y, backend="cpu"), repeat=3, budget=20)
    n = cfg["prod"]
    x, _ = data(3, n, 0, dtype=np.float64)
    b = np.random.default_rng(3).random((n, 200))
    g = Genred("Exp(-SqDist(X, Y)) * B", ["X = Vi(3)", "Y = Vj(3)", "B = Vj(200)"], axis=1)
    out["prod200"] = measure(lambda: g(x, x, b, backend="cpu"), repeat=5)
    x1 = np.random.default_rng(4).random((1, 3), dtype=np.float32)
    g1 = Genred("Exp(-SqDist(X, Y))", ["X = Vi(3)", "Y = Vj(3)"], axis=1)
    out["overhead"] = _per_call(lambda: g1(x1, x1, backend="cpu"))
    return {name: (t.wall, t.cpu) if hasattr(t, "cpu") else (t, None) for name, t in out.items()}


def _per_call(fn, calls: int = 3000) -> float:
    """Median over 5 rounds of the mean seconds per call."""
    fn()
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t0) / calls)
    return float(np.median(rounds))


def peer_rows(cfg: dict) -> dict:
    out: dict = {}
    if torch is not None:
        torch.set_num_threads(THREADS)
        for d, n in cfg["gauss"]:
            x, _ = data(d, n, 0)
            b = np.random.default_rng(1).random((n, 1), dtype=np.float32)
            xt, bt = torch.from_numpy(x), torch.from_numpy(b)

            def dense(xt=xt, bt=bt):
                with torch.no_grad():
                    return torch.cat(
                        [torch.exp(-(torch.cdist(xt[i : i + 2000], xt) ** 2)) @ bt for i in range(0, len(xt), 2000)]
                    )

            out[f"gauss D={d}"] = measure(dense, repeat=3, budget=20).wall
            if d >= 32:
                xd, yd = (torch.from_numpy(a) for a in data(d, n, n))
                out[f"dot D={d}"] = measure(lambda xd=xd, yd=yd: xd @ yd.T, repeat=3, budget=20).wall
    for d, n in cfg["gauss"]:  # the other sgemm: numpy's OpenBLAS
        if d >= 32:
            x, y = data(d, n, n)
            out[f"numpy dot D={d}"] = measure(lambda x=x, y=y: x @ y.T, repeat=3, budget=20).wall
            # x @ x.T: numpy sees the transpose of one array and runs ssyrk, N²D flops instead of 2N²D
            out[f"numpy syrk D={d}"] = measure(lambda x=x: x @ x.T, repeat=3, budget=20).wall
    if faiss is not None:
        faiss.omp_set_num_threads(THREADS)
        for d, n, m in cfg["knn"]:
            x, y = data(d, n, m, seed=2)

            def search(x=x, y=y, d=d):
                index = faiss.IndexFlatL2(d)
                index.add(y)
                return index.search(x, 10)[1]

            out[f"knn D={d}"] = measure(search, repeat=3, budget=20).wall
    n = cfg["prod"]
    x, _ = data(3, n, 0, dtype=np.float64)
    b = np.random.default_rng(3).random((n, 200))
    K = np.exp(-cdist(x, x, "sqeuclidean"))
    out["prod200"] = measure(lambda: K @ b, repeat=7).wall
    if pykeops_torch is not None:
        x1 = torch.rand(1, 1, 3)
        lt = pykeops_torch.LazyTensor
        out["overhead"] = _per_call(lambda: (-((lt(x1) - lt(x1.transpose(0, 1))) ** 2).sum(-1)).exp().sum(1), 1000)
    return out


def compile_times() -> dict:
    """Seconds of a first call of a never-seen formula (fresh cache, new process) at D = 3 and D = 1024."""
    out = {}
    code = (
        "import time, numpy as np; from kernla import Genred; d = {d}; x = np.random.rand(7, d).astype(np.float32)\n"
        "g = Genred('Exp(-SqDist(X, Y) * {c}) * B', [f'X = Vi({{d}})', f'Y = Vj({{d}})', 'B = Vj(1)'], axis=1)\n"
        "t = time.perf_counter(); g(x, x, x[:, :1], backend='cpu'); print(time.perf_counter() - t)\n"
    )
    for d in (3, 1024):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "KERNLA_CACHE_DIR": tmp}
            run = subprocess.run(
                [sys.executable, "-c", code.format(d=d, c=1.0 + time.time() % 1)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            out[f"compile D={d}"] = float(run.stdout.split()[-1])
    if pykeops_torch is not None:
        import pykeops  # optional peer: imported above through pykeops.torch

        lt = pykeops_torch.LazyTensor
        x = torch.rand(7, 1, 1024)
        with tempfile.TemporaryDirectory() as tmp:
            pykeops.set_build_folder(tmp)  # a fresh build folder: pykeops compiles anew
            t0 = time.perf_counter()
            (-((lt(x) - lt(x.transpose(0, 1))) ** 2).sum(-1)).exp().sum(1)
            out["pykeops compile D=1024"] = time.perf_counter() - t0
    return out


def gflops(name: str, cfg: dict) -> float | None:
    """Flops of the inner-product part of a row (2·N·M·D)."""
    d = int(name.split("D=")[1].split()[0])
    n = dict(cfg["gauss"])[d]
    return 2.0 * n * n * d / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="issue 10's sizes (tens of minutes)")
    ap.add_argument("--quick", action="store_true", help="one N for every D (about 2 minutes)")
    ap.add_argument("--exact", action="store_true")
    ap.add_argument("--baseline", help="a kernla checkout to run the low-dimensional kernla rows with")
    ap.add_argument("--kernla-json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--max-d", type=int, default=None, help=argparse.SUPPRESS)
    add_json_option(ap)
    args = ap.parse_args()
    cfg = sizes(args.full, args.quick)
    if args.max_d is not None:
        cfg["max_d"] = args.max_d
    if args.kernla_json:  # the --baseline subprocess
        print(json.dumps({name: t for name, (t, _) in kernla_rows(cfg, False).items()}))
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    base: dict = {}
    if args.baseline:
        cmd = [sys.executable, __file__, "--kernla-json", "--max-d", "32"]
        cmd += ["--full"] * args.full + ["--quick"] * args.quick
        env = {**os.environ, "PYTHONPATH": args.baseline}
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        base = json.loads(run.stdout.strip().splitlines()[-1])  # (peers' import messages come first)
    mine, peers, comp = kernla_rows(cfg, args.exact), peer_rows(cfg), compile_times()
    peer_name = {
        "gauss": "torch dense (chunked cdist)",
        "dot": "torch sgemm x @ y.T",  # peer / kernla: kernla's share of torch's sgemm rate
        "knn": "faiss IndexFlatL2",
        "prod200": "numpy K @ B (K precomputed)",
        "overhead": "pykeops",
    }
    rows = []
    for name, (t, cpu) in mine.items():
        kind = name.split()[0]
        peer = peers.get(name)
        row = [name, t, cpu, peer_name.get(kind, "") if peer is not None else "", peer]
        row.append(None if peer is None else peer / t)
        rate = gflops(name, cfg) / t if kind in ("gauss", "dot") and "exact" not in name else None
        row.append(rate)
        np_dot = peers.get(f"numpy {name}") if kind == "dot" else None
        row += [None if np_dot is None else gflops(name, cfg) / np_dot]
        row += [None if rate is None or np_dot is None else rate * np_dot / gflops(name, cfg)]
        row.append(peers.get(f"numpy syrk {name.split()[1]}") if kind == "dot" else None)
        row.append(base.get(name))
        rows.append(row)
    missing = [name for name, mod in (("torch", torch), ("faiss", faiss), ("pykeops", pykeops_torch)) if mod is None]
    if missing:
        print(f"peers not importable in this run: {', '.join(missing)}")
    print(
        f"machine: {machine()}; OMP threads {os.environ['OMP_NUM_THREADS']}; load average "
        f"{os.getloadavg()[0]:.1f} at the end (other jobs share this box)"
    )
    print(
        table(
            [
                "row",
                "kernla s",
                "kernla CPU s",
                "peer",
                "peer s",
                "peer / kernla",
                "kernla GF/s (inner products)",
                "numpy sgemm GF/s",
                "kernla / numpy sgemm",
                "numpy x @ x.T s (syrk)",
                "baseline kernla s",
            ],
            rows,
            "bench_highdim" + (" (full sizes)" if args.full else " (one N per kind)" if args.quick else ""),
        )
    )
    print(table(["first call of a new formula", "s"], list(comp.items())))
    write_json(args.json, plot_specs(cfg))


def plot_specs(cfg: dict) -> list[dict]:
    """Time and peer / kernla against D, one panel per kind of row (``gauss D=16`` -> panel gauss, D = 16)."""
    gauss, knn = sorted({n for _, n in cfg["gauss"]}), sorted({(n, m) for _, n, m in cfg["knn"]})
    panels = {
        "gauss": f"Gaussian matvec exp(-|x-y|²) b, N = M = {' / '.join(map(str, gauss))}",
        "dot": "inner products alone Sum((x|y)), same N",
        "knn": "kNN k = 10, " + " / ".join(f"{n} queries × {m} points" for n, m in knn),
    }
    common = dict(x_regex=r"D=(\d+)", panel_titles=panels, xlabel="D (dimension of x and y)")
    return [
        plot(
            0,
            "row",
            ["kernla s", "peer s"],
            "high-dimensional formulas, float32: kernla against torch and faiss",
            labels={"kernla s": "kernla cpu", "peer s": "{peer}"},
            ylabel="wall seconds (median of 3)",
            **common,
        ),
        plot(
            0,
            "row",
            "peer / kernla",
            "high-dimensional formulas: the peer's time over kernla's (above 1: kernla is faster)",
            labels={"peer / kernla": "{peer} / kernla"},
            ylabel="time ratio, same run",
            hline={"y": 1.0, "label": "parity"},
            **common,
        ),
    ]


if __name__ == "__main__":
    main()
