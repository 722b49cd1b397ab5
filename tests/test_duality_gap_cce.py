"""The Lagrangian duality gap of the collision-CE problem (entclust.duality_gap(problem="cce"),
docs/maths.md "A duality gap for the CCE problem"): equal to the plain dual of entclust.testing.reference
(which minimises each row over every segment between two vertices, with no minimax argument), a
valid bound on objective(y) - min, never above the Frank-Wolfe gap (it is the Frank-Wolfe gap at
x = 1 / p, the start of the envelope walk), and far tighter near the optimum; the solvers stop on it."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entclust
from entclust.solvers import certificate
from entclust.testing import reference as R


def problem(n, k, scale, seed, dtype=torch.float64, batch=()):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(*batch, n, k, generator=g, dtype=torch.float64), -1).to(dtype)


def gap(sigma, y, prior=None, lam=100.0):
    return float(entclust.duality_gap(sigma, y, prior, lam, problem="cce"))


@pytest.mark.parametrize("scale", [0.5, 3.0, 10.0])
@pytest.mark.parametrize("lam", [0.0, 1.0, 100.0])
def test_equals_the_plain_dual(scale, lam):
    sigma = problem(120, 9, scale, 1)
    prior = torch.tensor([0.2, 0.0, 0.1, 0.1, 0.15, 0.05, 0.2, 0.0, 0.2], dtype=torch.float64)
    for it in (0, 1, 10, 200):
        for u in (None, prior):
            y = sigma if it == 0 else entclust.em_cce(sigma, u, lam, max_iter=it, tol=0.0).y
            want = float(R.cce_duality_gap(sigma, y, u, lam))
            assert gap(sigma, y, u, lam) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_kernel_equals_the_blocked_version_and_opcheck(dtype, monkeypatch):
    sigma = torch.cat([problem(90, 7, s, i, dtype, (1,)) for i, s in enumerate((0.5, 3.0, 12.0))])
    prior = torch.tensor([0.3, 0.0, 0.1, 0.1, 0.2, 0.1, 0.2], dtype=torch.float64)
    y = entclust.em_cce(sigma, prior, 30.0, max_iter=15, tol=0.0).y
    fused = entclust.ops.duality_gap_kernel(sigma, y, prior, 30.0, 1)
    assert fused.shape == (3,) and fused.dtype == torch.float64
    blocks = certificate._duality_gap_blocks(sigma, y, prior, 30.0, "cce")
    torch.testing.assert_close(fused, blocks, rtol=1e-9, atol=1e-12)
    monkeypatch.setattr(certificate, "block_rows", lambda device, entries: 7)  # 13 blocks of 7 rows
    torch.testing.assert_close(certificate._duality_gap_blocks(sigma, y, prior, 30.0, "cce"), blocks,
                               rtol=1e-10, atol=1e-13)
    for b in range(3):  # the public function takes the prior in sigma's dtype
        assert float(fused[b]) == pytest.approx(gap(sigma[b], y[b], prior, 30.0), rel=1e-12 if dtype == torch.float64
                                                else 1e-6)
    torch.library.opcheck(torch.ops.entclust.duality_gap, (sigma, y, prior, 30.0, 1))


def edge_case(name):
    sigma = problem(40, 6, 2.0, 0)
    if name == "one class":
        sigma = torch.ones(5, 1, dtype=torch.float64)
    elif name == "tied columns":
        sigma[:, 1] = sigma[:, 0]
    elif name == "uniform sigma":
        sigma = torch.full_like(sigma, 1 / 6)
    elif name == "zeros in sigma":
        sigma[:, :2] = 0
    elif name == "one-hot sigma":
        sigma = torch.nn.functional.one_hot(torch.arange(40) % 6, 6).double()
    return sigma / sigma.sum(-1, keepdim=True)


@pytest.mark.parametrize("name", ["one class", "tied columns", "uniform sigma", "zeros in sigma", "one-hot sigma"])
@pytest.mark.parametrize("lam", [1e-12, 10.0, 1e8])
def test_edge_cases_equal_the_reference(name, lam):
    """Ties between lines (equal columns, uniform sigma), lines of slope 0, one class, and lam from
    1e-12 to 1e8: the kernel, the blocked walk and the plain reference agree."""
    sigma = edge_case(name)
    k = sigma.shape[-1]
    for y in (sigma, entclust.em_cce(sigma, lam=lam, max_iter=50, tol=0.0).y, torch.full_like(sigma, 1 / k)):
        got = gap(sigma, y, lam=lam)
        blocks = float(certificate._duality_gap_blocks(sigma[None], y[None], sigma.new_full((k,), 1 / k), lam, "cce"))
        if math.isinf(float(entclust.objective(sigma, y, lam=lam, problem="cce"))):  # an empty class, or p = 0
            assert math.isinf(got) and math.isinf(blocks)
            continue
        # float64 rounding of the multipliers w ~ lam (1e9 at lam = 1e8): absolute errors ~1e-16 lam
        rounding = 1e-12 + 1e-15 * lam
        want = float(R.cce_duality_gap(sigma, y, None, lam))
        assert got == pytest.approx(want, rel=1e-9, abs=rounding) and got >= 0
        assert blocks == pytest.approx(got, rel=1e-9, abs=rounding)
        assert got <= float(entclust.fw_gap(sigma, y, lam=lam, problem="cce")) * (1 + 1e-9) + rounding


def test_the_walk_is_what_tightens_it(monkeypatch):
    """With no step along the envelope (x = 1 / p) each row's gap is its Frank-Wolfe gap: the
    walk is what makes the certificate tighter."""
    sigma = problem(200, 10, 3.0, 2)
    y = entclust.em_cce(sigma, lam=100.0, max_iter=3000, tol=0.0).y
    fw = float(entclust.fw_gap(sigma, y, problem="cce"))
    walked = float(certificate._duality_gap_blocks(sigma[None], y[None], sigma.new_full((10,), 0.1), 100.0, "cce"))
    monkeypatch.setattr(certificate, "ENVELOPE_STEPS", 0)
    still = float(certificate._duality_gap_blocks(sigma[None], y[None], sigma.new_full((10,), 0.1), 100.0, "cce"))
    assert still == pytest.approx(fw, rel=1e-9)
    assert walked < 0.5 * fw


def test_the_walk_finds_each_rows_minimum():
    """``envelope_minimum`` against every candidate of the convex ``max_k (x s_k - d_k) - ln x``:
    the stationary points ``1 / s_k`` of its lines and the crossings of two lines."""
    g = torch.Generator().manual_seed(3)
    s = torch.softmax(4 * torch.randn(300, 6, generator=g, dtype=torch.float64), -1)
    d = 5 * torch.rand(300, 6, generator=g, dtype=torch.float64)
    d = d - d.amin(-1, keepdim=True)
    for start in (torch.full((300, 1), 0.01, dtype=torch.float64), torch.full((300, 1), 100.0, dtype=torch.float64)):
        x = certificate.envelope_minimum(s, d, start)

        def phi(t):
            return (t.unsqueeze(-1) * s.unsqueeze(-2) - d.unsqueeze(-2)).amax(-1) - torch.log(t)

        cross = (d[:, None, :] - d[:, :, None]) / (s[:, None, :] - s[:, :, None])
        candidates = torch.cat([1 / s, cross.flatten(1)], 1)
        candidates = torch.where((candidates > 0) & torch.isfinite(candidates), candidates, 1.0)
        best = phi(candidates).amin(-1)
        got = phi(x)[:, 0]
        assert torch.all(got <= best + 1e-12 * (1 + best.abs()))


@pytest.mark.parametrize("scale", [1.0, 3.0, 10.0])
def test_bounds_the_distance_to_the_optimum_and_never_exceeds_the_fw_gap(scale):
    lam = 100.0
    sigma = problem(150, 10, scale, 3)
    best = entclust.newton_cce(sigma, lam=lam, tol=1e-11)
    assert bool(best.converged)
    for it in (1, 3, 10, 100, 1000):
        y = entclust.em_cce(sigma, lam=lam, max_iter=it, tol=0.0).y
        value = float(entclust.objective(sigma, y, lam=lam, problem="cce"))
        dual = gap(sigma, y, lam=lam)
        assert value - best.objective <= dual + 1e-11
        assert dual <= float(entclust.fw_gap(sigma, y, lam=lam, problem="cce")) + 1e-11


def test_tight_where_the_fw_gap_is_not():
    """Near the optimum the Frank-Wolfe gap linearises -ln(sigma . y): EM after 2000 iterations on
    1000 x 20 (lam = 1) and Newton's answer to one point with an interior optimum (n = 1, K = 2)."""
    sigma = problem(1000, 20, 3.0, 4)
    best = entclust.newton_cce(sigma, lam=1.0, tol=1e-12)
    y = entclust.em_cce(sigma, lam=1.0, max_iter=2000, tol=0.0).y
    value = float(entclust.objective(sigma, y, lam=1.0, problem="cce"))
    dual, fw = gap(sigma, y, lam=1.0), float(entclust.fw_gap(sigma, y, lam=1.0, problem="cce"))
    assert value - best.objective <= dual <= 0.2 * fw
    one = problem(1, 2, 4.0, 0)
    res = entclust.newton_cce(one, lam=1.0)
    assert res.duality_gap <= 1e-9 < 1e-6 < res.fw_gap  # the default tolerance is met on the dual only


