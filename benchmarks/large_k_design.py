"""The large-K design, measured (README "Large K"): on the overlapping mixtures of
``benchmarks/bench_large_k.py`` (20 000 x 32, K = 50 with centres 0.9 N(0, I) and K = 200 with 0.8,
unit noise), each start of the head with and without SGD epochs on the papers' loss (global
pseudo-labels), against scikit-learn's KMeans.

    python benchmarks/large_k_design.py [--k 50,200] [--epochs 3]

Rows: ``kmeans++`` (the seeds as a nearest-centroid head), ``kmeans`` (those seeds moved by
Lloyd's iterations on the sample), ``balanced`` (self-labeled centroids, the default), each with
0 and ``--epochs`` SGD epochs; ``KMeans(n_init=1)`` and ``KMeans(n_init=10)``. Prints ACC, NMI,
the largest cluster over the mean, and seconds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.cluster import KMeans

from entclust import EntropyClustering
from bench_large_k import make_data  # noqa: E402  (benchmarks/ is on sys.path when this runs)
from entclust.metrics import clustering_accuracy, normalized_mutual_info

SPREAD = {50: 0.9, 200: 0.8}


def row(name, truth, labels, seconds, k):
    sizes = np.bincount(labels, minlength=k)
    print(f"| {k} | {name} | {100 * clustering_accuracy(truth, labels):.2f} | "
          f"{100 * normalized_mutual_info(truth, labels):.2f} | {sizes.max() / sizes.mean():.2f} | {seconds:.1f} |",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", default="50,200")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print("| K | head | ACC % | NMI % | largest/mean | seconds |")
    print("|---|---|---|---|---|---|")
    for k in (int(v) for v in args.k.split(",")):
        x, t = make_data("overlap", 20000, 32, k, SPREAD.get(k, 0.8))
        for init in ("kmeans++", "kmeans", "balanced"):
            for epochs in (0, args.epochs):
                start = time.perf_counter()
                est = EntropyClustering(k, init=init, epochs=epochs, pseudo_labels="global", random_state=0).fit(x)
                row(f"{init}, {epochs} SGD epochs", t, est.labels_, time.perf_counter() - start, k)
        for n_init in (1, 10):
            start = time.perf_counter()
            km = KMeans(k, n_init=n_init, random_state=0).fit(x)
            row(f"KMeans(n_init={n_init})", t, km.labels_, time.perf_counter() - start, k)


if __name__ == "__main__":
    main()
