"""The README's table behind ``standardize="auto"``: reverse-CE clustering accuracy with each
scaling on scikit-learn's bundled tabular sets (mean over seeds), and what "auto" picks.
``python benchmarks/scaling_defaults.py [--seeds 3]``."""
from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np


def main(argv=None) -> int:
    from sklearn import datasets

    import entclust

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    print("| data | max / median feature std | global ACC % | features ACC % | auto picks |")
    print("|---|---|---|---|---|")
    for name in ("digits", "iris", "wine", "breast_cancer"):
        x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        std = x.std(0)
        spread = std[std > 0]
        k = len(np.unique(y))
        acc = {mode: statistics.fmean(
            entclust.clustering_accuracy(y, entclust.EntropyClustering(k, standardize=mode, random_state=s).fit(x).labels_)
            for s in range(args.seeds)) for mode in ("global", "features")}
        picked = entclust.data.Scaler().fit(x).mode_
        print(f"| {name} | {spread.max() / np.median(spread):.1f} | {100 * acc['global']:.1f} | "
              f"{100 * acc['features']:.1f} | {picked} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
