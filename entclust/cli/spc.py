"""``entclust spc``: selective pseudo-label clustering (Mahon & Lukasiewicz 2021) of images or vectors, with the
per-round history and its plot. Data as for ``entclust deep`` (``digits`` is the 1x8x8 images:
convolutional members); vectors also go through ``entclust fit FEATURES --method spc``."""
from __future__ import annotations

import json
import os

from . import UsageError, add_threads_option
from .deep import DATA_HELP
from .fit import FORMATS, label_file, method_options

PLOT_FORMATS = (".png", ".pdf", ".svg")
SPC_MEMBERS = 4  # the estimator's default ensemble size (README: M by measurement)


def run(args) -> int:
    import numpy as np

    from .._files import plan_files, text_writer, write_files
    from .deep import check_resume, data_files, load_inputs

    ext = os.path.splitext(args.out)[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"--out must end in .npy, .csv or .txt, got {args.out!r}")
    if args.plot and os.path.splitext(args.plot)[1].lower() not in PLOT_FORMATS:
        raise UsageError(f"--plot must end in one of {', '.join(PLOT_FORMATS)}, got {args.plot!r}")
    check_resume(args)
    reads, folders = data_files(args.data)
    plan_files({**reads, "--labels": args.labels},
               {"--out": args.out, "--history": args.history, "--plot": args.plot},
               updates={"--checkpoint": args.checkpoint}, read_folders=folders)
    if args.members < 1:
        raise UsageError(f"--members must be >= 1, got {args.members}")
    x, y = load_inputs(args.data, args.labels)
    if not 1 <= args.k <= x.shape[0]:
        raise UsageError(f"--k must be between 1 and the number of points ({x.shape[0]}), got {args.k}")
    from ..cluster.methods.spc import SPCMethod
    from ..deep import SelectivePseudoLabelClustering  # torch, scikit-learn: after the checks
    from ..metrics import evaluate, format_scores

    options = method_options(args)
    unknown = set(options) - set(SPCMethod.defaults)
    if unknown:
        raise UsageError(f"--param {', '.join(sorted(unknown))}: not a parameter of spc "
                         f"(it takes {', '.join(sorted(SPCMethod.defaults))})")
    params = {**SPCMethod.defaults, **options, "n_members": args.members}
    est = SelectivePseudoLabelClustering(args.k, checkpoint=args.checkpoint, device=args.device, random_state=args.seed,
                                         verbose=not args.quiet, **params)
    est.fit(x, y, resume=args.resume)  # labels fill the history's ACC only
    pred = np.asarray(est.labels_, dtype=np.int64)
    files = [label_file(args.out, pred)]
    if args.history:
        record = {"history": est.history_, "best_round": est.best_round_, "architecture": est.architecture_,
                  "reducer": est.reducer_, "settings": est.get_params()}
        files.append((args.history, text_writer(json.dumps(record, indent=1, default=str))))
    write_files(files)
    if args.plot:
        est.plot_history(args.plot)
    sizes = np.bincount(pred, minlength=args.k)
    best = est.history_[est.best_round_]
    print(f"spc: {x.shape[0]} inputs of shape {tuple(x.shape[1:])}, K={args.k}, M={est.n_members} "
          f"{est.architecture_} members, {est.reducer_ if est.reducer_ != 'none' else 'no'} reducer, "
          f"{est.clusterer}; {est.n_rounds_} rounds, round {est.best_round_} kept ({best['agreed']} agreed points); "
          f"cluster sizes {sizes.tolist() if args.k <= 20 else '...'}")
    if y is not None:
        print(format_scores(evaluate(y, pred)))
    print("wrote " + ", ".join(p for p in (args.out, args.history, args.plot) if p))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("spc", help="selective pseudo-label clustering (Mahon & Lukasiewicz 2021): an autoencoder ensemble, write labels")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--members", type=int, default=SPC_MEMBERS, help=f"ensemble size M (default {SPC_MEMBERS})")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="an estimator parameter (repeatable), e.g. reducer=none, clusterer=hdbscan, loss=rce, "
                        "architecture=mlp")
    p.add_argument("--out", required=True, help="where to write the labels (.npy, .csv or .txt)")
    p.add_argument("--labels", help="true labels, for the per-round ACC and the final scores only")
    p.add_argument("--history", help="write the per-round history as JSON")
    p.add_argument("--plot", help="write the agreed points and ACC per round as a PNG")
    p.add_argument("--checkpoint", help="a file for the ensemble after every round (read back with --resume)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint (same data and settings)")
    p.add_argument("--seed", type=int, default=0, help="random_state: the members' initialisation, shuffles, "
                                                       "clusterings (default 0)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the autoencoders train (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress (default: a bar on a terminal, lines in a log)")
    add_threads_option(p)
    p.set_defaults(func=run)

