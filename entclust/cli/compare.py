"""``entclust compare`` and ``entclust demo``: every method on one dataset, several seeds, a
table, its JSON and a bar chart."""
from __future__ import annotations

import os

from . import UsageError
from .fit import estimator_params, method_names
from .fit import method_options as method_options_of


def _defaults(method: str) -> dict:
    from ..cluster import get

    return get(method).defaults


def run(args) -> int:
    from .. import data
    from .._files import check_file_name, check_output_folder
    from ..cluster import compare

    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    name = check_file_name(args.name or os.path.splitext(os.path.basename(args.dataset))[0], "--name")
    check_output_folder(args.out)
    x, labels = data.load(args.dataset, args.labels)
    names = method_names(args.methods)
    if labels is None:
        raise UsageError(f"{args.dataset} has no labels to evaluate against: pass --labels FILE "
                         "(or an .npz/.pt holding y/labels)")
    k = args.k
    if k is not None and not 1 <= k <= x.shape[0]:
        raise UsageError(f"--k must be between 1 and the number of points ({x.shape[0]}), got {k}")
    params = {m: estimator_params(m, args, strict=False) for m in names}
    unused = set(method_options_of(args)) - {k for m in names for k in _defaults(m)}
    if unused:
        raise UsageError(f"--param {', '.join(sorted(unused))}: no selected method has it")
    result = compare.compare(x, labels, names, args.seeds, n_clusters=k, params=params, verbose=not args.quiet)
    print(compare.markdown(result, name))
    paths = compare.save(result, args.out, f"compare_{name}", name)
    print(f"wrote {', '.join(paths)}")
    return 0
