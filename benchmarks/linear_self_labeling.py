"""The fused linear self-labeling op against the compositions a user would write instead: one
training step (forward and backward) of a linear head ``K x D`` with the reverse-CE
self-labeling loss against a global column memory, at ``B x D`` features.

    python benchmarks/linear_self_labeling.py [--b 4096 --k 100000 --d 256] [--repeat 3]
        [--methods fused,unfused,plain,compiled] [--device cpu|cuda] [--threads N] [--block-rows R]

Rows, each in its own process (so one's peak memory cannot hide another's):
* ``fused``: ``entclust.linear_self_labeling`` (logits a block of rows at a time, gradients in the pass);
* ``unfused``: ``F.linear`` then ``ColumnMemory.solve_fixed`` (the pseudo-labels) then the fused
  loss ``entclust.reverse_cross_entropy`` (the composition the issue names);
* ``plain``: the same in plain PyTorch (``entclust.testing.reference.linear_self_labeling``);
* ``compiled``: ``torch.compile`` of ``plain`` (first call's compile time excluded, reported apart).
Prints, per row, the median seconds of a step over ``--repeat`` steps after one warm-up, the
peak memory above what the process held before the first step (CPU: peak RSS; CUDA:
``max_memory_allocated``), and the ratio to ``unfused`` in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def step_function(method: str, memory, x, weight, bias, iterations: int, block_rows=None):
    import entclust
    from entclust.testing import reference

    if method == "fused":
        def step():
            out = entclust.linear_self_labeling(x, weight, bias, memory.weights(), iterations=iterations,
                                                block_rows=block_rows)
            out.loss.backward()
            return out.loss
    elif method == "unfused":
        def step():
            logits = torch.nn.functional.linear(x, weight, bias)
            y = memory.solve_fixed(logits)
            loss = entclust.reverse_cross_entropy(logits, y)
            loss.backward()
            return loss
    elif method in ("plain", "compiled"):
        def plain(x, weight, bias, fair):
            return reference.linear_self_labeling(x, weight, bias, fair, iterations=iterations)[0]
        fn = torch.compile(plain) if method == "compiled" else plain

        def step():
            loss = fn(x, weight, bias, memory.weights())
            loss.backward()
            return loss
    else:
        raise ValueError(f"unknown method {method!r}")
    return step


def child(args) -> None:
    import entclust

    torch.manual_seed(0)
    device = torch.device(args.device)
    x = torch.randn(args.b, args.d, device=device)
    weight = (torch.randn(args.k, args.d, device=device) / args.d ** 0.5).requires_grad_()
    bias = torch.zeros(args.k, device=device, requires_grad=True)
    memory = entclust.ColumnMemory(args.k, 50 * args.b, 100.0, iterations=args.iterations).to(device)
    step = step_function(args.method, memory, x, weight, bias, args.iterations, args.block_rows)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = rss_bytes()
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeat):
        weight.grad = bias.grad = None
        start = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    print(json.dumps({"seconds": statistics.median(times), "first": first, "peak": peak, "loss": float(loss)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--b", type=int, default=4096)
    parser.add_argument("--k", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", default="fused,unfused,plain")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--block-rows", type=int, default=None, help="rows of logits per block (fused; default: automatic)")
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method:
        child(args)
        return
    import entclust

    print(f"B = {args.b}, K = {args.k}, D = {args.d}, float32, {args.iterations} M-steps, device {args.device} "
          f"({entclust.ops.cpu_model() if args.device == 'cpu' else torch.cuda.get_device_name()}, "
          f"{torch.get_num_threads()} threads, CPU capability {entclust.cpu_capability()}); torch {torch.__version__}")
    print(f"(the B x K logits alone: {4 * args.b * args.k / 2 ** 20:.0f} MiB)")
    results = {}
    for method in args.methods.split(","):
        command = [sys.executable, __file__, "--method", method] + [
            f"--{name}={getattr(args, name)}" for name in ("b", "k", "d", "iterations", "repeat", "device")]
        if args.threads:
            command.append(f"--threads={args.threads}")
        if args.block_rows:
            command.append(f"--block-rows={args.block_rows}")
        print(f"{method}: {args.repeat + 1} steps in a process of its own ...", flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{method}: failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            continue
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results.get("unfused")
    print("| method | step s | first step s | peak MiB above start | time / unfused | memory / unfused | loss |")
    print("|---|---|---|---|---|---|---|")
    for method, r in results.items():
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}" if base else "-"
        ratio_m = f"{r['peak'] / base['peak']:.3f}" if base and base["peak"] > 0 else "-"
        print(f"| {method} | {r['seconds']:.3f} | {r['first']:.2f} | {r['peak'] / 2 ** 20:.0f} | {ratio_t} | {ratio_m} "
              f"| {r['loss']:.6f} |")


if __name__ == "__main__":
    main()
