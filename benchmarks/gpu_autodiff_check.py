"""GPU check of kernla's autodiff: torch-CUDA tensors through the cuda engine, against dense torch.

Correctness (float64): LDDMM H(q, p) = ½⟨p, K_qq p⟩ and its gradients, a Hessian-vector product
(double backward), and gradients of Min, KMin, LogSumExp and SumSoftMaxWeight over both axes,
each against dense torch on the same GPU; torch.autograd.gradcheck on small Sum and Min
reductions. Then float32 timings of H's forward and forward+backward for growing N, with the
peak GPU memory (CuPy's pool plus torch's allocator) and dense torch where it fits.
Prints what it could not run instead of failing.

    python benchmarks/gpu_autodiff_check.py [--sizes 10000 100000 1000000] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
import traceback

import torch

from kernla import Genred, LazyTensor


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    try:
        import cupy

        cupy.cuda.runtime.deviceSynchronize()
    except Exception:  # no CuPy or no GPU
        pass


def peak_mb() -> float:
    total = 0.0
    if torch.cuda.is_available():
        total += torch.cuda.max_memory_allocated() / 2**20
    try:
        import cupy

        total += cupy.get_default_memory_pool().total_bytes() / 2**20
    except Exception:
        pass
    return total


def reset_peak():
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()
    except Exception:
        pass


def ham(q, p, sigma=0.5):
    k = (-((LazyTensor(q[:, None, :]) - LazyTensor(q[None, :, :])) ** 2).sum(-1) / sigma**2).exp()
    return 0.5 * (p * (k * LazyTensor(p[None, :, :])).sum(dim=1)).sum()


def ham_dense(q, p, sigma=0.5):
    k = torch.exp(-((q[:, None, :] - q[None, :, :]) ** 2).sum(-1) / sigma**2)
    return 0.5 * (p * (k @ p)).sum()


def rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def correctness(dev: str) -> None:
    f64 = dict(dtype=torch.float64, device=dev)
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.rand(2000, 3, generator=g, dtype=torch.float64).to(dev).requires_grad_()
    p = torch.randn(2000, 3, generator=g, dtype=torch.float64).to(dev).requires_grad_()
    h, hd = ham(q, p), ham_dense(q, p)
    gk, gd = torch.autograd.grad(h, (q, p)), torch.autograd.grad(hd, (q, p))
    print(
        f"H float64 N=2000: rel. diff H {abs(h.item() - hd.item()) / abs(hd.item()):.1e}, "
        f"dH/dq {rel(gk[0], gd[0]):.1e}, dH/dp {rel(gk[1], gd[1]):.1e}, grad device {gk[0].device}"
    )
    q2, p2 = q[:500].detach().requires_grad_(), p[:500].detach().requires_grad_()
    v = torch.randn(500, 3, **f64)
    res = []
    for fn in (ham, ham_dense):
        a, b = torch.autograd.grad(fn(q2, p2), (q2, p2), create_graph=True)
        res.append(torch.autograd.grad((a * v).sum() + (b * v).sum(), (q2, p2)))
    print(f"Hessian-vector product N=500: rel. diff {rel(res[0][0], res[1][0]):.1e}, {rel(res[0][1], res[1][1]):.1e}")

    x = torch.randn(700, 2, **f64).requires_grad_()
    y = torch.randn(900, 2, **f64).requires_grad_()
    w = torch.randn(900, 3, **f64).requires_grad_()
    d = lambda: ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1)  # noqa: E731
    dd = lambda: ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)  # noqa: E731
    cases = {
        "Min over j": (lambda: d().min(dim=1), lambda: dd().min(1, keepdim=True)[0]),
        "KMin(4) over i": (lambda: d().Kmin(4, dim=0), lambda: dd().topk(4, 0, largest=False)[0].T),
        "LogSumExp over j": (lambda: (-d()).logsumexp(dim=1), lambda: torch.logsumexp(-dd(), 1, keepdim=True)),
        "SumSoftMaxWeight over j": (
            lambda: (-d()).sumsoftmaxweight(LazyTensor(w[None, :, :]), dim=1),
            lambda: torch.softmax(-dd(), 1) @ w,
        ),
    }
    for name, (ours, ref) in cases.items():
        out = ours()
        c = torch.randn(out.shape, **f64)
        a = torch.autograd.grad((out * c).sum(), (x, y, w), allow_unused=True)
        b = torch.autograd.grad((ref().reshape(out.shape) * c).sum(), (x, y, w), allow_unused=True)
        diffs = [rel(u, v) if v is not None and u is not None else 0.0 for u, v in zip(a, b)]
        print(f"{name}: rel. diff of gradients {max(diffs):.1e}")

    red = Genred("Exp(-G * SqDist(X, Y)) * B", ["X = Vi(2)", "Y = Vj(2)", "B = Vj(2)", "G = Pm(1)"], "Sum", axis=1)
    mn = Genred("SqDist(X, Y) * G", ["X = Vi(2)", "Y = Vj(2)", "G = Pm(1)"], "Min", axis=0)
    args = [torch.randn(6, 2, **f64), torch.randn(7, 2, **f64), torch.randn(7, 2, **f64), torch.rand(1, **f64) + 0.5]
    args = [a.requires_grad_() for a in args]
    print(
        "gradcheck Sum on cuda:",
        torch.autograd.gradcheck(red, args),
        "| gradgradcheck:",
        torch.autograd.gradgradcheck(red, args),
        "| gradcheck Min over i:",
        torch.autograd.gradcheck(mn, [args[0], args[1], args[3]]),
    )


def timings(dev: str, sizes) -> None:
    print("\nH(q, p), float32, D = 3 (median of 3 after a warm-up)")
    print(f"{'N':>9} {'fwd s':>9} {'fwd+bwd s':>10} {'bwd/fwd':>8} {'peak MB':>9} {'dense fwd+bwd s':>16}")
    for n in sizes:
        q = torch.rand(n, 3, device=dev).requires_grad_()
        p = (0.1 * torch.randn(n, 3, device=dev)).requires_grad_()

        def fwd():
            out = ham(q, p, 0.25)
            sync()
            return out

        def both():
            out = torch.autograd.grad(ham(q, p, 0.25), (q, p))
            sync()
            return out

        both()
        reset_peak()
        tf, tb = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            fwd()
            tf.append(time.perf_counter() - t0)  # noqa: E702
            t0 = time.perf_counter()
            both()
            tb.append(time.perf_counter() - t0)  # noqa: E702
        tf, tb = sorted(tf)[1], sorted(tb)[1]
        mem = peak_mb()
        need = 14 * n * n * 4
        dense = f"needs {need / 2**30:.3g} GB"
        if need < 40 * 2**30:
            torch.autograd.grad(ham_dense(q, p, 0.25), (q, p))
            sync()
            t0 = time.perf_counter()
            torch.autograd.grad(ham_dense(q, p, 0.25), (q, p))
            sync()
            dense = f"{time.perf_counter() - t0:.4f}"
        print(f"{n:>9} {tf:>9.4f} {tb:>10.4f} {(tb - tf) / tf:>8.2f} {mem:>9.1f} {dense:>16}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 1000000])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    if torch.cuda.is_available():
        print(torch.cuda.get_device_name())
    for step in (lambda: correctness(args.device), lambda: timings(args.device, args.sizes)):
        try:
            step()
        except Exception:
            traceback.print_exc()


if __name__ == "__main__":
    main()
