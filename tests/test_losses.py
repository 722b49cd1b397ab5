"""Fused loss kernels against entclust.reference, gradients, registration, and edge cases."""
import math

import pytest
import torch

import entclust
from entclust.testing import reference

from .helpers import every_cpu_capability  # noqa: F401  (fixture)
from .helpers import DEVICES, DTYPES, FLOAT_DTYPES, make_logits, make_simplex, tolerances

pytestmark = pytest.mark.usefixtures("every_cpu_capability")

LOSSES = {
    "rce": (entclust.reverse_cross_entropy, reference.reverse_cross_entropy),
    "cce": (entclust.collision_cross_entropy, reference.collision_cross_entropy),
}
SHAPES = [(0, 5), (1, 1), (7, 1), (5, 3), (64, 1000), (3, 4, 17), (2, 3000), (1, 70000)]


def run(fn, logits, y, **kw):
    """Loss and gradients with respect to both inputs (unit upstream gradient)."""
    logits = logits.detach().clone().requires_grad_()
    y = y.detach().clone().requires_grad_()
    loss = fn(logits, y, **kw)
    if loss.numel() and loss.requires_grad:
        loss.sum().backward()
    return loss.detach(), logits.grad, y.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_matches_reference(name, reduction, shape, dtype, device):
    fused, ref = LOSSES[name]
    logits = make_logits(shape, dtype, device)
    y = make_simplex(shape, dtype, device)
    got = run(fused, logits, y, reduction=reduction)
    # The reference runs in float32 (float64 for float64) on the same rounded inputs.
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    want = run(ref, logits.to(ref_dtype), y.to(ref_dtype), reduction=reduction)
    tol = tolerances(dtype)
    if shape[0] == 0 and reduction == "mean":
        assert torch.isnan(got[0])
        return
    torch.testing.assert_close(got[0], want[0].to(dtype), **tol)
    if shape[0] > 0:
        torch.testing.assert_close(got[1], want[1].to(dtype), **tol)
        torch.testing.assert_close(got[2], want[2].to(dtype), **tol)


@pytest.mark.parametrize("name", LOSSES)
def test_dim_and_noncontiguous(name):
    fused, ref = LOSSES[name]
    logits = make_logits((6, 9, 4), torch.float64)
    y = make_simplex((6, 9, 4), torch.float64, dim=1)
    # classes along dim=1, and transposed (non-contiguous) views
    for lt, yt in [(logits, y), (logits.transpose(0, 2), y.transpose(0, 2))]:
        d = 1
        got = run(fused, lt, yt, dim=d, reduction="none")
        want = run(ref, lt, yt, dim=d, reduction="none")
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck(name, reduction):
    fused, _ = LOSSES[name]
    logits = make_logits((4, 5), torch.float64).requires_grad_()
    # gradcheck perturbs y off the simplex: accept unnormalised rows here
    y = make_simplex((4, 5), torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: fused(a, b, reduction=reduction, sum_tol=math.inf), (logits, y))


@pytest.mark.parametrize("op", ["reverse_cross_entropy", "collision_cross_entropy"])
@pytest.mark.parametrize("reduction", [0, 1, 2])
def test_opcheck(op, reduction):
    logits = make_logits((5, 7), torch.float64)
    y = make_simplex((5, 7), torch.float64)
    fn = getattr(torch.ops.entclust, op)
    for gl, gy in [(False, False), (True, False), (True, True)]:
        args = (logits.clone().requires_grad_(gl), y.clone().requires_grad_(gy), reduction, gl, gy, 1e-8)
        torch.library.opcheck(fn, args)


def test_raw_op_without_requested_gradient_refuses_backward():
    logits = make_logits((3, 4)).requires_grad_()
    loss, *_ = torch.ops.entclust.reverse_cross_entropy(logits, make_simplex((3, 4)), 1, False, False, 1e-4)
    with pytest.raises(RuntimeError, match="grad_logits=False"):
        loss.backward()


def test_double_backward_is_refused():
    logits = make_logits((3, 4), torch.float64).requires_grad_()
    loss = entclust.reverse_cross_entropy(logits, make_simplex((3, 4), torch.float64))
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(loss, logits, create_graph=True)


