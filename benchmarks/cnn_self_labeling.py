"""Issue 15's CNN setting: a user's own training loop on digit images with ``entclust.SelfLabeling``
against a plain-PyTorch IMSAT objective on the same network, data, augmentations and seeds.

A small CNN (three 3x3 conv + BN + ReLU layers, two max-pools, a linear head) on scikit-learn's
digits as 1x8x8 images, batch 250, Adam, random rotations (+-15 degrees) and shifts (+-1 pixel).
``--views 2`` is the papers' self-augmentation, sigma_i = E_t sigma(f(t(x_i))) over two random
augmentations (seed 000 appendix E); ``--views 1`` one augmentation per step, as in the audit.
Prints ACC at the end (mean +- std over seeds), the empty clusters per seed (classes that
argmax sigma of the network in eval mode never predicts), and the empty clusters after the
first, middle and last epoch.

``python benchmarks/cnn_self_labeling.py [--seeds 5] [--epochs 50] [--views 1 2]
[--methods rce rce-papers imsat cce] [--weights 0.3 1 3] [--micro-batches 4]``; about 15 s per
run and view on 2 cores.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

K = 10


def network() -> nn.Sequential:
    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(*block(1, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 64), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(256, K))


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation (+-15 degrees) and shift (+-1 pixel of 8) per image, bilinear, zero fill."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(15)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2.0 / x.shape[-1])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = angle.cos(), -angle.sin()
    theta[:, 1, 0], theta[:, 1, 1] = angle.sin(), angle.cos()
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def imsat_loss(logits: torch.Tensor, head: nn.Linear, weight: float = 1.3, gamma: float = 0.01) -> torch.Tensor:
    """MATH.md's MI-GD/IMSAT objective ``mean_i H(sigma_i) + w KL(sigma_bar || u) + gamma ||v||^2``,
    w = 1.3 as in seed 000 appendix E, written in plain PyTorch as a user would."""
    log_sigma = logits.log_softmax(-1)
    decisiveness = -(log_sigma.exp() * log_sigma).sum(-1).mean()
    sigma_bar = log_sigma.exp().mean(0)
    fairness = (sigma_bar * (sigma_bar.log() + math.log(K))).sum()
    return decisiveness + weight * fairness + gamma * head.weight.pow(2).sum()


def predict(model: nn.Module, images: torch.Tensor, generator: torch.Generator, views: int) -> torch.Tensor:
    """Log of the mean prediction over ``views`` random augmentations: softmax of it is E_t sigma."""
    x = torch.cat([augment(images, generator) for _ in range(views)])
    return model(x).log_softmax(-1).view(views, len(images), K).logsumexp(0) - math.log(views)


def run(method: str, seed: int, images: torch.Tensor, labels: np.ndarray, epochs: int, views: int, lr: float,
        weight: float | None = None, micro: int = 1, joint: bool = True):
    import entclust

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = network()
    optimizer = torch.optim.Adam(model.parameters(), lr)
    if method == "imsat":
        criterion = None
    else:  # the package's defaults; "rce-papers": without the prediction-fairness term
        kind = "cce" if method == "cce" else "rce"
        extra = {"prediction_fairness": 0.0 if method == "rce-papers" else weight}
        criterion = entclust.SelfLabeling(kind, lam=100.0, gamma=0.01, on_unconverged="ignore", **extra)
    empty = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(250):
            optimizer.zero_grad()
            if micro > 1:  # gradient accumulation over `micro` parts of the batch (issue 15, item 6):
                # each part its own forward (BN statistics per part), labels over all parts or per part
                parts = [predict(model, images[part], generator, views) for part in batch.tensor_split(micro)]
                ys = criterion.labels(parts) if joint else [None] * micro
                for part, y in zip(parts, ys):
                    (criterion(part, head=model[-1], y=y) / micro).backward()
            else:
                logits = predict(model, images[batch], generator, views)
                loss = imsat_loss(logits, model[-1]) if criterion is None else criterion(logits, head=model[-1])
                loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            predicted = model(images).argmax(-1).numpy()
        empty.append(K - len(np.unique(predicted)))
    return entclust.clustering_accuracy(labels, predicted), empty


def main(argv=None) -> int:
    from sklearn.datasets import load_digits

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--methods", nargs="+", default=["rce", "rce-papers", "imsat", "cce"],
                        choices=["rce", "rce-papers", "imsat", "cce"])
    parser.add_argument("--weights", type=float, nargs="+", default=[None],
                        help="prediction_fairness of the rce rows (default: SelfLabeling's)")
    parser.add_argument("--micro-batches", type=int, default=1,
                        help="M > 1: the rce rows also run with gradient accumulation over M parts of each batch, "
                             "labels solved jointly (criterion.labels) and per part")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    print(f"digits as 1x8x8 images, {args.epochs} epochs, batch 250, Adam lr {args.lr:g}, seeds 0..{args.seeds - 1}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| views | method | ACC % | empty clusters at the end, per seed | seeds with 0 empty | "
          "empty after epoch 1 / middle / last (sum over seeds) | s per run |")
    print("|---|---|---|---|---|---|---|")
    for views in args.views:
        rows = [(m, w, 1, True) for m in args.methods for w in (args.weights if m == "rce" else [None])]
        if args.micro_batches > 1 and "rce" in args.methods:
            rows += [("rce", None, args.micro_batches, joint) for joint in (True, False)]
        for method, weight, micro, joint in rows:
            accs, ends, curves, start = [], [], [], time.perf_counter()
            for seed in range(args.seeds):
                acc, empty = run(method, seed, images, digits.target, args.epochs, views, args.lr, weight, micro, joint)
                accs.append(100 * acc)
                ends.append(empty[-1])
                curves.append(empty)
            seconds = (time.perf_counter() - start) / args.seeds
            mid = args.epochs // 2
            trace = " / ".join(str(sum(c[e] for c in curves)) for e in (0, mid, args.epochs - 1))
            spread = statistics.pstdev(accs) if len(accs) > 1 else 0.0
            name = method if weight is None else f"rce, prediction_fairness={weight:g}"
            if micro > 1:
                name += f", {micro} micro-batches, " + ("labels solved jointly" if joint else "each solved alone")
            print(f"| {views} | {name} | {statistics.fmean(accs):.1f} +- {spread:.1f} | {ends} | "
                  f"{sum(e == 0 for e in ends)}/{len(ends)} | {trace} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
