"""Newton's method on confident predictions (docs/benchmarks.md, "Second-order solvers"): sigma =
softmax(s z), z ~ N(0, 1), 250 x 10, lam = 100, float64, each solver three ways: plain
(``newton.MIN_DAMPING = MAX_DAMPING = 0``, ``PATH_DAMPING = inf``: the plain step of Zhang & Boykov 2024's
baseline), with its damping of jammed steps alone (``PATH_DAMPING = inf``: the barrier path never
taken), and as shipped (damping, then the log-barrier path at the fifth cut step). Each
row: the objective above the best point any run found (SQUAREM EM to a duality gap of 1e-12 or
300 000 map evaluations, and the runs), the certificate, steps and seconds.
``python benchmarks/newton_confident.py``; about seven minutes, most of it the SQUAREM reference.
``--wide``: the K = 200 table (250 x 200, every solver with its defaults against SQUAREM EM with
100 000 map evaluations; objective and certificate), about eight minutes. ``--grid``: ``newton_rce``
on 90 problems from mild to confident sigma (see :func:`grid`), about two minutes."""
from __future__ import annotations

import time

import torch

import entclust
from entclust.solvers import newton


def main() -> None:
    print("| sigma | solver | step | objective - best | gap | steps | seconds |")
    print("|---|---|---|---|---|---|---|")
    shipped = (newton.MIN_DAMPING, newton.PATH_DAMPING, newton.MAX_DAMPING)
    modes = (("plain", (0.0, float("inf"), 0.0)), ("damped", (shipped[0], float("inf"), shipped[2])),
             ("damped + path", shipped))
    for scale, seed in ((10, 0), (10, 1), (10, 2), (10, 3), (20, 5)):
        g = torch.Generator().manual_seed(seed)
        sigma = torch.softmax(scale * torch.randn(250, 10, generator=g, dtype=torch.float64), -1)
        runs = []
        for solver in (entclust.newton_rce, entclust.dual_newton_rce):
            for label, constants in modes:
                newton.MIN_DAMPING, newton.PATH_DAMPING, newton.MAX_DAMPING = constants
                t0 = time.perf_counter()
                res = solver(sigma, lam=100.0)
                runs.append((solver.__name__, label, res, time.perf_counter() - t0))
        newton.MIN_DAMPING, newton.PATH_DAMPING, newton.MAX_DAMPING = shipped
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
        cells = [f"{float(r.objective):.8f}, {float(r.gap):.1e} ({int(r.iterations)} steps"
                 f"{'' if bool(r.converged) else ', not converged'})" for r in runs]
        print(f"| {scale}, {seed} | " + " | ".join(cells) + " |", flush=True)


def grid(rows: bool = False) -> None:
    """``--grid``: ``newton_rce`` with its defaults (tol 1e-10 on the duality gap) and with
    ``tol_gap=1e-6`` on 90 problems, sigma = softmax(s z) of 250 x K, s in 0.3 .. 20, K in 10, 50,
    200, lam in 1, 100, 1e4, seeds 0 and 1; per s: problems converged and seconds, both ways.
    ``--grid --rows``: also each problem's objective, certificate and steps with the defaults
    (to compare two versions problem by problem)."""
    if not rows:
        print("| s | converged, tol 1e-10 | seconds | converged, tol_gap 1e-6 | seconds | "
              "largest relative gap (1e-6 run) |")
        print("|---|---|---|---|---|---|")
    for scale in (0.3, 1, 3, 10, 20):
        cells = [[0, 0.0], [0, 0.0]]
        worst = 0.0
        for k in (10, 50, 200):
            for lam in (1.0, 100.0, 1e4):
                for seed in (0, 1):
                    g = torch.Generator().manual_seed(seed)
                    sigma = torch.softmax(scale * torch.randn(250, k, generator=g, dtype=torch.float64), -1)
                    for cell, options in zip(cells, ({}, {"tol_gap": 1e-6})):
                        t0 = time.perf_counter()
                        res = entclust.newton_rce(sigma, lam=lam, **options)
                        cell[0] += int(bool(res.converged))
                        cell[1] += time.perf_counter() - t0
                        if rows and not options:
                            print(f"s={scale} K={k} lam={lam:g} seed={seed}: objective {float(res.objective):.12f}, "
                                  f"gap {float(res.gap):.1e}, {int(res.iterations)} steps", flush=True)
                    worst = max(worst, float(res.relative_gap))
        if not rows:
            print(f"| {scale} | {cells[0][0]} of 18 | {cells[0][1]:.2f} | {cells[1][0]} of 18 | {cells[1][1]:.2f} | "
                  f"{worst:.1e} |", flush=True)


if __name__ == "__main__":
    import sys

    if "--grid" in sys.argv[1:]:
        grid(rows="--rows" in sys.argv[1:])
    else:
        wide() if "--wide" in sys.argv[1:] else main()