def test_closed_form_at_lam_zero_and_infinite_where_the_objective_is():
    sigma = problem(40, 5, 2.0, 5)
    y = problem(40, 5, 1.0, 6)
    # lam = 0: the rows are independent, each with the one-hot optimum at argmax sigma
    want = torch.log(sigma.amax(-1) / (sigma * y).sum(-1)).mean()
    assert gap(sigma, y, lam=0.0) == pytest.approx(float(want), rel=1e-12)
    empty = y.clone()
    empty[:, 0] = 0
    empty = empty / empty.sum(-1, keepdim=True)
    assert math.isinf(gap(sigma, empty))  # a class with u_k > 0 and no mass
    assert math.isfinite(gap(sigma, empty, torch.tensor([0.0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)))
    blind = sigma.clone()
    blind[0] = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64)
    other = y.clone()
    other[0] = torch.tensor([0, 0.5, 0.5, 0, 0], dtype=torch.float64)  # sigma_0 . y_0 = 0
    assert math.isinf(float(entclust.objective(blind, other, problem="cce"))) and math.isinf(gap(blind, other))
    for device_blocks in (True, False):
        fn = (lambda s, t: certificate._duality_gap_blocks(s[None], t[None], s.new_full((5,), 0.2), 100.0, "cce")) \
            if device_blocks else (lambda s, t: entclust.duality_gap(s[None], t[None], problem="cce"))
        assert math.isinf(float(fn(blind, other)[0]))


