"""CUDA kernels against the CPU kernels (and the reference) at every launch configuration.
Skipped without a GPU and a CUDA build; benchmarks/gpu_check.sh runs them on a GPU machine."""
import math

import pytest
import torch

import entclust
from entclust import reference

from .helpers import HALF_DTYPES, make_logits, make_simplex, requires_cuda, tolerances

pytestmark = requires_cuda

# each side of every configuration boundary: warp rows <= 256, 256-thread block <= 2048,
# 512 x 32 register-cached <= 16384 (float32), streaming beyond
KS = [1, 7, 256, 257, 1000, 2048, 2049, 16384, 16385, 100000]


def both(fn, logits, y, device, **kw):
    a = logits.detach().to(device).requires_grad_()
    b = y.detach().to(device).requires_grad_()
    loss = fn(a, b, **kw)
    loss.sum().backward()
    return [t.detach().cpu() for t in (loss, a.grad, b.grad)]


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] + HALF_DTYPES)
@pytest.mark.parametrize("fn", [entclust.reverse_cross_entropy, entclust.collision_cross_entropy])
def test_cuda_matches_cpu(fn, dtype, k):
    n = max(1, min(67, 400000 // k))
    logits, y = make_logits((n, k), dtype), make_simplex((n, k), dtype)
    got = both(fn, logits, y, "cuda", reduction="none")
    want = both(fn, logits, y, "cpu", reduction="none")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tolerances(dtype))


@pytest.mark.parametrize("fn", [entclust.reverse_cross_entropy, entclust.collision_cross_entropy])
def test_cuda_gradcheck_and_opcheck(fn):
    logits = make_logits((3, 300), torch.float64, "cuda").requires_grad_()
    y = make_simplex((3, 300), torch.float64, "cuda").requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, sum_tol=math.inf), (logits, y))
    op = getattr(torch.ops.entclust, fn.__name__)
    torch.library.opcheck(op, (logits, y, 1, True, True, 1e-8))


def test_cuda_collision_underflow_and_zeros():
    logits = torch.tensor([[0.0, -80.0, 1.0], [1.0, 2.0, -math.inf]], device="cuda")
    y = torch.tensor([[0.0, 1.0, 0.0], [0.3, 0.7, 0.0]], device="cuda")
    got = both(entclust.collision_cross_entropy, logits, y, "cuda", reduction="none")
    want = both(entclust.collision_cross_entropy, logits, y, "cpu", reduction="none")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ref = reference.collision_cross_entropy(logits.double(), y.double(), "none").cpu()
    torch.testing.assert_close(got[0].double(), ref, rtol=1e-5, atol=0)


def test_cuda_tensor_from_another_device_is_refused():
    with pytest.raises(ValueError, match="y is on cpu but logits is on cuda"):
        entclust.reverse_cross_entropy(torch.zeros(2, 3, device="cuda"), torch.full((2, 3), 1 / 3))
