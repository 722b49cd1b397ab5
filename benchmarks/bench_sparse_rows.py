"""The CPU kernels of the large-K start against the PyTorch ops they replace, in one run: per block
of a self-labeled-centroid round (the rows of 2^22 logits, as entclust.cluster.centroids makes
them) the top-64 selection (``torch.topk``), the logits and their top-64 without writing the logits
(addmm + topk, and torch.compile of it), the sparse EM of ColumnMemory (10 steps, PyTorch ops
as on the GPU), the centres' sums (a sparse K x b matrix times the block), and the k-means++
seeding (the PyTorch loop, up to 20 000 seeds), each as a median of repeats with the ratio; then
one whole round. ``python benchmarks/bench_sparse_rows.py [--k 5000 10000] [--seed-k 5000]
[--only seeding]`` (``--only seeding --seed-k 100000``: the seeding of the K = 10^5 start alone).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

import entclust
from entclust import ColumnMemory, ops
from bench_duality_gap import median_ms  # this folder is on the path when the script runs
from entclust.cluster.centroids import (BLOCK, _kmeans_plusplus_steps, _sparse_sums_steps, block_rows,
                                        kmeans_plusplus, self_labeled_centroids)


def overlap(n, d, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(k, d, generator=g)
    return centres[torch.randint(0, k, (n,), generator=g)] + torch.randn(n, d, generator=g), centres


def block_table(ks, d=64, top=64, n=100_000):
    print(f"| K | rows a block | top-{top}: torch.topk | op | x | sparse EM (10 steps): PyTorch | op | x "
          "| centre sums: sparse.mm | op | x |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in ks:
        rows = block_rows(k)
        x, centres = overlap(rows, d, k)
        mu = centres + 0.3 * torch.randn(k, d, generator=torch.Generator().manual_seed(1))
        logits = torch.addmm(-0.5 * mu.square().sum(1), x, mu.T)
        t_topk = median_ms(lambda: logits.topk(top, dim=1, sorted=False))
        t_op = median_ms(lambda: ops.top_entries_kernel(logits, top))
        values, index = ops.top_entries_kernel(logits, top)
        memory = ColumnMemory(k, n, 100.0, iterations=10)
        rest = memory.columns * (1 - rows / n)
        t_em = median_ms(lambda: memory._sparse_steps(values, index, rest))
        cu = memory.prior * (100.0 * n)
        t_em_op = median_ms(lambda: ops.sparse_em_rows_kernel(values, index, rest, cu, 10, True))
        y = memory._sparse_steps(values, index, rest)[0]
        sums, mass = torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        t_sums = median_ms(lambda: _sparse_sums_steps(sums, mass, y, index, x, 1.0))
        t_sums_op = median_ms(lambda: ops.sparse_centre_sums_kernel(sums, mass, y, index, x, 1.0))
        print(f"| {k} | {rows} | {t_topk:.2f} ms | {t_op:.2f} ms | {t_topk / t_op:.1f} | {t_em:.2f} ms | "
              f"{t_em_op:.2f} ms | {t_em / t_em_op:.1f} | {t_sums:.2f} ms | {t_sums_op:.2f} ms | "
              f"{t_sums / t_sums_op:.1f} |")


def logits_table(ks, d=64, top=64):
    """The logits of a block and their top entries: what a user writes (addmm + torch.topk), the
    same under torch.compile, addmm + the selection op, and the fused op that never writes them."""
    def plain(x, w, b):
        return torch.addmm(b, x, w.T).topk(top, dim=1, sorted=False)

    try:
        compiled = torch.compile(plain, dynamic=False)
    except Exception as err:  # noqa: BLE001  (no compiler: say so, time the rest)
        compiled, why = None, type(err).__name__
    print(f"\n| K | rows a block | addmm + topk | torch.compile of it | addmm + top_entries op | "
          f"linear_top_entries op | x addmm + topk | x addmm + op |")
    print("|---|---|---|---|---|---|---|---|")
    for k in ks:
        rows = block_rows(k)
        x, centres = overlap(rows, d, k)
        mu = centres + 0.3 * torch.randn(k, d, generator=torch.Generator().manual_seed(1))
        b = -0.5 * mu.square().sum(1)
        t_plain = median_ms(lambda: plain(x, mu, b))
        cell = f"unavailable ({why})" if compiled is None else ""
        if compiled is not None:
            try:
                compiled(x, mu, b)  # (the compilation, not timed)
                cell = f"{median_ms(lambda: compiled(x, mu, b)):.2f} ms"
            except Exception as err:  # noqa: BLE001
                cell = f"failed: {type(err).__name__}"
        t_two = median_ms(lambda: ops.top_entries_kernel(torch.addmm(b, x, mu.T), top))
        t_fused = median_ms(lambda: ops.linear_top_entries_kernel(x, mu, b, top))
        print(f"| {k} | {rows} | {t_plain:.2f} ms | {cell} | {t_two:.2f} ms | {t_fused:.2f} ms | "
              f"{t_plain / t_fused:.1f} | {t_two / t_fused:.2f} |")


TORCH_SEEDS_MAX = 20_000  # the PyTorch loop takes milliseconds a seed at K = 10^5: left out above this


def seeding(k, m, d=64):
    x, _ = overlap(m, d, k)
    trials = 2 + int(math.log(k))
    t0 = time.perf_counter()
    op_seeds = kmeans_plusplus(x, k, torch.Generator().manual_seed(0))
    t_op = time.perf_counter() - t0
    text = f"\nk-means++, {k} seeds of {m} x {d} points: op {t_op:.2f} s"
    if k <= TORCH_SEEDS_MAX:
        t0 = time.perf_counter()
        torch_seeds = _kmeans_plusplus_steps(x, k, torch.Generator().manual_seed(0), trials)
        t_torch = time.perf_counter() - t0
        text += f", PyTorch loop {t_torch:.2f} s, x{t_torch / t_op:.1f}, the same seeds: {torch.equal(torch_seeds, op_seeds)}"
    print(text + f" (sum of the seeds' coordinates {float(op_seeds.double().sum()):.6f}: the same seeds, the same sum)")


def one_round(k, m, d=64):
    x, centres = overlap(m, d, k)
    mu = x[torch.randperm(m, generator=torch.Generator().manual_seed(0))[:k]].clone()
    _, _, history = self_labeled_centroids(x, mu, 100.0, rounds=2, tol=0.0)
    print(f"\nOne round of self-labeled centroids, {m} x {d} points, K = {k} (blocks of {BLOCK} entries): "
          f"{history[-1]['seconds']:.2f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1000, 5000, 10_000])
    parser.add_argument("--seed-k", type=int, default=5000, help="seeds of the k-means++ row (points: max(10 000, 2K))")
    parser.add_argument("--round-k", type=int, default=5000, help="K of the one-round row (100 000 points)")
    parser.add_argument("--only", choices=("blocks", "logits", "seeding", "round"), help="one of the four parts")
    args = parser.parse_args()
    print(f"entclust {entclust.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {ops.cpu_capability()}\n")
    parts = {"blocks": lambda: block_table(args.k), "logits": lambda: logits_table(args.k),
             "seeding": lambda: seeding(args.seed_k, max(10_000, 2 * args.seed_k)),
             "round": lambda: one_round(args.round_k, 100_000)}
    for name, run in parts.items():
        if args.only in (None, name):
            run()


if __name__ == "__main__":
    main()
