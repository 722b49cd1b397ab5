"""``entclust bench solvers``: pseudo-label solvers side by side, each run to one relative gap
(the duality gap, or the Frank-Wolfe gap where that is smaller; :func:`entclust.solvers.compare`),
on your own sigma or on Zhang & Boykov 2024's Table 1 problem families.

- ``--sigma sigma.npy`` (or ``.pt``; ``(N, K)`` or a batch ``(B, N, K)``, rows on the simplex, or
  logits with ``--logits``), ``--prior p.npy``, ``--lam``, ``--problem rce|cce``: your problem.
- Without ``--sigma``: ``sigma = softmax(scale z)``, z ~ N(0, 1), for each K of ``--k`` (default
  2, 20, 200, 2000), N = ``--n``, B = ``--batch``, a uniform or skewed (Zipf, u_k ~ 1/k) prior,
  reverse CE and collision CE (``--problem both``).

Writes under ``--out`` (made first; every file checked before the work starts):
``bench_solvers.md`` (tables), ``bench_solvers.json`` (rows and traces), ``bench_solvers_gap.png``
(gap against time, one panel per problem, one line per solver, log scales) and, for a family of
several K, ``bench_solvers_k.png`` (time to the target gap against K).
"""
from __future__ import annotations

import json
import os
from datetime import date

import torch

from .. import solvers
from .._files import check_output_folder, write_files

NEWTON = ("newton_rce", "dual_newton_rce", "newton_cce")


def add_arguments(parser) -> None:
    parser.add_argument("--sigma", help="a .npy or .pt file: sigma (N, K) or (B, N, K), rows on the simplex")
    parser.add_argument("--logits", action="store_true", help="the --sigma file holds logits: softmax them first")
    parser.add_argument("--prior", help="a .npy or .pt file: the class prior u (K,) (default uniform)")
    parser.add_argument("--lam", type=float, default=100.0, help="fairness weight of the mean-form problem (default 100)")
    parser.add_argument("--problem", choices=("rce", "cce", "both"), default=None,
                        help="reverse CE, collision CE, or both (default: rce for --sigma, both for the families)")
    parser.add_argument("--solvers", nargs="+", metavar="NAME",
                        help=f"solvers to run (default all of the problem's: {', '.join(solvers.RCE_SOLVERS)}; "
                             f"{', '.join(solvers.CCE_SOLVERS)}; pgd_cce@STEP: PGD with a fixed step)")
    parser.add_argument("--target-gap", type=float, default=1e-6,
                        help="relative gap every solver runs to (default 1e-6): the duality gap, or the "
                             "Frank-Wolfe gap where smaller")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per solver and problem (default 10)")
    parser.add_argument("--check-every", default="auto",
                        help="iterations between two gap checks of the first-order solvers, or 'auto' (default): "
                             "after 1, 2, ..., 8 iterations, then every 1/8 of those run so far")
    parser.add_argument("--k", type=int, nargs="+", default=None,
                        help="family: the numbers of classes (default 2 20 200 2000; --quick: 2 20)")
    parser.add_argument("--n", type=int, default=250, help="family: points per problem (default 250)")
    parser.add_argument("--batch", type=int, default=1, help="family: problems per batch B (default 1)")
    parser.add_argument("--scale", type=float, default=3.0, help="family: sigma = softmax(scale z) (default 3)")
    parser.add_argument("--prior-kind", choices=("uniform", "skewed"), default="uniform",
                        help="family: uniform prior, or skewed (u_k proportional to 1/k)")
    parser.add_argument("--newton-max-k", type=int, default=2000,
                        help="largest K Newton runs at (a K x K solve per step; default 2000)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None,
                        help="sigma's dtype (default: the file's; float64 for the families)")
    parser.add_argument("--seed", type=int, default=0, help="family: seed of z (default 0)")


