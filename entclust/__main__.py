"""Command line (``entclust ...`` or ``python -m entclust ...``):

- ``entclust fit FEATURES --k 10 [--method rce] [--labels LABELS] --out labels.npy``
- ``entclust compare DATASET [--methods ...] [--seeds 5]``: table, JSON and bar chart
- ``entclust demo``: ``compare digits`` with every method and 3 seeds (``make demo``)
- ``entclust bench``: the pseudo-label solver benchmark
- ``entclust plot-toy``: the papers' 2-D figures (K-means vs entropy clustering, margins)
- ``entclust losses-demo``: the fused losses training a classifier on digits, with timings
- ``entclust info``: torch version, compiled kernels and whether they run

Bad input (unreadable files, wrong shapes, NaN, K larger than N, labels of the wrong length)
gives one line on stderr and exit status 2, with nothing written.
"""
from __future__ import annotations

import argparse
import os
import sys

from .compare import DEFAULT_METHODS


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


def _info(_args) -> int:
    from ._build import build_info

    for key, value in build_info().items():
        print(f"{key:27s} {value}")
    return 0


def _losses_demo(args) -> int:
    from .demo import main

    main(epochs=args.epochs, noise=args.noise, seed=args.seed, out=args.out)
    return 0


def _method_names(text: str) -> list[str]:
    from . import methods

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in methods.REGISTRY]
    if unknown or not names:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(methods.available())}")
    return names


def _estimator_params(method: str, args) -> dict:
    """Estimator arguments from the training options: all of them for head methods, only the
    preprocessing for estimator methods (K-means has no lr, lam, ...)."""
    from . import methods

    params = {"standardize": args.standardize}
    if isinstance(methods.get(method), methods.HeadMethod):
        for name in ("lam", "gamma", "epochs", "lr", "n_init", "batch_size"):
            value = getattr(args, name, None)
            if value is not None:
                params[name] = value
    return params


def _fit(args) -> int:
    import numpy as np

    from . import data, methods
    from .metrics import evaluate

    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".npy", ".csv", ".txt"):
        raise UsageError(f"--out must end in .npy, .csv or .txt, got {args.out!r}")
    if args.out and os.path.dirname(args.out) and not os.path.isdir(os.path.dirname(args.out)):
        raise UsageError(f"--out: folder {os.path.dirname(args.out)!r} does not exist")
    _method_names(args.method)
    x, labels = data.load(args.features, args.labels)
    if args.k < 1 or args.k > x.shape[0]:
        raise UsageError(f"--k must be between 1 and the number of points ({x.shape[0]}), got {args.k}")
    params = _estimator_params(args.method, args)
    if isinstance(methods.get(args.method), methods.HeadMethod):
        params["verbose"] = not args.quiet
    est = methods.make_estimator(args.method, args.k, random_state=args.seed, **params).fit(x)
    pred = np.asarray(est.labels_, dtype=np.int64)
    if ext == ".npy":
        np.save(args.out, pred)
    else:
        np.savetxt(args.out, pred, fmt="%d")
    sizes = np.bincount(pred, minlength=args.k)
    print(f"{args.method}: {x.shape[0]} points, {x.shape[1]} features, K={args.k}; cluster sizes {sizes.tolist()}")
    if labels is not None:
        scores = evaluate(labels, pred)
        print("  ".join(f"{k.upper()} {100 * v:.2f}%" for k, v in scores.items()))
    print(f"wrote {args.out}")
    return 0


def _compare(args) -> int:
    from . import compare, data

    names = _method_names(args.methods)
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    x, labels = data.load(args.dataset, args.labels)
    if labels is None:
        raise UsageError(f"{args.dataset} has no labels to evaluate against: pass --labels FILE "
                         "(or an .npz/.pt holding y/labels)")
    k = args.k
    if k is not None and not 1 <= k <= x.shape[0]:
        raise UsageError(f"--k must be between 1 and the number of points ({x.shape[0]}), got {k}")
    params = {m: _estimator_params(m, args) for m in names}
    result = compare.compare(x, labels, names, args.seeds, n_clusters=k, params=params, verbose=not args.quiet)
    name = args.name or os.path.splitext(os.path.basename(args.dataset))[0]
    title = f"{name}"
    print(compare.markdown(result, title))
    paths = compare.save(result, args.out, f"compare_{name}", title)
    print(f"wrote {', '.join(paths)}")
    return 0


