"""``entclust deep``: train a network by self-labeling on images (or vectors), write the labels.

Data: ``digits`` (scikit-learn's, as 1x8x8 images), ``mnist:ROOT``, ``cifar10:ROOT``,
``cifar100:ROOT`` (20 superclasses), ``stl10:ROOT`` (``:split`` after the root picks
train/test/unlabeled, default train), ``folder:ROOT`` (root/<class>/<image>), or a
``.npy``/``.npz``/``.pt`` file of ``(N, C, H, W)`` images or ``(N, D)`` vectors."""
from __future__ import annotations

import json
import os

from . import UsageError, add_threads_option, divergence_is_an_error
from .fit import FORMATS, label_file, method_options

DATASETS = ("mnist", "cifar10", "cifar100", "stl10", "folder")
METHODS = ("rce", "cce", "mi-gd", "sela", "mi-adm", "renyi", "iic")
DATA_HELP = ("digits | mnist:ROOT | cifar10:ROOT | cifar100:ROOT | stl10:ROOT[:split] | folder:ROOT | "
             "a .npy/.npz/.pt file of (N, C, H, W) images or (N, D) vectors")


def load_inputs(source: str, labels: str | None):
    """``(X, y or None)`` for the sources above (local files only)."""
    import numpy as np

    from .. import data, images

    if source == "digits":
        x, y = images.load_digit_images()
    elif source.split(":", 1)[0] in DATASETS and ":" in source:
        kind, rest = source.split(":", 1)
        root, _, split = rest.partition(":")
        if kind == "folder":
            x, y = images.load_image_folder(root)
        else:
            loader = getattr(images, f"load_{kind}")
            x, y = loader(root, split or "train")
    else:
        if not os.path.exists(source) and os.path.splitext(source)[1] == "":
            raise UsageError(f"unknown dataset {source!r}: use digits, {', '.join(k + ':ROOT' for k in DATASETS)} "
                             f"or a .npy/.npz/.pt file")
        x, y = data.read_array(source, "images")
        x = np.asarray(x)
        if x.ndim not in (2, 4):
            raise UsageError(f"{source}: needs images (N, C, H, W) or vectors (N, D), got shape {x.shape}")
    if labels is not None:
        y, _ = data.read_array(labels, "labels")
    if y is not None:
        y = data.check_labels(y, x.shape[0])
    return x, y


def data_files(source: str) -> tuple[dict, dict]:
    """The files and folders a data source reads, as ``(files, folders)`` keyed by a name for
    messages, for :func:`entclust._files.plan_files`."""
    if source == "digits":
        return {}, {}
    kind, _, rest = source.partition(":")
    if kind in DATASETS and rest:
        return {}, {"data": rest.partition(":")[0]}
    return {"data": source}, {}


def check_resume(args) -> None:
    """``--checkpoint`` and ``--resume`` together: resuming needs an existing checkpoint, and an
    existing checkpoint is only reused when ``--resume`` says so."""
    if args.resume and not args.checkpoint:
        raise UsageError("--resume needs --checkpoint (the file to continue from)")
    if args.resume and not os.path.isfile(args.checkpoint):
        raise UsageError(f"--resume: no checkpoint at {args.checkpoint!r}")
    if args.checkpoint and not args.resume and os.path.exists(args.checkpoint):
        raise UsageError(f"--checkpoint {args.checkpoint!r} exists: pass --resume to continue from it, "
                         f"or remove it to start again")


