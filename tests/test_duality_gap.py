"""The Lagrangian duality gap of the reverse-CE problem (entclust.duality_gap): equal to the plain
dual of entclust.testing.reference, a valid bound on objective(y) - min, never above the
Frank-Wolfe gap, ~0 at the optimum, and tight where the Frank-Wolfe gap is not (confident sigma).
The kernels of both certificates run per CPU path (float64 vectors and logarithm): each path is
checked against the reference, at the ends of the double range, and for its logarithm."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entclust
from entclust.solvers import certificate
from entclust.testing import reference as R

from .helpers import every_cpu_capability  # noqa: F401  (fixture)


def problem(n, k, scale, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(n, k, generator=g, dtype=torch.float64), -1).to(dtype)


def bracket(sigma, lam):
    """``(low, high)`` around the minimum: the objective of a long SQUAREM solve, and that minus the
    plain reference's duality gap (confident sigma keeps even SQUAREM from a tight gap in seconds)."""
    res = entclust.em_rce(sigma, None, lam, accel="squarem", tol_gap=1e-13, max_iter=5000)
    high = float(res.objective)
    return high - float(R.rce_duality_gap(sigma, res.y, None, lam)), high


@pytest.mark.parametrize("scale", [0.5, 3.0, 10.0])
@pytest.mark.parametrize("lam", [0.0, 1.0, 100.0])
def test_equals_the_plain_dual(scale, lam):
    sigma = problem(120, 9, scale, 1)
    prior = torch.tensor([0.2, 0.0, 0.1, 0.1, 0.15, 0.05, 0.2, 0.0, 0.2], dtype=torch.float64)
    for it in (1, 10, 200):
        for u in (None, prior):
            y = entclust.em_rce(sigma, u, lam, max_iter=it, tol=0.0).y
            got = float(entclust.duality_gap(sigma, y, u, lam))
            want = float(R.rce_duality_gap(sigma, y, u, lam))
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_batched_and_over_blocks_of_rows(monkeypatch):
    sigma = torch.stack([problem(300, 12, s, i) for i, s in enumerate((1.0, 4.0, 10.0))])
    y = entclust.em_rce(sigma, lam=50.0, max_iter=20, tol=0.0).y
    whole = entclust.duality_gap(sigma, y, lam=50.0)
    assert whole.shape == (3,)
    for b in range(3):
        assert float(whole[b]) == pytest.approx(float(entclust.duality_gap(sigma[b], y[b], lam=50.0)), rel=1e-12)
    monkeypatch.setattr(certificate, "block_rows", lambda device, entries: 7)  # 43 blocks of 7 rows
    torch.testing.assert_close(entclust.duality_gap(sigma, y, lam=50.0), whole, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("scale", [1.0, 3.0, 10.0])
def test_bounds_the_distance_to_the_optimum_and_never_exceeds_the_fw_gap(scale):
    lam = 100.0
    sigma = problem(200, 10, scale, 3)
    _, high = bracket(sigma, lam)
    for it in (1, 3, 10, 100, 1000):
        y = entclust.em_rce(sigma, lam=lam, max_iter=it, tol=0.0).y
        gap = float(entclust.duality_gap(sigma, y, lam=lam))
        assert float(entclust.objective(sigma, y, lam=lam)) - high <= gap + 1e-11
        assert gap <= float(entclust.fw_gap(sigma, y, lam=lam)) + 1e-11


def test_zero_at_the_optimum_and_in_closed_form_at_lam_zero():
    sigma = problem(150, 8, 2.0, 4)
    exact = entclust.em_rce(sigma, lam=100.0, accel="squarem", tol=1e-15, max_iter=20_000)  # a fixed point
    assert exact.fw_gap < 1e-11 and float(entclust.duality_gap(sigma, exact.y)) < 1e-11
    # lam = 0: the optimum is y = sigma, the gap is exactly the mean KL(sigma_i || y_i)
    y = problem(150, 8, 2.0, 5)
    kl = (sigma * (sigma.log() - y.log())).sum(-1).mean()
    assert float(entclust.duality_gap(sigma, y, lam=0.0)) == pytest.approx(float(kl), rel=1e-12)


def test_tight_where_the_fw_gap_is_not():
    """Confident predictions (logits 10 N(0, 1)): after 100 EM iterations the Frank-Wolfe gap
    overstates the distance to the optimum by an order of magnitude or more; the duality gap by
    a small factor."""
    lam = 100.0
    sigma = problem(250, 10, 10.0, 1)
    low, high = bracket(sigma, lam)
    y = entclust.em_rce(sigma, lam=lam, max_iter=100, tol=0.0).y
    value = float(entclust.objective(sigma, y, lam=lam))
    dual, fw = float(entclust.duality_gap(sigma, y, lam=lam)), float(entclust.fw_gap(sigma, y, lam=lam))
    assert value - high <= dual <= 20 * (value - low)
    assert fw >= 5 * dual


def test_float32_labels_are_certified_below_the_fw_gaps_floor():
    """EM in float32 stalls with a Frank-Wolfe gap near 5e-6 (the rounding of y at the steep
    -ln y); the duality gap of the same labels is below 1e-6."""
    sigma = problem(250, 20, 1.0, 0, torch.float32)
    y = entclust.em_rce(sigma, lam=100.0, max_iter=2000, tol=0.0).y
    assert float(entclust.fw_gap(sigma, y)) > 1e-6
    assert float(entclust.duality_gap(sigma, y)) < 1e-6


def test_an_empty_class_is_infinitely_far():
    sigma = problem(50, 4, 1.0, 6)
    y = sigma.clone()
    y[:, 0] = 0
    y = y / y.sum(-1, keepdim=True)
    assert math.isinf(float(entclust.objective(sigma, y)))
    assert math.isinf(float(entclust.duality_gap(sigma, y)))


def test_bad_input_is_refused():
    sigma = problem(20, 3, 1.0, 7)
    with pytest.raises(ValueError, match="problem must be 'rce' or 'cce'"):
        entclust.duality_gap(sigma, sigma, problem="mi")
    with pytest.raises(ValueError, match="y"):
        entclust.duality_gap(sigma, sigma[:5])
    bad = sigma.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        entclust.duality_gap(sigma, bad)
    before = sigma.clone()
    entclust.duality_gap(sigma, sigma)
    assert torch.equal(sigma, before)  # inputs are not modified


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 12), st.floats(0.1, 12.0), st.floats(0.0, 300.0), st.integers(0, 2**31 - 1))
def test_weak_duality(n, k, scale, lam, seed):
    """For any feasible y and y2: objective(y2) >= objective(y) - duality_gap(y) (the dual value at
    y's multipliers is a lower bound on the objective everywhere), and the gap is >= 0."""
    sigma, y, y2 = (problem(n, k, s, seed + i) for i, s in enumerate((scale, 2.0, 1.0)))
    gap = float(entclust.duality_gap(sigma, y, lam=lam))
    assert gap >= 0
    low = float(entclust.objective(sigma, y, lam=lam)) - gap
    assert float(entclust.objective(sigma, y2, lam=lam)) >= low - 1e-9 * (1 + abs(low))
    assert float(entclust.objective(sigma, sigma, lam=lam)) >= low - 1e-9 * (1 + abs(low))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_kernel_equals_the_blocked_version_and_opcheck(every_cpu_capability, dtype):
    sigma = torch.stack([problem(90, 7, s, i, dtype) for i, s in enumerate((0.5, 3.0, 12.0))])
    prior = torch.tensor([0.3, 0.0, 0.1, 0.1, 0.2, 0.1, 0.2], dtype=torch.float64)
    y = entclust.em_rce(sigma, prior, 30.0, max_iter=15, tol=0.0).y
    fused = entclust.ops.duality_gap_kernel(sigma, y, prior, 30.0)
    torch.testing.assert_close(fused, certificate._duality_gap_blocks(sigma, y, prior, 30.0), rtol=1e-9, atol=1e-12)
    torch.library.opcheck(torch.ops.entclust.duality_gap, (sigma, y, prior, 30.0))


