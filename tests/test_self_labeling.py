"""SelfLabeling and the solvers in real training (issue 15): precision under autocast, results
independent of the thread count, convergence reported, one argument order."""
import hashlib
import subprocess
import sys
import warnings

import pytest
import torch

import entclust

THREAD_PROBE = r"""
import hashlib, sys, torch, entclust
torch.set_num_threads(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
sigma = torch.softmax(3 * torch.randn(20000, 30, generator=g, dtype=torch.float64), -1)
for solver in (entclust.em_rce, entclust.em_cce):
    res = solver(sigma, max_iter=15, tol=0)
    print(hashlib.sha256(res.y.numpy().tobytes()).hexdigest()[:16], float(res.objective), float(res.fw_gap))
"""


def test_solvers_do_not_depend_on_the_thread_count():
    out = [subprocess.run([sys.executable, "-c", THREAD_PROBE, t], capture_output=True, text=True, check=True).stdout
           for t in ("1", "2")]
    assert out[0] == out[1]


def test_fairness_is_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, generator=g)
    head = torch.nn.Linear(32, 10)
    criterion = entclust.SelfLabeling("rce", lam=100.0)
    exact = criterion(head(x)).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = criterion(head(x))
    assert mixed.dtype == torch.float32
    # the cross-entropy runs on bf16 logits; the fairness term no longer adds bf16 noise times lam
    assert abs(mixed.item() - exact) < 0.02 * abs(exact)
    y = torch.softmax(torch.randn(256, 10, generator=g), -1)
    torch.testing.assert_close(entclust.strong_fairness(y.bfloat16()), entclust.strong_fairness(y), atol=5e-4, rtol=0)
