"""The split step of self-labeled centroids and the round budget, measured (README "Large K"):
``EntropyClustering(K)`` with its defaults on the bench's overlapping mixture (N x 64, centres
1.5 N(0, I), unit noise), with the split step on and off (``SPLIT_ABOVE = inf``) at a fixed
number of rounds, then one hard Lloyd step over all N points after the fit, against
MiniBatchKMeans.

    python benchmarks/large_k_split.py [--n 200000 --k 2000] [--rounds 6] [--lloyd]

Prints NMI, seconds, empty clusters, and the centres the split step moved per round.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans

import entclust.cluster.estimator as estimator  # its centroid_rounds is replaced below
from entclust import EntropyClustering
from bench_large_k import make_data  # noqa: E402  (benchmarks/ is on sys.path when this runs)
from entclust.cluster import centroids
from entclust.metrics import normalized_mutual_info


def lloyd_step(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Centres = the means of the labels' points, then every point to its nearest centre."""
    counts = torch.bincount(labels, minlength=k).double()
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, x.double())
    mu = (sums / counts.clamp_min(1)[:, None]).float()
    return torch.cat([centroids.nearest(x[i:i + 20000], mu)[0] for i in range(0, x.shape[0], 20000)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of self-labeled centroids (0: the default budget)")
    parser.add_argument("--lloyd", action="store_true", help="also one hard Lloyd step over all points after the fit")
    args = parser.parse_args()
    x, truth = make_data("overlap", args.n, 64, args.k, 1.5)
    if args.rounds:
        estimator.centroid_rounds = lambda m, k, n=None: args.rounds
    print(f"N = {args.n}, K = {args.k}, rounds = {args.rounds or 'default'}")
    print("| run | NMI % | seconds | empty | moved per round |")
    print("|---|---|---|---|---|")
    for name, above in (("split step", centroids.SPLIT_ABOVE), ("no split step", float("inf"))):
        centroids.SPLIT_ABOVE = above
        start = time.perf_counter()
        est = EntropyClustering(args.k, random_state=0).fit(x)
        seconds = time.perf_counter() - start
        empty = int((np.bincount(est.labels_, minlength=args.k) == 0).sum())
        moved = [h["moved"] for h in est.init_history_]
        print(f"| {name} | {100 * normalized_mutual_info(truth, est.labels_):.2f} | {seconds:.1f} | {empty} | {moved} |",
              flush=True)
        if args.lloyd and name == "split step":
            start = time.perf_counter()
            labels = lloyd_step(torch.from_numpy(x), torch.from_numpy(est.labels_), args.k)
            print(f"| + one Lloyd step over all points | {100 * normalized_mutual_info(truth, labels.numpy()):.2f} | "
                  f"+{time.perf_counter() - start:.1f} | | |", flush=True)
    start = time.perf_counter()
    mb = MiniBatchKMeans(args.k, batch_size=4096, n_init=1, random_state=0).fit(x)
    empty = int((np.bincount(mb.labels_, minlength=args.k) == 0).sum())
    print(f"| MiniBatchKMeans | {100 * normalized_mutual_info(truth, mb.labels_):.2f} | "
          f"{time.perf_counter() - start:.1f} | {empty} | |")


if __name__ == "__main__":
    main()
