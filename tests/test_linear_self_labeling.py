"""The fused linear self-labeling op (``entclust.linear_self_labeling``, ``torch.ops.entclust.linear_rce``)
and its module ``entclust.nn.LinearSelfLabeling``: against the plain PyTorch reference
(``entclust.testing.reference.linear_self_labeling``, full B x K logits), on every CPU path and
on CUDA where there is one; float64 gradcheck, opcheck, blocking, bad inputs, the memory."""
import math

import pytest
import torch

import entclust
from entclust.testing import reference as R

from .helpers import DEVICES, every_cpu_capability  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("every_cpu_capability")


def problem(b, k, d, dtype=torch.float32, device="cpu", seed=0, bias=True, spread=2.0, fair_scale=200.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    w = spread * torch.randn(k, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    bb = torch.randn(k, generator=g, dtype=torch.float64) if bias else None
    fair = fair_scale * torch.rand(k, generator=g, dtype=torch.float64)
    cast = lambda t: None if t is None else t.to(dtype=dtype, device=device).requires_grad_()  # noqa: E731
    return cast(x), cast(w), cast(bb), fair.to(device)


def grads(loss, tensors):
    present = [t for t in tensors if t is not None]
    return torch.autograd.grad(loss, present)


TOL = {torch.float32: dict(rtol=2e-4, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-13)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,k,d,iterations,block_rows,bias", [
    (1, 1, 1, 3, None, True),  # one class: sigma = y = 1, zero loss and gradients
    (7, 5, 3, 3, None, True),
    (33, 131, 16, 3, 4, False),  # blocks of 4 rows, the last one short; K not a multiple of the lanes
    (64, 1000, 32, 0, None, True),  # no M-step: the entropy of sigma
    (50, 37, 8, 5, 7, True),
    (20, 300, 8, 20, None, True),  # more M-steps than the moment path takes: the direct iteration
])
def test_matches_the_reference(device, dtype, b, k, d, iterations, block_rows, bias):
    x, w, bb, fair = problem(b, k, d, dtype, device, bias=bias)
    out = entclust.linear_self_labeling(x, w, bb, fair, iterations=iterations, block_rows=block_rows)
    ref = R.linear_self_labeling(x, w, bb, fair, iterations=iterations)
    torch.testing.assert_close(out.loss, ref[0], **TOL[dtype])
    assert torch.equal(out.labels, ref[1])
    torch.testing.assert_close(out.columns, ref[2], rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)
    for got, want in zip(grads(out.loss, (x, w, bb)), grads(ref[0], (x, w, bb))):
        torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions_and_upstream_gradients(reduction):
    x, w, bb, fair = problem(40, 60, 8, torch.float64)
    out = entclust.linear_self_labeling(x, w, bb, fair, reduction=reduction)
    ref = R.linear_self_labeling(x, w, bb, fair, reduction=reduction)
    torch.testing.assert_close(out.loss, ref[0], **TOL[torch.float64])
    # an upstream gradient other than 1 scales the precomputed gradients
    for got, want in zip(grads(2.5 * out.loss, (x, w, bb)), grads(2.5 * ref[0], (x, w, bb))):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


def test_float64_gradcheck_without_m_steps():
    # with y = sigma held fixed the step's gradient is the entropy's own, so finite differences
    # of the whole function (which re-solve y) agree with it; with M-steps they differ by
    # dL/dy dy/dtheta, which self-labeling leaves out by design (tested against the reference above)
    x, w, bb, fair = problem(6, 9, 4, torch.float64)
    fn = lambda x, w, b: entclust.linear_self_labeling(x, w, b, fair, iterations=0, block_rows=4).loss  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, bb))


def test_opcheck():
    x, w, bb, fair = problem(9, 13, 5, torch.float64)
    torch.library.opcheck(torch.ops.entclust.linear_rce, (x, w, bb, fair, 3, 1, True, 4))
    torch.library.opcheck(torch.ops.entclust.linear_rce, (x.detach(), w.detach(), bb.detach(), fair, 3, 1, False, 4))
    torch.library.opcheck(torch.ops.entclust.linear_rce, (x.detach(), w.detach(), None, fair, 2, 2, False, 0))


