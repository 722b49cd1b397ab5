"""Accuracy of the float32 kernels on every CPU path, measured against a float64 ground truth
and bounded by the error of the plain float32 PyTorch reference on the same inputs (the way
flash-attention tests its kernels): a kernel may be at most twice as far from the truth as
eager float32, plus the rounding of the float32 output itself. A fixed absolute tolerance would
pass or fail by one machine's luck; this bound moves with the problem's own conditioning.
Long rows (K up to 1e5) check that row sums do not lose accuracy as K grows."""
import pytest
import torch

import entclust
from entclust.testing import reference as R

from .helpers import every_cpu_capability  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("every_cpu_capability")

EPS32 = torch.finfo(torch.float32).eps
LOSSES = {
    "rce": (entclust.reverse_cross_entropy, R.reverse_cross_entropy),
    "cce": (entclust.collision_cross_entropy, R.collision_cross_entropy),
}


def _problem(n, k, logit_scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = logit_scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = 0.9 * torch.softmax(2 * torch.randn(n, k, generator=g, dtype=torch.float64), 1) + 0.1 / k
    return logits.float(), y.float()


def _value_and_grads(fn, logits, y, reduction):
    logits = logits.clone().requires_grad_()
    y = y.clone().requires_grad_()
    out = fn(logits, y, reduction=reduction)
    out.sum().backward()
    return out.detach().double(), logits.grad.double(), y.grad.double()


def assert_within_reference_error(kernel, ref32, truth, what):
    """|kernel - truth| <= 2 max|ref32 - truth| + eps32 |truth|, element-wise."""
    ref_err = (ref32 - truth).abs().max()
    bound = 2 * ref_err + EPS32 * truth.abs()
    excess = (kernel - truth).abs() - bound
    worst = excess.argmax()
    assert excess.max() <= 0, (
        f"{what}: error {(kernel - truth).abs().flatten()[worst]:.3g} at {worst.item()} exceeds "
        f"2 x eager float32's {ref_err:.3g} + output rounding"
    )


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize(
    "n, k, logit_scale",
    [(64, 1000, 3.0), (256, 7, 3.0), (1000, 10, 3.0), (100, 40, 30.0), (33, 200, 30.0), (16, 16384, 3.0), (3, 100_000, 3.0)],
)
def test_losses_within_eager_float32_error(loss, reduction, n, k, logit_scale):
    fused, reference = LOSSES[loss]
    logits, y = _problem(n, k, logit_scale, seed=k)
    truth = _value_and_grads(reference, logits.double(), y.double(), reduction)
    eager = _value_and_grads(reference, logits, y, reduction)
    got = _value_and_grads(fused, logits, y, reduction)
    for name, a, b, c in zip(["value", "grad logits", "grad y"], got, eager, truth):
        assert_within_reference_error(a, b, c, f"{loss} {reduction} {n}x{k} {name}")


@pytest.mark.parametrize("solver", ["em_rce", "em_cce"])
@pytest.mark.parametrize("n, k", [(250, 200), (100, 37), (40, 3000)])
def test_em_iterations_within_eager_float32_error(solver, n, k):
    g = torch.Generator().manual_seed(k)
    sigma64 = torch.softmax(3 * torch.randn(1, n, k, generator=g, dtype=torch.float64), -1)
    sigma = sigma64.float()
    fused, reference = getattr(entclust, solver), getattr(R, solver)
    kwargs = dict(max_iter=30, tol=0.0)
    extra = {"newton_tol": 1e-12} if solver == "em_cce" else {}
    truth = reference(sigma.double(), **kwargs, **extra).y
    eager = reference(sigma, **kwargs, **extra).y.double()
    got = fused(sigma, **kwargs).y.double()
    assert_within_reference_error(got, eager, truth, f"{solver} {n}x{k} y after 30 iterations")
