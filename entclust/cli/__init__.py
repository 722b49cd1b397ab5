"""Command line (``entclust ...`` or ``python -m entclust ...``), one module per command:

- ``entclust fit FEATURES --k 10 [--method rce] [--labels LABELS] --out labels.npy``; under
  ``torchrun --nproc_per_node W -m entclust fit ...`` each process trains on its shard of the
  rows (``.npy`` files are memory-mapped) and rank 0 writes the labels
- ``entclust compare DATASET [--methods ...] [--seeds 5]``: table, JSON and bar chart
- ``entclust deep DATA --k 10 --out labels.npy``: a network (VGG4 for images, an MLP for vectors)
  trained by self-labeling with self-augmentation; ``--partial-labels`` for semi-supervised
- ``entclust compare-deep [DATA] [--methods rce,cce,mi-gd,iic] [--seeds 3]``: the deep methods on the
  same network, images and seeds: table, JSON and bar chart
- ``entclust spc DATA --k 10 --out labels.npy``: selective pseudo-label clustering (Mahon & Lukasiewicz 2021) of
  images or vectors, with ``--history``, ``--plot`` and ``--checkpoint``
- ``entclust demo``: ``compare digits`` with every method and 3 seeds (``make demo``)
- ``entclust bench [solvers]``: pseudo-label solvers to one relative gap on your ``--sigma`` or
  Zhang & Boykov 2024's Table 1 problems (:func:`entclust.solvers.compare`)
- ``entclust predict MODEL FEATURES --out labels.npy``: the clusters of new points under a model
  written by ``entclust fit --save-model``
- ``entclust info``: torch version, compiled kernels and whether they run

Benchmarks, demos and paper reproductions are scripts of the source tree, not of the installed
package (:data:`MOVED`); their old commands (``bench kernels``, ``bench large-k``,
``noisy-labels``, ``plot-toy``, ``losses-demo``) still run them from a source checkout, with a
deprecation notice, until the next release. :func:`run_script` gives those scripts this
module's error handling.

Every failure is one line on stderr, never a traceback, and a distinct exit status:

- 2: bad input or arguments (unreadable files, wrong shapes, NaN, K larger than N, an output
  that cannot be written: all checked before any work; nothing is written);
- 3: the training diverged (a non-finite loss, or an objective that rose): lower the learning rate;
- 4: writing a result failed (disk full, I/O error): the old files are left as they were;
- 130: interrupted (Ctrl-C): no result file is left half-written.

Results are written atomically (:mod:`entclust._files`): a file, or a set of files, appears
whole or not at all.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings

from .._warn import DivergenceWarning
from ..cluster.registry import DEFAULT_METHODS

EXIT_USAGE, EXIT_DIVERGED, EXIT_WRITE, EXIT_INTERRUPTED = 2, 3, 4, 130


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


def _info(_args) -> int:
    from ..ops import build_info

    for key, value in build_info().items():
        print(f"{key:27s} {value}")
    return 0


# Every registered method, for the help texts (tests/test_cli.py holds it equal to entclust.cluster.available()).
METHODS = ("rce", "cce", "mi-gd", "sela", "mi-adm", "renyi", "kmeans", "gmm", "spc")

# Commands whose code moved out of the installed package, to the script that now holds it.
MOVED = {"bench kernels": "benchmarks/bench_kernels.py", "bench large-k": "benchmarks/bench_large_k.py",
         "noisy-labels": "benchmarks/noisy_labels.py", "plot-toy": "examples/plot_toy.py",
         "losses-demo": "examples/losses_demo.py"}


def _moved(command: str, rest: list[str]) -> int:
    """An old command: run its script from the source checkout this package was installed from
    (editable installs), with a deprecation notice, or say where it went."""
    import runpy
    from pathlib import Path

    script = MOVED[command]
    path = Path(__file__).resolve().parents[2] / script
    notice = f"'entclust {command}' is deprecated and goes in the next release: run 'python {script}'"
    if not path.is_file():
        raise UsageError(f"{notice} from a source checkout of entclust (this install has no {script})")
    print(f"entclust {command}: {notice}", file=sys.stderr)
    argv, sys.argv = sys.argv, [str(path), *rest]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
    return 0


def _bench(args) -> int:
    if args.suite != "solvers":  # options before the suite ("bench --quick kernels"): main() did not see it
        raise UsageError(f"'entclust bench {args.suite}' moved to {MOVED['bench ' + args.suite]}: run it there "
                         f"(or put the suite first: 'entclust bench {args.suite} ...')")
    from .bench_solvers import main as solver_bench

    return solver_bench(args)


def _predict(args) -> int:
    from .fit import predict

    return predict(args)


def _fit(args) -> int:
    from .fit import run

    return run(args)


def _compare(args) -> int:
    from .compare import run

    return run(args)


def _demo(args) -> int:
    from .compare import run

    args.dataset, args.labels, args.k, args.name = "digits", None, None, "digits"
    args.methods = ",".join(DEFAULT_METHODS)
    return run(args)


def _add_training_options(p) -> None:
    p.add_argument("--standardize", default="auto", choices=("auto", "global", "features", "none"),
                   help="feature preprocessing shared by all methods (default: auto, z-scores features "
                        "in different units, else one global scale)")
    p.add_argument("--lam", type=float, help="fairness weight of rce/cce (default 100)")
    p.add_argument("--gamma", type=float, help="margin weight gamma ||v||^2 (default 0.01 min(1, 10/K))")
    p.add_argument("--epochs", type=int, help="training epochs (default with per-batch pseudo-labels: the passes "
                                              "that make 200 max(K, 10) SGD steps, at most 50; 0 after the "
                                              "balanced start of global ones, 3 from another start)")
    p.add_argument("--lr", type=float, help="SGD learning rate (default 1.0 from a random head, 0.1 from a centroid head)")
    p.add_argument("--pseudo-labels", dest="pseudo_labels", choices=("auto", "batch", "global"),
                   help="rce: per-batch or global pseudo-labels (default auto: global when batch_size < 20 K)")
    p.add_argument("--init", choices=("auto", "random", "kmeans++", "kmeans", "balanced"),
                   help="head initialisation (default auto: balanced, self-labeled centroids, with global pseudo-labels; "
                        "random otherwise)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="mini-batch size (default 250)")
    p.add_argument("--n-init", dest="n_init", type=int,
                   help="training restarts side by side, best objective kept (default auto: 10 from random heads, "
                        "1 from a centroid head)")
    p.add_argument("--prior", help="target cluster proportions of rce/cce, comma-separated (e.g. 0.75,0.2,0.05)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a method's own parameter (repeatable), e.g. solver=dual_newton, max_iter=1000, "
                        "covariance_type=diag; given to every selected method that has it")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress (default: a bar on a terminal, lines in a log)")
    add_threads_option(p)


def add_threads_option(p) -> None:
    p.add_argument("--threads", type=int, help="CPU threads torch uses (default: torch's, one per core; 1 is often "
                                               "fastest on a loaded or 2-core machine)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="entclust", description="Discriminative entropy clustering.")
    parser.add_argument("--version", action="version", version=f"entclust {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="torch version, compiled kernels and whether they run").set_defaults(func=_info)

    fit = sub.add_parser("fit", help="cluster a feature file, write the labels")
    fit.add_argument("features", help="digits | blobs | anisotropic | moons | a .npy/.npz/.csv/.pt file")
    fit.add_argument("--k", type=int, required=True, help="number of clusters")
    fit.add_argument("--method", default="rce", help=f"one of {', '.join(METHODS)} (default rce)")
    fit.add_argument("--labels", help="optional true labels (.npy/.csv/.pt) to score the result")
    fit.add_argument("--out", required=True, help="where to write the labels (.npy, .csv or .txt)")
    fit.add_argument("--save-model", dest="save_model",
                     help="also write the fitted model here (.pt, data only; linear-head methods): entclust predict reads it")
    fit.add_argument("--seed", type=int, default=0, help="random_state of the fit (default 0; the same seed, the same labels)")
    fit.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where rce/cce/... train (default cpu)")
    fit.add_argument("--timeout", type=float, default=300.0,
                     help="under torchrun: seconds a rank waits for the others before the run fails (default 300)")
    _add_training_options(fit)
    fit.set_defaults(func=_fit)

    predict = sub.add_parser("predict", help="clusters of new points under a model written by fit --save-model")
    predict.add_argument("model", help="a model file written by entclust fit --save-model")
    predict.add_argument("features", help="a .npy/.npz/.csv/.pt file of points with the model's features")
    predict.add_argument("--out", required=True, help="where to write the labels (.npy, .csv or .txt)")
    predict.add_argument("--proba", help="also write the soft memberships (N, K) here (.npy)")
    add_threads_option(predict)
    predict.set_defaults(func=_predict)

    cmp_ = sub.add_parser("compare", help="every method on one dataset, several seeds: table + bar chart")
    cmp_.add_argument("dataset", help="digits | blobs | anisotropic | moons | a .npz/.pt with X and y, or features + --labels")
    cmp_.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                      help=f"comma-separated, from {', '.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})")
    cmp_.add_argument("--seeds", type=int, default=5, help="fits per method, random_state 0 .. seeds-1 (default 5)")
    cmp_.add_argument("--k", type=int, help="number of clusters (default: number of label values)")
    cmp_.add_argument("--labels", help="label file when the dataset file has none")
    cmp_.add_argument("--name", help="name used in the output files (default: the dataset's)")
    cmp_.add_argument("--out", default="results", help="folder of the table, JSON and bar chart (default results)")
    _add_training_options(cmp_)
    cmp_.set_defaults(func=_compare)

    demo = sub.add_parser("demo", help="compare every method on scikit-learn's digits, 3 seeds (make demo)")
    demo.add_argument("--seeds", type=int, default=3, help="fits per method (default 3)")
    demo.add_argument("--out", default="results", help="folder of the table, JSON and bar chart (default results)")
    _add_training_options(demo)
    demo.set_defaults(func=_demo)

    bench = sub.add_parser("bench", help="pseudo-label solvers to one relative gap (Zhang & Boykov 2024, Table 1, or your "
                                         "--sigma)")
    bench.add_argument("suite", nargs="?", default="solvers", choices=("solvers", "kernels", "large-k"),
                       help="solvers (default): every solver to one relative gap (the duality gap, or the "
                            "Frank-Wolfe gap where smaller), on --sigma or "
                            "Zhang & Boykov 2024's Table 1 families; kernels, large-k: deprecated, now benchmarks/bench_kernels.py "
                            "and benchmarks/bench_large_k.py of the source tree")
    bench.add_argument("--out", default=os.environ.get("OUT", "results"), help="folder for the results (made if absent)")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the problems run")
    bench.add_argument("--quick", action="store_true", help="small sizes only (a smoke run of every section)")
    from .bench_solvers import add_arguments as add_solver_arguments

    add_solver_arguments(bench)
    bench.set_defaults(func=_bench)

    from .deep import add_parser as add_deep
    from .spc import add_parser as add_spc

    add_deep(sub)
    add_spc(sub)
    for command in ("noisy-labels", "plot-toy", "losses-demo"):  # listed in --help; main() runs them
        sub.add_parser(command, help=f"deprecated: now {MOVED[command]} of the source tree")
    return parser


def _error(command: str, message: str, status: int) -> int:
    print(f"{command}: error: {message}", file=sys.stderr)
    return status


def _silence_stdout() -> None:
    """After stdout failed (``> /dev/full``, a closed pipe): point it at /dev/null so that the
    interpreter's final flush does not print a traceback of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for command in MOVED:
        words = command.split()
        if argv[:len(words)] == words:
            return _handled(f"entclust {command}", lambda: _moved(command, argv[len(words):]))
    args = build_parser().parse_args(argv)
    return _handled(f"entclust {args.command}", lambda: _with_threads(args))