def run(args) -> int:
    import numpy as np

    from .._files import plan_files, text_writer, write_files

    ext = os.path.splitext(args.out)[1].lower()
    if ext not in FORMATS:
        raise UsageError(f"--out must end in .npy, .csv or .txt, got {args.out!r}")
    check_resume(args)
    reads, folders = data_files(args.data)
    plan_files({**reads, "--labels": args.labels, "--partial-labels": args.partial_labels},
               {"--out": args.out, "--history": args.history}, updates={"--checkpoint": args.checkpoint},
               read_folders=folders)
    for name in ("epochs", "views", "heads"):
        if getattr(args, name) < (0 if name == "epochs" else 1):
            raise UsageError(f"--{name} must be >= {0 if name == 'epochs' else 1}, got {getattr(args, name)}")
    x, y = load_inputs(args.data, args.labels)
    if not 1 <= args.k <= x.shape[0]:
        raise UsageError(f"--k must be between 1 and the number of points ({x.shape[0]}), got {args.k}")
    partial = None
    if args.partial_labels:
        from .. import data

        partial, _ = data.read_array(args.partial_labels, "partial labels")
        partial = np.asarray(partial).astype(np.int64).reshape(-1)
    from ..deep import DeepEntropyClustering  # torch models and scikit-learn: after the cheap checks
    from ..metrics import evaluate, format_scores

    options = {name: getattr(args, name) for name in ("lam", "gamma", "prediction_fairness", "width")
               if getattr(args, name) is not None}
    est = DeepEntropyClustering(args.k, args.method, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                views=args.views, augment=args.augment, n_heads=args.heads, overcluster=args.overcluster,
                                consistency=args.consistency, pseudo_labels=args.pseudo_labels,
                                method_params=method_options(args) or None, checkpoint=args.checkpoint,
                                device=args.device, random_state=args.seed, verbose=not args.quiet, **options)
    with divergence_is_an_error():
        est.fit(x, partial_labels=partial, eval_labels=y, resume=args.resume)
    pred = np.asarray(est.labels_, dtype=np.int64)
    files = [label_file(args.out, pred)]
    if args.history:
        record = {"history": est.history_, "objectives": est.objectives_, "selected_head": est.selected_head_,
                  "settings": est.get_params()}
        text = json.dumps(record, indent=1, default=str)
        files.append((args.history, text_writer(text)))
    write_files(files)
    sizes = np.bincount(pred, minlength=args.k)
    print(f"deep {args.method}: {x.shape[0]} inputs of shape {tuple(x.shape[1:])}, K={args.k}, "
          f"{type(est.model_.backbone).__name__}; cluster sizes {sizes.tolist() if args.k <= 20 else '...'}")
    if y is not None:
        print(format_scores(evaluate(y, pred)))
    print(f"wrote {args.out}" + (f" and {args.history}" if args.history else ""))
    return 0


def _deep_estimator(method, n_clusters, **params):
    from ..deep import DeepEntropyClustering

    return DeepEntropyClustering(n_clusters, method, **params)