def check_arguments(args) -> None:
    """Every check before any work: ValueError with one line."""
    if not (0 < args.target_gap < 1):
        raise ValueError(f"--target-gap must be in (0, 1), got {args.target_gap}")
    if not (0 < args.time_limit < float("inf")):
        raise ValueError(f"--time-limit must be a number of seconds > 0, got {args.time_limit}")
    if args.check_every != "auto":
        try:
            args.check_every = int(args.check_every)
        except ValueError:
            args.check_every = 0
        if args.check_every < 1:
            raise ValueError(f"--check-every must be an int >= 1 or 'auto', got {args.check_every}")
    if not (args.lam >= 0 and args.lam < float("inf")):
        raise ValueError(f"--lam must be a finite number >= 0, got {args.lam}")
    for name in ("n", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.k is not None and min(args.k) < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    for name in ("sigma", "prior"):
        path = getattr(args, name)
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"--{name}: no file {path!r}")
    if args.prior is not None and args.sigma is None:
        raise ValueError("--prior needs --sigma (the families choose theirs with --prior-kind)")
    known = set(solvers.RCE_SOLVERS) | set(solvers.CCE_SOLVERS)
    for name in args.solvers or ():
        if name not in known and not name.startswith("pgd_cce@"):
            raise ValueError(f"--solvers: unknown solver {name!r}; choose from {', '.join(sorted(known))}")
    if args.device == "cuda" and not (torch.cuda.is_available() and solvers.has_kernels(torch.device("cuda"))):
        raise ValueError("--device cuda needs a GPU and entclust built with its CUDA kernels")
    check_output_folder(args.out)
    os.makedirs(args.out, exist_ok=True)
    check_output_folder(args.out)  # now the folder itself: can a file be made in it?


def _load(path: str, what: str) -> torch.Tensor:
    """A tensor from .npy (numpy) or .pt (torch.load with weights_only=True: data, never code)."""
    if path.endswith(".npy"):
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{what}: cannot read {path!r} as a .npy array: {err}") from None
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"{what}: {path!r} holds {array.dtype} values; expected floating point")
        return torch.from_numpy(np.ascontiguousarray(array))
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise ValueError(f"{what}: cannot read {path!r} as a tensor (.npy, or .pt saved by torch.save): {err}") from None
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{what}: {path!r} holds a {type(value).__name__}, not a tensor")
    return value


def family_problem(b: int, n: int, k: int, scale: float, prior_kind: str, dtype, seed: int = 0):
    """sigma = softmax(scale z), z ~ N(0, 1) of shape (B, N, K) (or (N, K) for B = 1), and the prior."""
    g = torch.Generator().manual_seed(seed)
    sigma = torch.softmax(scale * torch.randn(b, n, k, generator=g, dtype=torch.float64), -1).to(dtype)
    prior = None
    if prior_kind == "skewed":
        prior = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)
        prior = (prior / prior.sum()).to(dtype)
    return (sigma[0] if b == 1 else sigma), prior


def _problems(args):
    """(label, sigma, prior, problem kind, K) for every comparison of this run."""
    device = torch.device(args.device)
    if args.sigma is not None:
        sigma = _load(args.sigma, "--sigma")
        if args.dtype is not None:
            sigma = sigma.to(getattr(torch, args.dtype))
        elif sigma.dtype not in (torch.float32, torch.float64):
            sigma = sigma.double()
        if args.logits:
            sigma = torch.softmax(sigma, -1)
        prior = None if args.prior is None else _load(args.prior, "--prior").to(sigma.dtype).to(device)
        kinds = ("rce", "cce") if args.problem == "both" else (args.problem or "rce",)
        for kind in kinds:
            yield os.path.basename(args.sigma), sigma.to(device), prior, kind, sigma.shape[-1]
        return
    ks = args.k or ([2, 20] if args.quick else [2, 20, 200, 2000])
    dtype = getattr(torch, args.dtype or "float64")
    kinds = ("rce", "cce") if args.problem in (None, "both") else (args.problem,)
    for kind in kinds:
        for k in ks:
            sigma, prior = family_problem(args.batch, args.n, k, args.scale, args.prior_kind, dtype, args.seed)
            label = f"K = {k}"
            yield label, sigma.to(device), None if prior is None else prior.to(device), kind, k


