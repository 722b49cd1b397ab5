"""Effect of the Rényi order alpha (seed 004 Table 2): ``mean R_alpha(sigma) + KL(sigma_bar || u) +
gamma ||v||^2`` by gradient descent (method ``"renyi"``), against ours (``"rce"``) in the same
run. Linear head on scikit-learn's digits (``EntropyClustering``, its defaults) by default;
``--deep`` trains ``DeepEntropyClustering`` on digits as 8x8 images instead (about 2 min a run).

``python benchmarks/renyi_order.py [--seeds 5] [--alphas 0.5 1 2 5 inf] [--deep]``
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 5.0, math.inf])
    parser.add_argument("--deep", action="store_true")
    args = parser.parse_args(argv)

    import entclust
    from entclust import data
    from entclust.images import load_digit_images

    if args.deep:
        x, y = load_digit_images()
        make = lambda method, seed, params: entclust.DeepEntropyClustering(  # noqa: E731
            10, method, random_state=seed, method_params=params)
    else:
        x, y = data.load_digits()
        make = lambda method, seed, params: entclust.EntropyClustering(  # noqa: E731
            10, method=method, random_state=seed, method_params=params)
    rows = [(f"renyi, alpha={a:g}", "renyi", {"alpha": a}) for a in args.alphas] + [("rce", "rce", None)]
    print(f"# digits, {'DeepEntropyClustering' if args.deep else 'EntropyClustering'} defaults, seeds 0..{args.seeds - 1}")
    print("| method | ACC % | lowest | s per fit |\n|---|---|---|---|")
    for name, method, params in rows:
        accs, secs = [], []
        for seed in range(args.seeds):
            begin = time.perf_counter()
            labels = make(method, seed, params).fit(x).labels_
            secs.append(time.perf_counter() - begin)
            accs.append(100 * entclust.clustering_accuracy(y, labels))
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accs):.1f} +- {spread:.1f} | {min(accs):.1f} | {statistics.mean(secs):.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
