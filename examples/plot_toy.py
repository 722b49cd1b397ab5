"""The papers' 2-D pictures, computed: ``python examples/plot_toy.py [--out results] [--n-init 10]
[--seed 0]`` (was ``entclust plot-toy``).

1. ``toy_anisotropic.png`` (seed 004 Fig. 1, seed 000 Fig. 1, and seed 004 Fig. 3's K = 3 case):
   decision regions of K-means vs linear entropy clustering (reverse-CE self-labeling) on
   parallel elongated clusters. K-means cuts across the long axis; entropy clustering finds
   the gaps. Soft regions are drawn with sigma-weighted colours, as in the papers.
2. ``toy_margin.png`` (seed 000 Fig. 4, seed 004 Fig. 4): the margin weight gamma. Small gamma
   lets the boundary squeeze between close points with a thin "indecisive" band; larger gamma
   shrinks ||v|| and widens the band (the soft margin is 1/||v||).

Both methods get the same restarts (K-means' 10 k-means++ starts, ``n_init=10`` training runs
for entropy clustering, the lowest objective kept).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from entclust._files import write_files
from entclust.cluster import make_estimator
from entclust.data import make_anisotropic
from entclust.metrics import clustering_accuracy

COLOURS = np.array([[0.84, 0.15, 0.16], [0.17, 0.63, 0.17], [0.12, 0.47, 0.71], [1.0, 0.5, 0.05]])


def _grid(x: np.ndarray, steps: int = 300):
    lo, hi = x.min(0), x.max(0)
    pad = 0.08 * (hi - lo)
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], steps), np.linspace(lo[1] - pad[1], hi[1] + pad[1], steps))
    return gx, gy, np.stack([gx.ravel(), gy.ravel()], 1)


def _regions(ax, est, x, labels, title, soft: bool):
    gx, gy, pts = _grid(x)
    if soft:
        proba = est.predict_proba(pts)
        rgb = proba @ COLOURS[: proba.shape[1]]
        # sigma-weighted colour on white: saturated where decisive, pale in the margin
        alpha = (proba.max(1) - 1 / proba.shape[1]) / (1 - 1 / proba.shape[1])
        img = 1 - alpha[:, None] * (1 - rgb)
    else:
        img = 1 - 0.7 * (1 - COLOURS[est.predict(pts)])
    ax.imshow(img.reshape(*gx.shape, 3), origin="lower", extent=(gx.min(), gx.max(), gy.min(), gy.max()), aspect="auto")
    ax.scatter(x[:, 0], x[:, 1], c=0.6 * COLOURS[labels], s=5, edgecolors="k", linewidths=0.2)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def anisotropic_figure(path: str, *, n_init: int = 10, seed: int = 0) -> dict:
    """Two rows (K = 2, 3), K-means vs entropy clustering; returns the accuracies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    scores = {}
    for row, k in enumerate((2, 3)):
        x, truth = make_anisotropic(1000 if k == 2 else 1500, k, random_state=seed)
        for col, (name, params) in enumerate((("kmeans", {}), ("rce", {"n_init": n_init}))):
            est = make_estimator(name, k, random_state=seed, **params).fit(x)
            acc = clustering_accuracy(truth, est.labels_)
            scores[f"{name} K={k}"] = acc
            label = "K-means" if name == "kmeans" else "entropy clustering (reverse CE)"
            _regions(axes[row, col], est, x, est.labels_, f"{label}, K={k}: ACC {100 * acc:.1f}%", soft=name != "kmeans")
    fig.suptitle("Elongated clusters: K-means vs linear entropy clustering (seed 004 Fig. 1)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return scores


def margin_figure(path: str, gammas=(1e-4, 1e-3, 1e-2, 1e-1), *, seed: int = 0) -> dict:
    """Entropy clustering of the same small 2-D set for several gamma; returns ||v|| per gamma."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, _ = make_anisotropic(120, 2, length=1.5, width=0.35, gap=2.0, random_state=seed)
    fig, axes = plt.subplots(1, len(gammas), figsize=(3.2 * len(gammas), 3.3))
    norms = {}
    for ax, gamma in zip(axes, gammas):
        est = make_estimator("rce", 2, random_state=seed, gamma=gamma, n_init=5, epochs=200, batch_size=120).fit(x)
        norm = float(torch.linalg.norm(est.head_.weight.detach()[0] - est.head_.weight.detach()[1]))
        norms[gamma] = norm
        _regions(ax, est, x, est.labels_, f"gamma={gamma:g}: ||v1-v2||={norm:.1f}", soft=True)
    fig.suptitle("Margin term gamma ||v||^2: larger gamma, wider soft margin (seed 000 Fig. 4)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return norms


def main(out: str = "results", *, n_init: int = 10, seed: int = 0) -> dict:
    os.makedirs(out, exist_ok=True)
    found = {}

    def anisotropic(tmp):
        found["scores"] = anisotropic_figure(tmp, n_init=n_init, seed=seed)

    def margin(tmp):
        found["norms"] = margin_figure(tmp, seed=seed)

    def record(tmp):
        with open(tmp, "w") as f:
            json.dump({"accuracy": found["scores"], "margin_norms": {str(g): v for g, v in found["norms"].items()}},
                      f, indent=1)

    # the figures are drawn into temporaries; all three files appear together or not at all
    write_files([(os.path.join(out, "toy_anisotropic.png"), anisotropic), (os.path.join(out, "toy_margin.png"), margin),
                 (os.path.join(out, "toy.json"), record)])
    scores, norms = found["scores"], found["norms"]
    summary = {"accuracy": scores, "margin_norms": {str(g): v for g, v in norms.items()}}
    for name, acc in scores.items():
        print(f"{name:12s} ACC {100 * acc:5.1f}%")
    for gamma, norm in norms.items():
        print(f"gamma={gamma:<8g} ||v1 - v2|| = {norm:.2f} (soft margin ~ 1/||v||)")
    print(f"wrote {out}/toy_anisotropic.png, {out}/toy_margin.png, {out}/toy.json")
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="results", help="folder for the PNGs and toy.json")
    parser.add_argument("--n-init", dest="n_init", type=int, default=10, help="restarts of both methods")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the data and the fits")


def run(args) -> int:
    from entclust._files import check_output_folder

    if args.n_init < 1:
        raise ValueError(f"--n-init must be >= 1, got {args.n_init}")
    check_output_folder(args.out)
    main(args.out, n_init=args.n_init, seed=args.seed)
    return 0


if __name__ == "__main__":
    import sys

    from entclust.cli import run_script

    sys.exit(run_script("plot_toy.py", __doc__, add_arguments, run))
