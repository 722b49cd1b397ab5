"""Cost of validation and the certificate next to EM iterations (issue 10, item 12): median
seconds and peak memory (as a multiple of the input) of ``em_rce`` on one N x K float32 problem.
Reproduces the README's figures: ``python benchmarks/bench_certificate.py [--n 250000 --k 100]``."""
from __future__ import annotations

import argparse
import subprocess
import sys

PROBE = r"""
import resource, statistics, sys, time, torch, entclust
n, k, solver, kwargs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], eval(sys.argv[4])
torch.manual_seed(0)
sigma = torch.randn(n, k).mul_(3).exp_()  # softmax(3 z) in place: no temporary raises the baseline
sigma /= sigma.sum(1, keepdim=True)
getattr(entclust, solver)(sigma[:100], max_iter=1)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
first = getattr(entclust, solver)(sigma, **kwargs)
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / sigma.nbytes
del first
times = []
for _ in range(5):
    start = time.perf_counter()
    getattr(entclust, solver)(sigma, **kwargs)
    times.append(time.perf_counter() - start)
print(f"{statistics.median(times):.4f} {peak:.2f}")
"""

CASES = [("em_rce", "dict(max_iter=0)"), ("em_rce", "dict(max_iter=0, validate=False)"),
         ("em_rce", "dict(max_iter=0, validate=False, certificate=False)"), ("em_rce", "dict(max_iter=5, tol=0)"),
         ("em_rce", "dict(max_iter=5, tol=0, validate=False, certificate=False)"),
         ("em_cce", "dict(max_iter=0, validate=False)"), ("em_cce", "dict(max_iter=0, validate=False, certificate=False)")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=250_000)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"| solver | arguments | median s | peak memory × input |  (N = {args.n}, K = {args.k}, float32)")
    print("|---|---|---|---|")
    for solver, kwargs in CASES:  # one process per case: ru_maxrss is a high-water mark
        out = subprocess.run([sys.executable, "-c", PROBE, str(args.n), str(args.k), solver, kwargs],
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"| {solver} | {kwargs} | {float(out[0]):.3f} | {float(out[1]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