def test_upstream_gradient_is_applied():
    logits = make_logits((6, 5), torch.float64)
    y = make_simplex((6, 5), torch.float64)
    for reduction, upstream in [("mean", torch.tensor(2.5, dtype=torch.float64)),
                                ("none", torch.arange(6, dtype=torch.float64))]:
        a = logits.clone().requires_grad_()
        b = logits.clone().requires_grad_()
        entclust.collision_cross_entropy(a, y, reduction=reduction).backward(upstream)
        reference.collision_cross_entropy(b, y, reduction=reduction).backward(upstream)
        torch.testing.assert_close(a.grad, b.grad)


def test_backward_twice_with_retain_graph():
    logits = make_logits((4, 3), torch.float64).requires_grad_()
    loss = entclust.reverse_cross_entropy(logits, make_simplex((4, 3), torch.float64))
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(first, second)


def test_torch_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="aot_eager")
    def objective(logits, y):
        return entclust.reverse_cross_entropy(logits, y) + entclust.collision_cross_entropy(logits, y)

    logits = make_logits((8, 6)).requires_grad_()
    y = make_simplex((8, 6))
    loss = objective(logits, y)
    loss.backward()
    eager = logits.detach().clone().requires_grad_()
    want = entclust.reverse_cross_entropy(eager, y) + entclust.collision_cross_entropy(eager, y)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(logits.grad, eager.grad)


def test_inputs_are_not_modified():
    logits = make_logits((5, 4)).requires_grad_()
    y = make_simplex((5, 4)).requires_grad_()
    before = (logits.detach().clone(), y.detach().clone())
    for fused, _ in LOSSES.values():
        fused(logits, y).backward()
    assert torch.equal(logits.detach(), before[0]) and torch.equal(y.detach(), before[1])


# ---- zeros, underflow and the +inf cases -------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_zero_sigma_and_zero_y_contribute_nothing(name, dtype):
    fused, _ = LOSSES[name]
    # class 2 is masked (-inf logit) and has y = 0: a 0 * ln 0 term that must count as 0
    logits = torch.tensor([[1.0, 2.0, -math.inf], [0.5, -1.0, -math.inf]], dtype=dtype)
    y = torch.tensor([[0.3, 0.7, 0.0], [0.5, 0.5, 0.0]], dtype=dtype)
    loss, gl, gy = run(fused, logits, y, reduction="sum")
    # same problem without the dead class
    want, wl, wy = run(fused, logits[:, :2], y[:, :2], reduction="sum")
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(gl[:, :2], wl)
    torch.testing.assert_close(gy[:, :2], wy)
    assert torch.all(gl[:, 2] == 0) and torch.all(gy[:, 2] == 0)


def test_reverse_ce_zero_label_with_positive_sigma():
    logits = torch.zeros(2, 3)
    y = torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    with pytest.raises(ValueError, match=r"y is 0 where softmax\(logits\) > 0 \(row 0, class 2\)"):
        entclust.reverse_cross_entropy(logits, y)
    rows = entclust.reverse_cross_entropy(logits, y, reduction="none", validate=False)
    assert rows[0] == math.inf and rows[1] == pytest.approx(math.log(3), rel=1e-6)


def test_collision_ce_zero_overlap():
    logits = torch.tensor([[0.0, -math.inf]])
    y = torch.tensor([[0.0, 1.0]])
    with pytest.raises(ValueError, match="sigma . y = 0"):
        entclust.collision_cross_entropy(logits, y)
    assert entclust.collision_cross_entropy(logits, y, validate=False).item() == math.inf


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_collision_ce_underflow_is_exact(dtype):
    # sigma . y = sigma_1 ~ exp(-300): underflows in float32 and needs the log-domain path
    gap = 80.0 if dtype == torch.float32 else 760.0
    logits = torch.tensor([[0.0, -gap, 1.0]], dtype=dtype)
    y = torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype)
    loss, gl, gy = run(entclust.collision_cross_entropy, logits, y, reduction="sum")
    # closed form in log space: p = sigma_1, dL/dl = sigma - y sigma / p, dL/dy = -sigma / p
    log_sigma = torch.log_softmax(logits.double(), dim=1)
    ln_p = log_sigma[0, 1]
    ratio = torch.exp(log_sigma - ln_p)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), -ln_p, rtol=1e-6, atol=0)
    y_ratio = torch.where(y > 0, torch.exp(log_sigma + torch.log(y.double()) - ln_p), 0.0)
    torch.testing.assert_close(gl.double(), log_sigma.exp() - y_ratio, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gy.double(), -ratio, rtol=1e-5, atol=0)