def _demo(args) -> int:
    args.dataset, args.labels, args.k, args.name = "digits", None, None, "digits"
    args.methods = ",".join(DEFAULT_METHODS)
    return _compare(args)


def _bench(args) -> int:
    from .bench import main

    return main(args=args)


def _plot_toy(args) -> int:
    from .toy import main

    main(args.out, n_init=args.n_init, seed=args.seed)
    return 0


def _add_training_options(p) -> None:
    p.add_argument("--standardize", default="global", choices=("global", "features", "none"),
                   help="feature preprocessing shared by all methods (default: global)")
    p.add_argument("--lam", type=float, help="fairness weight of rce/cce (default 100)")
    p.add_argument("--gamma", type=float, help="margin weight gamma ||v||^2 (default 0.01)")
    p.add_argument("--epochs", type=int, help="training epochs (default 50)")
    p.add_argument("--lr", type=float, help="SGD learning rate (default 1.0)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="mini-batch size (default 250)")
    p.add_argument("--n-init", dest="n_init", type=int, help="training restarts, best objective kept (default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entclust", description="Discriminative entropy clustering.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="torch version, compiled kernels and whether they run").set_defaults(func=_info)

    fit = sub.add_parser("fit", help="cluster a feature file, write the labels")
    fit.add_argument("features", help="digits | blobs | anisotropic | moons | a .npy/.npz/.csv/.pt file")
    fit.add_argument("--k", type=int, required=True, help="number of clusters")
    fit.add_argument("--method", default="rce", help="rce (default), cce, mi-gd, sela, mi-adm, kmeans")
    fit.add_argument("--labels", help="optional true labels (.npy/.csv/.pt) to score the result")
    fit.add_argument("--out", required=True, help="where to write the labels (.npy, .csv or .txt)")
    fit.add_argument("--seed", type=int, default=0)
    _add_training_options(fit)
    fit.set_defaults(func=_fit)

    cmp_ = sub.add_parser("compare", help="every method on one dataset, several seeds: table + bar chart")
    cmp_.add_argument("dataset", help="digits | blobs | anisotropic | moons | a .npz/.pt with X and y, or features + --labels")
    cmp_.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    cmp_.add_argument("--seeds", type=int, default=5)
    cmp_.add_argument("--k", type=int, help="number of clusters (default: number of label values)")
    cmp_.add_argument("--labels", help="label file when the dataset file has none")
    cmp_.add_argument("--name", help="name used in the output files (default: the dataset's)")
    cmp_.add_argument("--out", default="results")
    _add_training_options(cmp_)
    cmp_.set_defaults(func=_compare)

    demo = sub.add_parser("demo", help="compare every method on scikit-learn's digits, 3 seeds (make demo)")
    demo.add_argument("--seeds", type=int, default=3)
    demo.add_argument("--out", default="results")
    _add_training_options(demo)
    demo.set_defaults(func=_demo)

    from .bench import add_arguments

    bench = sub.add_parser("bench", help="pseudo-label solver benchmark (seed 003/004 Table 1)")
    add_arguments(bench)
    bench.set_defaults(func=_bench)

    toy = sub.add_parser("plot-toy", help="2-D figures: K-means vs entropy clustering, margin vs gamma")
    toy.add_argument("--out", default="results")
    toy.add_argument("--n-init", dest="n_init", type=int, default=10)
    toy.add_argument("--seed", type=int, default=0)
    toy.set_defaults(func=_plot_toy)

    ldemo = sub.add_parser("losses-demo", help="the fused losses on digits with clean/corrupted labels, timings")
    ldemo.add_argument("--epochs", type=int, default=60)
    ldemo.add_argument("--noise", type=float, default=0.4, help="share of training labels to corrupt")
    ldemo.add_argument("--seed", type=int, default=0)
    ldemo.add_argument("--out", default="results", help="folder for the PNG and JSON")
    ldemo.set_defaults(func=_losses_demo)
    return parser


def main(argv=None) -> int:
    from .data import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "losses-demo" and not 0.0 <= args.noise < 1.0:
        parser.error(f"--noise must be in [0, 1), got {args.noise}")
    try:
        return args.func(args)
    except (UsageError, DataError) as err:
        print(f"entclust {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # parameter checks of the estimators: still the user's input
        print(f"entclust {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
