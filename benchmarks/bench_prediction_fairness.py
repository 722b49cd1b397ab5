"""Prediction fairness ``KL(u || sigma_bar)`` from logits, forward + backward, on the CPU: the kernel
(csrc/cpu/fairness.cpp, value and gradient in one call, once per instruction-set path this machine
supports) against the PyTorch composition it replaced (log_softmax, logsumexp over the rows, their
backward) run eagerly and under ``torch.compile``, on the same (B, N, K) float32 logits in one run.
B problems of N rows: 10 x 250 x 10 is the step of ``EntropyClustering``'s per-batch mode (ten
restarts side by side, batch 250, K = 10), the others a network's batch at larger K.

Prints a markdown table of medians (microseconds) and the ratios eager / kernel and compiled /
kernel (above 1: the kernel is faster); then the float64 softmax the per-batch pseudo-label solves
take (``entclust.ops.softmax_double``) against ``torch.softmax(z.double(), -1)``, forward only.

    python benchmarks/bench_prediction_fairness.py
    python benchmarks/bench_prediction_fairness.py --shapes 10x250x10 --repeat 400 --threads 1
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from datetime import date

import torch

import entclust
from entclust.ops import cpu_model


def composition(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The PyTorch formula (what entclust.prediction_fairness runs where there is no kernel)."""
    log_bar = torch.logsumexp(torch.log_softmax(logits, -1), -2) - math.log(logits.shape[-2])
    return (torch.special.xlogy(u, u) - torch.where(u > 0, u * log_bar, 0.0)).sum(-1)


def median_us(fn, leaf: torch.Tensor, repeat: int, backward: bool = True) -> float:
    def once():
        out = fn(leaf)
        if backward:
            out.sum().backward()

    for _ in range(3):
        once()
    times = []
    for _ in range(repeat):
        leaf.grad = None
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return 1e6 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="10x250x10,1x4096x1000,1x256x16384,1x65536x10", help="BxNxK, comma-separated")
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--capabilities", default=None, help="kernel paths (default: every one this CPU runs)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    capabilities = args.capabilities.split(",") if args.capabilities else entclust.available_cpu_capabilities()
    print(f"{date.today()}, {cpu_model()} ({platform.machine()}), {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, float32, forward + backward, median of {args.repeat} (us)\n")
    print("| B x N x K | " + " | ".join(f"kernel {c}" for c in capabilities) + " | PyTorch eager | torch.compile "
          "| eager / kernel | compiled / kernel |")
    print("|---" * (len(capabilities) + 5) + "|")
    compiled = torch.compile(composition, dynamic=False)
    for text in args.shapes.split(","):
        b, n, k = (int(v) for v in text.split("x"))
        g = torch.Generator().manual_seed(0)
        leaf = (3 * torch.randn(b, n, k, generator=g)).requires_grad_(True)
        u = torch.full((k,), 1.0 / k)
        kernel = {}
        for cap in capabilities:
            with entclust.use_cpu_capability(cap):
                kernel[cap] = median_us(lambda z: entclust.prediction_fairness(z, batched=True), leaf, args.repeat)
        eager = median_us(lambda z: composition(z, u), leaf, args.repeat)
        comp = median_us(lambda z: compiled(z, u), leaf, args.repeat)
        best = kernel[entclust.cpu_capability()] if entclust.cpu_capability() in kernel else min(kernel.values())
        print(f"| {text} | " + " | ".join(f"{kernel[c]:.0f}" for c in capabilities)
              + f" | {eager:.0f} | {comp:.0f} | {eager / best:.2f} | {comp / best:.2f} |", flush=True)
    print("\n| B x N x K | " + " | ".join(f"softmax_double {c}" for c in capabilities)
          + " | torch.softmax(z.double()) | torch / kernel |")
    print("|---" * (len(capabilities) + 3) + "|")
    for text in args.shapes.split(","):
        z = 3 * torch.randn(*(int(v) for v in text.split("x")), generator=torch.Generator().manual_seed(0))
        kernel = {}
        for cap in capabilities:
            with entclust.use_cpu_capability(cap):
                kernel[cap] = median_us(lambda t: entclust.ops.softmax_double(t), z, args.repeat, backward=False)
        plain = median_us(lambda t: torch.softmax(t.double(), -1), z, args.repeat, backward=False)
        best = kernel[entclust.cpu_capability()] if entclust.cpu_capability() in kernel else min(kernel.values())
        print(f"| {text} | " + " | ".join(f"{kernel[c]:.0f}" for c in capabilities)
              + f" | {plain:.0f} | {plain / best:.2f} |", flush=True)


if __name__ == "__main__":
    main()