@pytest.mark.parametrize("k", [1, 2, 7, 8, 9, 10, 15, 16, 17, 20, 25, 31, 32, 33, 40, 47, 48])
@pytest.mark.parametrize("name", LOSSES)
def test_short_rows_go_a_row_per_lane(name, k):
    """Short rows run a row per lane (below two vectors, and below four where a row ends in a
    tail; 16 rows at a time on AVX-512): rows [0, 37) cross two whole groups and a partial one
    and give what each row gives alone; collision-CE rows whose sigma . y underflows, set among
    ordinary ones, are redone in log space; a bad row is named."""
    fused, ref = LOSSES[name]
    n = 37
    logits, y = make_logits((n, k)), make_simplex((n, k))
    underflow = [3, 16, 36] if name == "cce" and k > 1 else []
    for row in underflow:  # sigma . y ~ exp(-80): only class 1 has mass in y
        logits[row] = 0.0
        logits[row, 1] = -80.0
        y[row] = 0.0
        y[row, 1] = 1.0
    got = run(fused, logits, y, reduction="none")
    for row in range(n):  # each row alone: a partial group of one lane
        one = run(fused, logits[row:row + 1], y[row:row + 1], reduction="none")
        for a, b in zip(got, one):
            torch.testing.assert_close(a[row:row + 1], b, rtol=1e-6, atol=1e-7)
    # the reference's autograd gives NaN for dL/dy where y = 0 and sigma . y is tiny: ordinary rows only
    ordinary = [row for row in range(n) if row not in underflow]
    want = run(ref, logits.double(), y.double(), reduction="none")
    for a, b in zip(got, want):
        torch.testing.assert_close(a[ordinary].double(), b[ordinary], rtol=1e-5, atol=1e-6)
    if underflow:  # the log-space rows against the closed form -ln sigma_1
        ln_p = torch.log_softmax(logits[underflow].double(), dim=1)[:, 1]
        torch.testing.assert_close(got[0][underflow].double(), -ln_p, rtol=1e-6, atol=0)
    bad = y.clone()
    bad[21] *= 1.01
    with pytest.raises(ValueError, match=r"rows of y must sum to 1 \(tolerance 0.0001\): row 21"):
        fused(logits, bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [10, 37, 3000])
@pytest.mark.parametrize("name", LOSSES)
def test_half_types_run_the_float32_kernels(name, k, dtype):
    """float16 and bfloat16 go through the float32 kernel a block of rows at a time (several
    blocks and threads here): the numbers of a float32 call on the converted inputs, rounded."""
    fused, _ = LOSSES[name]
    n = 20000 // k + 7
    logits, y = make_logits((n, k), dtype), make_simplex((n, k), dtype)
    for reduction in ("none", "sum"):
        got = run(fused, logits, y, reduction=reduction, sum_tol=math.inf)
        want = run(fused, logits.float(), y.float(), reduction=reduction, sum_tol=math.inf)
        for a, b in zip(got, want):
            assert a.dtype == dtype
            assert torch.equal(a, b.to(dtype))


def test_uniform_y_gives_zero_collision_gradient():
    logits = make_logits((4, 6), torch.float64).requires_grad_()
    entclust.collision_cross_entropy(logits, torch.full((4, 6), 1 / 6, dtype=torch.float64)).backward()
    assert logits.grad.abs().max() < 1e-15


