"""pytest-benchmark cases (``pytest benchmarks/``): fused ops on every CPU path this machine
supports, and their PyTorch baselines (eager, ``torch.compile``, soft-target cross-entropy)."""
import pytest
import torch
import torch.nn.functional as F

import entclust
from entclust.testing import reference

CASES = {
    "rce_fused": entclust.reverse_cross_entropy,
    "rce_reference": reference.reverse_cross_entropy,
    "rce_compiled": torch.compile(reference.reverse_cross_entropy, dynamic=False),
    "cce_fused": entclust.collision_cross_entropy,
    "cce_reference": reference.collision_cross_entropy,
    "cce_compiled": torch.compile(reference.collision_cross_entropy, dynamic=False),
    "soft_cross_entropy": F.cross_entropy,
}
CAPABILITIES = entclust.available_cpu_capabilities()


@pytest.mark.parametrize("shape", [(4096, 1000), (250, 200)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    "name, capability",
    [(n, c) for n in CASES if n.endswith("fused") for c in CAPABILITIES]
    + [(n, None) for n in CASES if not n.endswith("fused")],
)
def test_forward_backward(benchmark, name, capability, shape):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(shape, generator=g)).requires_grad_()
    y = torch.softmax(torch.randn(shape, generator=g), 1).requires_grad_()
    fn = CASES[name]

    def step():
        logits.grad = y.grad = None
        fn(logits, y).backward()

    with entclust.use_cpu_capability(capability or entclust.cpu_capability()):
        benchmark(step)