def _solvers_for(args, kind: str, k: int):
    known = solvers.RCE_SOLVERS if kind == "rce" else solvers.CCE_SOLVERS
    chosen = [s for s in (args.solvers or known) if s in known or (kind == "cce" and s.startswith("pgd_cce@"))]
    skipped = [s for s in chosen if s in NEWTON and k > args.newton_max_k]
    return [s for s in chosen if s not in skipped], skipped


def _plot_gaps(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(results))
    rows = (len(results) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (label, kind, comparison) in zip(axes.flat, results):
        comparison.plot(ax=ax, title=f"{kind}, {label}, {comparison.setting['shape']}")
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_k(results, target, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = {}
    for _label, kind, comparison in results:
        k = comparison.setting["k"]
        for r in comparison.rows:
            if r["objective_kind"] == "own" or r["seconds_to"] is None:
                continue
            s = r["seconds_to"].get(f"{target:.0e}")
            if s is not None:
                lines.setdefault(f"{r['solver']} ({kind})", []).append((k, s))
    for name, pts in lines.items():
        pts.sort()
        ax.plot([k for k, _ in pts], [s for _, s in pts], "o-", label=name, markersize=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K (classes)")
    ax.set_ylabel(f"seconds to relative gap {target:g}")
    ax.set_title("time to the target gap (a missing point: not reached in the time limit)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> int:
    check_arguments(args)
    if args.quick:
        args.time_limit = min(args.time_limit, 1.0)
    from ..ops import cpu_model

    machine = (torch.cuda.get_device_name() if args.device == "cuda" else
               f"{cpu_model()}, {torch.get_num_threads()} threads") + f", torch {torch.__version__}"
    header = (f"entclust bench solvers, {machine}, {date.today()}: each solver to a relative gap of "
              f"{args.target_gap:g} (gap / (1 + |objective|); the duality gap, or the Frank-Wolfe gap where "
              f"smaller), at most {args.time_limit:g} s, lam = {args.lam:g}")
    print(header + "\n", flush=True)
    lines = [f"# {header}", ""]
    results, record = [], []
    for label, sigma, prior, kind, k in _problems(args):
        names, skipped = _solvers_for(args, kind, k)
        title = f"## {'reverse' if kind == 'rce' else 'collision'} CE, {label}, sigma {tuple(sigma.shape)} " \
                f"{str(sigma.dtype).split('.')[-1]} on {sigma.device}"
        print(title, flush=True)
        comparison = solvers.compare(sigma, prior, args.lam, problem=kind, solvers=names, target_gap=args.target_gap,
                                     time_limit=args.time_limit, check_every=args.check_every, verbose=True)
        comparison.setting["k"] = k
        table = comparison.table()
        note = f"\nnot run: {', '.join(skipped)} (K > --newton-max-k {args.newton_max_k})" if skipped else ""
        print("\n" + table + note + "\n", flush=True)
        lines += [title, "", table + note, ""]
        results.append((label, kind, comparison))
        record.append(dict(label=label, problem=kind, k=k, **comparison.to_dict()))
    jobs = [(os.path.join(args.out, "bench_solvers.md"), lambda tmp: _write(tmp, "\n".join(lines) + "\n")),
            (os.path.join(args.out, "bench_solvers.json"),
             lambda tmp: _write(tmp, json.dumps(dict(machine=machine, date=str(date.today()), args=_args(args),
                                                     comparisons=record), indent=1))),
            (os.path.join(args.out, "bench_solvers_gap.png"), lambda tmp: _plot_gaps(results, tmp))]
    if len({r[2].setting["k"] for r in results}) > 1:
        jobs.append((os.path.join(args.out, "bench_solvers_k.png"), lambda tmp: _plot_k(results, args.target_gap, tmp)))
    paths = write_files(jobs)
    print("wrote " + ", ".join(paths))
    return 0


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _args(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func" and isinstance(v, (int, float, str, list, type(None)))}