def test_single_class():
    logits = make_logits((5, 1)).requires_grad_()
    y = torch.ones(5, 1)
    for fused, _ in LOSSES.values():
        loss = fused(logits, y)
        loss.backward()
        assert loss.item() == 0 and logits.grad.abs().max() == 0
        logits.grad = None


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", LOSSES)
def test_bad_input_errors(name):
    fused, _ = LOSSES[name]
    logits, y = make_logits((3, 4)), make_simplex((3, 4))
    cases = [
        ((logits, y[:, :3]), ValueError, r"y must have the shape of logits \(3, 4\), got \(3, 3\)"),
        ((logits, y.double()), TypeError, "y has dtype torch.float64 but logits has dtype torch.float32"),
        ((logits.long(), y), TypeError, "logits must be a floating-point tensor, got dtype torch.int64"),
        ((logits.numpy(), y), TypeError, "logits must be a torch.Tensor, got ndarray"),
        ((logits[:, :0], y[:, :0]), ValueError, "K >= 1"),
        ((torch.tensor(1.0), torch.tensor(1.0)), ValueError, "class dimension"),
    ]
    for args, exc, match in cases:
        with pytest.raises(exc, match=match):
            fused(*args)
    with pytest.raises(ValueError, match="reduction must be"):
        fused(logits, y, reduction="avg")
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        fused(logits, y, dim=2)


@pytest.mark.parametrize("name", LOSSES)
def test_bad_values_are_named(name):
    fused, _ = LOSSES[name]
    logits, y = make_logits((4, 3)), make_simplex((4, 3))
    nan_logits = logits.clone()
    nan_logits[2, 1] = math.nan
    with pytest.raises(ValueError, match="logits must not contain NaN or \\+inf: 1 such entries, first in row 2"):
        fused(nan_logits, y)
    dead = logits.clone()
    dead[1] = -math.inf
    with pytest.raises(ValueError, match="row 1 of logits is all -inf"):
        fused(dead, y)
    neg = y.clone()
    neg[3, 0] = -0.1
    with pytest.raises(ValueError, match="y must be non-negative: row 3"):
        fused(logits, neg)
    nan_y = y.clone()
    nan_y[0, 0] = math.nan
    with pytest.raises(ValueError, match="y must be finite"):
        fused(logits, nan_y)
    off = y * 1.01
    with pytest.raises(ValueError, match=r"rows of y must sum to 1 \(tolerance 0.0001\): row 0"):
        fused(logits, off)
    fused(logits, off, sum_tol=math.inf)  # the documented opt-out
    fused(logits, off, sum_tol=0.02)


def test_meta_device_is_refused_clearly():
    with pytest.raises(RuntimeError, match="kernels for cpu and cuda only"):
        entclust.reverse_cross_entropy(torch.zeros(2, 3, device="meta"), torch.zeros(2, 3, device="meta"))


def test_cuda_on_cpu_only_build_message(monkeypatch):
    from entclust.ops import build as _build

    monkeypatch.setattr(_build, "compiled_with_cuda", lambda: False)

    class FakeCuda:
        device = torch.device("cuda", 0)

    with pytest.raises(RuntimeError, match="CPU kernels only.*ENTCLUST_FORCE_CUDA=1"):
        _build.check_device("logits", FakeCuda())


def test_build_info_reports_working_cpu_kernels():
    info = entclust.build_info()
    assert info["cpu_kernels"] == "ok"
    assert "cpu" in info["kernels"]
    assert info["torch_compiled"] == torch.__version__


@pytest.mark.parametrize("name", ["strong_fairness", "weak_fairness", "prediction_fairness"])
def test_fairness_terms_take_a_batch_of_problems(name):
    """batched=True: (B, N, K) is B problems, each its own mean (issue 27: one owner per formula,
    the methods and SelfLabelingLoss call these instead of re-writing them)."""
    logits = 3 * torch.randn(4, 30, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = logits if name == "prediction_fairness" else logits.softmax(-1)
    prior = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.1], dtype=torch.float64)
    fn = getattr(entclust, name)
    got = fn(x, prior, batched=True)
    assert got.shape == (4,)
    torch.testing.assert_close(got, torch.stack([fn(x[b], prior) for b in range(4)]), rtol=1e-12, atol=1e-14)
    moved = fn(x.movedim(-1, 1), prior, dim=1, batched=True)  # the class dim anywhere, as unbatched
    torch.testing.assert_close(moved, got, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="batched=True needs"):
        fn(x[0], prior, batched=True)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0, math.inf])