def test_the_row_roots_with_fewer_convergence_tests(monkeypatch):
    """Off the CPU the root iteration tests convergence after every 4th Newton step (each test is a
    host sync); the extra steps change nothing beyond rounding."""
    sigma = torch.stack([problem(200, 30, s, i) for i, s in enumerate((0.5, 3.0, 12.0))])
    prior = torch.full((30,), 1 / 30, dtype=torch.float64)
    roots = certificate._row_roots
    for it in (1, 5, 50):
        y = entclust.em_rce(sigma, prior, 20.0, max_iter=it, tol=0.0).y
        want = certificate._duality_gap_blocks(sigma, y, prior, 20.0)
        monkeypatch.setattr(certificate, "_row_roots", lambda *a, **kw: roots(*a, **kw, every=4))
        torch.testing.assert_close(certificate._duality_gap_blocks(sigma, y, prior, 20.0), want, rtol=1e-12, atol=1e-15)
        monkeypatch.undo()


def test_the_kernel_keeps_its_precision_at_the_ends_of_the_double_range(every_cpu_capability):
    """The kernel takes one logarithm per entry, ln(s / ((tau + d) y)), and two where that quotient
    would leave the normal range: denormal y, sigma near the smallest double, a huge lam."""
    sigma = problem(60, 5, 1.0, 11)
    sigma[:20, 0] = 1e-300
    sigma[20:40, 1] = 5e-324  # the smallest denormal
    sigma = sigma / sigma.sum(-1, keepdim=True)
    y = problem(60, 5, 1.0, 12)
    y[:10, 2] = 1e-318  # denormal where sigma > 0
    y[40:50, 3] = 1e-306
    y = y / y.sum(-1, keepdim=True)
    prior = torch.full((5,), 0.2, dtype=torch.float64)
    for lam in (0.0, 1.0, 1e12):
        fused = entclust.ops.duality_gap_kernel(sigma[None], y[None], prior, lam)
        blocked = certificate._duality_gap_blocks(sigma[None], y[None], prior, lam)
        assert bool(torch.isfinite(fused).all())
        torch.testing.assert_close(fused, blocked, rtol=1e-12, atol=0.0)


