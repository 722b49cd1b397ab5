"""``python examples/losses_demo.py [--epochs 60] [--noise 0.4] [--out results]`` (was
``entclust losses-demo``): the fused losses training a linear softmax classifier on
scikit-learn's digits (real, bundled), with clean and with corrupted training labels, and the
fused ops timed against their PyTorch reference on the same batches.

Reverse and collision cross-entropy are bounded in the predictions, which is why the source
papers use them against pseudo-label errors; the demo measures that on real data: with a
share of the training labels replaced by random wrong ones, test accuracy of the three losses.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from entclust._files import write_files
from entclust.losses import collision_cross_entropy, reverse_cross_entropy
from entclust.testing import reference  # the demo times the fused ops against their PyTorch baseline

LOSSES = {
    "cross-entropy (soft)": (F.cross_entropy, F.cross_entropy),
    "reverse CE": (reverse_cross_entropy, reference.reverse_cross_entropy),
    "collision CE": (collision_cross_entropy, reference.collision_cross_entropy),
}


def load_split(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, labels = load_digits(return_X_y=True)
    x_tr, x_te, l_tr, l_te = train_test_split(x, labels, test_size=0.3, random_state=seed, stratify=labels)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6  # standardise with training statistics only
    as_t = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return as_t(x_tr), as_t(x_te), torch.tensor(l_tr), torch.tensor(l_te)


def corrupt(labels: torch.Tensor, share: float, k: int, seed: int) -> torch.Tensor:
    """Replace ``share`` of the labels by a uniformly drawn *different* class."""
    g = torch.Generator().manual_seed(seed)
    out = labels.clone()
    hit = torch.rand(len(labels), generator=g) < share
    shift = torch.randint(1, k, (len(labels),), generator=g)
    out[hit] = (labels[hit] + shift[hit]) % k
    return out


def train(loss_fn, x, targets, x_test, l_test, *, epochs: int, batch: int, lr: float, seed: int):
    torch.manual_seed(seed)
    head = nn.Linear(x.shape[1], targets.shape[1])
    nn.init.kaiming_normal_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    curve, loss_seconds = [], 0.0
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            opt.zero_grad()
            t0 = time.perf_counter()
            loss = loss_fn(head(x[idx]), targets[idx])
            loss.backward()
            loss_seconds += time.perf_counter() - t0
            opt.step()
        with torch.no_grad():
            curve.append((head(x_test).argmax(1) == l_test).float().mean().item())
    return curve, loss_seconds


def time_op(fn, n: int, k: int, repeat: int = 30) -> float:
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(n, k, generator=g)).requires_grad_()
    y = 0.9 * torch.softmax(2 * torch.randn(n, k, generator=g), 1) + 0.1 / k
    for _ in range(3):
        fn(logits, y).backward()
    times = []
    for _ in range(repeat):
        logits.grad = None
        t0 = time.perf_counter()
        fn(logits, y).backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main(epochs: int = 60, noise: float = 0.4, smoothing: float = 0.1, seed: int = 0, out: str = "results") -> dict:
    from tqdm import tqdm

    x_tr, x_te, l_tr, l_te = load_split(seed)
    k = 10
    settings = {"clean labels": l_tr, f"{noise:.0%} labels corrupted": corrupt(l_tr, noise, k, seed)}
    results, curves = {}, {}
    runs = [(s, name) for s in settings for name in LOSSES]
    for setting, name in tqdm(runs, desc="training", unit="run", disable=None):
        onehot = F.one_hot(settings[setting], k).float()
        targets = (1 - smoothing) * onehot + smoothing / k  # RCE needs y > 0 wherever sigma > 0
        curve, secs = train(LOSSES[name][0], x_tr, targets, x_te, l_te, epochs=epochs, batch=128, lr=0.05, seed=seed)
        results[(setting, name)] = dict(final_acc=curve[-1], best_acc=max(curve), loss_seconds=secs)
        curves[(setting, name)] = curve

    print(f"\nLinear softmax classifier on scikit-learn digits ({len(x_tr)} train / {len(x_te)} test, "
          f"{epochs} epochs, SGD, label smoothing {smoothing}); test accuracy after the last epoch:\n")
    print("| loss | " + " | ".join(settings) + " |")
    print("|---|" + "---|" * len(settings))
    for name in LOSSES:
        print(f"| {name} | " + " | ".join(f"{100 * results[(s, name)]['final_acc']:.1f}%" for s in settings) + " |")

    shapes = [(128, 10), (250, 200), (4096, 1000)]
    timing = []
    for n, kk in shapes:
        for name in ("reverse CE", "collision CE"):
            fused, ref = LOSSES[name]
            timing.append(dict(loss=name, n=n, k=kk, fused_ms=time_op(fused, n, kk), reference_ms=time_op(ref, n, kk)))
    print(f"\nForward + backward, median ms on this machine ({torch.get_num_threads()} threads):\n")
    print("| loss | N × K | fused | PyTorch reference | speed-up |\n|---|---|---|---|---|")
    for t in timing:
        print(f"| {t['loss']} | {t['n']} × {t['k']} | {t['fused_ms']:.3f} | {t['reference_ms']:.3f} "
              f"| {t['reference_ms'] / t['fused_ms']:.2f}× |")

    os.makedirs(out, exist_ok=True)
    png = os.path.join(out, "demo_digits.png")
    summary = dict(accuracy={f"{s} / {n}": v for (s, n), v in results.items()}, timing=timing)

    def record(tmp):
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)

    write_files([(png, lambda tmp: _plot(curves, settings, tmp)), (os.path.join(out, "demo_digits.json"), record)])
    print(f"\nwrote {png} and {os.path.join(out, 'demo_digits.json')}")
    return summary


def _plot(curves, settings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.6), sharey=True)
    for ax, setting in zip(np.atleast_1d(axes), settings):
        for name in LOSSES:
            ax.plot(np.arange(1, len(curves[(setting, name)]) + 1), 100 * np.array(curves[(setting, name)]), label=name)
        ax.set_title(f"digits, {setting}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy, %")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--noise", type=float, default=0.4, help="share of training labels to corrupt")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split, the noise and the training")
    parser.add_argument("--out", default="results", help="folder for the PNG and JSON")


def run(args) -> int:
    from entclust._files import check_output_folder

    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if not 0.0 <= args.noise < 1.0:
        raise ValueError(f"--noise must be in [0, 1), got {args.noise}")
    check_output_folder(args.out)
    main(epochs=args.epochs, noise=args.noise, seed=args.seed, out=args.out)
    return 0


if __name__ == "__main__":
    import sys

    from entclust.cli import run_script

    sys.exit(run_script("losses_demo.py", __doc__, add_arguments, run))
