"""Every method on one dataset, several seeds, one table: ``entclust compare`` and ``make demo``."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import date

import numpy as np

from .._files import write_files
from .._loop import Progress
from ..metrics import evaluate
from .estimator import make_estimator
from .registry import DEFAULT_METHODS

METRICS = ("acc", "nmi", "ari", "purity")


def compare(x: np.ndarray, labels: np.ndarray, methods=DEFAULT_METHODS, seeds: int = 5, *, n_clusters: int | None = None,
            params: dict | None = None, verbose: bool = False, make=make_estimator) -> dict:
    """Fit each method with random_state 0..seeds-1 on the same data and score it against
    ``labels``. ``params`` maps a method name to extra arguments of its estimator (default: the
    package's defaults, the same for every dataset). ``make(method, n_clusters, random_state=...,
    **params)`` builds the estimator (default :func:`make_estimator`; the deep harness passes
    :class:`~entclust.DeepEntropyClustering`'s). Returns ``{"runs": [...], "summary": {...}}``:
    one run per (method, seed) with acc/nmi/ari/seconds, and per method mean and std."""
    k = int(np.unique(labels).size) if n_clusters is None else n_clusters
    runs = []
    jobs = [(m, s) for m in methods for s in range(seeds)]
    progress = Progress("compare", len(jobs), verbose=verbose, unit="fit")
    settings = {}
    for method, seed in jobs:
        est = make(method, k, random_state=seed, **(params or {}).get(method, {}))
        settings[method] = {key: _plain(value) for key, value in est.get_params(deep=False).items()
                            if key not in ("random_state", "verbose")}
        start = time.perf_counter()
        est.fit(x)
        seconds = time.perf_counter() - start
        runs.append({"method": method, "seed": seed, "seconds": seconds, **evaluate(labels, est.labels_)})
        progress.update(seconds, method=method, seed=seed, acc=runs[-1]["acc"])
    progress.close()
    summary = {}
    for method in methods:
        rows = [r for r in runs if r["method"] == method]
        summary[method] = {}
        for key in (*METRICS, "seconds"):
            values = [r[key] for r in rows]
            summary[method][key] = {"mean": statistics.fmean(values),
                                    "std": statistics.pstdev(values) if len(values) > 1 else 0.0}
    return {"runs": runs, "summary": summary, "settings": settings, "n_clusters": k, "seeds": seeds,
            "n_points": int(x.shape[0]), "n_features": int(np.prod(x.shape[1:])), "date": date.today().isoformat(),
            "machine": platform.processor() or platform.machine(), "versions": _versions()}


def _plain(value):
    """A JSON-friendly copy of a hyperparameter value."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def _versions() -> dict:
    import sklearn
    import torch

    from .. import __version__

    return {"entclust": __version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def markdown(result: dict, title: str = "") -> str:
    """The summary as a markdown table (mean ± std over seeds, in %)."""
    lines = [f"{title}: N={result['n_points']}, D={result['n_features']}, K={result['n_clusters']}, "
             f"{result['seeds']} seeds, {result['date']}", ""] if title else []
    lines += ["| method | ACC % | NMI % | ARI % | purity % | seconds per fit |", "|---|---|---|---|---|---|"]
    for method, s in result["summary"].items():
        cells = [f"{100 * s[m]['mean']:.1f} ± {100 * s[m]['std']:.1f}" for m in METRICS]
        lines.append(f"| {method} | {' | '.join(cells)} | {s['seconds']['mean']:.2f} |")
    return "\n".join(lines)


def bar_chart(result: dict, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["summary"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 3.6))
    width = 0.8 / len(METRICS)
    for j, metric in enumerate(METRICS):
        means = [100 * result["summary"][n][metric]["mean"] for n in names]
        stds = [100 * result["summary"][n][metric]["std"] for n in names]
        ax.bar(np.arange(len(names)) + (j - (len(METRICS) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=metric.upper())
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(title or f"{result['seeds']} seeds, K={result['n_clusters']}")
    ax.legend(ncol=len(METRICS), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save(result: dict, out: str, name: str, title: str = "") -> list[str]:
    """Write ``<name>.md``, ``<name>.json`` and ``<name>.png`` under ``out`` (created if missing),
    atomically as a set: all three or none. Returns the paths."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"{name}.{ext}") for ext in ("md", "json", "png")]

    def table(tmp):
        with open(tmp, "w") as f:
            f.write(markdown(result, title) + "\n")

    def record(tmp):
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)

    return write_files([(paths[0], table), (paths[1], record), (paths[2], lambda tmp: bar_chart(result, tmp, title))])
