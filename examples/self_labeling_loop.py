"""Self-labeling in your own training loop: ``python examples/self_labeling_loop.py [--epochs 10]``.

The second of the README's three journeys: a small CNN on scikit-learn's digit images (1797 x
1 x 8 x 8, real and bundled), trained with no labels by :class:`entclust.SelfLabeling`: each
batch's pseudo-labels are solved by the fused EM solver, and the loss is reverse cross-entropy
to them plus strong fairness, ``mean_i H(sigma_i, y_i) + lam KL(u || y_bar)``, plus the margin
term on the last layer. The labels are used only to report accuracy. ``criterion.stats`` counts
the solves and whether they met their stopping rule.
"""
from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import entclust


def network(k: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(128, k))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--method", choices=("rce", "cce"), default="rce")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    torch.manual_seed(args.seed)
    model = network(10)
    head = model[-1]
    criterion = entclust.SelfLabeling(args.method, lam=100.0, gamma=0.01)   # the margin term needs head=
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        total = 0.0
        for idx in torch.randperm(len(x), generator=generator).split(args.batch_size):
            loss = criterion(model(x[idx]), head=head)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx) / len(x)
        with torch.no_grad():
            predicted = model(x).argmax(1).numpy()
        acc = entclust.clustering_accuracy(digits.target, predicted)
        stats = criterion.stats
        print(f"epoch {epoch + 1}: loss {total:.4f}, ACC {acc:.3f}, clusters used {len(set(predicted))}, "
              f"pseudo-label solves {stats['solves']} ({stats['unconverged']} short of their rule)", flush=True)
        criterion.reset_stats()


if __name__ == "__main__":
    main()
