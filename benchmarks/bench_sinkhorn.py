"""SeLa's Sinkhorn-Knopp as ``entclust.sinkhorn`` runs it, with and without a ``callback``
(docs/benchmarks.md, "SeLa's Sinkhorn-Knopp"): 300 sweeps (tol 1e-6, not met) of sigma =
softmax(3 z), z ~ N(0, 1), float64, N = 250, uniform prior, milliseconds a sweep (median of 5
calls after one warm-up). Without a callback all sweeps run in one op call; with one, a sweep
an op call, which rescales the plan afresh each time.
``python benchmarks/bench_sinkhorn.py``; run it on two commits one after the other to compare."""
from __future__ import annotations

import torch

import entclust
from bench_duality_gap import median_ms  # this folder, as the script runs

SWEEPS = 300


def ms_a_sweep(k: int, callback) -> float:
    g = torch.Generator().manual_seed(0)
    sigma = torch.softmax(3 * torch.randn(250, k, generator=g, dtype=torch.float64), -1)
    call = median_ms(lambda: entclust.sinkhorn(sigma, tol=1e-6, max_iter=SWEEPS, warn=False, callback=callback), 5)
    return call / SWEEPS


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU path {entclust.cpu_capability()}\n")
    print("| N x K | ms a sweep | with a callback | ratio |")
    print("|---|---|---|---|")
    for k in (20, 200, 2000):
        plain, watched = ms_a_sweep(k, None), ms_a_sweep(k, lambda sweeps, error: None)
        print(f"| 250 x {k} | {plain:.4f} | {watched:.4f} | {watched / plain:.1f} |")


if __name__ == "__main__":
    main()
