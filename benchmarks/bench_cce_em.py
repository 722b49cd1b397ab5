"""The collision-CE EM as a training loop pays for it (docs/benchmarks.md, "Collision CE on its
duality gap" and the M-step table): one fused EM iteration (``entclust.ops.em_cce_kernel``, 21
iterations a call from a point 25 iterations in, sigma = softmax(3 z), lam = 100, float64, median
of 9 calls) per N x K, and ``SelfLabeling("cce")`` a batch (30 batches of 250 x K logits 3 z,
z ~ N(0, 1) seeded per batch, after 3 warm-up batches; its EM iterations and certificates).
``python benchmarks/bench_cce_em.py``; run it on two commits one after the other to compare."""
from __future__ import annotations

import time

import torch

import entclust
from bench_duality_gap import median_ms  # this folder, as the script runs

SHAPES = ((250, 20), (250, 32), (250, 50), (250, 100), (250, 200), (250, 1000), (10_000, 100))


def em_iteration_us(n: int, k: int) -> float:
    g = torch.Generator().manual_seed(0)
    sigma = torch.softmax(3 * torch.randn(1, n, k, generator=g, dtype=torch.float64), -1)
    u = torch.full((k,), 1.0 / k, dtype=torch.float64)
    y = entclust.em_cce(sigma, u, lam=100.0, max_iter=25, tol=0.0).y
    call = median_ms(lambda: entclust.ops.em_cce_kernel(sigma, u, 100.0, 0.0, 21, 1e-12, 50, y), 5 if n > 1000 else 9)
    return 1e3 * call / 21


def self_labeling_ms(k: int, batches: int = 30) -> tuple[float, float]:
    criterion = entclust.SelfLabeling("cce")
    logits = [3 * torch.randn(250, k, generator=torch.Generator().manual_seed(i)) for i in range(batches)]
    for batch in logits[:3]:
        criterion(batch)
    iterations = []
    t0 = time.perf_counter()
    for batch in logits:
        criterion(batch)
        iterations.append(criterion.last_result.iterations)
    return 1e3 * (time.perf_counter() - t0) / batches, sum(iterations) / batches


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU path {entclust.cpu_capability()}\n")
    print("| N x K | one EM iteration, us |")
    print("|---|---|")
    for n, k in SHAPES:
        print(f"| {n} x {k} | {em_iteration_us(n, k):.0f} |")
    print("\n| SelfLabeling('cce'), 250 x K | ms a batch | EM iterations a batch |")
    print("|---|---|---|")
    for k in (10, 100):
        ms, its = self_labeling_ms(k)
        print(f"| K = {k} | {ms:.2f} | {its:.1f} |")


if __name__ == "__main__":
    main()
