"""Selective pseudo-label clustering on digits, with its ablation (README table): for each seed,
the accuracy of one autoencoder + the same clustering after pre-training (the seed's A3,
``initial_labels_``), of the ensemble's consensus before any pseudo-label training (round 0)
and of SPC, plus the agreed points per round.

    python benchmarks/spc_ablation.py [--seeds 5] [--param KEY=VALUE ...]
"""
import argparse
import json

import numpy as np

from entclust.cluster.methods.spc import SelectivePseudoLabelClustering
from entclust.data import load_digits
from entclust.metrics import clustering_accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="an estimator parameter, e.g. reducer=umap, n_members=6, loss=rce")
    args = parser.parse_args()
    params = {}
    for item in args.param:
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    x, t = load_digits()
    rows = {"A3 (one autoencoder)": [], "round-0 consensus": [], "SPC": []}
    for seed in range(args.seeds):
        est = SelectivePseudoLabelClustering(10, random_state=seed, **params).fit(x, t)
        rows["A3 (one autoencoder)"].append(clustering_accuracy(t, est.initial_labels_))
        rows["round-0 consensus"].append(est.history_[0]["acc"])
        rows["SPC"].append(clustering_accuracy(t, est.labels_))
        print(f"seed {seed}: agreed per round {[h['agreed'] for h in est.history_]}", flush=True)
    print(f"\n| digits, {args.seeds} seeds, {params or 'defaults'} | mean ACC % | range |\n|---|---|---|")
    for name, accs in rows.items():
        a = 100 * np.array(accs)
        print(f"| {name} | {a.mean():.1f} | {a.min():.1f}-{a.max():.1f} |")


if __name__ == "__main__":
    main()