def test_log_input_forms_equal_the_probability_forms(alpha):
    """weak_fairness and renyi_entropy from log-probabilities (one owner of each formula: the
    Rényi method calls them so) equal their probability forms, a masked class (-inf) included."""
    logits = 2 * torch.randn(3, 20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    logits[..., 4] = -math.inf
    log_p, p = torch.log_softmax(logits, -1), torch.softmax(logits, -1)
    prior = torch.tensor([0.3, 0.3, 0.2, 0.2, 0.0], dtype=torch.float64)
    torch.testing.assert_close(entclust.renyi_entropy(log_p, alpha, log_input=True), entclust.renyi_entropy(p, alpha))
    torch.testing.assert_close(entclust.weak_fairness(log_p, prior, batched=True, log_input=True),
                               entclust.weak_fairness(p, prior, batched=True))
    with pytest.raises(ValueError, match="p must"):
        entclust.weak_fairness(torch.zeros(4, 3), log_input=True)  # exp(0) rows sum to 3, not 1


def test_integer_class_targets_as_cross_entropy_takes_them():
    """Issue 28: the fused losses accept class indices like F.cross_entropy (with its label_smoothing)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 6, dtype=torch.float64, generator=g, requires_grad=True)
    target = torch.randint(0, 6, (30,), generator=g)
    torch.testing.assert_close(entclust.collision_cross_entropy(logits, target), F.cross_entropy(logits, target))
    smooth = entclust.collision_cross_entropy(logits, target, label_smoothing=0.1, reduction="none")
    rows = F.one_hot(target, 6).double() * 0.9 + 0.1 / 6
    torch.testing.assert_close(smooth, entclust.collision_cross_entropy(logits, rows, reduction="none"))
    rce = entclust.reverse_cross_entropy(logits, target, label_smoothing=0.1)
    torch.testing.assert_close(rce, entclust.reverse_cross_entropy(logits, rows))
    rce.backward()
    assert logits.grad is not None and bool(logits.grad.isfinite().all())
    # classes along dim 1 of (N, K, L), targets (N, L)
    images = torch.randn(4, 6, 5, dtype=torch.float64, generator=g)
    labels = torch.randint(0, 6, (4, 5), generator=g)
    torch.testing.assert_close(entclust.collision_cross_entropy(images, labels, dim=1), F.cross_entropy(images, labels))
    with pytest.raises(ValueError, match="hard label is \\+inf .* label_smoothing > 0"):
        entclust.reverse_cross_entropy(logits, target)
    with pytest.raises(ValueError, match="class indices must lie in 0 .. 5, got values in \\[0, 6\\]"):
        entclust.collision_cross_entropy(logits, torch.tensor([6] + [0] * 29))
    with pytest.raises(ValueError, match="must have the shape of logits without dim 1, \\(30,\\), got \\(29,\\)"):
        entclust.collision_cross_entropy(logits, target[:29])
    with pytest.raises(ValueError, match="label_smoothing smooths class-index targets"):
        entclust.collision_cross_entropy(logits, rows, label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing must be a number in \\[0, 1\\]"):
        entclust.collision_cross_entropy(logits, target, label_smoothing=2.0)
    for loss in (entclust.reverse_cross_entropy, entclust.collision_cross_entropy):  # neither rows nor indices
        with pytest.raises(ValueError, match="y is a bool tensor"):
            loss(logits, F.one_hot(target, 6).bool())
    for module in (entclust.nn.ReverseCrossEntropyLoss, entclust.nn.CollisionCrossEntropyLoss):
        with pytest.raises(ValueError, match=f"{module.__name__}: label_smoothing must be a number in \\[0, 1\\], "
                                             "got True"):
            module(label_smoothing=True)


@pytest.mark.parametrize("name", LOSSES)
def test_backward_fills_no_zero_gradients(name):
    """The backward reads the loss's gradient only: autograd must not materialise zero
    gradients for the op's other outputs (two of them N x K: 0.8-1 ms of a 2-3 ms forward +
    backward at 4096 x 1000 before this was turned off)."""
    fused, _ = LOSSES[name]
    logits = make_logits((64, 50)).requires_grad_()
    y = make_simplex((64, 50)).requires_grad_()
    loss = fused(logits, y)
    upstream = torch.ones(())  # made here: backward() would fill its own in the profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss.backward(upstream)
    assert not [e.name for e in prof.events() if e.name in ("aten::fill_", "aten::zeros", "aten::zero_")]
