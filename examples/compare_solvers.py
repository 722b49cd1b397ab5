"""EM against Newton against projected gradient on your own problem:
``python examples/compare_solvers.py [sigma.npy] [--lam 100] [--target-gap 1e-6] [--plot solvers.png]``.

The third of the README's three journeys. A pseudo-label problem is a batch of predictions
``sigma`` (N x K, rows on the simplex, or B x N x K for B problems): the y-step of self-labeling.
Without a file, it makes the problem a user meets in training: the predictions of a linear head
on scikit-learn's digits after a few epochs of self-labeling (confident rows, where EM slows
down). Every solver runs to one relative gap ``gap / (1 + |objective|)`` (the duality gap of the
reverse-CE problem, a certificate every solver reports), and the table gives the time and
iterations to each level.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import entclust


def trained_head_sigma(epochs: int, seed: int) -> torch.Tensor:
    """softmax of a linear head trained by self-labeling on digits for ``epochs`` epochs: the
    first 250 points, float64."""
    from sklearn.datasets import load_digits

    x = load_digits().data
    est = entclust.EntropyClustering(10, epochs=epochs, n_init=1, random_state=seed).fit(x)
    return torch.from_numpy(est.predict_proba(x[:250]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sigma", nargs="?", help="(N, K) or (B, N, K) predictions (.npy); none: a trained head's on digits")
    parser.add_argument("--logits", action="store_true", help="the file holds logits: softmax them first")
    parser.add_argument("--lam", type=float, default=100.0, help="fairness weight (the papers: 100)")
    parser.add_argument("--problem", choices=("rce", "cce"), default="rce",
                        help="reverse CE (EM, SQUAREM, Newton, dual Newton, torch.compile of EM) or collision CE (EM, PGD)")
    parser.add_argument("--target-gap", type=float, default=1e-6)
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per solver")
    parser.add_argument("--solvers", nargs="+", default=None, help="names to run (default: every solver of --problem)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the generated problem's head")
    parser.add_argument("--plot", default=None, help="gap against time, one line per solver (.png)")
    args = parser.parse_args(argv)
    if args.sigma:
        sigma = torch.from_numpy(np.load(args.sigma)).double()
        sigma = torch.softmax(sigma, -1) if args.logits else sigma
    else:
        sigma = trained_head_sigma(args.epochs, 0)
    print(f"problem: {args.problem}, sigma {tuple(sigma.shape)}, lam {args.lam:g}, target relative gap {args.target_gap:g}")
    result = entclust.solvers.compare(sigma, lam=args.lam, problem=args.problem, target_gap=args.target_gap,
                                      time_limit=args.time_limit, solvers=args.solvers, verbose=True)
    print(result.table())
    if args.plot:
        result.plot(args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
