"""Forward + backward of the fused losses against (a) the pure-PyTorch reference composition run
eagerly, (b) the same composition under ``torch.compile`` (what a user would otherwise write;
on the CPU compiled for the vector width of each row's path, see SIMDLEN),
and (c) torch.nn.functional.cross_entropy with soft targets, the closest built-in, on the same
shapes in one run. Gradients flow to both logits and y. On the CPU the fused kernels are timed
once per instruction-set path this machine supports (``--capabilities``, default all: e.g.
default, avx2, avx512), so the AVX2 path is measured on an AVX-512 machine too.

Prints a markdown table of medians and ratios, and the effective bandwidth counting one read of
logits and y and one write of each gradient (4 N K elements), also as a fraction of the
machine's copy bandwidth measured in the same run (``dst.copy_(src)`` of 256 MiB, counting read
+ write); writes JSON (with CPU model and capabilities) and a PNG. On CUDA a second table times
the kernels alone: fused (validate=False), eager and compiled forward + backward captured in a
CUDA graph and replayed, so that Python and launch overhead, which exceed the memory traffic of
the small shapes, do not count.

    python benchmarks/bench_losses.py                      # CPU, float32, every capability
    python benchmarks/bench_losses.py --capabilities avx2 --shapes 4096x1000
    python benchmarks/bench_losses.py --device cuda --out $OUT
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from datetime import date

import torch
import torch.nn.functional as F

import entclust
from entclust.testing import reference
from bench_kernels import copy_tb_s  # noqa: E402  (benchmarks/ is on sys.path when this runs)
from entclust.ops import cpu_model

CPU_SHAPES = [(4096, 1000), (250, 200), (65536, 10), (256, 16384), (16, 262144)]
CUDA_SHAPES = [(4096, 1000), (250, 200), (1048576, 10), (16384, 16384), (64, 1048576)]


# Inductor's vector width per fused path, so that each row compares like with like: AVX2 rows
# against torch.compile's AVX2 code even on an AVX-512 machine. `default` gets inductor's
# non-vectorised C++ (simdlen 1), which its compiler may still auto-vectorise for the build
# machine (inductor compiles with -march=native): a generous baseline for that row.
SIMDLEN = {"default": 1, "avx2": 256, "avx512": 512}


def soft_cross_entropy(logits, y):
    return F.cross_entropy(logits, y)


LOSSES = {
    "rce": (entclust.reverse_cross_entropy, reference.reverse_cross_entropy),
    "cce": (entclust.collision_cross_entropy, reference.collision_cross_entropy),
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


def graph_ms(fn, repeat, steps=10):
    """CUDA only: median ms of one ``fn`` inside a replayed CUDA graph of ``steps`` calls, i.e.
    the kernels' own time without Python, dispatcher and launch overhead (which at 4096 x 1000,
    ~16 us of memory traffic on an H100, is larger than the kernels). NaN, with the reason
    printed, when ``fn`` cannot be captured (e.g. it synchronises with the host)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graph asks
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(steps):
                fn()
        ms = median_ms(graph.replay, "cuda", warmup=2, repeat=repeat) / steps
        del graph
        torch.cuda.empty_cache()
        return ms
    except Exception as exc:  # reported in the table as "—"; the other columns stand
        print(f"CUDA graph capture failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        torch.cuda.synchronize()
        return float("nan")


def fwd_bwd(fn, logits, y):
    def run():
        logits.grad = None
        y.grad = None
        fn(logits, y).backward()
    return run


# The fused loss against the float64 reference on the same (rounded) inputs: the result is
# rounded once to the input dtype, so the tolerance is a few units of that dtype's last place.
CHECK_RTOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}


def check(fn, ref, logits, y):
    a = fn(logits.detach(), y.detach())
    b = ref(logits.detach().double(), y.detach().double())
    torch.testing.assert_close(a.double(), b, rtol=CHECK_RTOL[logits.dtype], atol=1e-5)


