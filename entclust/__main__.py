"""Command line: ``entclust info`` and ``entclust demo`` (also ``python -m entclust ...``)."""
from __future__ import annotations

import argparse
import sys


def _info(_args) -> int:
    from ._build import build_info

    for key, value in build_info().items():
        print(f"{key:16s} {value}")
    return 0


def _demo(args) -> int:
    from .demo import main

    main(epochs=args.epochs, noise=args.noise, seed=args.seed, out=args.out)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="entclust", description="Discriminative entropy clustering ops.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="torch version, compiled kernels and whether they run").set_defaults(func=_info)
    demo = sub.add_parser("demo", help="the fused losses on scikit-learn's digits, with timings")
    demo.add_argument("--epochs", type=int, default=60)
    demo.add_argument("--noise", type=float, default=0.4, help="share of training labels to corrupt")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="results", help="folder for the PNG and JSON")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    if getattr(args, "noise", 0.0) is not None and not 0.0 <= getattr(args, "noise", 0.0) < 1.0:
        parser.error(f"--noise must be in [0, 1), got {args.noise}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
