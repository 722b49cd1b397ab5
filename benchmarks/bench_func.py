"""The fused losses under torch.func against the plain-PyTorch reference under the same
transform, in one run: what a user of ``torch.func`` would otherwise write.

- per-sample gradients of a linear head: ``vmap(grad(loss))`` over the rows of a batch, the
  gradient of each row's loss with respect to the head's weight ``(K, D)``;
- ``vmap`` over B independent problems of N x K (forward, then forward + backward).

Prints the medians and the reference-over-fused ratios (> 1: the fused loss is faster).

    python benchmarks/bench_func.py [--quick] [--loss rce|cce] [--repeats 7]
"""
from __future__ import annotations

import sys

import torch
import torch.func as tf

import entclust
from entclust.testing import reference
from bench_duality_gap import median_ms  # this folder is on the path when the script runs

LOSSES = {"rce": (entclust.reverse_cross_entropy, reference.reverse_cross_entropy),
          "cce": (entclust.collision_cross_entropy, reference.collision_cross_entropy)}
# (rows of the batch, D, K) for per-sample gradients; (B, N, K) for vmapped problems
PER_SAMPLE = [(256, 64, 10), (256, 64, 1000)]
PROBLEMS = [(64, 256, 10), (64, 256, 1000), (8, 256, 16384)]
QUICK = ([(32, 8, 10)], [(4, 16, 10)])


def add_arguments(parser) -> None:
    parser.add_argument("--loss", choices=sorted(LOSSES), default="rce")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per case (median)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats (a smoke run)")


def _cases(loss: str, per_sample, problems):
    fused, ref = LOSSES[loss]
    gen = torch.Generator().manual_seed(0)
    for b, d, k in per_sample:
        x = torch.randn(b, d, generator=gen)
        weight = torch.randn(k, d, generator=gen) / d ** 0.5
        y = torch.softmax(torch.randn(b, k, generator=gen), -1)

        def per_row(f):
            grad = tf.grad(lambda w, xi, yi: f((xi @ w.T)[None], yi[None]))
            return lambda: tf.vmap(grad, in_dims=(None, 0, 0))(weight, x, y)

        yield f"per-sample grad, {b} rows, D = {d}, K = {k}", per_row(fused), per_row(ref)
    for b, n, k in problems:
        logits = torch.randn(b, n, k, generator=gen)
        y = torch.softmax(torch.randn(b, n, k, generator=gen), -1)
        yield f"vmap forward, {b} x {n} x {k}", (lambda f=fused: tf.vmap(f)(logits, y)), (lambda f=ref: tf.vmap(f)(logits, y))
        yield (f"vmap grad, {b} x {n} x {k}", (lambda f=fused: tf.vmap(tf.grad(f))(logits, y)),
               (lambda f=ref: tf.vmap(tf.grad(f))(logits, y)))


def run(args) -> int:
    repeats = 2 if args.quick else args.repeats
    per_sample, problems = QUICK if args.quick else (PER_SAMPLE, PROBLEMS)
    print(f"{args.loss}, float32, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"entclust {entclust.__version__}; median of {repeats}")
    print("| case | fused ms | reference ms | reference / fused |\n|---|---|---|---|")
    for name, fused, ref in _cases(args.loss, per_sample, problems):
        torch.testing.assert_close(fused(), ref(), rtol=1e-4, atol=1e-5)
        a, b = median_ms(fused, repeats), median_ms(ref, repeats)
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    from entclust.cli import run_script

    sys.exit(run_script("bench_func.py", __doc__, add_arguments, run))