def keep_freed_memory():
    """Tell glibc to keep freed memory in the process (no mmap for large blocks, no trimming).
    Otherwise each call's fresh gradient buffers are page-faulted in again whenever glibc happens
    to have returned the previous ones to the OS: at 4096 x 1000 that made one and the same
    variant take 4 or 18 ms at random, for every variant alike. Returns whether it applied."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return False
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_threshold = -1, -3
    # mallopt's value is a C int: 1 << 62 (as here until 2026-12-07) wrapped to 0, a trim threshold
    # of 0, which gave memory back on every free, the opposite of the intent
    int_max = (1 << 31) - 1
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, int_max))


def bench(device, dtype, shapes, repeat, capabilities, copy_gb_s):
    rows = []
    dtype_name = str(dtype).removeprefix("torch.")
    for n, k in shapes:
        g = torch.Generator(device="cpu").manual_seed(0)
        logits = (3 * torch.randn(n, k, generator=g)).to(device=device, dtype=dtype).requires_grad_()
        y = (0.9 * torch.softmax(2 * torch.randn(n, k, generator=g), 1) + 0.1 / k).to(device=device, dtype=dtype)
        y.requires_grad_()
        bytes_moved = 4 * n * k * logits.element_size()
        base = median_ms(fwd_bwd(soft_cross_entropy, logits, y), device, repeat=repeat)
        for loss, (fused, ref) in LOSSES.items():
            eager_ms = median_ms(fwd_bwd(ref, logits, y), device, repeat=repeat)
            for capability in capabilities:
                with contextlib.ExitStack() as stack:
                    if device == "cpu":
                        stack.enter_context(entclust.use_cpu_capability(capability))
                        # torch.compile's C++ code for the same ISA as the fused path of this row
                        stack.enter_context(torch._inductor.config.patch({"cpp.simdlen": SIMDLEN[capability]}))
                    torch._dynamo.reset()  # dynamo would otherwise reuse the graph compiled for another ISA
                    compiled_ref = torch.compile(ref, dynamic=False)
                    compiled_ms = median_ms(fwd_bwd(compiled_ref, logits, y), device, repeat=repeat)
                    check(fused, ref, logits, y)
                    fused_ms = median_ms(fwd_bwd(fused, logits, y), device, repeat=repeat)
                    novalidate_ms = median_ms(fwd_bwd(lambda a, b, f=fused: f(a, b, validate=False), logits, y),
                                              device, repeat=repeat)
                    graphs = {name: float("nan") for name in ("fused", "reference", "compiled")}
                    if device == "cuda":
                        for name, fn in (("fused", lambda a, b, f=fused: f(a, b, validate=False)),
                                         ("reference", ref), ("compiled", compiled_ref)):
                            graphs[name] = graph_ms(fwd_bwd(fn, logits, y), repeat)
                gb_s = bytes_moved / novalidate_ms / 1e6
                kernel_gb_s = bytes_moved / graphs["fused"] / 1e6
                rows.append(dict(loss=loss, n=n, k=k, dtype=dtype_name, capability=capability, fused_ms=fused_ms,
                                 fused_novalidate_ms=novalidate_ms, reference_ms=eager_ms,
                                 compiled_ms=compiled_ms, soft_ce_ms=base,
                                 graph_fused_ms=graphs["fused"], graph_reference_ms=graphs["reference"],
                                 graph_compiled_ms=graphs["compiled"], kernel_gb_s=kernel_gb_s,
                                 kernel_fraction_of_copy_bandwidth=kernel_gb_s / copy_gb_s,
                                 speedup_vs_reference=eager_ms / fused_ms,
                                 speedup_vs_compiled=compiled_ms / fused_ms,
                                 speedup_vs_soft_ce=base / fused_ms,
                                 effective_gb_s=gb_s, fraction_of_copy_bandwidth=gb_s / copy_gb_s))
        del logits, y
    return rows


def table(rows):
    head = ("| loss | N | K | dtype | path | fused ms | fused, validate=False ms | eager reference ms | "
            "torch.compile reference ms | soft-target F.cross_entropy ms | × vs eager | × vs compile "
            "| × vs F.cross_entropy | effective GB/s | of copy bandwidth |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['n']} | {r['k']} | {r['dtype']} | {r['capability']} | {r['fused_ms']:.3f} "
                     f"| {r['fused_novalidate_ms']:.3f} | {r['reference_ms']:.3f} | {r['compiled_ms']:.3f} "
                     f"| {r['soft_ce_ms']:.3f} | {r['speedup_vs_reference']:.2f} | {r['speedup_vs_compiled']:.2f} "
                     f"| {r['speedup_vs_soft_ce']:.2f} | {r['effective_gb_s']:.1f} "
                     f"| {100 * r['fraction_of_copy_bandwidth']:.0f} % |")
    if any(r["graph_fused_ms"] == r["graph_fused_ms"] for r in rows):
        lines += ["", "Kernels alone (CUDA graph of 10 forward + backward steps, replayed; validate=False):", "",
                  "| loss | N | K | dtype | fused ms | eager reference ms | torch.compile reference ms | × vs eager "
                  "| × vs compile | fused GB/s | of copy bandwidth |", "|" + "---|" * 11]
        for r in rows:
            f, e, c = r["graph_fused_ms"], r["graph_reference_ms"], r["graph_compiled_ms"]
            lines.append(f"| {r['loss']} | {r['n']} | {r['k']} | {r['dtype']} | {f:.4f} | {e:.4f} | {c:.4f} "
                         f"| {e / f:.2f} | {c / f:.2f} | {r['kernel_gb_s']:.1f} "
                         f"| {100 * r['kernel_fraction_of_copy_bandwidth']:.0f} % |")
    return "\n".join(lines)


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['loss']} {r['capability']}\n{r['n']}×{r['k']} {r['dtype']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    series = [("fused_ms", "entclust fused"), ("reference_ms", "eager reference"),
              ("compiled_ms", "torch.compile reference"), ("soft_ce_ms", "F.cross_entropy (soft)")]
    for i, (key, name) in enumerate(series):
        ax.bar([j + 0.2 * (i - 1.5) for j in x], [r[key] for r in rows], width=0.2, label=name)
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
    parser.add_argument("--dtype", default="float32",
                        help="comma list of float32, float64, bfloat16, float16 (default float32)")
    parser.add_argument("--shapes", default=None, help="comma list of NxK, e.g. 4096x1000,250x200")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--capabilities", default="all",
                        help="CPU paths to time, comma list (default: all this CPU supports)")
    parser.add_argument("--out", default=os.environ.get("OUT", "results"))
    parser.add_argument("--page-faults", action="store_true",
                        help="leave glibc's malloc as it is (fresh buffers page-fault at random; see keep_freed_memory)")
    args = parser.parse_args()
    steady = args.device == "cpu" and not args.page_faults and keep_freed_memory()
    if args.device == "cpu":
        supported = entclust.available_cpu_capabilities()
        capabilities = supported if args.capabilities == "all" else args.capabilities.split(",")
        unknown = [c for c in capabilities if c not in supported]
        if unknown:
            parser.error(f"--capabilities {','.join(unknown)}: this CPU supports {', '.join(supported)}")
    else:
        capabilities = [args.device]

    shapes = CUDA_SHAPES if args.device == "cuda" else CPU_SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    dtype_names = args.dtype.split(",")
    unknown = [d for d in dtype_names if d not in ("float32", "float64", "bfloat16", "float16")]
    if unknown:
        parser.error(f"--dtype {','.join(unknown)}: choose from float32, float64, bfloat16, float16")
    machine = (torch.cuda.get_device_name() if args.device == "cuda"
               else f"{cpu_model()}, {torch.get_num_threads()} threads")
    copy_gb_s = 1000 * copy_tb_s(args.device)  # the solver benchmark's measure: 256 MiB, read + write
    rows = [r for d in dtype_names for r in bench(args.device, getattr(torch, d), shapes, args.repeat, capabilities,
                                                 copy_gb_s)]
    title = f"entclust losses, {args.device} ({machine}), {args.dtype}, torch {torch.__version__}, {date.today()}"
    print(title)
    print(f"copy bandwidth (read + write): {copy_gb_s:.1f} GB/s; "
          f"{'freed memory kept by malloc (no page faults)' if steady else 'malloc as configured'}")
    print(table(rows))
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"bench_losses_{args.device}")
    with open(stem + ".json", "w") as f:
        json.dump(dict(device=args.device, machine=machine, cpu_model=cpu_model(), dtype=args.dtype,
                       torch=torch.__version__, date=str(date.today()), threads=torch.get_num_threads(),
                       cpu_capabilities=capabilities, copy_bandwidth_gb_s=copy_gb_s, malloc_keeps_freed_memory=steady,
                       rows=rows), f, indent=1)
    plot(rows, stem + ".png", title)
    print(f"wrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
