"""``entclust bench large-k``: clustering many points into many clusters, side by side in one
run (issue 11). Gaussian blobs (``sklearn.datasets.make_blobs``, D = 64, unit spread, centres
uniform in [-10, 10]^D, float32) at

- N = 50 000, K = 1000; N = 200 000, K = 1000; N = 1 000 000, K = 100 (CPU);
- ``--device cuda``: N = 1 000 000, K = 10 000 on the GPU as well;
- ``--quick``: N = 5000, K = 100 only (a smoke run).

Methods, each with its defaults and seed 0: ``EntropyClustering(K)`` (large-K mode: global
pseudo-labels, k-means++ head), scikit-learn's ``MiniBatchKMeans(K, batch_size=4096, n_init=1)``,
and faiss-cpu's ``Kmeans`` (20 iterations) when faiss is installed. Each (dataset, method) runs
in its own process, which reads the data memory-mapped from a temporary ``.npy`` and reports
its wall time (fit to labels), ACC (Hungarian), NMI, the number of empty clusters, and its peak
resident memory above the process's footprint after loading the data (so: what the method
itself adds), also per point. Prints a markdown table; writes ``bench_large_k.json`` to
``--out``.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date

import numpy as np

SIZES = [(50_000, 1000), (200_000, 1000), (1_000_000, 100)]
QUICK = [(5000, 100)]
GPU = [(1_000_000, 10_000)]
DIM = 64


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return _rss_mb()


def _one(folder: str, method: str, k: int, device: str) -> dict:
    """Runs in a child process: one method on one dataset."""
    import torch

    from ..metrics import clustering_accuracy, normalized_mutual_info

    torch.set_num_threads(os.cpu_count() or 1)
    x = np.load(os.path.join(folder, "x.npy"), mmap_mode="r")
    truth = np.load(os.path.join(folder, "t.npy"))
    x = np.ascontiguousarray(x)  # every method reads the data from memory
    from sklearn.cluster import MiniBatchKMeans  # noqa: F401  (imports outside the measurement)

    from ..cluster import EntropyClustering  # noqa: F401
    base = _current_rss_mb()
    start = time.perf_counter()
    if method == "entclust":
        from ..cluster import EntropyClustering

        est = EntropyClustering(k, random_state=0, device=device).fit(x)
        labels, extra = est.labels_, {"pseudo_labels": est.pseudo_labels_, "init": est.init_, "epochs": est.epochs_}
    elif method == "minibatch-kmeans":
        from sklearn.cluster import MiniBatchKMeans

        labels, extra = MiniBatchKMeans(k, batch_size=4096, n_init=1, random_state=0).fit(x).labels_, {}
    else:
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=20, seed=0)
        km.train(x)
        labels, extra = km.index.search(x, 1)[1].ravel(), {}
    seconds = time.perf_counter() - start
    peak = _rss_mb() - base
    sizes = np.bincount(labels, minlength=k)
    return {"method": method, "seconds": seconds, "acc": clustering_accuracy(truth, labels),
            "nmi": normalized_mutual_info(truth, labels), "empty_clusters": int((sizes == 0).sum()),
            "peak_mb": peak, "bytes_per_point": peak * 2**20 / x.shape[0], **extra}


def _methods(device: str) -> list[str]:
    methods = ["entclust", "minibatch-kmeans"]
    try:
        import faiss  # noqa: F401

        methods.append("faiss-kmeans")
    except ImportError:
        pass
    return methods if device == "cpu" else ["entclust"]


def main(out: str, *, quick: bool = False, device: str = "cpu") -> int:
    from sklearn.datasets import make_blobs

    from .._files import write_files

    os.makedirs(out, exist_ok=True)
    sizes = QUICK if quick else SIZES + (GPU if device == "cuda" else [])
    rows = []
    print(f"| N | K | method | seconds | ACC % | NMI % | empty | peak MB | bytes/point |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, k in sizes:
        dev = "cuda" if (device == "cuda" and (n, k) in GPU) else "cpu"
        with tempfile.TemporaryDirectory() as folder:
            x, t = make_blobs(n, n_features=DIM, centers=k, random_state=0)
            np.save(os.path.join(folder, "x.npy"), x.astype(np.float32))
            np.save(os.path.join(folder, "t.npy"), t)
            del x, t
            for method in _methods(dev):
                code = (f"import json, sys; from entclust.cli.bench_large_k import _one; "
                        f"print(json.dumps(_one({folder!r}, {method!r}, {k}, {dev!r})))")
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if proc.returncode != 0:
                    row = {"method": method, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
                else:
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update(n=n, k=k, device=dev)
                rows.append(row)
                if "error" in row:
                    print(f"| {n} | {k} | {method} | error: {row['error']} |||||")
                else:
                    print(f"| {n} | {k} | {method} | {row['seconds']:.1f} | {100 * row['acc']:.2f} | "
                          f"{100 * row['nmi']:.2f} | {row['empty_clusters']} | {row['peak_mb']:.0f} | "
                          f"{row['bytes_per_point']:.0f} |", flush=True)
    report = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "dim": DIM, "rows": rows}
    path = os.path.join(out, "bench_large_k.json")

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)

    write_files([(path, write)])
    print(f"wrote {path}")
    return 0
