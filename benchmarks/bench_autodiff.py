"""Forward and forward+backward times of differentiable kernel reductions: kernla, dense torch, pykeops.

Three losses of two point clouds x, y in R^3 (float32, N = M), each differentiated w.r.t. both
clouds (and p) with torch.autograd:

- ``gaussian H``: the LDDMM Hamiltonian ½ Σ_ij exp(-|q_i - q_j|²/σ²) ⟨p_i, p_j⟩ (a Sum reduction);
- ``softmin``: Σ_i log Σ_j exp(-|x_i - y_j|²/ε) (LogSumExp);
- ``nearest``: Σ_i min_j |x_i - y_j|² (Min; pykeops refuses this gradient).

kernla and pykeops run the same LazyTensor expression; dense torch builds the N×N matrices and
is skipped where its peak memory (about 14 N×N arrays for the forward and backward) would pass
the budget, with the memory it would need printed instead. Times are medians of several runs
after a warm-up call (which compiles kernels). Forward and forward+backward runs are
*interleaved* (f, f+b, f+b, f, f, f+b, …) so that both see the same machine load, and
``bwd/fwd`` is the median over the pairs of (forward+backward − forward), divided by the median
forward; where that difference is not larger than the timing spread (the larger interquartile
range of the two series), it says ``< noise`` instead of a ratio — timed separately, a backward
cheaper than the forward's jitter used to come out as a negative ratio.
``--clock cpu`` reports process CPU seconds (all threads) instead of wall-clock time: steadier when
other programs share the machine.

    python benchmarks/bench_autodiff.py [--sizes 1000 10000] [--budget-gb 4] [--no-pykeops] [--clock cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import add_json_option, machine, measure, optional, plot, table, write_json  # noqa: E402

import kernla  # noqa: E402
from kernla.engines import resolve_backend  # noqa: E402

DENSE_NN_ARRAYS = 14  # dense torch's peak for these losses, in N×N arrays (measured)


def _points(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g)
    y = torch.rand(n, 3, generator=g)
    p = 0.1 * torch.randn(n, 3, generator=g)
    return x, y, p


# each loss: (symbolic version taking a LazyTensor class, dense version, inputs that require grad)
def gaussian_h(lt, q, p, y):
    k = (-((lt(q[:, None, :]) - lt(q[None, :, :])) ** 2).sum(-1) / 0.0625).exp()
    return 0.5 * (p * (k * lt(p[None, :, :])).sum(dim=1)).sum()


def gaussian_h_dense(q, p, y):
    k = torch.exp(-((q[:, None, :] - q[None, :, :]) ** 2).sum(-1) / 0.0625)
    return 0.5 * (p * (k @ p)).sum()


def softmin(lt, x, p, y):
    d = ((lt(x[:, None, :]) - lt(y[None, :, :])) ** 2).sum(-1)
    return (-d / 0.01).logsumexp(dim=1).sum()


def softmin_dense(x, p, y):
    return torch.logsumexp(-((x[:, None, :] - y[None, :, :]) ** 2).sum(-1) / 0.01, dim=1).sum()


def nearest(lt, x, p, y):
    return ((lt(x[:, None, :]) - lt(y[None, :, :])) ** 2).sum(-1).min(dim=1).sum()


def nearest_dense(x, p, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1).min(dim=1)[0].sum()


LOSSES = {
    "gaussian H": (gaussian_h, gaussian_h_dense, (0, 1)),  # grads w.r.t. q and p
    "softmin": (softmin, softmin_dense, (0, 2)),  # w.r.t. x and y
    "nearest": (nearest, nearest_dense, (0, 2)),
}


def _runner(loss: Callable, n: int, wrt: tuple) -> tuple[Callable, Callable]:
    x, p, y = _points(n, 0)
    inputs = [x.clone(), p.clone(), y.clone()]
    for k in wrt:
        inputs[k].requires_grad_()

    def forward():
        return loss(*inputs)

    def both():
        out = loss(*inputs)
        return torch.autograd.grad(out, [inputs[k] for k in wrt])

    return forward, both


CLOCK = "wall"


def _time(fn: Callable, repeat: int, budget: float) -> float | None:
    t = measure(fn, repeat=repeat, warmup=1, budget=budget)
    return t.wall if CLOCK == "wall" else t.cpu


def _spread(values: list) -> float:
    """Interquartile range (0 for fewer than 2 values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def _paired(forward: Callable, both: Callable, repeat: int, budget: float) -> tuple[float, float, object]:
    """(median forward, median forward+backward, bwd/fwd ratio or "< noise"), runs interleaved."""
    clock = time.perf_counter if CLOCK == "wall" else time.process_time
    forward()
    both()  # warm-up: compiles
    tf, tb = [], []
    start = time.perf_counter()
    for k in range(max(repeat, 3)):
        order = ((forward, tf), (both, tb)) if k % 2 == 0 else ((both, tb), (forward, tf))  # no drift bias
        for fn, times in order:
            t0 = clock()
            fn()
            times.append(clock() - t0)
        if k >= 2 and time.perf_counter() - start > budget:
            break
    f, b = statistics.median(tf), statistics.median(tb)
    extra = statistics.median([y - x for x, y in zip(tf, tb)])
    noise = max(_spread(tf), _spread(tb))
    ratio: object = extra / f if extra > noise and f > 0 else "< noise"
    return f, b, ratio


def bench(sizes, budget_gb: float, use_pykeops: bool, repeat: int, seconds: float):
    pk = optional("pykeops.torch") if use_pykeops else None
    rows = []
    for name, (sym, dense, wrt) in LOSSES.items():
        for n in sizes:
            row = [name, n]
            fwd, both = _runner(lambda *a: sym(kernla.LazyTensor, *a), n, wrt)
            row += list(_paired(fwd, both, repeat, seconds))
            need = DENSE_NN_ARRAYS * n * n * 4
            if need <= budget_gb * 2**30:
                fwd, both = _runner(dense, n, wrt)
                row += list(_paired(fwd, both, repeat, seconds)[:2])
            else:
                row += [f"needs {need / 2**30:.3g} GB", "-"]
            if pk is None:
                row += ["not installed", "-"]
            else:
                fwd, both = _runner(lambda *a: sym(pk.LazyTensor, *a), n, wrt)
                try:
                    row += list(_paired(fwd, both, repeat, seconds)[:2])
                except Exception as err:  # pykeops refuses some gradients (Min)
                    row += [_time(fwd, repeat, seconds), f"refused ({type(err).__name__})"]
            rows.append(row)
            print(f"  done: {name}, N = {n}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--budget-gb", type=float, default=4.0, help="largest memory dense torch may use")
    parser.add_argument("--no-pykeops", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per measurement")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall-clock or process CPU seconds (steadier on a busy machine)",
    )
    add_json_option(parser)
    args = parser.parse_args()
    global CLOCK
    CLOCK = args.clock
    torch.set_num_threads(torch.get_num_threads())
    rows = bench(args.sizes, args.budget_gb, not args.no_pykeops, args.repeat, args.seconds)
    title = (
        f"autodiff, float32, D = 3, N = M; median {CLOCK} seconds; kernla engine "
        f"{resolve_backend(None, False)}; {machine()}; torch {torch.__version__}"
    )
    print(
        table(
            [
                "loss",
                "N",
                "kernla fwd",
                "kernla fwd+bwd",
                "kernla bwd/fwd",
                "dense fwd",
                "dense fwd+bwd",
                "pykeops fwd",
                "pykeops fwd+bwd",
            ],
            rows,
            title=title,
        )
    )
    spec = plot(
        0,
        "N",
        ["kernla fwd+bwd", "dense fwd+bwd", "pykeops fwd+bwd"],
        "autodiff: loss and gradients, forward + backward, float32",
        panel="loss",
        xlabel="N = M (points)",
        ylabel=f"{CLOCK} seconds (median), forward + backward",
    )
    write_json(args.json, [spec])


if __name__ == "__main__":
    main()
