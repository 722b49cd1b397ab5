"""Newton's method on confident predictions (docs/benchmarks.md, "Second-order solvers"): sigma =
softmax(s z), z ~ N(0, 1), 250 x 10, lam = 100, float64, with its damping of jammed steps and
without (``newton.MIN_DAMPING = MAX_DAMPING = 0``: the plain step of Zhang & Boykov 2024's
baseline). Each row: the objective above the best point any run found (SQUAREM EM to a duality gap
of 1e-12 or 300 000 map evaluations, and the four runs), the certificate, steps and seconds.
``python benchmarks/newton_confident.py``; about seven minutes, most of it the SQUAREM reference.
``--wide``: the K = 200 table (250 x 200, every solver with its defaults against SQUAREM EM with
100 000 map evaluations; objective and certificate), about two minutes."""
from __future__ import annotations

import time

import torch

import entclust
from entclust.solvers import newton


def main() -> None:
    print("| sigma | solver | step | objective - best | gap | steps | seconds |")
    print("|---|---|---|---|---|---|---|")
    plain = (0.0, 0.0)
    damped = (newton.MIN_DAMPING, newton.MAX_DAMPING)
    for scale, seed in ((10, 0), (10, 1), (10, 2), (10, 3), (20, 5)):
        g = torch.Generator().manual_seed(seed)
        sigma = torch.softmax(scale * torch.randn(250, 10, generator=g, dtype=torch.float64), -1)
        runs = []
        for solver in (entclust.newton_rce, entclust.dual_newton_rce):
            for label, (low, high) in (("plain", plain), ("damped", damped)):
                newton.MIN_DAMPING, newton.MAX_DAMPING = low, high
                t0 = time.perf_counter()
                res = solver(sigma, lam=100.0)
                runs.append((solver.__name__, label, res, time.perf_counter() - t0))
        newton.MIN_DAMPING, newton.MAX_DAMPING = damped
        em = entclust.em_rce(sigma, lam=100.0, accel="squarem", tol_gap=1e-12, max_iter=300_000)
        best = min([em.objective] + [r.objective for _, _, r, _ in runs])
        for name, label, res, seconds in runs:
            print(f"| {scale} N(0,1), seed {seed} | {name} | {label} | {res.objective - best:.1e} | {res.gap:.1e} | "
                  f"{res.iterations} | {seconds:.2f} |", flush=True)


def wide() -> None:
    print("| s, seed | newton_rce | dual_newton_rce | SQUAREM EM |")
    print("|---|---|---|---|")
    for scale, seed in ((10, 1), (10, 2), (20, 5)):
        g = torch.Generator().manual_seed(seed)
        sigma = torch.softmax(scale * torch.randn(250, 200, generator=g, dtype=torch.float64), -1)
        runs = [entclust.newton_rce(sigma), entclust.dual_newton_rce(sigma),
                entclust.em_rce(sigma, accel="squarem", tol_gap=1e-12, max_iter=100_000)]
        cells = [f"{float(r.objective):.6f}, {float(r.gap):.1e} ({int(r.iterations)} steps"
                 f"{'' if bool(r.converged) else ', not converged'})" for r in runs]
        print(f"| {scale}, {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    import sys

    wide() if "--wide" in sys.argv[1:] else main()
