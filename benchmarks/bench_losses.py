"""Forward + backward of the fused losses against (a) the pure-PyTorch reference composition and
(b) torch.nn.functional.cross_entropy with soft targets, the closest built-in, on the same shapes
in one run. Gradients flow to both logits and y. Prints a markdown table of medians and ratios,
and effective bandwidth counting one read of logits and y and one write of each gradient
(4 N K elements); writes JSON and a PNG.

    python benchmarks/bench_losses.py                      # CPU, float32
    python benchmarks/bench_losses.py --device cuda --out $OUT
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
import torch.nn.functional as F

import entclust
from entclust import reference

CPU_SHAPES = [(4096, 1000), (250, 200), (65536, 10), (256, 16384), (16, 262144)]
CUDA_SHAPES = [(4096, 1000), (250, 200), (1048576, 10), (16384, 16384), (64, 1048576)]


def soft_cross_entropy(logits, y):
    return F.cross_entropy(logits, y)


CANDIDATES = {
    "rce": [("fused", entclust.reverse_cross_entropy), ("reference", reference.reverse_cross_entropy)],
    "cce": [("fused", entclust.collision_cross_entropy), ("reference", reference.collision_cross_entropy)],
}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, device, warmup=3, repeat=20, budget_s=3.0):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start = time.perf_counter()
    while len(times) < repeat and (len(times) < 3 or time.perf_counter() - start < budget_s):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def fwd_bwd(fn, logits, y):
    def run():
        logits.grad = None
        y.grad = None
        fn(logits, y).backward()
    return run


def check(fn, ref, logits, y):
    a = fn(logits.detach(), y.detach())
    b = ref(logits.detach().double(), y.detach().double())
    torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def bench(device, dtype, shapes, repeat):
    rows = []
    for n, k in shapes:
        g = torch.Generator(device="cpu").manual_seed(0)
        logits = (3 * torch.randn(n, k, generator=g)).to(device=device, dtype=dtype).requires_grad_()
        y = (0.9 * torch.softmax(2 * torch.randn(n, k, generator=g), 1) + 0.1 / k).to(device=device, dtype=dtype)
        y.requires_grad_()
        bytes_moved = 4 * n * k * logits.element_size()
        base = median_ms(fwd_bwd(soft_cross_entropy, logits, y), device, repeat=repeat)
        for loss, cands in CANDIDATES.items():
            check(cands[0][1], cands[1][1], logits, y)
            times = {name: median_ms(fwd_bwd(fn, logits, y), device, repeat=repeat) for name, fn in cands}
            times["fused_novalidate"] = median_ms(
                fwd_bwd(lambda a, b, f=cands[0][1]: f(a, b, validate=False), logits, y), device, repeat=repeat)
            rows.append(dict(loss=loss, n=n, k=k, fused_ms=times["fused"], fused_novalidate_ms=times["fused_novalidate"],
                             reference_ms=times["reference"], soft_ce_ms=base,
                             speedup_vs_reference=times["reference"] / times["fused"],
                             speedup_vs_soft_ce=base / times["fused"],
                             effective_gb_s=bytes_moved / times["fused_novalidate"] / 1e6))
        del logits, y
    return rows


def table(rows):
    head = ("| loss | N | K | fused ms | fused, validate=False ms | reference ms | soft-target F.cross_entropy ms "
            "| × vs reference | × vs F.cross_entropy | effective GB/s |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['n']} | {r['k']} | {r['fused_ms']:.3f} | {r['fused_novalidate_ms']:.3f} "
                     f"| {r['reference_ms']:.3f} | {r['soft_ce_ms']:.3f} | {r['speedup_vs_reference']:.2f} "
                     f"| {r['speedup_vs_soft_ce']:.2f} | {r['effective_gb_s']:.1f} |")
    return "\n".join(lines)


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['loss']}\n{r['n']}×{r['k']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    for i, (key, name) in enumerate([("fused_ms", "entclust fused"), ("reference_ms", "reference"),
                                     ("soft_ce_ms", "F.cross_entropy (soft)")]):
        ax.bar([j + 0.27 * (i - 1) for j in x], [r[key] for r in rows], width=0.27, label=name)
    ax.set_yscale("log")
    ax.set_ylabel("forward + backward, ms (median, log scale)")
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    parser.add_argument("--shapes", default=None, help="comma list of NxK, e.g. 4096x1000,250x200")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", default=os.environ.get("OUT", "results"))
    args = parser.parse_args()

    shapes = CUDA_SHAPES if args.device == "cuda" else CPU_SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    dtype = getattr(torch, args.dtype)
    machine = (torch.cuda.get_device_name() if args.device == "cuda"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    rows = bench(args.device, dtype, shapes, args.repeat)
    title = f"entclust losses, {args.device} ({machine}), {args.dtype}, torch {torch.__version__}, {date.today()}"
    print(title)
    print(table(rows))
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"bench_losses_{args.device}")
    with open(stem + ".json", "w") as f:
        json.dump(dict(device=args.device, machine=machine, dtype=args.dtype, torch=torch.__version__,
                       date=str(date.today()), rows=rows), f, indent=1)
    plot(rows, stem + ".png", title)
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
