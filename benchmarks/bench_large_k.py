"""Clustering many points into many clusters, side by side in one run:
``python benchmarks/bench_large_k.py [--preset default|million|million-only|gpu|quick] [--quick]
[--device cuda [--no-cpu-floor]] [--out results]`` (was ``entclust bench large-k``), or on a file of
yours: ``--data mnist5k.npz --k 50 200 500`` (an .npz/.pt with X and y, or .npy/.csv features and
``--labels``: read as ``entclust fit`` reads it, float32). Datasets, float32, one generator seed each:

- ``overlap``: a Gaussian mixture with overlapping clusters, centres ``s N(0, I)``, unit noise,
  uniform labels (the issue's data: where a k-means++ start alone is far from the truth);
- ``blobs``: scikit-learn's ``make_blobs`` (D = 64, unit spread, centres uniform in [-10, 10]^D).

Rows (``--preset``): ``default`` overlap 20 000 x 32 at K = 50 (s = 0.9) and 200 (s = 0.8), blobs
50 000 x 64 at K = 1000, overlap 100 000 x 64 at K = 5000 (s = 1.5); ``million`` adds overlap
1 000 000 x 64 at K = 10 000 (s = 1.5), ``million-only`` (and ``gpu``, the default with ``--device
cuda``) that row alone; ``quick``: overlap 5000 x 16 at K = 50 (a smoke run).

Methods, each with its defaults and seed 0, each (dataset, method) in its own process:
``entclust`` (``EntropyClustering(K)``), ``entclust-start`` (its start alone: the k-means++ seeds
as a nearest-centroid head, ``init="kmeans++", epochs=0``), scikit-learn's ``KMeans(K, n_init=1)``
(where N K <= 2e8) and ``MiniBatchKMeans(K, batch_size=4096, n_init=1)``, ``torch-kmeans``
(faiss's recipe in plain PyTorch, :func:`torch_kmeans`: K distinct random points as the start,
20 Lloyd iterations, empty clusters split off large ones; blocks of rows, on the device), and
faiss's ``Kmeans`` (20 iterations; the GPU one with ``--device cuda`` where faiss sees a GPU)
when faiss is installed. Each reads the data memory-mapped from a temporary ``.npy`` and
reports its wall time (fit to labels), ACC (Hungarian; left out above K = 2000, where the
assignment costs more than the fit), NMI, empty clusters, the largest cluster over the mean, the
mean squared distance of a point to its cluster's mean (K-means's objective, in the data's units),
its peak resident memory above its footprint after loading the data, and on CUDA the peak of
PyTorch's GPU allocator (faiss's own GPU memory is not counted there). Prints a markdown table;
writes ``bench_large_k.json`` to ``--out``.

``--device cuda`` runs entclust, its start, torch-kmeans and faiss on the GPU (by default at
N = 10^6, K = 10^4), and MiniBatchKMeans on the CPU as the floor (``--no-cpu-floor`` leaves it
out: about a minute on 16 cores, an estimate). faiss's GPU wheel (``faiss-gpu-cu12``, 48 MB)
needs ``nvidia-cublas-cu12`` (581 MB, 2026-12-06), more than a lent GPU machine can be sent
(64 MiB a call) beside its CUDA 13 torch; torch-kmeans stands in for it there.
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

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, N, D, K, spread of the centres for "overlap")
PRESETS = {
    "quick": [("overlap", 5000, 16, 50, 1.0)],
    "default": [("overlap", 20_000, 32, 50, 0.9), ("overlap", 20_000, 32, 200, 0.8), ("blobs", 50_000, 64, 1000, 0.0),
                ("overlap", 100_000, 64, 5000, 1.5)],
}
PRESETS["million-only"] = [("overlap", 1_000_000, 64, 10_000, 1.5)]
PRESETS["million"] = PRESETS["default"] + PRESETS["million-only"]
PRESETS["gpu"] = PRESETS["million-only"]  # the default with --device cuda (issue 26's size)


def make_data(name: str, n: int, d: int, k: int, spread: float):
    """``(x float32, labels)`` of one benchmark dataset (seed 0)."""
    if name == "blobs":
        from sklearn.datasets import make_blobs

        x, t = make_blobs(n, n_features=d, centers=k, random_state=0)
        return x.astype(np.float32), t
    rng = np.random.default_rng(0)
    centres = (spread * rng.standard_normal((k, d))).astype(np.float32)
    t = rng.integers(0, k, n)
    x = centres[t]
    x += rng.standard_normal((n, d), dtype=np.float32)
    return x, t


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

    from entclust.metrics import clustering_accuracy, normalized_mutual_info

    torch.set_num_threads(os.cpu_count() or 1)
    x = np.load(os.path.join(folder, "x.npy"), mmap_mode="r")
    truth = np.load(os.path.join(folder, "t.npy"))
    x = np.ascontiguousarray(x)  # every method reads the data from memory
    from sklearn.cluster import MiniBatchKMeans  # noqa: F401  (imports outside the measurement)

    from entclust.cluster import EntropyClustering  # noqa: F401
    base = _current_rss_mb()
    start = time.perf_counter()
    extra = {}
    if method.startswith("entclust"):
        from entclust.cluster import EntropyClustering

        params = {"init": "kmeans++", "epochs": 0} if method == "entclust-start" else {}
        est = EntropyClustering(k, random_state=0, device=device, **params).fit(x)
        labels = est.labels_
        extra = {"pseudo_labels": est.pseudo_labels_, "init": est.init_, "epochs": est.epochs_,
                 "rounds": len(getattr(est, "init_history_", []))}
    elif method == "kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(k, n_init=1, random_state=0).fit(x).labels_
    elif method == "minibatch-kmeans":
        from sklearn.cluster import MiniBatchKMeans

        labels = MiniBatchKMeans(k, batch_size=4096, n_init=1, random_state=0).fit(x).labels_
    elif method == "torch-kmeans":
        labels = torch_kmeans(torch.from_numpy(x).to(device), k).cpu().numpy()
    else:
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=20, seed=0, gpu=device == "cuda")
        km.train(x)
        labels = km.index.search(x, 1)[1].ravel()
    seconds = time.perf_counter() - start
    peak = _rss_mb() - base
    if device == "cuda":
        extra["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    sizes = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    means = (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32)
    msd = sum(float(np.square(x[i:i + 65536] - means[labels[i:i + 65536]]).sum(dtype=np.float64))
              for i in range(0, x.shape[0], 65536)) / x.shape[0]
    return {"method": method, "seconds": seconds, "msd": msd,
            "acc": clustering_accuracy(truth, labels) if k <= 2000 else None,
            "nmi": normalized_mutual_info(truth, labels), "empty_clusters": int((sizes == 0).sum()),
            "largest_over_mean": float(sizes.max() / sizes.mean()), "peak_mb": peak, **extra}


def torch_kmeans(points, k: int, niter: int = 20, seed: int = 0):
    """faiss's k-means recipe in plain PyTorch, over blocks of rows on the points' device: K distinct
    random points as the start, ``niter`` Lloyd iterations, and after each, every empty centre
    moves onto a copy of a centre drawn with probability proportional to its size - 1, the two
    pushed apart by a relative 1/1024 in alternating directions (as faiss's ``split_clusters``).
    Returns each point's nearest centre."""
    import torch

    from entclust.cluster.centroids import _nearest_steps as nearest  # (addmm blocks: no entclust op)

    g = torch.Generator().manual_seed(seed)
    mu = points[torch.randperm(points.shape[0], generator=g)[:k].to(points.device)].clone()
    sign = torch.ones(points.shape[1], dtype=points.dtype, device=points.device)
    sign[1::2] = -1
    eps = 1.0 / 1024
    for _ in range(niter):
        labels, _ = nearest(points, mu)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(mu).index_add_(0, labels, points)
        alive = counts > 0
        mu[alive] = sums[alive] / counts[alive, None].to(mu.dtype)
        empty = (~alive).nonzero().flatten().tolist()
        sizes = counts.double().cpu()
        for ci in empty:
            cj = int(torch.multinomial((sizes - 1).clamp_min(0), 1, generator=g))
            mu[ci] = mu[cj] * (1 + eps * sign)
            mu[cj] = mu[cj] * (1 - eps * sign)
            sizes[ci] = sizes[cj] // 2
            sizes[cj] -= sizes[ci]
    return nearest(points, mu)[0]


def _faiss(device: str) -> bool:
    """Whether faiss is installed (and, for ``cuda``, sees a GPU)."""
    try:
        import faiss
    except ImportError:
        return False
    return device == "cpu" or faiss.get_num_gpus() > 0


def _methods(device: str, n: int, k: int, cpu_floor: bool = True) -> list[tuple[str, str]]:
    """``(method, device)`` pairs to run on one dataset."""
    if device != "cpu":
        gpu = ["entclust", "entclust-start", "torch-kmeans"] + (["faiss-kmeans"] if _faiss(device) else [])
        return [(m, device) for m in gpu] + ([("minibatch-kmeans", "cpu")] if cpu_floor else [])
    methods = (["entclust", "entclust-start"] + (["kmeans"] if n * k <= 2e8 else [])
               + ["minibatch-kmeans", "torch-kmeans"] + (["faiss-kmeans"] if _faiss(device) else []))
    return [(m, device) for m in methods]


def read_data(path: str, labels: str | None = None):
    """``(x float32, labels)`` of a user's file, as ``entclust fit`` reads it; labels are needed."""
    from entclust.data import load

    x, t = load(path, labels)
    if t is None:
        raise ValueError(f"--data {path}: no labels in the file; give them with --labels")
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(t)


def main(out: str, *, quick: bool = False, device: str = "cpu", preset: str | None = None,
         cpu_floor: bool = True, data: str | None = None, labels: str | None = None, ks=()) -> int:
    from entclust._files import check_output_folder, write_files

    check_output_folder(out)
    preset = preset or ("quick" if quick else "gpu" if device == "cuda" else "default")
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    table = PRESETS[preset]
    if data is not None:
        n, d = read_data(data, labels)[0].shape
        table, preset = [(data, n, d, k, None) for k in ks], os.path.basename(data)
    os.makedirs(out, exist_ok=True)
    rows = []
    print("| data | N | D | K | method | device | seconds | ACC % | NMI % | empty | largest/mean | msd | peak MB "
          "| GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, d, k, spread in table:
        with tempfile.TemporaryDirectory() as folder:
            x, t = read_data(name, labels) if data is not None else make_data(name, n, d, k, spread)
            np.save(os.path.join(folder, "x.npy"), x)
            np.save(os.path.join(folder, "t.npy"), t)
            del x, t
            for method, dev in _methods(device, n, k, cpu_floor):
                code = (f"import json, sys; sys.path.insert(0, {HERE!r}); from bench_large_k import _one; "
                        f"print(json.dumps(_one({folder!r}, {method!r}, {k}, {dev!r})))")
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
                if proc.returncode != 0:
                    row = {"method": method, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
                else:
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                label = f"{name} (s={spread})" if name == "overlap" else os.path.basename(name)
                row.update(data=name, spread=spread, n=n, d=d, k=k, device=dev)
                rows.append(row)
                if "error" in row:
                    print(f"| {label} | {n} | {d} | {k} | {method} | {dev} | error: {row['error']} ||||||||", flush=True)
                else:
                    acc = "-" if row["acc"] is None else f"{100 * row['acc']:.2f}"
                    gpu = f"{row['gpu_peak_mb']:.0f}" if "gpu_peak_mb" in row else "-"
                    print(f"| {label} | {n} | {d} | {k} | {method} | {dev} | {row['seconds']:.1f} | {acc} | "
                          f"{100 * row['nmi']:.2f} | {row['empty_clusters']} | {row['largest_over_mean']:.2f} | "
                          f"{row['msd']:.5g} | {row['peak_mb']:.0f} | {gpu} |", flush=True)
    report = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "preset": preset, "rows": rows}
    path = os.path.join(out, "bench_large_k.json")

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)

    write_files([(path, write)])
    print(f"wrote {path}")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--preset", choices=tuple(PRESETS),
                        help="the rows to run (default: 'quick' with --quick, else 'gpu' with --device cuda, else "
                             "'default'; 'million': N = 10^6, K = 10^4)")
    parser.add_argument("--quick", action="store_true", help="the 'quick' preset (a smoke run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where entclust, its start and torch-kmeans (and faiss, if it sees a GPU) run")
    parser.add_argument("--no-cpu-floor", dest="cpu_floor", action="store_false",
                        help="with --device cuda: leave out MiniBatchKMeans on the CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "results"), help="folder for bench_large_k.json")
    parser.add_argument("--data", help="a file of yours instead of the presets (.npz/.pt with X and y, or features "
                                       "and --labels), clustered at each --k")
    parser.add_argument("--labels", help="with --data: the labels' file, where the data file holds none")
    parser.add_argument("--k", type=int, nargs="+", default=[50, 200, 500], help="with --data: the cluster counts")


def run(args) -> int:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda needs a GPU; torch sees none")
    return main(args.out, quick=args.quick, device=args.device, preset=args.preset, cpu_floor=args.cpu_floor,
                data=args.data, labels=args.labels, ks=args.k)


if __name__ == "__main__":
    from entclust.cli import run_script

    sys.exit(run_script("bench_large_k.py", __doc__, add_arguments, run))
