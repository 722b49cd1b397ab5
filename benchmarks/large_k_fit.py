"""One large-K fit with the defaults, verbose, beyond the sizes of ``bench_large_k.py`` (docs,
"Large K and memory": N = 10^7 at K = 10^4, and K = 10^5): the bench's overlapping mixture
(N x D, centres s N(0, I), unit noise, seed 0), then ``EntropyClustering(K, random_state=0,
verbose=True).fit(x)`` alone, its progress on standard error.

    python benchmarks/large_k_fit.py --n 10000000 --k 10000 [--d 64] [--spread 1.5]

Prints the fit's seconds, NMI, empty clusters, the largest cluster over the mean and the
process's peak resident memory (the data and its generation included).
"""
from __future__ import annotations

import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_large_k import make_data  # noqa: E402

from entclust import EntropyClustering  # noqa: E402
from entclust.metrics import normalized_mutual_info  # noqa: E402


def add_arguments(parser) -> None:
    parser.add_argument("--n", type=float, default=1e6, help="points (default 10^6)")
    parser.add_argument("--k", type=float, default=1e4, help="clusters (default 10^4)")
    parser.add_argument("--d", type=int, default=64, help="features (default 64)")
    parser.add_argument("--spread", type=float, default=1.5, help="the centres' spread s (default 1.5)")


def run(args) -> int:
    n, k = int(args.n), int(args.k)
    start = time.perf_counter()
    x, truth = make_data("overlap", n, args.d, k, args.spread)
    print(f"data {n} x {args.d}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    start = time.perf_counter()
    est = EntropyClustering(k, random_state=0, verbose=True).fit(x)
    seconds = time.perf_counter() - start
    sizes = est.cluster_sizes_
    print({"n": n, "k": k, "seconds": round(seconds, 1),
           "nmi": round(100 * normalized_mutual_info(truth, est.labels_), 2), "empty": int((sizes == 0).sum()),
           "largest_over_mean": round(float(sizes.max() / sizes.mean()), 2),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})
    return 0


if __name__ == "__main__":
    from entclust.cli import run_script

    sys.exit(run_script("large_k_fit.py", __doc__, add_arguments, run))
