"""Deep self-labeled clustering on digit images (issue 12): ``entclust.DeepEntropyClustering`` with
its defaults, ours (reverse / collision CE) against the deep baselines (MI-D/IMSAT, IIC, SeLa,
MI-ADM, Rényi decisiveness) on the same network, augmentations, data and seeds.

scikit-learn's digits as 1x8x8 images (1797, 10 classes) unless ``--data`` names a ``.npz`` with
``x`` (N, C, H, W) and ``y``. Prints one markdown row per method (and per ``--param`` setting):
ACC / NMI / ARI as mean +- std over the seeds, ACC per seed, the empty clusters at the end per
seed (classes argmax sigma never predicts), and the seconds per run.

``python benchmarks/deep_clustering.py [--seeds 3] [--methods rce cce mi-gd iic]
[--param width=0.5] [--param epochs=20]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def run_one(x, y, k, method, seed, params):
    from entclust.deep import DeepEntropyClustering
    from entclust.metrics import evaluate

    begin = time.perf_counter()
    est = DeepEntropyClustering(k, method, random_state=seed, **params).fit(x)
    seconds = time.perf_counter() - begin
    scores = evaluate(y, est.labels_)
    scores["empty"] = k - len(np.unique(est.labels_))
    return scores, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", dest="first_seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["rce", "cce", "mi-gd", "iic"])
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a DeepEntropyClustering parameter for every run (repeatable)")
    parser.add_argument("--data", help="a .npz with x (N, C, H, W) and y; default: digits as 8x8 images")
    parser.add_argument("--k", type=int, default=None, help="clusters (default: the number of classes)")
    args = parser.parse_args(argv)

    import torch

    from entclust.cli.fit import method_options
    from entclust.images import load_digit_images

    if args.data:
        with np.load(args.data) as f:
            x, y = f["x"], f["y"]
    else:
        x, y = load_digit_images()
    k = args.k or len(np.unique(y))
    params = method_options(args)  # --param KEY=VALUE, values as JSON
    print(f"# {len(x)} images {tuple(x.shape[1:])}, K={k}, seeds {args.first_seed}..{args.first_seed + args.seeds - 1}, "
          f"params {params}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    print("| method | ACC % | NMI % | ARI % | ACC per seed | empty per seed | s per run |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods:
        rows = [run_one(x, y, k, method, seed, params) for seed in range(args.first_seed, args.first_seed + args.seeds)]

        def stat(key):
            values = [100 * r[0][key] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.1f} +- {spread:.1f}"

        per_seed = ", ".join(f"{100 * r[0]['acc']:.1f}" for r in rows)
        print(f"| {method} | {stat('acc')} | {stat('nmi')} | {stat('ari')} | {per_seed} | "
              f"{[r[0]['empty'] for r in rows]} | {statistics.mean(r[1] for r in rows):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