def run_compare(args) -> int:
    """``entclust compare-deep``: every deep method on the same network, data and seeds."""
    from .._files import check_file_name, check_output_folder
    from ..cluster import compare

    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UsageError(f"unknown deep method(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(METHODS)}")
    name = check_file_name(args.name or args.data.split(":")[0].split("/")[-1].split(".")[0], "--name")
    check_output_folder(args.out)
    x, y = load_inputs(args.data, args.labels)
    if y is None:
        raise UsageError(f"{args.data} has no labels to evaluate against: pass --labels FILE")
    options = {name: getattr(args, name) for name in ("epochs", "width", "views", "batch_size", "lr")
               if getattr(args, name) is not None}
    params = {m: dict(options, device=args.device) for m in methods}
    result = compare.compare(x, y, methods, args.seeds, n_clusters=args.k, params=params, verbose=not args.quiet,
                             make=_deep_estimator)
    title = f"deep {name}"
    print(compare.markdown(result, title))
    paths = compare.save(result, args.out, f"compare_deep_{name}", title)
    print(f"wrote {', '.join(paths)}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("deep", help="train a network by self-labeling on images or vectors, write the labels")
    p.add_argument("data", help=DATA_HELP)
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--method", default="rce", choices=METHODS,
                   help="rce (default) or cce (ours); mi-gd (IMSAT), sela, mi-adm, renyi (Renyi decisiveness, "
                        "Zhang & Boykov 2024 eq. 48), iic (baselines, same network)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a baseline's own parameter (repeatable), e.g. alpha=5 for renyi, weight=1.3 for mi-gd; for "
                        "rce/cce an option of the pseudo-label solve, e.g. solver=newton tol_gap=1e-6")
    p.add_argument("--lam", type=float, help="fairness weight (default 100)")
    p.add_argument("--gamma", type=float, help="margin weight on the head (default 0.01)")
    p.add_argument("--prediction-fairness", dest="prediction_fairness", type=float,
                   help="weight of KL(u || sigma_bar) for rce/cce (default 0.5; 0: the papers' objective)")
    p.add_argument("--out", required=True, help="where to write the labels (.npy, .csv or .txt)")
    p.add_argument("--labels", help="true labels to score the result (evaluation only)")
    p.add_argument("--partial-labels", dest="partial_labels",
                   help="semi-supervised: a label file with -1 for unlabelled points")
    p.add_argument("--epochs", type=int, default=50, help="training epochs (default 50, the papers')")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=250, help="mini-batch size (default 250)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, the seeds')")
    p.add_argument("--views", type=int, default=2, help="augmentations per image averaged (default 2)")
    p.add_argument("--augment", default="auto", choices=("auto", "digits", "cifar", "stl", "none"),
                   help="augmentation preset (default auto: by the image size; none for vectors)")
    p.add_argument("--width", type=float, help="channel multiplier of VGG4 / the MLP (default: the estimator's)")
    p.add_argument("--heads", type=int, default=1, help="sub-heads trained side by side, lowest objective kept")
    p.add_argument("--overcluster", type=int, default=0, help="clusters of an overclustering head (IIC; 0: none)")
    p.add_argument("--consistency", type=float, default=0.0,
                   help="weight of the symmetric-KL consistency form of self-augmentation (Zhang & Boykov 2024; 0: averaged views)")
    p.add_argument("--pseudo-labels", dest="pseudo_labels", default="auto", choices=("auto", "batch", "global"),
                   help="rce: per-batch or global pseudo-labels (default auto: global when batch_size < 20 K)")
    p.add_argument("--checkpoint", help="a file for checkpoints after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--history", help="write the per-epoch history as JSON")
    p.add_argument("--seed", type=int, default=0, help="random_state: the network's initialisation, shuffles, "
                                                       "augmentations (default 0)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the network trains (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress (default: a bar on a terminal, lines in a log)")
    add_threads_option(p)
    p.set_defaults(func=run)

    c = sub.add_parser("compare-deep", help="every deep method on the same network, images and seeds: table, JSON, chart")
    c.add_argument("data", nargs="?", default="digits", help="as for 'entclust deep' (default digits)")
    c.add_argument("--methods", default="rce,cce,mi-gd,iic", help=f"comma-separated, of {', '.join(METHODS)}")
    c.add_argument("--seeds", type=int, default=3, help="fits per method, random_state 0 .. seeds-1 (default 3)")
    c.add_argument("--k", type=int, help="number of clusters (default: number of label values)")
    c.add_argument("--labels", help="label file when the data has none")
    c.add_argument("--name", help="name used in the output files")
    c.add_argument("--epochs", type=int, help="training epochs (default: the estimator's, 50)")
    c.add_argument("--width", type=float, help="channel multiplier of the network (default: the estimator's)")
    c.add_argument("--views", type=int, help="augmentations per image averaged (default: the estimator's, 2)")
    c.add_argument("--batch-size", dest="batch_size", type=int, help="mini-batch size (default 250)")
    c.add_argument("--lr", type=float, help="Adam learning rate (default 1e-4, the seeds')")
    c.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the networks train (default cpu)")
    c.add_argument("--out", default="results", help="folder of the table, JSON and chart (default results)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress (default: a bar on a terminal, lines in a log)")
    add_threads_option(c)
    c.set_defaults(func=run_compare)
