"""Pseudo-label solvers side by side on the same synthetic problems (sigma = softmax(3 z),
z ~ N(0, 1), lam = 100, uniform prior), in one run:

1. time per iteration (EM, and PGD with its projection), fused kernel vs the PyTorch reference
   (float32);
2. reverse CE (seed 004 Table 1's problem): EM vs the exact dual Newton solver, time and
   iterations to a Frank-Wolfe gap <= 1e-8 (float64);
3. collision CE (seed 003 Table 1's problem): EM vs projected gradient at the paper's step
   sizes, both fused, iterations and time to max|dy| <= 1e-6 or the cap, with the objective
   and gap reached.

Prints markdown, writes JSON and a gap-versus-time PNG.
``entclust bench`` or ``python benchmarks/bench_solvers.py`` (same options).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date

import torch

from . import solvers
from . import ops
from . import reference as R


def problem(b, n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(b, n, k, generator=g, dtype=torch.float64), -1).to(dtype)


def per_iteration(shapes, iters):
    rows = []
    for b, n, k in shapes:
        sigma = problem(b, n, k, torch.float32)
        u = torch.full((k,), 1.0 / k)
        for name, fused, ref in [
            ("EM reverse CE", lambda it: ops.em_rce(sigma, u, 100.0, 0.0, it, None),
             lambda it: R.em_rce(sigma, u, 100.0, max_iter=it, tol=0)),
            ("EM collision CE", lambda it: ops.em_cce(sigma, u, 100.0, 0.0, it, 1e-12, 50, None),
             lambda it: R.em_cce(sigma, u, 100.0, max_iter=it, tol=0, newton_tol=1e-6)),
            ("PGD collision CE", lambda it: ops.pgd_cce(sigma, u, 100.0, 0.01, 0.0, it, None),
             lambda it: R.pgd_cce(sigma, u, 100.0, step=0.01, max_iter=it, tol=0)),
        ]:
            it = iters if b * n * k <= 100_000 else max(2, iters // 20)
            times = {}
            for label, fn in (("fused", fused), ("reference", ref)):
                fn(1)
                samples = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn(it)
                    samples.append((time.perf_counter() - t0) / it)
                times[label] = statistics.median(samples) * 1e3
            rows.append(dict(solver=name, b=b, n=n, k=k, fused_ms=times["fused"], reference_ms=times["reference"],
                             speedup=times["reference"] / times["fused"]))
    return rows


def em_until_gap(sigma, solver, target, chunk, cap_s, **kw):
    """Runs the fused EM in chunks, warm-started, recording (seconds, iterations, gap)."""
    y, iters, spent, curve = None, 0, 0.0, []
    while spent < cap_s:
        t0 = time.perf_counter()
        res = solver(sigma, lam=100.0, max_iter=chunk, tol=0, y0=y)
        spent += time.perf_counter() - t0
        y, iters = res.y, iters + chunk
        curve.append((spent, iters, res.fw_gap.item(), res.objective.item()))
        if res.fw_gap <= target:
            break
    return curve


def rce_race(ks, target, cap_s):
    rows, curves = [], {}
    for k in ks:
        sigma = problem(1, 250, k, torch.float64)[0]
        em = em_until_gap(sigma, solvers.em_rce, target, chunk=50, cap_s=cap_s)
        t0 = time.perf_counter()
        dn = solvers.dual_newton_rce(sigma, lam=100.0, tol=target, max_iter=200)
        dn_s = time.perf_counter() - t0
        rows.append(dict(k=k, em_s=em[-1][0], em_iterations=em[-1][1], em_gap=em[-1][2],
                         dual_newton_s=dn_s, dual_newton_steps=int(dn.iterations), dual_newton_gap=dn.fw_gap.item(),
                         objective_gap=em[-1][3] - dn.objective.item()))
        curves[f"EM, K={k}"] = [(t, g) for t, _, g, _ in em]
    return rows, curves


def cce_race(ks, steps, max_iter):
    rows = []
    for k in ks:
        sigma = problem(1, 250, k, torch.float64)[0]
        t0 = time.perf_counter()
        em = solvers.em_cce(sigma, lam=100.0, tol=1e-6, max_iter=max_iter)
        rows.append(dict(k=k, solver="EM (fused)", iterations=int(em.iterations), seconds=time.perf_counter() - t0,
                         objective=em.objective.item(), gap=em.fw_gap.item()))
        for eta in steps[k]:
            t0 = time.perf_counter()
            pgd = solvers.pgd_cce(sigma, lam=100.0, step=eta, tol=1e-6, max_iter=max_iter)
            rows.append(dict(k=k, solver=f"PGD eta={eta} (fused)", iterations=int(pgd.iterations),
                             seconds=time.perf_counter() - t0, objective=pgd.objective.item(), gap=pgd.fw_gap.item()))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=os.environ.get("OUT", "results"))
    parser.add_argument("--cap", type=float, default=10.0, help="seconds allowed to EM per race")


def main(argv=None, args=None):
    if args is None:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(parser)
        args = parser.parse_args(argv)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"entclust solvers, {machine}, {date.today()}\n")

    it_rows = per_iteration([(1, 250, 20), (1, 250, 200), (256, 250, 200)], iters=100)
    print("Time per iteration, float32, lam = 100 (PGD: step 0.01)\n")
    print("| solver | B × N × K | fused ms | reference ms | speed-up |\n|---|---|---|---|---|")
    for r in it_rows:
        print(f"| {r['solver']} | {r['b']} × {r['n']} × {r['k']} | {r['fused_ms']:.4f} | {r['reference_ms']:.4f} "
              f"| {r['speedup']:.1f}× |")

    rce_rows, curves = rce_race([2, 20, 200], target=1e-8, cap_s=args.cap)
    print("\nReverse CE, N = 250, lam = 100, float64: to a Frank-Wolfe gap <= 1e-8 "
          f"(EM capped at {args.cap:g} s)\n")
    print("| K | EM s | EM iterations | EM gap | dual Newton s | steps | dual Newton gap | EM objective − optimum |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rce_rows:
        print(f"| {r['k']} | {r['em_s']:.3f} | {r['em_iterations']} | {r['em_gap']:.1e} | {r['dual_newton_s']:.3f} "
              f"| {r['dual_newton_steps']} | {r['dual_newton_gap']:.1e} | {r['objective_gap']:.1e} |")

    # seed 003's step sizes, and 0.01, which converges at lam = 100 in this mean-form scaling
    steps = {2: [0.01, 1, 10, 20], 20: [0.01, 0.1, 1, 5], 200: [0.01, 0.1, 1, 5]}
    cce_rows = cce_race([2, 20, 200], steps, max_iter=2000)
    print("\nCollision CE, N = 250, lam = 100, float64: to max|dy| <= 1e-6 or 2000 iterations\n")
    print("| K | solver | iterations | seconds | objective | gap |\n|---|---|---|---|---|---|")
    for r in cce_rows:
        print(f"| {r['k']} | {r['solver']} | {r['iterations']} | {r['seconds']:.3f} | {r['objective']:.6f} "
              f"| {r['gap']:.1e} |")

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_solvers.json"), "w") as f:
        json.dump(dict(machine=machine, date=str(date.today()), per_iteration=it_rows, rce=rce_rows, cce=cce_rows),
                  f, indent=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in curves.items():
        ax.plot([t for t, _ in pts], [max(g, 1e-16) for _, g in pts], label=label)
    for r in rce_rows:
        ax.scatter([r["dual_newton_s"]], [max(abs(r["dual_newton_gap"]), 1e-16)], marker="x",
                   label=f"dual Newton, K={r['k']}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Frank-Wolfe gap")
    ax.set_title("reverse-CE pseudo-labels, N = 250, lam = 100", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(args.out, "bench_solvers.png")
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path} and {os.path.join(args.out, 'bench_solvers.json')}")


if __name__ == "__main__":
    main()
