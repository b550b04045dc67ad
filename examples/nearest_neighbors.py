"""k-nearest-neighbour classification with four metrics, in linear memory.

The seed's one-liner, ``((x_i - y_j) ** 2).sum(2).argmin(1)``, generalised: the same symbolic
(N, M) distance matrix, never stored, reduced by ``argKmin`` for Euclidean, Manhattan, cosine
and hyperbolic (Poincaré ball) metrics. Data: clusters on a curved low-dimensional manifold
embedded in 16-D with noise — "real-looking" embeddings with class labels.

Prints, per metric: time, agreement with a brute-force NumPy search on a subset, and the
k-NN classification accuracy on held-out queries. Writes ``nearest_neighbors.png`` (time per
1000 queries of kernla and of the dense NumPy search, and the accuracy, per metric) next to this
script (or into ``$KERNLA_FIGURES``, or ``--out``).

    python examples/nearest_neighbors.py [--n 20000] [--queries 2000] [--k 10] [--backend auto]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import figure_path, scaled

from kernla import LazyTensor


def make_data(n: int, dim: int = 16, classes: int = 10, seed: int = 0):
    """Points near ``classes`` curved 2-D sheets in ``dim``-D, with labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    t = rng.uniform(-1, 1, size=(n, 2))
    basis = rng.normal(size=(classes, 3, dim)) / np.sqrt(dim)
    centres = rng.normal(size=(classes, dim)) * 0.25
    sheet = np.stack([t[:, 0], t[:, 1], t[:, 0] ** 2 - t[:, 1] ** 2], axis=1)
    x = centres[labels] + np.einsum("nk,nkd->nd", sheet, basis[labels]) + 0.3 * rng.normal(size=(n, dim))
    return x.astype(np.float32), labels


def to_ball(x: np.ndarray) -> np.ndarray:
    """Map points into the open unit ball (for the Poincaré metric)."""
    r = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / (1 + r) * 0.95).astype(x.dtype)


def metrics():
    """name -> (prepare data, symbolic distance between LazyTensors, dense NumPy distance)."""

    def hyp_dense(a, b):
        num = ((a[:, None, :] - b[None]) ** 2).sum(-1)
        return num / ((1 - (a**2).sum(1))[:, None] * (1 - (b**2).sum(1))[None])

    def cos_dense(a, b):
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
        return -an @ bn.T

    return {
        "euclidean": (
            lambda x: x,
            lambda a, b: ((a - b) ** 2).sum(-1),
            lambda a, b: ((a[:, None] - b[None]) ** 2).sum(-1),
        ),
        "manhattan": (
            lambda x: x,
            lambda a, b: (a - b).abs().sum(-1),
            lambda a, b: np.abs(a[:, None] - b[None]).sum(-1),
        ),
        "cosine": (lambda x: x, lambda a, b: -(a.normalize() | b.normalize()), cos_dense),
        # arcosh(1 + 2u) is increasing in u, so neighbours by u are neighbours by distance
        "hyperbolic": (to_ball, lambda a, b: a.sqdist(b) / ((1 - a.sqnorm2()) * (1 - b.sqnorm2())), hyp_dense),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=scaled(20000), help="reference points (default 20000)")
    parser.add_argument("--queries", type=int, default=scaled(2000), help="queries (default 2000)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out", default=None, help="PNG file to write")
    args = parser.parse_args()

    x, labels = make_data(args.n + args.queries)
    train, test = x[: args.n], x[args.n :]
    y_train, y_test = labels[: args.n], labels[args.n :]
    check = min(200, args.queries)
    print(f"{args.n} points, {args.queries} queries, D={x.shape[1]}, K={args.k}, backend={args.backend}")
    print(f"{'metric':<11} {'time (s)':>9} {'exact vs brute force':>21} {'kNN accuracy':>13} {'dense s/1000 q':>15}")
    results = {}
    for name, (prep, dist, dense) in metrics().items():
        a, b = prep(test), prep(train)
        q_i, p_j = LazyTensor(a[:, None, :]), LazyTensor(b[None, :, :])
        dist(LazyTensor(a[:2, None, :]), p_j).argKmin(args.k, dim=1, backend=args.backend)  # compiles: not timed
        start = time.perf_counter()
        idx = dist(q_i, p_j).argKmin(args.k, dim=1, backend=args.backend)
        elapsed = time.perf_counter() - start
        # exactness: the set of neighbours found vs a dense search on the first queries
        t_dense = time.perf_counter()
        ref = np.argsort(dense(a[:check].astype(np.float64), b.astype(np.float64)), axis=1, kind="stable")[:, : args.k]
        t_dense = (time.perf_counter() - t_dense) / check * 1000
        same = np.mean([len(set(r) & set(s)) / args.k for r, s in zip(ref, idx[:check])])
        votes = np.apply_along_axis(lambda row: np.bincount(row, minlength=10).argmax(), 1, y_train[idx])
        accuracy = np.mean(votes == y_test)
        print(f"{name:<11} {elapsed:>9.3f} {same:>20.1%} {accuracy:>13.1%} {t_dense:>15.3f}")
        results[name] = (elapsed / args.queries * 1000, t_dense, accuracy)
    figure(figure_path("nearest_neighbors.png", args.out), results, args)


def figure(path, results: dict, args: argparse.Namespace) -> None:
    """Bars per metric: seconds per 1000 queries (kernla, dense NumPy) and the k-NN accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    at = np.arange(len(names))
    kernla_s, dense_s, accuracy = (np.array(v) for v in zip(*results.values()))
    fig, (ax, axa) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.bar(at - 0.2, kernla_s, 0.4, label="kernla argKmin (all queries)")
    ax.bar(at + 0.2, dense_s, 0.4, label=f"dense NumPy distances + argsort (first {min(200, args.queries)} queries)")
    ax.set_yscale("log")
    ax.set_xticks(at, names)
    ax.set_xlabel("metric")
    ax.set_ylabel("seconds per 1000 queries")
    ax.set_title(f"{args.k} nearest neighbours among {args.n} points in 16-D")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    axa.bar(at, 100 * accuracy, 0.5, color="tab:green")
    axa.set_xticks(at, names)
    axa.set_ylim(0, 100)
    axa.set_xlabel("metric")
    axa.set_ylabel("accuracy on held-out queries (%)")
    axa.set_title(f"{args.k}-NN classification, 10 classes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
