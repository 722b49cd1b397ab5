"""Semi-supervised self-labeling on digit images (issue 12; seed 004 Sec. 4.4): a share of the
points keeps its label (their pseudo-labels clamped to it, plus a forward-CE term), the rest is
unlabelled, against "labelled points only" (the same network, augmentations and optimiser
trained by forward CE on the labelled points alone, for as many steps as the semi-supervised run).

Accuracy is plain accuracy on the unlabelled points (the clamped labels fix the class order;
no Hungarian matching). Labelled points are drawn per class (at least one each), per seed.

``python benchmarks/semi_supervised.py [--seeds 3] [--shares 0.01 0.05 0.1] [--param epochs=30]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def draw_labelled(y: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``(N,)`` labels with -1 for unlabelled points: ``share`` of each class labelled (>= 1)."""
    rng = np.random.default_rng(seed)
    partial = np.full(len(y), -1, dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        take = rng.choice(members, max(1, int(round(share * len(members)))), replace=False)
        partial[take] = c
    return partial


def labelled_only(est_params, x, partial, seed, steps):
    """The estimator's own network and augmentation, trained by forward CE on the labelled points."""
    import torch
    import torch.nn.functional as F

    from entclust.deep import DeepEntropyClustering, get_augment

    est = DeepEntropyClustering(10, random_state=seed, **{**est_params, "epochs": 0})
    est.fit(x)  # builds the network and the input scaling without training
    inputs = est._inputs(x, fitting=False)
    model = est.model_
    known = torch.from_numpy(partial >= 0)
    xs, ys = inputs[known], torch.from_numpy(partial[partial >= 0])
    augment = get_augment(est.augment, tuple(xs.shape[1:]))
    opt = torch.optim.Adam(model.parameters(), lr=est.lr)
    g = torch.Generator().manual_seed(seed)
    batch = min(est.batch_size, len(xs))
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(xs), generator=g)[:batch]
        logits = model(augment(xs[idx], g))[0]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits, ys[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return model(inputs)[0].argmax(1).numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    parser.add_argument("--methods", nargs="+", default=["rce", "cce"])
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from entclust.cli.fit import method_options
    from entclust.deep import DeepEntropyClustering
    from entclust.images import load_digit_images

    x, y = load_digit_images()
    params = method_options(args)  # --param KEY=VALUE, values as JSON
    defaults = DeepEntropyClustering().get_params()
    print(f"# digits 1797 x 1x8x8, seeds 0..{args.seeds - 1}, params {params}", flush=True)
    print("| labelled | method | ACC % on unlabelled points | lowest | s per run |")
    print("|---|---|---|---|---|")
    for share in args.shares:
        for method in args.methods + ["labelled only"]:
            accs, secs = [], []
            for seed in range(args.seeds):
                partial = draw_labelled(y, share, seed)
                free = partial < 0
                begin = time.perf_counter()
                if method == "labelled only":
                    epochs = params.get("epochs", defaults["epochs"])
                    batch = params.get("batch_size", defaults["batch_size"])
                    steps = epochs * max(1, round(len(x) / batch))
                    pred = labelled_only(params, x, partial, seed, steps)
                else:
                    est = DeepEntropyClustering(10, method, random_state=seed, **params)
                    pred = est.fit(x, partial_labels=partial).labels_
                secs.append(time.perf_counter() - begin)
                accs.append(100 * float((pred[free] == y[free]).mean()))
            n_lab = int(sum((draw_labelled(y, share, 0) >= 0)))
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"| {share:.0%} ({n_lab}) | {method} | {statistics.mean(accs):.1f} +- {spread:.1f} | {min(accs):.1f} | "
                  f"{statistics.mean(secs):.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
