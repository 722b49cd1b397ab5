"""Cluster a file of embeddings: ``python examples/cluster_embeddings.py [emb.npy] --k K``.

The first of the README's three journeys. Without a file, it writes a stand-in: N points of
dimension D around K centres that overlap (centres ``scale * N(0, I)``, unit noise), so that the
start alone is not already the answer, and reports the start's score beside the result. With a
file (``.npy``, memory-mapped, ``.npz``, ``.csv`` or ``.pt``) it clusters that and writes the
labels. The estimator's defaults pick the mode: above ``batch_size / 20`` clusters the large-K
mode (global pseudo-labels as K column sums, self-labeled centroid start), else the papers'
per-batch mode with 10 restarts side by side.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import entclust


def stand_in(n: int, d: int, k: int, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = scale * rng.normal(size=(k, d))
    truth = rng.integers(0, k, size=n)
    return (centres[truth] + rng.normal(size=(n, d))).astype(np.float32), truth


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="embeddings (N, D); none: a generated stand-in")
    parser.add_argument("--k", type=int, default=200, help="clusters")
    parser.add_argument("--n", type=int, default=20000, help="points of the stand-in")
    parser.add_argument("--d", type=int, default=32, help="dimension of the stand-in")
    parser.add_argument("--scale", type=float, default=0.8, help="spread of the stand-in's centres (overlap below ~1)")
    parser.add_argument("--out", default=None, help="write the labels here (.npy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.path:
        x, truth = entclust.data.read_array(args.path, "embeddings")  # .npy is memory-mapped, never copied whole
    else:
        x, truth = stand_in(args.n, args.d, args.k, args.scale, args.seed)
    print(f"{x.shape[0]} points of dimension {x.shape[1]} into {args.k} clusters")
    start = time.perf_counter()
    est = entclust.EntropyClustering(args.k, random_state=args.seed, verbose=True).fit(x)
    seconds = time.perf_counter() - start
    sizes = est.cluster_sizes_
    print(f"mode: {est.pseudo_labels_} pseudo-labels, init {est.init_!r}; {seconds:.1f} s; "
          f"{int((sizes == 0).sum())} empty clusters, largest / mean size {sizes.max() / sizes.mean():.2f}")
    if truth is not None:  # a stand-in, or a .npz / .pt file that holds labels too
        # the start alone (its centroid head, no training) beside the result: on easy data the
        # start is already most of the answer, and a result should be measured against it
        first = entclust.EntropyClustering(args.k, init="kmeans++", epochs=0, random_state=args.seed).fit(x)
        for name, labels in (("start (k-means++ head)", first.labels_), ("entclust", est.labels_)):
            print(f"{name:>24}: ACC {entclust.clustering_accuracy(truth, labels):.3f}, "
                  f"NMI {entclust.normalized_mutual_info(truth, labels):.3f}")
    if args.out:
        np.save(args.out, est.labels_)
        print(f"labels written to {args.out}")


if __name__ == "__main__":
    main()
