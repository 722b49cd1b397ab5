"""The CPU kernel of prediction fairness ``KL(u || sigma_bar)`` from logits (csrc/cpu/fairness.cpp),
value and gradient in one call, against the plain log-domain formula of entclust.testing.reference,
and the float64 softmax of the pseudo-label solves beside it, on every instruction-set path."""
from __future__ import annotations

import math

import pytest
import torch

import entclust
from entclust.ops.fused import plain_fairness_gradient
from entclust.testing import reference

from .helpers import every_cpu_capability  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("every_cpu_capability")

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-14), torch.float32: dict(rtol=2e-5, atol=1e-7)}


def _prior(k: int, zeros: bool, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(k, generator=g, dtype=torch.float64) + 0.05
    if zeros and k > 2:
        u[::3] = 0.0  # classes the prior leaves out contribute nothing
    return u / u.sum()


def _expected(logits: torch.Tensor, u: torch.Tensor):
    leaf = logits.double().detach().requires_grad_(True)
    value = reference.prediction_fairness_log(leaf, u)
    value.sum().backward()
    return value.detach(), leaf.grad


# (B, N, K): one row, one class, short rows, rows over several chunks (256 rows a chunk at K = 10,
# so their column sums are merged), large K (8 rows a chunk), and a tail that does not fill a vector
SHAPES = [(1, 1, 1), (3, 7, 1), (2, 1, 5), (10, 250, 10), (2, 1000, 10), (1, 300, 200), (2, 40, 5000), (1, 33, 17)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("zeros", [False, True], ids=["prior>0", "prior_zeros"])
def test_kernel_matches_the_log_domain_formula(shape, dtype, zeros):
    g = torch.Generator().manual_seed(sum(shape))
    logits = (4 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)
    u = _prior(shape[-1], zeros, g)
    value, grad = entclust.ops.prediction_fairness_kernel(logits, u, True)
    want_value, want_grad = _expected(logits, u)
    assert value.dtype == dtype and grad.dtype == dtype and grad.shape == logits.shape
    torch.testing.assert_close(value.double(), want_value, **TOL[dtype])
    # float32: the gradient entries are compared against the largest, as the kernel's exp is float32
    scale = float(want_grad.abs().max()) or 1.0
    torch.testing.assert_close(grad.double(), want_grad, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["rtol"] * scale)
    alone, empty = entclust.ops.prediction_fairness_kernel(logits, u, False)
    assert empty.numel() == 0
    torch.testing.assert_close(alone, value, rtol=0, atol=0)  # the value does not depend on grad


def test_public_function_uses_the_kernel_and_autograd_gets_its_gradient():
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(4, 50, 6, generator=g)
    u = [0.3, 0.2, 0.2, 0.1, 0.1, 0.1]
    leaf = logits.clone().requires_grad_(True)
    value = entclust.prediction_fairness(leaf, u, batched=True)
    (value * torch.arange(1.0, 5.0)).sum().backward()  # an upstream gradient that is not 1
    want_value, want_grad = _expected(logits, torch.tensor(u, dtype=torch.float64))
    torch.testing.assert_close(value.detach().double(), want_value, rtol=2e-6, atol=1e-7)
    want = want_grad * torch.arange(1.0, 5.0, dtype=torch.float64)[:, None, None]
    # float32: about 1e-6 of the largest entry, as PyTorch's float32 composition (8e-7 here)
    torch.testing.assert_close(leaf.grad.double(), want, rtol=2e-5, atol=1e-5 * float(want.abs().max()))
    torch.testing.assert_close(logits, leaf.detach())  # the input is not modified


def test_a_unit_upstream_gradient_is_not_aliased():
    """value.sum().backward() hands autograd the kernel's gradient as it is: a second backward of the
    same graph must add the same gradient again, not a gradient grown in place."""
    z = torch.randn(3, 20, 4, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    total = entclust.prediction_fairness(z, batched=True).sum()
    total.backward(retain_graph=True)
    once = z.grad.clone()
    total.backward(retain_graph=True)
    total.backward()
    torch.testing.assert_close(z.grad, 3 * once)


def test_gradcheck_and_double_backward_in_float64():
    """First derivatives from the kernel; backward with create_graph=True differentiates the plain
    formula of the same gradient (ops.fused.plain_fairness_gradient), so second derivatives hold."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    prior = [0.4, 0.0, 0.3, 0.3]
    fn = lambda t: entclust.prediction_fairness(t, prior, batched=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z,))
    assert torch.autograd.gradgradcheck(fn, (z,))
    u = torch.tensor(prior, dtype=torch.float64)
    torch.testing.assert_close(plain_fairness_gradient(z.detach(), u),
                               entclust.ops.prediction_fairness_kernel(z.detach(), u, True)[1], rtol=1e-12, atol=1e-15)


def test_opcheck():
    g = torch.Generator().manual_seed(1)
    u = torch.full((5,), 0.2, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(3, 20, 5, generator=g).to(dtype).requires_grad_(True)
        torch.library.opcheck(torch.ops.entclust.prediction_fairness, (z, u, True))
        torch.library.opcheck(torch.ops.entclust.prediction_fairness, (z.detach(), u, False))


def test_torch_func_takes_the_plain_formula_with_the_same_result():
    g = torch.Generator().manual_seed(2)
    z = 2 * torch.randn(3, 30, 7, generator=g, dtype=torch.float64)
    fn = lambda t: entclust.prediction_fairness(t, batched=True).sum()  # noqa: E731
    leaf = z.clone().requires_grad_(True)
    fn(leaf).backward()
    torch.testing.assert_close(torch.func.grad(fn)(z), leaf.grad, rtol=1e-12, atol=1e-16)
    per_problem = torch.func.vmap(torch.func.grad(lambda t: entclust.prediction_fairness(t)))(z)
    torch.testing.assert_close(per_problem, leaf.grad, rtol=1e-12, atol=1e-16)


def test_the_result_does_not_depend_on_the_threads():
    """Rows go to chunks by K alone and the chunks are merged in order: the same bits with 1 or 2 threads."""
    g = torch.Generator().manual_seed(4)
    z = 3 * torch.randn(3, 2000, 12, generator=g)
    u = torch.full((12,), 1 / 12, dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = entclust.ops.prediction_fairness_kernel(z, u, True)
        torch.set_num_threads(2)
        two = entclust.ops.prediction_fairness_kernel(z, u, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_dead_masked_and_nan_classes():
    u4 = torch.full((4,), 0.25, dtype=torch.float64)
    # a class nobody predicts (sigma = e^-200, below float32's range) keeps its push of u_k / N a row
    z = torch.zeros(1, 64, 4)
    z[..., 3] = -200.0
    value, grad = entclust.ops.prediction_fairness_kernel(z, u4, True)
    assert math.isfinite(float(value)) and float(value) > 10
    torch.testing.assert_close(grad[0, :, 3], torch.full((64,), -0.25 / 64), rtol=1e-4, atol=0)
    # a masked class (logits -inf) that the prior leaves out: finite, and no gradient in it
    z = torch.randn(2, 30, 5, dtype=torch.float64)
    z[..., 4] = -math.inf
    u = torch.tensor([0.3, 0.3, 0.2, 0.2, 0.0], dtype=torch.float64)
    value, grad = entclust.ops.prediction_fairness_kernel(z, u, True)
    want_value, want_grad = _expected(torch.where(torch.isinf(z), -1e4, z), u)
    torch.testing.assert_close(value, want_value)
    torch.testing.assert_close(grad, want_grad)
    # ... and one that the prior wants: KL(u || sigma_bar) is +inf
    value, _ = entclust.ops.prediction_fairness_kernel(z, torch.full((5,), 0.2, dtype=torch.float64), True)
    assert torch.isinf(value).all() and (value > 0).all()
    # a NaN logit makes its problem's value NaN, not a quiet number; the other problem is unaffected
    z = torch.randn(2, 5, 3)
    z[0, 2, 1] = float("nan")
    value, _ = entclust.ops.prediction_fairness_kernel(z, torch.full((3,), 1 / 3, dtype=torch.float64), True)
    assert math.isnan(float(value[0])) and math.isfinite(float(value[1]))


def test_raw_op_names_what_is_wrong():
    u = torch.full((3,), 1 / 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="logits must have shape"):
        entclust.ops.prediction_fairness_kernel(torch.zeros(4, 3), u, False)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        entclust.ops.prediction_fairness_kernel(torch.zeros(1, 4, 3, dtype=torch.bfloat16), u, False)
    with pytest.raises(RuntimeError, match="prior must be float64 of shape"):
        entclust.ops.prediction_fairness_kernel(torch.zeros(1, 4, 3), u.float(), False)
    with pytest.raises(RuntimeError, match="N >= 1"):
        entclust.ops.prediction_fairness_kernel(torch.zeros(1, 0, 3), u, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(10, 250, 10), (300, 1000), (3, 1), (5, 17), (2, 0, 3), (7,)],
                         ids=lambda s: "x".join(map(str, s)) if isinstance(s, tuple) else str(s))
def test_softmax_double_is_softmax_in_float64(shape, dtype):
    """The float64 sigma of the pseudo-label solves (ops.softmax_double, csrc/cpu/fairness.cpp) is
    torch.softmax(logits.double(), -1) to a few ulps, also for NaN, +-inf and masked rows."""
    g = torch.Generator().manual_seed(len(shape))
    logits = (5 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)
    got = entclust.ops.softmax_double(logits)
    assert got.dtype == torch.float64 and got.shape == logits.shape
    torch.testing.assert_close(got, torch.softmax(logits.double(), -1), rtol=1e-14, atol=1e-15)
    special = torch.tensor([[0.0, math.nan, 1.0], [-math.inf] * 3, [math.inf, 0.0, 0.0], [0.0, -math.inf, 1.0]], dtype=dtype)
    torch.testing.assert_close(entclust.ops.softmax_double(special), torch.softmax(special.double(), -1), equal_nan=True)
    torch.library.opcheck(torch.ops.entclust.softmax_double, (logits,))


def test_argmax_rows_is_argmax():
    """ops.argmax_rows (torch.max(t, dim).indices, faster on the CPU) gives argmax's indices: the
    first of tied maxima, and a NaN as the maximum."""
    g = torch.Generator().manual_seed(6)
    for shape, dim in (((7, 33, 10), -1), ((50, 4), 1), ((3, 1000), -1), ((5, 6), 0)):
        ties = torch.randint(0, 3, shape, generator=g).float()  # many tied maxima
        assert torch.equal(entclust.ops.argmax_rows(ties, dim), ties.argmax(dim))
    special = torch.tensor([[1.0, 3.0, 3.0, 0.0], [math.nan, 1.0, 2.0, math.nan], [0.0, 0.0, 0.0, 0.0],
                            [1.0, math.inf, math.inf, 2.0], [-math.inf, -math.inf, 2.0, math.nan]])
    assert torch.equal(entclust.ops.argmax_rows(special), special.argmax(-1))