def test_the_sharded_solver_reports_the_same_duality_gap():
    from entclust.solvers.sharded import em_rce_sharded

    sigma = problem(70, 6, 3.0, 8)
    fused = entclust.em_rce(sigma, lam=40.0, tol_gap=1e-7, max_iter=100_000)
    sharded = em_rce_sharded(sigma, lam=40.0, tol_gap=1e-7, max_iter=100_000)
    assert sharded.iterations == fused.iterations and "duality gap" in sharded.criterion
    assert sharded.duality_gap == pytest.approx(fused.duality_gap, rel=1e-6, abs=1e-13)  # sums in another order


def test_lam_zero_with_an_empty_class_is_finite():
    """lam = 0: no fairness term, w = 0; a class that neither sigma nor y uses is no problem."""
    sigma = problem(40, 4, 1.0, 9)
    sigma[:, 3] = 0
    sigma = sigma / sigma.sum(-1, keepdim=True)
    y = problem(40, 4, 1.0, 10)
    y[:, 3] = 0
    y = y / y.sum(-1, keepdim=True)
    kl = torch.where(sigma > 0, sigma * (sigma.log() - y.log()), 0.0).sum(-1).mean()
    for got in (entclust.duality_gap(sigma, y, lam=0.0),
                certificate._duality_gap_blocks(sigma[None], y[None], torch.full((4,), 0.25, dtype=torch.float64), 0.0)):
        assert float(got.reshape(-1)[0]) == pytest.approx(float(kl), rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 9, 10, 24, 32, 33, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_certificates_equal_the_reference_on_every_cpu_path(every_cpu_capability, k, dtype):
    """Rows padded to whole vectors of every width (K = 1, 2, 9, 10, 24, 32, 33, 1000), zeros in sigma and in y
    (where sigma is 0 too), both problems, with and without fairness. The duality gap runs a row
    per lane up to K = 24 (AVX2) or 32 (AVX-512): 43 rows leave lanes of the last group empty."""
    from entclust.solvers.certificate import certify

    sigma = torch.stack([problem(43, k, s, i, dtype) for i, s in enumerate((0.5, 3.0, 12.0))])
    y = torch.stack([problem(43, k, 2.0, 10 + i, dtype) for i in range(3)])
    if k > 1:
        sigma[0, :5, 0] = 0
        y[0, :5, 0] = 0
        sigma[0], y[0] = sigma[0] / sigma[0].sum(-1, keepdim=True), y[0] / y[0].sum(-1, keepdim=True)
    u = torch.full((k,), 1.0 / k, dtype=dtype).double()
    s64, y64 = sigma.double(), y.double()
    for lam in (0.0, 5.0):
        for name, objective, gradient in (("rce", R.rce_objective, R.rce_gradient),
                                          ("cce", R.cce_objective, R.cce_gradient)):
            got_objective, got_gap = certify(name, sigma, y, u, lam)
            for b in range(3):
                assert float(got_objective[b]) == pytest.approx(float(objective(s64[b], y64[b], u, lam)), rel=1e-12)
                want = float(R.fw_gap(gradient(s64[b], y64[b], u, lam), y64[b]))
                assert float(got_gap[b]) == pytest.approx(want, rel=1e-10, abs=1e-12)
        # (the row form of the dual assumes rows that sum to 1: float32 rows do within K 2^-24)
        dual = entclust.ops.duality_gap_kernel(sigma, y, u, lam)
        for b in range(3):
            want = float(R.rce_duality_gap(s64[b], y64[b], u, lam))
            assert float(dual[b]) == pytest.approx(want, rel=1e-9 if dtype == torch.float64 else 1e-6, abs=1e-12)


def test_the_certificates_logarithm_is_within_one_ulp_on_every_cpu_path(every_cpu_capability):
    """One row of one class per problem, sigma = 1, lam = 0: the objective is -ln y exactly, so the
    kernels' vectorised float64 logarithm is read off, against the C library's, over the whole
    double range (denormals included), near 1, at powers of 2 and at the special values."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([10 ** (torch.rand(20000, generator=g, dtype=torch.float64) * 631 - 323),
                   1 + (torch.rand(5000, generator=g, dtype=torch.float64) - 0.5) * 0.8,
                   1 + (torch.rand(2000, generator=g, dtype=torch.float64) - 0.5) * 2e-8,
                   2.0 ** torch.arange(-1074, 1024, dtype=torch.float64),
                   torch.tensor([5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 2 ** -0.5, 2 ** 0.5, 1.0],
                                dtype=torch.float64)])
    ones = torch.ones(x.numel(), 1, 1, dtype=torch.float64)
    objective, _ = entclust.ops.certificate_kernel(ones, x.view(-1, 1, 1), torch.ones(1, dtype=torch.float64), 0.0, 0)
    want = torch.tensor([math.log(v) for v in x.tolist()], dtype=torch.float64)
    ulp = torch.tensor([math.ulp(v) for v in want.tolist()], dtype=torch.float64)
    assert float(((-objective - want).abs() / ulp).max()) <= 1.0
    special = torch.tensor([0.0, math.inf, -1.0, math.nan], dtype=torch.float64)
    objective, _ = entclust.ops.certificate_kernel(ones[:4], special.view(-1, 1, 1), torch.ones(1, dtype=torch.float64),
                                                   0.0, 0)
    assert objective[0] == math.inf and objective[1] == -math.inf
    assert math.isnan(objective[2]) and math.isnan(objective[3])