def test_bad_input_is_refused_and_inputs_untouched():
    sigma = problem(20, 3, 1.0, 7)
    with pytest.raises(ValueError, match="problem must be 'rce' or 'cce'"):
        entclust.duality_gap(sigma, sigma, problem="collision")
    with pytest.raises(ValueError, match="y"):
        entclust.duality_gap(sigma, sigma[:5], problem="cce")
    with pytest.raises(RuntimeError, match="problem must be 0"):
        entclust.ops.duality_gap_kernel(sigma[None], sigma[None], sigma.new_full((3,), 1 / 3), 1.0, 2)
    before = sigma.clone()
    entclust.duality_gap(sigma, sigma, problem="cce")
    assert torch.equal(sigma, before)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 12), st.floats(0.1, 12.0), st.floats(0.0, 300.0, allow_subnormal=False),
       st.integers(0, 2**31 - 1))
def test_weak_duality(n, k, scale, lam, seed):
    """For any feasible y and y2: objective(y2) >= objective(y) - duality_gap(y), the gap is >= 0,
    at most the Frank-Wolfe gap, and equal to the plain reference (whose ``lam u (ln(w / lam) + 1)``
    is NaN at a subnormal lam, hence none is drawn)."""
    sigma, y, y2 = (problem(n, k, s, seed + i) for i, s in enumerate((scale, 2.0, 1.0)))
    dual = gap(sigma, y, lam=lam)
    assert dual >= 0
    assert dual <= float(entclust.fw_gap(sigma, y, lam=lam, problem="cce")) * (1 + 1e-9) + 1e-12
    assert dual == pytest.approx(float(R.cce_duality_gap(sigma, y, None, lam)), rel=1e-7, abs=1e-9)
    low = float(entclust.objective(sigma, y, lam=lam, problem="cce")) - dual
    for other in (y2, sigma):
        assert float(entclust.objective(sigma, other, lam=lam, problem="cce")) >= low - 1e-9 * (1 + abs(low))


def test_the_solvers_stop_on_it():
    """``tol_gap`` on collision CE stops on the duality gap: EM certifies 1e-6 where its Frank-Wolfe
    gap is still well above, in fewer iterations than the Frank-Wolfe gap would need."""
    sigma = problem(300, 20, 3.0, 8)
    res = entclust.em_cce(sigma, lam=1.0, tol_gap=1e-6, max_iter=100_000, check_every=10)
    assert res.converged and res.criterion == "relative duality gap <= 1e-06"
    assert res.gap == res.duality_gap and res.relative_gap <= 1e-6 < res.fw_gap / (1 + abs(res.objective))
    longer = entclust.em_cce(sigma, lam=1.0, max_iter=res.iterations, tol=0.0)
    assert longer.objective == pytest.approx(res.objective, rel=1e-12)
    batched = entclust.em_cce(sigma[None].expand(2, -1, -1).contiguous(), lam=1.0, tol_gap=1e-6, max_iter=100_000,
                              check_every=10)
    assert batched.converged.all() and torch.equal(batched.iterations, torch.full((2,), res.iterations))
