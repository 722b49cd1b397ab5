"""Selective pseudo-label clustering with its ablation (README table). For each seed: the
accuracy of one autoencoder + the same clustering after pre-training (seed 002's A3,
``initial_labels_``), of the ensemble's consensus before any pseudo-label training (round 0), of
SPC, and K-means on the same input; the agreed points per round, the seconds per round and the
process's peak memory.

    python benchmarks/spc_ablation.py [--data digits|digit-images|blobs|anisotropic|moons]
                                      [--seeds 5] [--param KEY=VALUE ...] [--json out.json]
"""
import argparse
import json
import resource
import time

import numpy as np
from sklearn.cluster import KMeans

from entclust.deep import SelectivePseudoLabelClustering
from entclust.data import SYNTHETIC, load_digits
from entclust.images import load_digit_images
from entclust.metrics import clustering_accuracy


def load(name, seed):
    if name == "digits":
        return load_digits()
    if name == "digit-images":
        return load_digit_images()
    gen = SYNTHETIC[name]
    return gen(n_samples=1000, random_state=seed) if name == "moons" else gen(1000, random_state=seed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=["digits", "digit-images", *SYNTHETIC])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="an estimator parameter, e.g. reducer=umap, n_members=6, loss=rce")
    parser.add_argument("--json", help="write the per-seed results here")
    args = parser.parse_args()
    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    rows = {"A3 (one autoencoder)": [], "round-0 consensus": [], "SPC": [], "K-means": []}
    seconds, round_seconds, results = [], [], []
    for seed in range(args.seeds):
        x, t = load(args.data, seed)
        k = int(t.max()) + 1
        start = time.perf_counter()
        est = SelectivePseudoLabelClustering(k, random_state=seed, **params).fit(x, t)
        seconds.append(time.perf_counter() - start)
        round_seconds += [h["seconds"] for h in est.history_[:-1]]  # rounds that trained
        flat = x.reshape(len(x), -1)
        kmeans = KMeans(k, n_init=10, random_state=seed).fit_predict(flat)
        accs = [clustering_accuracy(t, est.initial_labels_), est.history_[0]["acc"], clustering_accuracy(t, est.labels_),
                clustering_accuracy(t, kmeans)]
        for name, a in zip(rows, accs):
            rows[name].append(a)
        results.append({"seed": seed, "acc": dict(zip(rows, accs)), "best_round": est.best_round_,
                        "history": est.history_, "seconds": seconds[-1]})
        print(f"seed {seed}: A3 {accs[0]:.3f}, round 0 {accs[1]:.3f}, SPC {accs[2]:.3f} (round {est.best_round_}), "
              f"K-means {accs[3]:.3f}, {seconds[-1]:.0f} s; agreed per round {[h['agreed'] for h in est.history_]}, "
              f"ACC per round {[round(h['acc'], 3) for h in est.history_]}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"\n| {args.data}, {args.seeds} seeds, {params or 'defaults'} | mean ACC % | range |\n|---|---|---|")
    for name, accs in rows.items():
        a = 100 * np.array(accs)
        print(f"| {name} | {a.mean():.1f} ± {a.std():.1f} | {a.min():.1f}-{a.max():.1f} |")
    rs = np.array(round_seconds) if round_seconds else np.array([float("nan")])
    print(f"\n{np.mean(seconds):.1f} s a fit, {rs.mean():.2f} s a round (pseudo-label epochs + clusterings), "
          f"peak memory of the process {peak:.0f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": args.data, "params": params, "results": results, "peak_mib": peak}, f, indent=1)


if __name__ == "__main__":
    main()
