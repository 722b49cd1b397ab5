"""The duality gap against the Frank-Wolfe gap as certificates of the reverse-CE problem
(docs/maths.md, "A tighter certificate") or, with ``--problem cce``, of the collision-CE one ("A
duality gap for the CCE problem"): for EM iterates on sigma = softmax(s z), N x K, lam = 100, the true
distance f(y) - f* (f* from SQUAREM run to a gap of 1e-12, or for collision CE from ``newton_cce``
to 1e-12) beside both bounds, then the price of each certificate (fused CPU kernels, median of 20).
``python benchmarks/bench_duality_gap.py [--n 250 --k 10] [--problem cce]``."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import entclust
from entclust.solvers.certificate import certify, dual_certificate


def sigma_of(n, k, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), -1)


def median_ms(fn, repeats=20):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=250)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--lam", type=float, default=100.0)
    parser.add_argument("--problem", choices=("rce", "cce"), default="rce")
    args = parser.parse_args()
    problem, lam = args.problem, args.lam
    em = getattr(entclust, f"em_{problem}")
    print(f"{problem}: N = {args.n}, K = {args.k}, lam = {lam:g}, float64, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| sigma = softmax(s z) | EM iterations | f(y) - f* | duality gap | Frank-Wolfe gap |")
    print("|---|---|---|---|---|")
    for scale, seed in ((1.0, 0), (3.0, 0), (10.0, 1)):
        sigma = sigma_of(args.n, args.k, scale, seed)
        if problem == "rce":
            best = entclust.em_rce(sigma, lam=lam, accel="squarem", tol_gap=1e-12, max_iter=500_000)
        else:
            best = entclust.newton_cce(sigma, lam=lam, tol=1e-12)
        for iterations in (10, 100, 1000) if problem == "rce" else (10, 100, 1000, 10_000):
            y = em(sigma, lam=lam, max_iter=iterations, tol=0.0).y
            distance = float(entclust.objective(sigma, y, lam=lam, problem=problem)) - best.objective
            print(f"| s = {scale:g} | {iterations} | {distance:.2g} | "
                  f"{float(entclust.duality_gap(sigma, y, lam=lam, problem=problem)):.2g} | "
                  f"{float(entclust.fw_gap(sigma, y, lam=lam, problem=problem)):.2g} |")
    print("\n| N x K | Frank-Wolfe certificate (objective + gap) | duality gap |")
    print("|---|---|---|")
    for n, k in ((250, 10), (250, 200), (10_000, 100)):
        sigma = sigma_of(n, k, 3.0, 0).unsqueeze(0)
        y = em(sigma, lam=lam, max_iter=20, tol=0.0).y
        u = torch.full((k,), 1.0 / k, dtype=torch.float64)
        fw = median_ms(lambda: certify(problem, sigma, y, u, lam))
        dual = median_ms(lambda: dual_certificate(sigma, y, u, lam, problem))
        print(f"| {n} x {k} | {fw:.3f} ms | {dual:.3f} ms |")


if __name__ == "__main__":
    main()