def test_blocking_does_not_change_the_result():
    x, w, bb, fair = problem(37, 200, 8, torch.float32)
    outs = [entclust.ops.linear_rce_kernel(x.detach(), w.detach(), bb.detach(), fair, 3, 1, True, r) for r in (0, 1, 5, 37)]
    for other in outs[1:]:
        torch.testing.assert_close(other[0], outs[0][0], rtol=1e-6, atol=0)
        assert torch.equal(other[1], outs[0][1])
        for a, b in zip(other[2:], outs[0][2:]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


def test_large_fairness_weights_fall_back_to_the_direct_iteration():
    # weights of 1e12 would overflow the moment path's float32 polynomial: the rows take the direct one
    x, w, bb, fair = problem(16, 50, 8, torch.float32, fair_scale=1.0)
    fair[:3] = 1e12
    out = entclust.linear_self_labeling(x, w, bb, fair)
    ref = R.linear_self_labeling(x.double(), w.double(), bb.double(), fair)
    torch.testing.assert_close(out.loss.double(), ref[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.columns, ref[2], rtol=1e-4, atol=1e-5)


def test_no_gradient_wanted_no_gradient_formed():
    x, w, bb, fair = problem(8, 10, 4, torch.float32)
    with torch.no_grad():
        out = entclust.linear_self_labeling(x, w, bb, fair)
    assert not out.loss.requires_grad
    raw = entclust.ops.linear_rce_kernel(x.detach(), w.detach(), None, fair, 3, 1, False, 0)
    assert all(t.numel() == 0 for t in raw[3:])


def test_backward_fills_no_zero_gradients():
    """Autograd materialises no zero gradients for the op's outputs other than the loss (one of
    them weight's size, K x D)."""
    x, w, bb, fair = problem(8, 10, 4, torch.float32)
    out = entclust.linear_self_labeling(x, w, bb, fair)
    upstream = torch.ones(())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out.loss.backward(upstream)
    assert not [e.name for e in prof.events() if e.name in ("aten::fill_", "aten::zeros", "aten::zero_")]


def test_inputs_are_not_modified():
    x, w, bb, fair = problem(12, 20, 4, torch.float32)
    before = [t.detach().clone() for t in (x, w, bb, fair)]
    entclust.linear_self_labeling(x, w, bb, fair).loss.backward()
    for t, b in zip((x, w, bb, fair), before):
        assert torch.equal(t.detach(), b)


@pytest.mark.parametrize("change,match", [
    (dict(x=torch.ones(4)), r"x must have shape \(B, D\)"),
    (dict(x=torch.ones(0, 3)), r"B >= 1"),
    (dict(weight=torch.ones(5, 4)), r"weight must have shape \(K, 3\)"),
    (dict(bias=torch.ones(4)), r"bias must have shape \(5,\)"),
    (dict(fairness=torch.ones(4, dtype=torch.float64)), r"fairness must have shape \(5,\)"),
    (dict(fairness=-torch.ones(5, dtype=torch.float64)), "fairness must be finite and >= 0"),
    (dict(x=torch.tensor([[0.0, math.nan, 1.0]] * 2)), "x contains NaN or Inf"),
    (dict(weight=torch.ones(5, 3, dtype=torch.float64)), "must have one dtype"),
    (dict(x=torch.ones(2, 3, dtype=torch.int64)), "x must be a floating-point tensor"),
    (dict(reduction="none"), "reduction must be 'mean' or 'sum'"),
    (dict(iterations=-1), "iterations must be an int >= 0"),
    (dict(block_rows=0), "block_rows must be None or an int >= 1"),
])
def test_bad_inputs_are_named(change, match):
    args = dict(x=torch.ones(2, 3), weight=torch.ones(5, 3), bias=torch.zeros(5), fairness=torch.ones(5, dtype=torch.float64))
    change = dict(change)
    options = {key: change.pop(key) for key in ("reduction", "iterations", "block_rows") if key in change}
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        entclust.linear_self_labeling(args["x"], args["weight"], args["bias"], args["fairness"], **options)


def test_a_diverged_head_is_an_error_not_a_nan_loss():
    x, w, bb, fair = problem(4, 6, 3, torch.float32)
    with torch.no_grad():
        w[0, 0] = math.nan
    with pytest.raises(ValueError, match="loss is not finite"):
        entclust.linear_self_labeling(x, w, bb, fair)


def test_half_inputs_compute_in_float32():
    x, w, bb, fair = problem(10, 12, 4, torch.float32)
    out = entclust.linear_self_labeling(x.detach().bfloat16().float(), w.detach().bfloat16().float(), None, fair)
    half = entclust.linear_self_labeling(x.detach().bfloat16(), w.detach().bfloat16(), None, fair)
    torch.testing.assert_close(half.loss.float(), out.loss, rtol=1e-2, atol=1e-3)


# The module


def test_module_matches_head_plus_fixed_column_solve():
    torch.manual_seed(0)
    head = entclust.nn.LinearSelfLabeling(8, 30, n_points=1000, lam=50.0, iterations=4)
    x = torch.randn(64, 8)
    memory = entclust.ColumnMemory(30, 1000, 50.0, iterations=4)
    logits = torch.nn.functional.linear(x, head.weight, head.bias)
    y = memory.solve_fixed(logits)
    loss, labels, columns = head(x)
    torch.testing.assert_close(loss, entclust.reverse_cross_entropy(logits, y), rtol=1e-5, atol=1e-6)
    assert torch.equal(labels, y.argmax(-1))
    torch.testing.assert_close(columns, y.sum(0, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    # training mode: the memory replaced the batch's share of the sums by its new rows
    torch.testing.assert_close(head.memory.columns, memory.columns * (1 - 64 / 1000) + columns, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(head.memory.columns.sum(), torch.tensor(1000.0, dtype=torch.float64), rtol=1e-6, atol=0)


def test_module_eval_leaves_the_memory_and_state_dict_round_trips():
    head = entclust.nn.LinearSelfLabeling(4, 6, n_points=100, bias=False)
    head.eval()
    before = head.memory.columns.clone()
    head(torch.randn(10, 4))
    assert torch.equal(head.memory.columns, before)
    head.train()
    head(torch.randn(10, 4))
    state = head.state_dict()
    assert set(state) == {"weight", "memory.prior", "memory.columns"}
    other = entclust.nn.LinearSelfLabeling(4, 6, n_points=100, bias=False)
    other.load_state_dict(state)
    assert torch.equal(other.memory.columns, head.memory.columns)


def test_module_trains_a_head_to_the_clusters():
    # 4 well-separated clusters in 2-d from a random head: the fused step alone (defaults) finds
    # them, balanced. With 3 M-steps instead of 10 a class the head stops predicting stays empty
    # (y_k = sigma_k P(a_k) stays ~0 where sigma_k ~ 0 unless P grows enough): 75 % or 50 %.
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    truth = torch.arange(4).repeat(250)
    x = centres[truth] + 0.5 * torch.randn(1000, 2, generator=g)
    torch.manual_seed(0)
    head = entclust.nn.LinearSelfLabeling(2, 4, n_points=1000, lam=100.0)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(20):
        for idx in torch.randperm(1000, generator=g).split(100):
            loss, _, _ = head(x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    pred = head.predict(x)
    assert entclust.clustering_accuracy(truth.numpy(), pred.numpy()) > 0.97
    sizes = torch.bincount(pred, minlength=4)
    assert int(sizes.min()) > 200


def test_add_columns_checks_and_keeps_the_total():
    memory = entclust.ColumnMemory(3, 10, 1.0)
    memory.add_columns(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64), 2)
    torch.testing.assert_close(memory.columns.sum(), torch.tensor(10.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="column_sums must have shape"):
        memory.add_columns(torch.ones(4), 1)
    with pytest.raises(ValueError, match="column_sums must be finite"):
        memory.add_columns(torch.tensor([math.nan, 0.0, 0.0]), 1)
    w = memory.weights()
    torch.testing.assert_close(w, memory.lam * 10 * memory.prior / memory.columns)