def _with_threads(args) -> int:
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    return args.func(args)


def run_script(prog: str, description: str, add_arguments, run, argv=None) -> int:
    """Run a script of the source tree (``benchmarks/``, ``examples/``) as a command: its
    arguments by ``add_arguments(parser)``, its work by ``run(args)``, failures as one line on
    stderr with this module's exit statuses."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return _handled(prog, lambda: run(args))


@contextlib.contextmanager
def divergence_is_an_error():
    """Inside: a rising objective (:class:`~entclust.DivergenceWarning`) is raised, so that the
    command ends with exit status 3 as a non-finite loss does (``fit``, ``deep``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        yield


def _handled(command: str, work) -> int:
    """``work()``'s exit status, or the status and one line on stderr for its failure; a warning
    is one line too (``entclust fit: warning: ...``), not Python's two with a source line."""
    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line
            status = work()
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        return _error(command, "interrupted; no result file was left half-written", EXIT_INTERRUPTED)
    except (FloatingPointError, DivergenceWarning) as err:  # the training diverged (fit, deep: a rising objective)
        return _error(command, str(err), EXIT_DIVERGED)
    except (UsageError, ValueError) as err:  # DataError, OutputError and the estimators' parameter checks
        return _error(command, str(err), EXIT_USAGE)
    except OSError as err:  # result files are written by _files.write_files, which names them
        if err.filename is None:  # so an unnamed failure is the standard output's
            _silence_stdout()
            return _error(command, f"cannot write to standard output: {err.strerror or err}", EXIT_WRITE)
        where = f" {err.filename}" if err.filename else ""
        return _error(command, f"writing{where} failed: {err.strerror or err}; existing files were left as they were",
                      EXIT_WRITE)

