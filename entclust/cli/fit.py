"""``entclust fit``: cluster a feature file and write the labels."""
from __future__ import annotations

import os

from . import UsageError, divergence_is_an_error

FORMATS = (".npy", ".csv", ".txt")


def label_file(path: str, pred):
    """``(path, writer)`` for :func:`entclust._files.write_files`: integer labels as ``.npy`` or as
    one number a line (``.csv``/``.txt``)."""
    import numpy as np

    if path.lower().endswith(".npy"):
        return path, lambda tmp: np.save(tmp, pred)
    return path, lambda tmp: np.savetxt(tmp, pred, fmt="%d")


def method_names(text: str) -> list[str]:
    from ..cluster import available

    names = [m.strip() for m in text.split(",") if m.strip()]
    known = available()
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise UsageError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(available())}")
    return names


def _value(text: str):
    """A --param value: JSON (numbers, true/false, null, lists) or else the text itself."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def method_options(args) -> dict:
    """``--param KEY=VALUE`` pairs as a dict."""
    options = {}
    for item in getattr(args, "param", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param must be KEY=VALUE, got {item!r}")
        options[key.strip()] = _value(value.strip())
    return options


def prior_values(args):
    if getattr(args, "prior", None) is None:
        return None
    try:
        return [float(v) for v in args.prior.split(",")]
    except ValueError:
        raise UsageError(f"--prior must be comma-separated numbers, got {args.prior!r}") from None


def estimator_params(method: str, args, *, strict: bool = True) -> dict:
    """Estimator arguments from the training options: all of them for head methods, only the
    preprocessing for estimator methods (K-means has no lr, lam, ...), and the ``--param``
    options the method has (``strict``: an option it does not have is an error)."""
    from ..cluster import HeadMethod, get

    method_obj = get(method)
    params = {"standardize": args.standardize}
    options = method_options(args)
    unknown = set(options) - set(method_obj.defaults)
    if strict and unknown:
        raise UsageError(f"--param {', '.join(sorted(unknown))}: not a parameter of method {method!r} "
                         f"(it takes {', '.join(sorted(method_obj.defaults)) or 'none'})")
    own = {k: v for k, v in options.items() if k in method_obj.defaults}
    if isinstance(method_obj, HeadMethod):
        for name in ("lam", "gamma", "epochs", "lr", "n_init", "batch_size", "pseudo_labels", "init"):
            value = getattr(args, name, None)
            if value is not None:
                params[name] = value
        prior = prior_values(args)
        if prior is not None:
            params["prior"] = prior
        if own:
            params["method_params"] = own
    else:
        params.update(own)
    return params


def data_digest(x) -> str:
    """A hex digest of an array's bytes, read in blocks (a memory-mapped file is not copied)."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    flat = x.reshape(x.shape[0], -1)
    for i in range(0, flat.shape[0], 1 << 14):
        h.update(np.ascontiguousarray(flat[i:i + (1 << 14)]).tobytes())
    return h.hexdigest()


