"""What a check on the certificate costs: ``em_rce`` for a fixed number of iterations in one fused
call against the same iterations checked every 1, 10 and 100 of them (``tol_gap`` below any
reachable gap, so every run does all its iterations). Prints milliseconds and the cost per check
(the README's "The check itself" figures; ``python benchmarks/bench_gap_checks.py``)."""
import time

import torch

import entclust


def median_ms(fn, repeats=3):
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return sorted(samples)[len(samples) // 2] * 1e3


def main():
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float64, lam = 100")
    for k, n_iter in ((20, 5000), (200, 1000)):
        sigma = torch.softmax(3 * torch.randn(250, k, generator=g, dtype=torch.float64), -1)
        base = median_ms(lambda: entclust.em_rce(sigma, tol=0, max_iter=n_iter))
        line = f"250 x {k}, {n_iter} EM iterations: one call {base:.1f} ms"
        for every in (1, 10, 100):
            ms = median_ms(lambda: entclust.em_rce(sigma, tol_gap=1e-300, check_every=every, max_iter=n_iter))
            line += f"; check_every={every}: {ms:.1f} ms (+{(ms - base) / (n_iter / every):.3f} ms a check)"
        print(line)


if __name__ == "__main__":
    main()
