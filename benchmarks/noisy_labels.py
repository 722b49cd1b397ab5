"""``python benchmarks/noisy_labels.py`` (was ``entclust noisy-labels``): the robustness experiment of seed 000 Fig. 3 / seed 003 Fig. 2 /
seed 004 Fig. 11 on scikit-learn's digits (real, bundled).

A share ``eta`` of the training labels is replaced by a random label (drawn uniformly from all K
classes, so about ``eta (K-1)/K`` of them end up wrong), the targets are the papers' soft
``eta u + (1 - eta) onehot(observed label)``, and one network is trained per loss: forward CE
``H(y, sigma)``, reverse CE ``H(sigma, y)`` and collision CE ``-ln sigma . y``, all from the
same initialisation, batches and augmentation-free data. The figure is test accuracy after the
last epoch against ``eta`` (mean and spread over the seeds).

At ``eta = 0`` the one-hot target makes reverse CE infinite wherever ``y_k = 0`` and
``sigma_k > 0``; every target is therefore smoothed by at least ``--min-smoothing`` (0.01).
"""
from __future__ import annotations

import json
import os

LOSS_NAMES = ("forward CE", "reverse CE", "collision CE")


def _loss(name: str):
    import torch.nn.functional as F

    from entclust.losses import collision_cross_entropy, reverse_cross_entropy

    return {"forward CE": F.cross_entropy, "reverse CE": reverse_cross_entropy,
            "collision CE": collision_cross_entropy}[name]


def split(seed: int, model: str):
    """Train/test split of digits (70/30, stratified), standardised with the training statistics:
    ``(N, 64)`` vectors for the MLP, ``(N, 1, 8, 8)`` images for the CNN."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, labels = load_digits(return_X_y=True)
    x_tr, x_te, l_tr, l_te = train_test_split(x, labels, test_size=0.3, random_state=seed, stratify=labels)
    mean, std = x_tr.mean(), x_tr.std()
    shape = (-1, 1, 8, 8) if model == "cnn" else (-1, 64)
    as_t = lambda a: torch.tensor(((a - mean) / std).reshape(shape), dtype=torch.float32)  # noqa: E731
    return as_t(x_tr), as_t(x_te), torch.as_tensor(l_tr), torch.as_tensor(np.asarray(l_te))


def replace_labels(labels, eta: float, k: int, seed: int):
    """``eta`` of the labels replaced by a uniformly random class (it may equal the true one)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    hit = torch.rand(len(labels), generator=g) < eta
    drawn = torch.randint(0, k, (len(labels),), generator=g)
    return torch.where(hit, drawn, labels)


def network(model: str, k: int, seed: int):
    import torch
    from torch import nn

    from entclust.deep.models import MLP, VGG4

    torch.manual_seed(seed)
    backbone = MLP(64, hidden=(256, 256)) if model == "mlp" else VGG4((1, 8, 8), width=0.25)
    return nn.Sequential(backbone, nn.Linear(backbone.out_features, k))


def train_one(loss_name, x, targets, x_test, l_test, *, model, epochs, batch, lr, seed):
    """Test accuracy after the last epoch of one network trained on ``targets`` (soft, (N, K))."""
    import torch

    net = network(model, targets.shape[1], seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = _loss(loss_name)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(batch):
            if len(idx) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]), targets[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return float((net(x_test).argmax(1) == l_test).float().mean())


def run_experiment(noise, seeds, *, model="mlp", epochs=100, batch=128, lr=1e-3, min_smoothing=0.01,
                   verbose=True) -> dict:
    """``{"results": {loss: {eta: [acc per seed]}}, "settings": ...}``."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    k = 10
    results = {name: {str(eta): [] for eta in noise} for name in LOSS_NAMES}
    runs = [(seed, eta) for seed in seeds for eta in noise]
    for seed, eta in tqdm(runs, desc="noisy labels", unit="setting", disable=None if verbose else True):
        x_tr, x_te, l_tr, l_te = split(seed, model)
        observed = replace_labels(l_tr, eta, k, seed)
        smoothing = max(float(eta), float(min_smoothing))
        targets = (1 - smoothing) * F.one_hot(observed, k).float() + smoothing / k
        for name in LOSS_NAMES:
            acc = train_one(name, x_tr, targets, x_te, l_te, model=model, epochs=epochs, batch=batch, lr=lr, seed=seed)
            results[name][str(eta)].append(acc)
    settings = {"model": model, "epochs": epochs, "batch": batch, "lr": lr, "optimizer": "adam",
                "min_smoothing": min_smoothing, "noise": list(noise), "seeds": list(seeds),
                "torch": torch.__version__, "data": "sklearn digits, 70/30 stratified split"}
    return {"results": results, "settings": settings}


def table(record) -> str:
    import numpy as np

    noise = record["settings"]["noise"]
    lines = ["| loss | " + " | ".join(f"eta = {eta:g}" for eta in noise) + " |", "|---|" + "---|" * len(noise)]
    for name, by_eta in record["results"].items():
        cells = [f"{100 * np.mean(by_eta[str(eta)]):.1f} +- {100 * np.std(by_eta[str(eta)]):.1f}" for eta in noise]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(record, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    noise = record["settings"]["noise"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, marker in zip(LOSS_NAMES, "osD"):
        values = np.array([record["results"][name][str(eta)] for eta in noise]) * 100
        mean, spread = values.mean(1), values.std(1)
        ax.plot(noise, mean, marker=marker, label=name)
        ax.fill_between(noise, mean - spread, mean + spread, alpha=0.15)
    s = record["settings"]
    ax.set_xlabel("corruption level eta (share of training labels replaced at random)")
    ax.set_ylabel("test accuracy %")
    ax.set_title(f"digits, {s['model'].upper()}, soft targets eta u + (1-eta) y, {len(s['seeds'])} seeds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def run(args) -> int:
    from entclust._files import check_output_folder, text_writer, write_files

    if not args.noise or any(not 0 <= eta <= 1 for eta in args.noise):
        raise ValueError(f"--noise takes shares in [0, 1], got {args.noise}")
    for name in ("seeds", "epochs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    check_output_folder(args.out)
    record = run_experiment(sorted(args.noise), list(range(args.seeds)), model=args.model, epochs=args.epochs,
                            lr=args.lr, min_smoothing=args.min_smoothing, verbose=not args.quiet)
    text = table(record)
    stem = os.path.join(args.out, f"noisy_labels_{args.model}")
    os.makedirs(args.out, exist_ok=True)
    write_files([(stem + ".json", text_writer(json.dumps(record, indent=1))), (stem + ".md", text_writer(text + "\n")),
                 (stem + ".png", lambda tmp: plot(record, tmp))])
    print(f"Test accuracy % after {args.epochs} epochs ({args.model}, mean +- std over {args.seeds} seeds):\n")
    print(text)
    print(f"\nwrote {stem}.md, .json and .png")
    return 0


def add_arguments(p) -> None:
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8],
                   help="shares of training labels replaced at random (default 0 0.2 0.4 0.6 0.8)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                   help="mlp: 64-256-256-10 on pixels; cnn: VGG4 at width 1/4 on 8x8 images")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--min-smoothing", dest="min_smoothing", type=float, default=0.01,
                   help="smallest eta in the soft targets (reverse CE is infinite for one-hot targets)")
    p.add_argument("--out", default="results")
    p.add_argument("-q", "--quiet", action="store_true")


if __name__ == "__main__":
    import sys

    from entclust.cli import run_script

    sys.exit(run_script("noisy_labels.py", __doc__, add_arguments, run))
