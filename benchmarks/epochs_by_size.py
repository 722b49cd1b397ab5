"""What the default schedule of the per-batch mode costs and reaches as N grows: a fit's result is
set by its SGD steps, not by its passes over the data (entclust.cluster.scale.STEPS_PER_CLUSTER).

For each data set and each ``--epochs`` value (0: the default, ``default_epochs(N, 250, K)``) one
``EntropyClustering(K, epochs=...)`` fit per seed: SGD steps, seconds, ACC, NMI, the kept run's
objective on all points and its empty clusters; K-means (``n_init=1``) and MiniBatchKMeans on the
same points as what a user would pick instead. "peak MB": the process's peak resident memory
above what it was with the data loaded, so a row's own peak only where it is the first fit
above the earlier ones (run one fit a process for each: ``--no-kmeans`` and one ``--epochs``).
Data:

- ``blobs``: ``--n`` points, ``--k`` centres (10) ``s N(0, I)`` in 64 dimensions (``--spread`` s),
  unit noise: at s = 0.3 and K = 10 the clusters overlap (K-means about 77 %).
- ``digits`` or an ``.npz`` file with ``X`` and ``y`` (the 5000 MNIST digits of docs/results.md):
  ``--copies`` copies of the real points, each with Gaussian noise (``--noise``, in the data's
  units; 0.5 for digits' 0-16 pixels, 8 for MNIST's 0-255), so that N grows while the
  distribution stays that of real data; an epoch over c copies sees each point c times.

    python benchmarks/epochs_by_size.py --data blobs --n 200000 --epochs 1,2,5,10
    python benchmarks/epochs_by_size.py --data digits --copies 50 --epochs 1,3,0,50 --seeds 0,1
    python benchmarks/epochs_by_size.py --data mnist5k.npz --copies 20 --noise 8 --epochs 1,3,0,50 --seeds 0,1
    python benchmarks/epochs_by_size.py --data digits --copies 50 --epochs 0,50 --methods cce,mi-gd,sela,mi-adm,renyi
    python benchmarks/epochs_by_size.py --data blobs --n 1000000 --epochs 0 --no-kmeans   # then without --no-kmeans
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import normalized_mutual_info_score

import entclust
from entclust.cluster.scale import default_epochs
from entclust.metrics import clustering_accuracy


def load(args) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if args.data == "blobs":
        centres = (rng.normal(size=(args.k, 64)) * args.spread).astype(np.float32)
        y = rng.integers(0, args.k, args.n)
        x = np.empty((args.n, 64), np.float32)
        for s in range(0, args.n, 100_000):  # float32 blocks: no float64 copy of the data raises the peak
            e = min(args.n, s + 100_000)
            x[s:e] = centres[y[s:e]] + rng.standard_normal((e - s, 64), dtype=np.float32)
        return x, y
    if args.data == "digits":
        x, y = entclust.data.load_digits()
        noise = 0.5 if args.noise is None else args.noise
    else:
        with np.load(args.data) as f:
            x, y = f["X"], f["y"]
        noise = 8.0 if args.noise is None else args.noise
    x = np.tile(np.asarray(x, np.float32), (args.copies, 1))
    if args.copies > 1:
        x += rng.normal(scale=noise, size=x.shape).astype(np.float32)
    return x, np.tile(np.asarray(y), args.copies)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(name: str, steps, seconds: float, y, labels, base: float, objective=None, empty=None) -> None:
    acc = 100 * clustering_accuracy(y, labels)
    nmi = 100 * normalized_mutual_info_score(y, labels)
    print(f"| {name} | {steps} | {seconds:.1f} | {acc:.2f} | {nmi:.2f} | "
          f"{'-' if objective is None else f'{objective:.4f}'} | {'-' if empty is None else empty} | "
          f"{peak_mb() - base:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="blobs", help="blobs, digits, or an .npz file with X and y")
    p.add_argument("--n", type=int, default=200_000, help="blobs: points")
    p.add_argument("--spread", type=float, default=0.3, help="blobs: scale of the centres")
    p.add_argument("--k", type=int, default=10, help="blobs: clusters")
    p.add_argument("--pseudo-labels", dest="pseudo_labels", default="auto",
                   help="EntropyClustering's pseudo_labels (batch: per-batch labels also above K = 12)")
    p.add_argument("--copies", type=int, default=1, help="real data: noisy copies of every point")
    p.add_argument("--noise", type=float, help="real data: noise of the copies (default 0.5 digits, 8 a file)")
    p.add_argument("--epochs", default="0,50", help="comma-separated; 0 is the default schedule")
    p.add_argument("--methods", default="rce")
    p.add_argument("--seeds", default="0")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=250)
    p.add_argument("--no-kmeans", dest="no_kmeans", action="store_true", help="only the entclust fits")
    p.add_argument("--verbose", action="store_true", help="the fits' progress on standard error")
    args = p.parse_args()
    x, y = load(args)
    k = len(np.unique(y))
    batches = max(1, round(x.shape[0] / args.batch_size))
    print(f"{args.data}: N = {x.shape[0]}, D = {x.shape[1]}, K = {k}; {batches} batches an epoch, default "
          f"epochs {default_epochs(x.shape[0], args.batch_size, k)}\n")
    print("| fit | steps | seconds | ACC % | NMI % | objective | empty | peak MB |\n|---|---|---|---|---|---|---|---|")
    base = peak_mb()
    if not args.no_kmeans:
        t = time.perf_counter()
        km = KMeans(k, n_init=1, random_state=0).fit(x)
        row("KMeans(n_init=1)", "-", time.perf_counter() - t, y, km.labels_, base)
        t = time.perf_counter()
        mb = MiniBatchKMeans(k, n_init=1, batch_size=4096, random_state=0).fit(x)
        row("MiniBatchKMeans", "-", time.perf_counter() - t, y, mb.labels_, base)
    for method in filter(None, args.methods.split(",")):  # --methods "": the K-means rows alone
        for epochs in (int(e) for e in args.epochs.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                t = time.perf_counter()
                est = entclust.EntropyClustering(k, method=method, epochs=epochs or None, batch_size=args.batch_size,
                                                 pseudo_labels=args.pseudo_labels, random_state=seed,
                                                 verbose=args.verbose).fit(x)
                name = f"{method}, epochs {est.epochs_}{' (default)' if not epochs else ''}, seed {seed}"
                row(name, est.epochs_ * batches, time.perf_counter() - t, y, est.labels_, base, est.objective_,
                    int((est.cluster_sizes_ == 0).sum()))


if __name__ == "__main__":
    main()
