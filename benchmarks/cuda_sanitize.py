"""Every CUDA kernel of entclust at every launch configuration, once, at small sizes: the program
that benchmarks/gpu_check.sh runs under compute-sanitizer (memcheck, racecheck, synccheck).

Each call is checked against the CPU kernels (tolerances as tests/test_cuda.py) and followed by
a device synchronisation, so a fault is reported at the call that caused it. The sizes sit on
each side of every boundary in csrc/cuda/: loss rows by a warp (K <= 256), by a 256-thread block
(<= 2048), register-cached by 512 threads (<= 16384, float32), streamed beyond; the collision
loss's underflow branch; solvers in one block per problem with y in shared memory and in global
memory, and in the per-iteration plan with warp rows, block rows, column sums in shared memory
and by a separate reduction; the simplex projection by a warp and by a block.

    compute-sanitizer --tool memcheck python benchmarks/cuda_sanitize.py
    python benchmarks/cuda_sanitize.py --device cpu     # rehearsal of this script without a GPU

Under memcheck set PYTORCH_NO_CUDA_MEMORY_CACHING=1: PyTorch's caching allocator hands out
pieces of larger blocks, inside which an out-of-bounds access is invisible to memcheck.
Exit status 1 when a result differs from the CPU's.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import entclust

LOSS_KS = [7, 300, 2100, 3000, 20000]  # warp, block 256, 512 x 32 cached (float32), streaming
LOSS_DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# (B, N, K, dtype): block plan with y in shared memory; block plan with y in global memory
# (float64, 34 problems: enough for the block plan on 132 SMs); per-iteration plan with warp rows;
# block rows with column sums in shared memory; block rows with the separate column reduction.
SOLVER_CASES = [(3, 30, 5, torch.float32), (34, 150, 200, torch.float64), (1, 250, 200, torch.float32),
                (2, 100, 3000, torch.float64), (1, 8, 30000, torch.float32)]
LOSS_TOL = {torch.float32: (1e-5, 1e-6), torch.float64: (1e-10, 1e-12), torch.bfloat16: (2e-2, 1e-2)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(name, got, want, rtol, atol, failures):
    try:
        torch.testing.assert_close(got.cpu(), want, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as e:
        failures.append(f"{name}: {str(e).splitlines()[0]}")
        print(f"FAIL {name}", flush=True)
        return
    print(f"ok   {name}", flush=True)


def losses(device, failures):
    g = torch.Generator().manual_seed(0)
    for k in LOSS_KS:
        n = 9 if k <= 256 else 2  # more rows than one block's 8 warp rows
        for dtype in LOSS_DTYPES:
            logits = (3 * torch.randn(n, k, generator=g, dtype=torch.float64)).to(dtype)
            y = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64), -1).to(dtype)
            for fn in (entclust.reverse_cross_entropy, entclust.collision_cross_entropy):
                outs = []
                for dev in (device, torch.device("cpu")):
                    a = logits.to(dev, copy=True).requires_grad_()
                    b = y.to(dev, copy=True).requires_grad_()
                    loss = fn(a, b, reduction="none", validate=False)
                    loss.sum().backward()
                    sync(dev)
                    outs.append([t.detach().cpu().double() for t in (loss, a.grad, b.grad)])
                rtol, atol = LOSS_TOL[dtype]
                for part, got, want in zip(("loss", "grad logits", "grad y"), *outs):
                    compare(f"{fn.__name__} {n}x{k} {str(dtype)[6:]} {part}", got, want, rtol, atol, failures)
    # collision CE whose sigma . y underflows (log-domain branch) and a NaN row
    logits = torch.tensor([[0.0, -80.0, 1.0], [1.0, 2.0, -math.inf], [math.nan, 0.0, 0.0]])
    y = torch.tensor([[0.0, 1.0, 0.0], [0.3, 0.7, 0.0], [0.2, 0.3, 0.5]])
    got = entclust.collision_cross_entropy(logits.to(device), y.to(device), reduction="none", validate=False)
    sync(device)
    want = entclust.collision_cross_entropy(logits, y, reduction="none", validate=False)
    compare("collision_cross_entropy underflow and NaN rows", got, want, 1e-5, 1e-6, failures)


def solvers(device, failures):
    for b, n, k, dtype in SOLVER_CASES:
        g = torch.Generator().manual_seed(k)
        sigma = torch.softmax(3 * torch.randn(b, n, k, generator=g, dtype=torch.float64), -1).to(dtype)
        atol = 1e-11 if dtype == torch.float64 else 2e-5
        for name, kw in (("em_rce", {}), ("em_cce", {}), ("pgd_cce", {"step": 0.05})):
            fn = getattr(entclust, name)
            want = fn(sigma, lam=10.0, tol=0.0, max_iter=4, **kw)
            got = fn(sigma.to(device), lam=10.0, tol=0.0, max_iter=4, **kw)
            sync(device)
            compare(f"{name} {b}x{n}x{k} {str(dtype)[6:]}", got.y, want.y, 0, atol, failures)
        # to convergence: the block plan's and the host loop's early exits
        want = entclust.em_rce(sigma, lam=10.0, tol=1e-5, max_iter=300)
        got = entclust.em_rce(sigma.to(device), lam=10.0, tol=1e-5, max_iter=300)
        sync(device)
        compare(f"em_rce to tol {b}x{n}x{k} {str(dtype)[6:]}", got.y, want.y, 0, atol, failures)
        if not torch.equal(got.iterations.cpu(), want.iterations):
            failures.append(f"em_rce to tol {b}x{n}x{k}: iterations {got.iterations.tolist()} "
                            f"!= {want.iterations.tolist()}")
    for k in (7, 1025):
        for dtype in (torch.float32, torch.float64):
            v = (3 * torch.randn(37, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)).to(dtype)
            got = entclust.project_simplex(v.to(device))
            sync(device)
            atol = 1e-12 if dtype == torch.float64 else 1e-6
            compare(f"project_simplex 37x{k} {str(dtype)[6:]}", got, entclust.project_simplex(v), 0, atol, failures)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not (torch.cuda.is_available() and entclust.ops.compiled_with_cuda()):
        print("cuda_sanitize: needs a GPU and entclust built with its CUDA kernels", file=sys.stderr)
        return 2
    start = time.perf_counter()
    failures = []
    losses(device, failures)
    solvers(device, failures)
    print(f"{len(failures)} mismatches, {time.perf_counter() - start:.1f} s")
    for f in failures:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
