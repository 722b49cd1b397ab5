"""Why SelfLabeling's default solve stops on the decrease rule (README, "When a per-batch solve
stops"): EM iterations to each stopping rule on ordinary batches (250 x 10, logits 3 N(0, 1)) and
on batches of 257 rows of a trained linear head on digits (``EntropyClustering``'s
``predict_proba`` after 2, 10 and 50 epochs, one run, the old rule ``max_iter=100, tol=1e-10``),
lam = 100, float64, a certificate after every iteration. Rules: the relative gap
``gap / (1 + |f|) <= g`` and the decrease rule ``gap <= p (f(sigma) - f)``, on the Frank-Wolfe
gap and on the duality gap; with the optimum f* (SQUAREM EM to a relative gap of 1e-9) the share
of the best decrease the default rule kept.

Then collision CE on the same batches: iterations and share of the best decrease where
``SelfLabeling("cce")`` stops (its default rule on the Frank-Wolfe gap, the certificate it has),
and how soft its labels are against the optimum's (mean entropy of the rows of y, and the
largest change of a label), the optimum being SQUAREM EM to 20 000 iterations; and on the first
batch, the time of a solve by the default rule, by the interior-point solver and by EM to a
relative gap of 1e-6.

``python benchmarks/stopping_rules.py``; under a minute on the 2-core Zen 5 (2026-12-07).
"""
from __future__ import annotations

import time

import torch
from sklearn.datasets import load_digits

import entclust

LAM = 100.0


def batches():
    for seed in range(3):
        logits = 3 * torch.randn(250, 10, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        yield f"3 N(0,1), seed {seed}", logits.softmax(-1)
    x = load_digits().data
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:257]
    for epochs in (2, 10, 50):
        est = entclust.EntropyClustering(10, method="rce", random_state=0, n_init=1, epochs=epochs,
                                         method_params={"max_iter": 100, "tol": 1e-10}).fit(x)
        yield f"digits head, {epochs} epochs", torch.as_tensor(est.predict_proba(x), dtype=torch.float64)[rows]


def main() -> None:
    print("EM iterations to each rule; FW: on the Frank-Wolfe gap (the rule until 2026-12-06), dual: on the "
          "duality gap (SolverResult.gap, the rule since)\n")
    print("| batch | rel. gap 1e-2, FW | dual | decrease 0.5, FW | dual | decrease 0.1, dual | "
          "share of best decrease at 0.5, dual |")
    print("|---|---|---|---|---|---|---|")
    for name, sigma in batches():
        trace = []
        entclust.em_rce(sigma, lam=LAM, tol_gap=0.0, max_iter=3000, check_every=1,
                        callback=lambda r: trace.append((r.iterations, r.objective, r.fw_gap, r.duality_gap)))
        best = entclust.em_rce(sigma, lam=LAM, tol_gap=1e-9, max_iter=300_000, accel="squarem", check_every=100)
        f0, f_star = trace[0][1], best.objective - best.gap  # a certified lower bound on f*

        def first(test):
            return next((t for t in trace if test(t)), None)

        cells = [first(lambda t, i=i: t[i] / (1 + abs(t[1])) <= 1e-2) for i in (2, 3)]
        cells += [first(lambda t, i=i: t[i] <= 0.5 * (f0 - t[1])) for i in (2, 3)]
        cells += [first(lambda t: t[3] <= 0.1 * (f0 - t[1]))]
        text = [">3000" if c is None else str(c[0]) for c in cells]
        share = "-" if cells[3] is None else f"{(f0 - cells[3][1]) / (f0 - f_star):.3f}"
        print(f"| {name} | " + " | ".join(text) + f" | {share} |", flush=True)
    collision_ce()
    sigma = next(batches())[1]
    criterion = entclust.SelfLabeling("rce")
    times = []
    for _ in range(20):
        start = time.perf_counter()
        criterion.solve(sigma.log())
        times.append(time.perf_counter() - start)
    print(f"\nSelfLabeling('rce').solve on the first batch: {sorted(times)[10] * 1e3:.2f} ms (median of 20), "
          f"{criterion.solve(sigma.log()).iterations} iterations")


def entropy(y: torch.Tensor) -> float:
    """Mean Shannon entropy (nats) of the rows of y, 0 ln 0 = 0."""
    return float(entclust.shannon_entropy(y).mean())


def collision_ce() -> None:
    print("\nCollision CE: where SelfLabeling('cce') stops (default rule, Frank-Wolfe gap) against the optimum "
          "(SQUAREM EM, 20 000 iterations)\n")
    print("| batch | H(sigma) | iterations | share of best decrease | FW gap | H(y), rule | H(y*), optimum | "
          "max abs(y - y*) | FW gap of y* |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, sigma in batches():
        start = entclust.em_cce(sigma, lam=LAM, max_iter=0)
        rule = entclust.SelfLabeling("cce", on_unconverged="ignore").solve(sigma.log())
        best = entclust.em_cce(sigma, lam=LAM, tol=0.0, max_iter=20_000, accel="squarem")
        share = (start.objective - rule.objective) / (start.objective - (best.objective - best.gap))
        print(f"| {name} | {entropy(sigma):.3f} | {rule.iterations} | {share:.3f} | {rule.gap:.1e} | "
              f"{entropy(rule.y):.3f} | {entropy(best.y):.3f} | {float((rule.y - best.y).abs().max()):.2f} | "
              f"{best.gap:.1e} |", flush=True)
    logits = next(batches())[1].log()
    for name, options in (("default rule", {}), ("newton, tol_gap=1e-6", {"solver": "newton", "tol_gap": 1e-6}),
                          ("em, tol_gap=1e-6", {"tol_gap": 1e-6, "max_iter": 10**6})):
        criterion = entclust.SelfLabeling("cce", on_unconverged="ignore", **options)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            res = criterion.solve(logits)
            times.append(time.perf_counter() - start)
        print(f"SelfLabeling('cce') {name} on the first batch: {sorted(times)[2] * 1e3:.1f} ms (median of 5), "
              f"{res.iterations} iterations, FW gap {res.gap:.1e}, row entropy {entropy(res.y):.3f}", flush=True)


if __name__ == "__main__":
    main()
