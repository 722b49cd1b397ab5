"""One iteration of the fused EM reverse-CE and projected-gradient collision-CE kernels
(``entclust.ops.em_rce_kernel``, ``pgd_cce_kernel``: float32, lam = 100, PGD step 0.01 with the
exact simplex projection a row) on every CPU path, short rows to long: sigma = softmax(3 z),
z ~ N(0, 1), N = 250, microseconds an iteration (50 iterations a call, 10 from K = 1000; median
of 15 calls after one warm-up). ``python benchmarks/bench_short_rows.py``; run it on two commits
one after the other to compare (docs/benchmarks.md, "Short rows on wide vectors")."""
from __future__ import annotations

import torch

import entclust
from entclust import ops
from bench_duality_gap import median_ms  # this folder, as the script runs

KS = (4, 8, 10, 12, 16, 20, 30, 40, 50, 100, 200, 1000)


def iteration_us(kernel: str, k: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    sigma = torch.softmax(3 * torch.randn(1, 250, k, generator=g), -1)
    u = torch.full((k,), 1.0 / k)
    its = 50 if k <= 200 else 10
    if kernel == "em_rce":
        def call():
            return ops.em_rce_kernel(sigma, u, 100.0, 0.0, its, None)
    else:
        def call():
            return ops.pgd_cce_kernel(sigma, u, 100.0, 0.01, 0.0, its, None)
    times = {}
    for capability in entclust.available_cpu_capabilities():
        with entclust.use_cpu_capability(capability):
            times[capability] = 1e3 * median_ms(call, 15) / its
    return times


def main() -> None:
    capabilities = entclust.available_cpu_capabilities()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU paths {', '.join(capabilities)}")
    for kernel in ("em_rce", "pgd_cce"):
        print(f"\n{kernel}, us an iteration\n")
        print("| K | " + " | ".join(capabilities) + " |")
        print("|---|" + "---|" * len(capabilities))
        for k in KS:
            times = iteration_us(kernel, k)
            print(f"| {k} | " + " | ".join(f"{times[c]:.1f}" for c in capabilities) + " |")


if __name__ == "__main__":
    main()
