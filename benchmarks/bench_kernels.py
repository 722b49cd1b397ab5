"""``python benchmarks/bench_kernels.py [--quick] [--device cuda] [--out results]`` (was
``entclust bench kernels``): the fused solver kernels against the PyTorch a user would write,
on the same synthetic problems (``sigma = softmax(3 z)``, z ~ N(0, 1), N = 250, uniform prior), in
one run (``--quick`` for a short version):

1. Time per iteration, fused CPU kernel on every CPU path vs the eager PyTorch reference and
   ``torch.compile`` of the plain reverse-CE EM step, float32, lam = 100: EM reverse CE, EM
   collision CE, PGD (with its exact projection), K = 20 ... 20000 and a batch of B = 256 problems;
   and a sweep of SeLa's log-domain Sinkhorn-Knopp (float64, lam_sk = 25) against the same sweep in
   eager PyTorch and its ``torch.compile``.
2. Batch: B = 256 problems of 250 x 200 solved by EM to max|dy| <= 1e-6 in one fused call vs the
   reference.

The solvers against each other, to one relative gap, are ``entclust bench solvers``
(:func:`entclust.solvers.compare`). Prints markdown and writes ``bench_kernels.json`` under ``--out``.

``--device cuda`` runs the GPU section instead (``bench_solvers_cuda.json``): a batch of
B = 1024 problems of 250 x 200 (float32, lam = 100) solved to max|dy| <= 1e-6 in one launch
vs the reference on the same GPU, and the effective bandwidth of one EM iteration at
N K = 10^8 (bytes = read sigma + read y + write y).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from datetime import date

import torch

from entclust import ops, solvers
from entclust._files import check_output_folder, write_files
from entclust.testing import reference as R  # a benchmark: the PyTorch baseline is the testing reference

def problem(b, n, k, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(b, n, k, generator=g, dtype=torch.float64), -1).to(dtype)


def _median_time(fn, repeats=3):
    """Median wall-clock seconds of ``repeats`` calls after one warm-up (CPU tables)."""
    return _device_time(fn, "cpu", repeats)[0]


def _em_rce_step(sigma, y, cu):
    """One reverse-CE EM iteration in plain PyTorch (the reference's step) and its max |dy|: the
    function a user would otherwise write and hand to torch.compile."""
    num = sigma + cu * (y / y.sum(-2, keepdim=True))
    y_next = num / num.sum(-1, keepdim=True)
    return y_next, (y_next - y).abs().amax()


def _sinkhorn_sweep(log_p, log_u, row_lse, log_n: float):
    """One log-domain Sinkhorn-Knopp sweep in plain PyTorch (as entclust.sinkhorn did before its
    op): the row shifts, the column shifts, and the next row log-sum-exp."""
    alpha = -log_n - row_lse
    beta = log_u - torch.logsumexp(log_p + alpha[..., None], -2)
    return beta, torch.logsumexp(log_p + beta[:, None, :], -1)


def per_iteration(shapes, iters, capabilities):
    """Time per iteration: eager reference, torch.compile of the reverse-CE EM step (the other
    solvers' reference steps have data-dependent loops), and the fused kernel on every CPU path
    in ``capabilities``."""
    from entclust.ops import use_cpu_capability

    rows = []
    compiled_step = torch.compile(_em_rce_step, dynamic=False)
    compiled_sweep = torch.compile(_sinkhorn_sweep, dynamic=False)
    for b, n, k in shapes:
        sigma = problem(b, n, k, torch.float32)
        u = torch.full((k,), 1.0 / k)
        it = iters if b * n * k <= 100_000 else max(2, iters // 20)

        def compiled_rce():
            y = sigma.clone()  # not sigma itself: an aliased input is a second compiled graph
            for _ in range(it):
                y, _delta = compiled_step(sigma, y, 100.0 * n * u)

        log_p = 25.0 * torch.log(sigma.double())
        log_u = torch.log(u.double())
        beta0 = torch.zeros(b, k, dtype=torch.float64)

        def sinkhorn_loop(step):
            def run():
                row_lse = torch.logsumexp(log_p, -1)
                for _ in range(it):
                    _beta, row_lse = step(log_p, log_u, row_lse, math.log(n))
            return run

        for name, fused, ref, compiled in [
            ("Sinkhorn-Knopp (float64)", lambda: ops.sinkhorn_kernel(log_p, log_u, beta0, 0.0, it),
             sinkhorn_loop(_sinkhorn_sweep), sinkhorn_loop(compiled_sweep)),
            ("EM reverse CE", lambda: ops.em_rce_kernel(sigma, u, 100.0, 0.0, it, None),
             lambda: R.em_rce(sigma, u, 100.0, max_iter=it, tol=0), compiled_rce),
            ("EM collision CE", lambda: ops.em_cce_kernel(sigma, u, 100.0, 0.0, it, 1e-12, 50, None),
             lambda: R.em_cce(sigma, u, 100.0, max_iter=it, tol=0, newton_tol=1e-6), None),
            ("PGD collision CE", lambda: ops.pgd_cce_kernel(sigma, u, 100.0, 0.01, 0.0, it, None),
             lambda: R.pgd_cce(sigma, u, 100.0, step=0.01, max_iter=it, tol=0), None),
        ]:
            r_ms = _median_time(ref) / it * 1e3
            c_ms = _median_time(compiled) / it * 1e3 if compiled is not None else float("nan")
            for capability in capabilities:
                with use_cpu_capability(capability):
                    f_ms = _median_time(fused) / it * 1e3
                rows.append(dict(solver=name, b=b, n=n, k=k, capability=capability, fused_ms=f_ms,
                                 reference_ms=r_ms, compiled_ms=c_ms, speedup=r_ms / f_ms,
                                 speedup_vs_compiled=c_ms / f_ms))
    return rows


def batch_row(b, max_iter):
    sigma = problem(b, 250, 200, torch.float32)
    u = torch.full((200,), 1.0 / 200)
    t0 = time.perf_counter()
    fused = ops.em_rce_kernel(sigma, u, 100.0, 1e-6, max_iter, None)
    f_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = R.em_rce(sigma, u, 100.0, tol=1e-6, max_iter=max_iter)
    r_s = time.perf_counter() - t0
    return dict(b=b, n=250, k=200, max_iter=max_iter, fused_s=f_s, reference_s=r_s, speedup=r_s / f_s,
                fused_iterations_max=int(fused[1].max()), reference_iterations_max=int(ref.iterations.max()),
                max_abs_diff=float((fused[0] - ref.y).abs().max()))


def _device_time(fn, device, repeats=3):
    """Median seconds of ``repeats`` timed calls after one warm-up, and the last call's result
    (CUDA events on the GPU, so the host's launch queue does not count; wall clock on the CPU)."""
    fn()
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        if on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            out = fn()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples), out


def copy_tb_s(device, numel=64 * 1024 * 1024):
    """Read + write bandwidth of a plain copy (256 MiB of float32 by default) on ``device``: the
    ceiling of a memory-bound kernel, measured in the same run as the kernels it rates."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    seconds, _ = _device_time(lambda: dst.copy_(src), device, repeats=10)
    return 2 * src.numel() * src.element_size() / seconds / 1e12


def _compiled_em_rce_to_tol(step, sigma, u, lam, tol, max_iter, check_every=10):
    """Reverse-CE EM with ``step`` (torch.compile of :func:`_em_rce_step`) as a user would run it
    to a tolerance: max |dy| read back every ``check_every`` iterations (a host sync each)."""
    n = sigma.shape[-2]
    cu = lam * n * u
    y = sigma.clone()  # not sigma itself: an aliased input is a second compiled graph
    it = 0
    while it < max_iter:
        y, delta = step(sigma, y, cu)
        it += 1
        if it % check_every == 0 and float(delta) <= tol:
            break
    return y, it


def gpu_section(quick, device="cuda"):
    """Batch to convergence and per-iteration bandwidth on ``device`` (a CUDA device in
    ``entclust bench --device cuda``; the CPU only in the test that runs this code without a GPU).
    Each row: the fused kernel, the eager PyTorch reference and, for reverse-CE EM, torch.compile
    of the reference's step (collision CE's M-step has a data-dependent Newton loop)."""
    dev = torch.device(device)
    batch_rows, bw_rows = [], []
    copy = copy_tb_s(dev, numel=(1 << 20) if quick else 64 * 1024 * 1024)
    b = (8 if dev.type == "cpu" else 64) if quick else 1024
    sigma = problem(b, 250, 200, torch.float32).to(dev)
    u = torch.full((200,), 1.0 / 200, device=dev)
    compiled_step = torch.compile(_em_rce_step, dynamic=False)
    for name, fused, ref, compiled, cap in [
        ("EM reverse CE", lambda m: ops.em_rce_kernel(sigma, u, 100.0, 1e-6, m, None),
         lambda m: R.em_rce(sigma, u, 100.0, tol=1e-6, max_iter=m),
         lambda m: _compiled_em_rce_to_tol(compiled_step, sigma, u, 100.0, 1e-6, m), 1000),
        ("EM collision CE", lambda m: ops.em_cce_kernel(sigma, u, 100.0, 1e-6, m, 1e-12, 50, None),
         lambda m: R.em_cce(sigma, u, 100.0, tol=1e-6, max_iter=m, newton_tol=1e-6), None, 200),
    ]:
        cap = min(cap, 50) if quick else cap
        f_s, (y_f, it_f, _) = _device_time(lambda: fused(cap), dev, repeats=1)
        r_s, res = _device_time(lambda: ref(cap), dev, repeats=1)
        c_s, c_it = float("nan"), None
        if compiled is not None:
            c_s, (_, c_it) = _device_time(lambda: compiled(cap), dev, repeats=1)
        batch_rows.append(dict(solver=name, b=b, n=250, k=200, max_iter=cap, fused_s=f_s, reference_s=r_s,
                               compiled_s=c_s, speedup=r_s / f_s, speedup_vs_compiled=c_s / f_s,
                               fused_iterations_max=int(it_f.max()),
                               reference_iterations_max=int(res.iterations.max()), compiled_iterations=c_it,
                               max_abs_diff=float((y_f - res.y).abs().max())))
    del sigma
    if quick:
        shapes = [(2_000, 100)] if dev.type == "cpu" else [(10_000, 1_000)]
    else:
        shapes = [(100_000, 1_000), (10_000, 10_000), (1_000_000, 100)]
    for n, k in shapes:
        sigma = problem(1, n, k, torch.float32).to(dev) if n * k <= 10**7 else \
            torch.softmax(3 * torch.randn(1, n, k, device=dev), -1)
        u = torch.full((k,), 1.0 / k, device=dev)
        it = 20
        cu = 100.0 * n * u

        def compiled_rce():
            y = sigma.clone()
            for _ in range(it):
                y, _delta = compiled_step(sigma, y, cu)
            return y

        for name, fused, ref, compiled in [
            ("EM reverse CE", lambda: ops.em_rce_kernel(sigma, u, 100.0, 0.0, it, None),
             lambda: R.em_rce(sigma, u, 100.0, max_iter=it, tol=0), compiled_rce),
            ("EM collision CE", lambda: ops.em_cce_kernel(sigma, u, 100.0, 0.0, it, 1e-12, 50, None),
             lambda: R.em_cce(sigma, u, 100.0, max_iter=it, tol=0, newton_tol=1e-6), None),
        ]:
            f_s = _device_time(fused, dev)[0] / it
            r_s = _device_time(ref, dev, repeats=1)[0] / it
            c_s = _device_time(compiled, dev, repeats=1)[0] / it if compiled is not None else float("nan")
            moved = 3 * n * k * 4  # read sigma, read y, write y (float32)
            bw_rows.append(dict(solver=name, n=n, k=k, fused_ms=f_s * 1e3, reference_ms=r_s * 1e3,
                                compiled_ms=c_s * 1e3, speedup=r_s / f_s, speedup_vs_compiled=c_s / f_s,
                                fused_tb_s=moved / f_s / 1e12, fraction_of_copy=moved / f_s / 1e12 / copy))
        del sigma
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return batch_rows, bw_rows, copy


def _or_dash(value, fmt, unit=""):
    return "—" if value != value else format(value, fmt) + unit


def print_gpu_section(batch_rows, bw_rows, copy):
    print(f"copy bandwidth (read + write of a float32 copy) in this run: {copy:.2f} TB/s\n")
    print("## Batches of 250 × 200 problems to max|dy| <= 1e-6, float32, lam = 100, one launch\n")
    print("torch.compile: the reference's reverse-CE step compiled, max |dy| read back every 10 iterations.\n")
    print("| solver | B | cap | fused s | eager reference s | torch.compile s | × vs eager | × vs compile "
          "| iterations fused / eager | max |y_fused − y_ref| |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in batch_rows:
        print(f"| {r['solver']} | {r['b']} | {r['max_iter']} | {r['fused_s']:.4f} | {r['reference_s']:.4f} "
              f"| {_or_dash(r['compiled_s'], '.4f')} | {r['speedup']:.1f}× "
              f"| {_or_dash(r['speedup_vs_compiled'], '.1f', '×')} "
              f"| {r['fused_iterations_max']} / {r['reference_iterations_max']} | {r['max_abs_diff']:.1e} |")
    print("\n## One EM iteration on a large problem, float32 (bytes: read sigma + read y + write y)\n")
    print("| solver | N × K | fused ms | eager reference ms | torch.compile ms | × vs eager | × vs compile "
          "| fused TB/s | of copy bandwidth |\n|---|---|---|---|---|---|---|---|---|")
    for r in bw_rows:
        print(f"| {r['solver']} | {r['n']} × {r['k']} | {r['fused_ms']:.3f} | {r['reference_ms']:.3f} "
              f"| {_or_dash(r['compiled_ms'], '.3f')} | {r['speedup']:.1f}× "
              f"| {_or_dash(r['speedup_vs_compiled'], '.1f', '×')} | {r['fused_tb_s']:.2f} "
              f"| {100 * r['fraction_of_copy']:.0f} % |")


def main_cuda(args):
    if not (torch.cuda.is_available() and solvers.has_kernels(torch.device("cuda"))):
        raise ValueError("--device cuda needs a GPU and entclust built with its CUDA kernels")
    machine = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    print(f"entclust solvers on CUDA, {machine}, {date.today()}\n")
    batch_rows, bw_rows, copy = gpu_section(args.quick)
    print_gpu_section(batch_rows, bw_rows, copy)
    path = os.path.join(args.out, "bench_solvers_cuda.json")
    record = dict(machine=machine, date=str(date.today()), quick=args.quick, copy_tb_s=copy, batch=batch_rows,
                  bandwidth=bw_rows)
    write_files([(path, lambda tmp: _dump(record, tmp))])
    print(f"\nwrote {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=os.environ.get("OUT", "results"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: the CPU tables (default); cuda: the GPU section only")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke run of every section)")


def _dump(record: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


def check_arguments(args) -> None:
    """Checks before any work (ValueError with one line); the folder is made first."""
    if args.device == "cuda" and not (torch.cuda.is_available() and solvers.has_kernels(torch.device("cuda"))):
        raise ValueError("--device cuda needs a GPU and entclust built with its CUDA kernels")
    check_output_folder(args.out)
    os.makedirs(args.out, exist_ok=True)


def main(args):
    check_arguments(args)
    if getattr(args, "device", "cpu") == "cuda":
        return main_cuda(args)
    quick = args.quick
    from entclust.ops import available_cpu_capabilities, cpu_model

    capabilities = available_cpu_capabilities()
    machine = f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"entclust solvers, {machine}, CPU paths {', '.join(capabilities)}, {date.today()}\n")

    shapes = [(1, 250, 20), (1, 250, 200)] if quick else \
        [(1, 250, 20), (1, 250, 200), (256, 250, 200), (1, 250, 2000), (1, 250, 20000)]
    it_rows = per_iteration(shapes, iters=20 if quick else 100, capabilities=capabilities)
    print("## Time per iteration, float32, lam = 100 (PGD: step 0.01; Sinkhorn: a sweep, float64), fused kernel "
          "on each CPU path\n")
    print("| solver | B × N × K | path | fused ms | eager reference ms | torch.compile ms | × vs eager "
          "| × vs compile |\n|---|---|---|---|---|---|---|---|")
    for r in it_rows:
        compiled = "—" if r["compiled_ms"] != r["compiled_ms"] else f"{r['compiled_ms']:.4f}"
        vs_compiled = "—" if r["compiled_ms"] != r["compiled_ms"] else f"{r['speedup_vs_compiled']:.1f}×"
        print(f"| {r['solver']} | {r['b']} × {r['n']} × {r['k']} | {r['capability']} | {r['fused_ms']:.4f} "
              f"| {r['reference_ms']:.4f} | {compiled} | {r['speedup']:.1f}× | {vs_compiled} |")

    batch = batch_row(8 if quick else 256, 50 if quick else 200)
    print(f"\n## Batch: B = {batch['b']} problems of 250 × 200, EM reverse CE to max|dy| <= 1e-6 "
          f"(cap {batch['max_iter']}), float32\n")
    print("| fused s | reference s | speed-up | iterations (max over problems) | max |y_fused − y_ref| |")
    print("|---|---|---|---|---|")
    print(f"| {batch['fused_s']:.3f} | {batch['reference_s']:.3f} | {batch['speedup']:.1f}× "
          f"| {batch['fused_iterations_max']} | {batch['max_abs_diff']:.1e} |")

    path = os.path.join(args.out, "bench_kernels.json")
    record = dict(machine=machine, cpu_model=cpu_model(), cpu_capabilities=capabilities, threads=torch.get_num_threads(),
                  date=str(date.today()), quick=quick, per_iteration=it_rows, batch=batch)
    write_files([(path, lambda tmp: _dump(record, tmp))])
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    import sys

    from entclust.cli import run_script

    sys.exit(run_script("bench_kernels.py", __doc__, add_arguments, main))
