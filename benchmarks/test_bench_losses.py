"""pytest-benchmark cases (``pytest benchmarks/``): fused ops and their PyTorch baselines."""
import pytest
import torch
import torch.nn.functional as F

import entclust
from entclust import reference

CASES = {
    "rce_fused": entclust.reverse_cross_entropy,
    "rce_reference": reference.reverse_cross_entropy,
    "cce_fused": entclust.collision_cross_entropy,
    "cce_reference": reference.collision_cross_entropy,
    "soft_cross_entropy": F.cross_entropy,
}


@pytest.mark.parametrize("shape", [(4096, 1000), (250, 200)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", CASES)
def test_forward_backward(benchmark, name, shape):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(shape, generator=g)).requires_grad_()
    y = torch.softmax(torch.randn(shape, generator=g), 1).requires_grad_()
    fn = CASES[name]

    def step():
        logits.grad = y.grad = None
        fn(logits, y).backward()

    benchmark(step)