def _fit_distributed(x, args, params):
    """Under ``torchrun``: rank r fits rows ``[r N / W, (r + 1) N / W)`` (read from the memory-mapped
    file) with ``EntropyClustering(group=WORLD)`` (gloo on the CPU, NCCL with ``--device cuda``);
    the labels are gathered on every rank.
    Returns ``(labels of all points, rank, the estimator)``."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from datetime import timedelta

    from .._dist import agree, all_reduce, fingerprint
    from ..cluster import make_estimator

    if args.device == "cuda":  # one GPU a rank, chosen before NCCL starts
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo", timeout=timedelta(seconds=args.timeout))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        n = x.shape[0]
        # every rank read the whole file: the same rows must be there, or the shards do not fit together
        agree({"the data's shape": fingerprint(repr(x.shape)), "the data": fingerprint(data_digest(x)),
               "the settings": fingerprint(repr(sorted(params.items())) + repr((args.k, args.seed)))},
              dist.group.WORLD)
        begin, end = rank * n // world, (rank + 1) * n // world
        if end <= begin:
            raise UsageError(f"{world} processes for {n} points: every process needs at least one row")
        params["verbose"] = params.get("verbose", False) and rank == 0
        with divergence_is_an_error():
            est = make_estimator("rce", args.k, random_state=args.seed, group=dist.group.WORLD, **params).fit(x[begin:end])
        labels = torch.zeros(n, dtype=torch.int64)  # each rank fills its rows; the sum gathers them
        labels[begin:end] = torch.from_numpy(np.asarray(est.labels_, dtype=np.int64))
        labels = all_reduce(labels, dist.group.WORLD).numpy()
        return labels, rank, est
    finally:
        dist.destroy_process_group()


def run(args) -> int:
    import numpy as np

    from .. import data
    from .._files import plan_files, write_files

    ext = os.path.splitext(args.out)[1].lower()
    if os.path.isdir(args.out):
        raise UsageError(f"--out: {args.out!r} is a folder; give a file name ending in .npy, .csv or .txt")
    if ext not in FORMATS:
        raise UsageError(f"--out must end in .npy, .csv or .txt, got {args.out!r}")
    plan_files({"features": args.features, "--labels": args.labels}, {"--out": args.out, "--save-model": args.save_model})
    x, labels = data.load(args.features, args.labels)
    method_names(args.method)
    from ..cluster import HeadMethod, get, make_estimator  # scikit-learn: after the cheap checks
    from ..metrics import evaluate, format_scores

    if args.save_model and not isinstance(get(args.method), HeadMethod):
        raise UsageError(f"--save-model writes the linear head of rce, cce, mi-gd, sela, mi-adm or renyi; "
                         f"method {args.method!r} has none")

    if args.k < 1 or args.k > x.shape[0]:
        raise UsageError(f"--k must be between 1 and the number of points ({x.shape[0]}), got {args.k}")
    params = estimator_params(args.method, args)
    if isinstance(get(args.method), HeadMethod):
        params["verbose"] = not args.quiet
        params["device"] = args.device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not getattr(args, "timeout", 300.0) > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if world > 1:  # launched by torchrun: this process fits its shard of the rows
        if args.method != "rce":
            raise UsageError(f"multi-process training (torchrun, WORLD_SIZE={world}) is implemented for --method rce, "
                             f"got {args.method!r}")
        pred, rank, est = _fit_distributed(x, args, params)
        if rank != 0:
            _exit_now(0)
    else:
        with divergence_is_an_error():
            est = make_estimator(args.method, args.k, random_state=args.seed, **params).fit(x)
        pred = np.asarray(est.labels_, dtype=np.int64)
    write_files([label_file(args.out, pred)])
    if args.save_model:
        est.save(args.save_model)
    sizes = np.bincount(pred, minlength=args.k)
    shown = (f"cluster sizes {sizes.tolist()}" if args.k <= 20 else
             f"cluster sizes {sizes.min()}..{sizes.max()}, {int((sizes == 0).sum())} empty")
    print(f"{args.method}: {x.shape[0]} points, {x.shape[1]} features, K={args.k}; {shown}")
    if labels is not None:
        print(format_scores(evaluate(labels, pred)))
    print(f"wrote {args.out}" + (f" and the model {args.save_model} (entclust predict reads it)" if args.save_model else ""))
    if world > 1:
        _exit_now(0)
    return 0


def _exit_now(status: int) -> None:
    """End a torchrun rank without the interpreter's teardown. After gloo collectives
    interleaved with the training's tensor ops, a static destructor at interpreter exit
    sometimes aborted a rank ("terminate called without an active exception", 1 run in 2 to 8
    on this machine; plain gloo all-reduces alone did not), so torchrun reported a failure
    although the labels were written. The group is destroyed and the output flushed first."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def predict(args) -> int:
    """``entclust predict MODEL FEATURES --out labels.npy``: the clusters of new points under a
    model written by ``entclust fit --save-model``."""
    import numpy as np

    from .. import data
    from .._files import plan_files, write_files

    if os.path.splitext(args.out)[1].lower() not in FORMATS:
        raise UsageError(f"--out must end in .npy, .csv or .txt, got {args.out!r}")
    plan_files({"model": args.model, "features": args.features}, {"--out": args.out, "--proba": args.proba})
    if args.proba and not args.proba.lower().endswith(".npy"):
        raise UsageError(f"--proba must end in .npy, got {args.proba!r}")
    from ..cluster import EntropyClustering

    est = EntropyClustering.load(args.model)
    x, _ = data.load(args.features)
    if x.shape[1] != est.n_features_in_:
        raise UsageError(f"features: {x.shape[1]} features a point, the model was fitted on {est.n_features_in_}")
    pred = est.predict(x).astype(np.int64)
    files = [label_file(args.out, pred)]
    if args.proba:
        proba = est.predict_proba(x)
        files.append((args.proba, lambda tmp: np.save(tmp, proba)))
    write_files(files)
    sizes = np.bincount(pred, minlength=est.n_clusters)
    print(f"{x.shape[0]} points into {est.n_clusters} clusters ({int((sizes > 0).sum())} used); wrote "
          + ", ".join(path for path, _ in files))
    return 0
