"""Fused pseudo-label solvers against entclust.reference, properties and input errors."""
import math
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entclust
from entclust.solvers.newton import newton_direction
from entclust.testing import reference as R

from .helpers import every_cpu_capability  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("every_cpu_capability")


def problem(shape, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(shape, generator=g, dtype=torch.float64), -1).to(dtype)


# (B, N, K): K = 1, single rows, batches, and one problem large enough (N K >= 2^16) for the
# row-parallel path
SHAPES = [(1, 1, 1), (2, 5, 1), (1, 1, 6), (3, 30, 4), (1, 250, 200), (1, 400, 200), (5, 40, 7)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lam", [0.0, 1.0, 100.0])
def test_em_rce_matches_reference(shape, lam):
    sigma = problem(shape)
    got = entclust.em_rce(sigma, lam=lam, max_iter=60, tol=1e-12)
    want = R.em_rce(sigma, lam=lam, max_iter=60, tol=1e-12)
    torch.testing.assert_close(got.y, want.y, rtol=0, atol=1e-12)
    assert torch.equal(got.iterations, want.iterations) and torch.equal(got.converged, want.converged)
    torch.testing.assert_close(got.objective, want.objective)
    torch.testing.assert_close(got.fw_gap, want.fw_gap, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_em_rce_kernel_at_every_short_row_length(dtype):
    """Short rows run on half or quarter vectors where that leaves less scalar work (K = 10 in
    float32 on AVX-512: quarter vectors); every K up to 40 crosses each width's boundaries on
    every path, against the reference."""
    for k in range(1, 41):
        sigma = problem((12, k), seed=k)
        want = R.em_rce(sigma, lam=100.0, max_iter=20, tol=0)
        got = entclust.em_rce(sigma.to(dtype), lam=100.0, max_iter=20, tol=0)
        torch.testing.assert_close(got.y.double(), want.y, rtol=0, atol=1e-12 if dtype == torch.float64 else 2e-6)


def test_em_rce_float32_and_unbatched_and_y0_and_prior():
    sigma = problem((30, 5))
    prior = torch.tensor([0.1, 0.2, 0.0, 0.3, 0.4], dtype=torch.float64)
    y0 = problem((30, 5), seed=9)
    want = R.em_rce(sigma, prior, lam=5.0, max_iter=40, tol=0, y0=y0)
    got = entclust.em_rce(sigma, prior, lam=5.0, max_iter=40, tol=0, y0=y0)
    assert got.y.shape == (30, 5) and type(got.iterations) is int and type(got.converged) is bool
    assert type(got.objective) is float and type(got.fw_gap) is float
    torch.testing.assert_close(got.y, want.y, rtol=0, atol=1e-12)
    got32 = entclust.em_rce(sigma.float(), prior, lam=5.0, max_iter=40, tol=0, y0=y0.float())
    torch.testing.assert_close(got32.y.double(), want.y, rtol=0, atol=2e-6)
    assert type(got32.fw_gap) is float  # the certificate is computed in float64


def test_em_rce_limits_and_convergence():
    sigma = problem((40, 4))
    torch.testing.assert_close(entclust.em_rce(sigma, lam=0.0).y, sigma)
    res = entclust.em_rce(sigma, lam=1.0, max_iter=5000)
    assert bool(res.converged) and res.fw_gap < 1e-9 and res.criterion == "max|dy| <= 1e-10"


def test_em_rce_batched_equals_single():
    sigma = problem((4, 25, 6))
    batched = entclust.em_rce(sigma, lam=10.0, max_iter=30, tol=0)
    for b in range(4):
        torch.testing.assert_close(batched.y[b], entclust.em_rce(sigma[b], lam=10.0, max_iter=30, tol=0).y)


@pytest.mark.parametrize("solver", ["em_rce", "em_cce", "pgd_cce"])
def test_few_rows_of_many_classes_split_into_chunks_give_the_same_bits_on_any_threads(solver):
    # 9 x 30 000 entries: two chunks of rows (chunks.h), run on one thread, on three, and as one
    # of a batch of problems (solved side by side, each on one thread); the column sums are
    # added chunk by chunk in order every time. (sigma near uniform: PGD keeps every class.)
    sigma = problem((3, 9, 30000), scale=0.1, seed=4)
    kwargs = dict(lam=50.0, max_iter=8, tol=0) if solver != "pgd_cce" else dict(lam=50.0, max_iter=8, tol=0, step=1e-6)
    run = getattr(entclust, solver)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(sigma[0], **kwargs)
        torch.set_num_threads(3)
        three = run(sigma[0], **kwargs)
        batch = run(sigma, **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert bool(torch.isfinite(one.y).all())
    assert torch.equal(one.y, three.y) and torch.equal(one.y, batch.y[0])
    assert one.fw_gap == three.fw_gap == float(batch.fw_gap[0])
    if solver == "em_rce":  # the duality gap, per problem side by side in the batch
        assert one.duality_gap == three.duality_gap == float(batch.duality_gap[0])
    want = getattr(R, solver)(sigma[0], lam=50.0, max_iter=8, tol=0, **({"step": 1e-6} if solver == "pgd_cce" else {}))
    torch.testing.assert_close(one.y, want.y, rtol=0, atol=1e-10)


def test_em_rce_does_not_modify_inputs_and_opcheck():
    sigma = problem((2, 10, 3))
    y0 = problem((2, 10, 3), seed=5)
    before = (sigma.clone(), y0.clone())
    entclust.em_rce(sigma, y0=y0, max_iter=5)
    assert torch.equal(sigma, before[0]) and torch.equal(y0, before[1])
    prior = torch.full((3,), 1 / 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.entclust.em_rce, (sigma, prior, 10.0, 1e-9, 20, None))
    torch.library.opcheck(torch.ops.entclust.em_rce, (sigma, prior, 10.0, 1e-9, 20, y0))


@pytest.mark.parametrize("solver", ["em_rce", "em_cce", "newton_rce", "dual_newton_rce", "newton_cce", "pgd_cce", "sinkhorn"])
def test_a_sigma_that_requires_grad_is_solved_as_its_value(solver):
    # softmax(model(x)) passed without .detach(): no warning (em_rce used to warn "Converting a
    # tensor with requires_grad=True to a scalar"), no graph in the result, the same numbers
    sigma = problem((30, 5))
    kw = {} if solver == "sinkhorn" else {"lam": 10.0}
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        want = getattr(entclust, solver)(sigma, **kw)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = getattr(entclust, solver)(sigma.clone().requires_grad_(), **kw)
    assert [str(w.message) for w in seen] == [str(w.message) for w in before]
    assert not got.y.requires_grad and torch.equal(got.y, want.y) and got.objective == want.objective
    if solver == "em_rce":
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y0 = want.y.clone().requires_grad_()
            assert not entclust.em_rce(sigma.requires_grad_(), lam=10.0, y0=y0, max_iter=2).y.requires_grad
            entclust.solvers.compare(sigma, lam=10.0, solvers=["em_rce"], target_gap=1e-4, warmup=False)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 12), st.floats(0.0, 300.0), st.integers(0, 2**31 - 1))
def test_em_rce_properties(n, k, lam, seed):
    sigma = problem((n, k), seed=seed)
    res = entclust.em_rce(sigma, lam=lam, max_iter=50)
    assert torch.allclose(res.y.sum(-1), torch.ones(n, dtype=sigma.dtype)) and torch.all(res.y >= 0)
    assert res.objective <= R.rce_objective(sigma, sigma, None, lam) + 1e-10  # never worse than the start
    assert res.fw_gap >= -1e-9
    if lam > 0:  # the gap bounds the distance to the optimum found by dual Newton
        assert res.fw_gap >= res.objective - entclust.dual_newton_rce(sigma, lam=lam).objective - 1e-9


def test_em_rce_bad_input():
    sigma = problem((6, 3))
    with pytest.raises(ValueError, match="rows of sigma must sum to 1"):
        entclust.em_rce(sigma * 1.1)
    with pytest.raises(ValueError, match="sigma must be non-negative"):
        entclust.em_rce(sigma - 0.5)
    bad = sigma.clone()
    bad[2, 1] = math.nan
    with pytest.raises(ValueError, match="sigma must be finite"):
        entclust.em_rce(bad)
    with pytest.raises(ValueError, match="rows of prior must sum to 1"):
        entclust.em_rce(sigma, prior=torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"prior must have shape \(3,\)"):
        entclust.em_rce(sigma, prior=torch.tensor([1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="lam must be a finite number >= 0, got -1"):
        entclust.em_rce(sigma, lam=-1)
    with pytest.raises(ValueError, match="max_iter must be an int >= 0"):
        entclust.em_rce(sigma, max_iter=-3)
    with pytest.raises(ValueError, match="tol must be a number >= 0"):
        entclust.em_rce(sigma, tol=-1.0)
    with pytest.raises(ValueError, match="y0 must match sigma"):
        entclust.em_rce(sigma, y0=sigma[:3])
    with pytest.raises(ValueError, match=r"sigma must have shape \(N, K\) or \(B, N, K\)"):
        entclust.em_rce(sigma.reshape(1, 1, 6, 3))
    with pytest.raises(TypeError, match="sigma must be float32 or float64"):
        entclust.em_rce(sigma.half())
    with pytest.raises(RuntimeError, match="kernels for cpu and cuda only"):
        entclust.em_rce(torch.empty(2, 3, 4, device="meta"), validate=False)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("lam", [0.0, 1.0, 100.0])
def test_em_cce_matches_reference(shape, lam):
    sigma = problem(shape)
    got = entclust.em_cce(sigma, lam=lam, max_iter=40, tol=1e-12)
    want = R.em_cce(sigma, lam=lam, max_iter=40, tol=1e-12)
    torch.testing.assert_close(got.y, want.y, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.objective, want.objective, rtol=1e-10, atol=1e-12)


def test_em_cce_float32_prior_zero_and_y0():
    sigma = problem((40, 5))
    prior = torch.tensor([0.3, 0.0, 0.2, 0.1, 0.4], dtype=torch.float64)
    y0 = problem((40, 5), seed=2)
    want = R.em_cce(sigma, prior, lam=3.0, max_iter=30, tol=0, y0=y0)
    got = entclust.em_cce(sigma.float(), prior, lam=3.0, max_iter=30, tol=0, y0=y0.float())
    torch.testing.assert_close(got.y.double(), want.y, rtol=0, atol=5e-6)


@pytest.mark.parametrize("case", ["one_hot", "exact_zeros", "lam_zero", "huge_lam", "large_k"])
def test_em_cce_stays_finite_on_the_simplex(case):
    n, k, lam = 30, 6, 100.0
    sigma = problem((n, k))
    if case == "one_hot":
        sigma = torch.nn.functional.one_hot(torch.arange(n) % k, k).double()
    elif case == "exact_zeros":
        sigma[:, :2] = 0
        sigma = sigma / sigma.sum(-1, keepdim=True)
    elif case == "lam_zero":
        lam = 0.0
    elif case == "huge_lam":
        lam = 1e8
    elif case == "large_k":
        n, k = 4, 100000
        sigma = problem((n, k))
    res = entclust.em_cce(sigma, lam=lam, max_iter=20)
    assert torch.isfinite(res.y).all() and torch.all(res.y >= 0)
    assert torch.allclose(res.y.sum(-1), torch.ones(n, dtype=sigma.dtype))
    assert math.isfinite(res.objective) and res.fw_gap >= -1e-8
    if case == "lam_zero":
        torch.testing.assert_close(res.y, torch.nn.functional.one_hot(sigma.argmax(-1), k).double())
    if case == "huge_lam":  # lam -> inf: y_bar -> u
        torch.testing.assert_close(res.y.mean(0), torch.full((k,), 1 / k, dtype=torch.float64), atol=1e-4, rtol=0)


# lam = 0 or a usable range: below ~1e-10 every a_k = c u_k S_k falls under the M-step's
# floor (1e-12 b), y comes out one-hot and its objective is +inf for lam > 0 (documented).
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 12), st.one_of(st.just(0.0), st.floats(1e-6, 300.0)),
       st.integers(0, 2**31 - 1))
def test_em_cce_properties(n, k, lam, seed):
    sigma = problem((n, k), seed=seed)
    res = entclust.em_cce(sigma, lam=lam, max_iter=30)
    assert torch.allclose(res.y.sum(-1), torch.ones(n, dtype=sigma.dtype)) and torch.all(res.y >= 0)
    assert res.objective <= R.cce_objective(sigma, sigma, None, lam) + 1e-10  # never worse than the start
    assert res.fw_gap >= -1e-9


def test_em_cce_opcheck_and_bad_newton_arguments():
    sigma = problem((2, 10, 3))
    prior = torch.full((3,), 1 / 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.entclust.em_cce, (sigma, prior, 10.0, 1e-9, 20, 1e-12, 50, None))
    with pytest.raises(ValueError, match="newton_max_iter must be an int >= 1"):
        entclust.em_cce(sigma, newton_max_iter=0)


@pytest.mark.parametrize("k", [1, 2, 3, 10, 24, 25, 33, 129])
def test_em_cce_short_rows_lane_per_row_match_row_by_row(k):
    """On AVX2 and AVX-512, rows of up to 24 classes take the collision-CE M-step a row per
    float64 lane (em_cce_rows_narrow); the portable path keeps the row-by-row code. The two agree
    to rounding over 40 iterations: 97 rows (whole and partial groups of lanes), a batch of three,
    a class no point predicts (the free classes and the closed form of appendix C), float64 and
    float32, peaked and flat sigma."""
    g = torch.Generator().manual_seed(k)
    for scale in (1.0, 10.0):
        sigma = torch.softmax(scale * torch.randn(3, 97, k, generator=g, dtype=torch.float64), -1)
        if k > 2:
            sigma[0, :, 1] = 0
            sigma[0] /= sigma[0].sum(-1, keepdim=True)
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            with entclust.use_cpu_capability("default"):
                want = entclust.em_cce(sigma.to(dtype), lam=100.0, max_iter=40, tol=0.0)
            for capability in entclust.available_cpu_capabilities():
                with entclust.use_cpu_capability(capability):
                    got = entclust.em_cce(sigma.to(dtype), lam=100.0, max_iter=40, tol=0.0)
                torch.testing.assert_close(got.y, want.y, rtol=0, atol=tol)
                torch.testing.assert_close(got.objective, want.objective, rtol=tol, atol=0)


def test_public_objective_gap_dual_newton_and_sinkhorn():
    sigma = problem((60, 5), seed=3)
    exact = entclust.dual_newton_rce(sigma, lam=50.0)
    assert bool(exact.converged) and abs(exact.fw_gap) < 1e-9 and exact.y.shape == (60, 5)
    em = entclust.em_rce(sigma, lam=50.0, max_iter=20, tol=0)
    assert float(entclust.objective(sigma, em.y, lam=50.0)) == pytest.approx(em.objective, rel=1e-12)
    assert float(entclust.fw_gap(sigma, em.y, lam=50.0)) == pytest.approx(em.fw_gap, rel=1e-9)
    assert em.objective - exact.objective <= em.fw_gap + 1e-12
    cce = entclust.em_cce(sigma, lam=50.0, max_iter=20, tol=0)
    assert float(entclust.fw_gap(sigma, cce.y, lam=50.0, problem="cce")) == pytest.approx(cce.fw_gap, rel=1e-9)
    sk = entclust.sinkhorn(sigma, lam_sk=5.0)  # rows on the simplex, columns within about tol = 1e-3
    assert (sk.y.sum(0) / 60 / 0.2 - 1).abs().max() <= 1.01e-3
    torch.testing.assert_close(sk.y.sum(1), torch.ones(60, dtype=torch.float64))
    tight = entclust.sinkhorn(sigma, lam_sk=5.0, tol=1e-10)
    torch.testing.assert_close(tight.y.sum(0) / 60, torch.full((5,), 0.2, dtype=torch.float64), atol=1e-10, rtol=0)
    assert sk.labels.shape == (60,) and sk.converged and math.isnan(sk.fw_gap)
    assert sk.objective == pytest.approx(float(-(sk.y * sigma.log()).sum(1).mean()))
    with pytest.raises(ValueError, match="problem must be 'rce' or 'cce'"):
        entclust.fw_gap(sigma, em.y, problem="mse")
    with pytest.raises(ValueError, match="objective: y must match sigma"):
        entclust.objective(sigma, em.y[:3])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 30), st.floats(0.01, 50.0), st.integers(0, 2**31 - 1))
def test_project_simplex_matches_reference(m, k, scale, seed):
    g = torch.Generator().manual_seed(seed)
    v = scale * torch.randn(m, k, generator=g, dtype=torch.float64)
    torch.testing.assert_close(entclust.project_simplex(v), R.project_simplex(v), rtol=0, atol=1e-12)


def test_project_simplex_dim_dtype_and_errors():
    v = torch.randn(3, 5, 4, dtype=torch.float64)
    out = entclust.project_simplex(v, dim=1)
    torch.testing.assert_close(out.sum(1), torch.ones(3, 4, dtype=torch.float64))
    torch.testing.assert_close(out, R.project_simplex(v.movedim(1, -1)).movedim(-1, 1))
    torch.testing.assert_close(entclust.project_simplex(v.float()), R.project_simplex(v.float()), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="v must be finite"):
        entclust.project_simplex(torch.tensor([[1.0, math.nan]]))
    torch.library.opcheck(torch.ops.entclust.project_simplex, (v.reshape(-1, 4),))


@pytest.mark.parametrize("shape, lam, step", [((3, 30, 4), 1.0, 1.0), ((1, 250, 20), 100.0, 0.1), ((2, 40, 2), 5.0, 2.0)],
                         ids=str)
def test_pgd_cce_matches_reference(shape, lam, step):
    sigma = problem(shape)
    got = entclust.pgd_cce(sigma, lam=lam, step=step, max_iter=50, tol=0)
    want = R.pgd_cce(sigma, lam=lam, step=step, max_iter=50, tol=0)
    torch.testing.assert_close(got.y, want.y, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.objective, want.objective, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_pgd_cce_and_projection_at_every_row_length(dtype):
    """The projection and the PGD rows take scalar loops up to K = 10, 4 lanes on AVX-512 below
    K = 256 and the ISA's own width elsewhere: every K to 40 and each side of 256, against the
    reference."""
    for k in [*range(1, 41), 255, 256, 257]:
        sigma = problem((40, k), seed=k)
        want = R.pgd_cce(sigma, lam=1.0, step=0.05, max_iter=8, tol=0)
        assert bool(torch.isfinite(want.y).all())
        got = entclust.pgd_cce(sigma.to(dtype), lam=1.0, step=0.05, max_iter=8, tol=0)
        torch.testing.assert_close(got.y.double(), want.y, rtol=0, atol=1e-10 if dtype == torch.float64 else 2e-6)
        z = 3 * torch.randn(5, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64).to(dtype)
        torch.testing.assert_close(entclust.project_simplex(z).double(), R.project_simplex(z.double()), rtol=0,
                                   atol=1e-12 if dtype == torch.float64 else 1e-6)


def test_pgd_cce_divergence_is_reported_not_hidden():
    sigma = problem((1, 250, 20))
    res = entclust.pgd_cce(sigma, lam=100.0, step=5.0, max_iter=200)
    ref = R.pgd_cce(sigma, lam=100.0, step=5.0, max_iter=200)
    assert torch.isnan(ref.objective) and torch.isnan(res.objective) and not bool(res.converged.any())


def test_pgd_and_em_agree_at_the_optimum():
    sigma = problem((40, 2), 2.0)
    em = entclust.em_cce(sigma, lam=1.0, max_iter=5000, tol=1e-14)
    pgd = entclust.pgd_cce(sigma, lam=1.0, step=1.0, max_iter=20000, tol=1e-14)
    assert pgd.fw_gap < 1e-6 and em.fw_gap < 1e-8
    assert abs(em.objective - pgd.objective) <= 1e-6 * abs(em.objective)
    with pytest.raises(ValueError, match="step must be a finite number > 0"):
        entclust.pgd_cce(sigma, step=0.0)
    prior = torch.full((2,), 0.5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.entclust.pgd_cce, (sigma.unsqueeze(0), prior, 1.0, 1.0, 1e-9, 20, None))


# ---- Newton on the full problem, SQUAREM ----------------------------------------------------
def test_newton_direction_equals_the_dense_kkt_solution():
    torch.manual_seed(0)
    n, k, lam = 6, 4, 3.0
    sigma, y = problem((n, k), 1.0, 1), problem((n, k), 1.0, 2)
    u = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    flat = lambda v: R.rce_objective(sigma, v.reshape(n, k), u, lam)  # noqa: E731
    hessian = torch.autograd.functional.hessian(flat, y.reshape(-1))
    grad = torch.autograd.functional.jacobian(flat, y.reshape(-1))
    rows = torch.kron(torch.eye(n, dtype=torch.float64), torch.ones(1, k, dtype=torch.float64))
    kkt = torch.cat([torch.cat([hessian, rows.T], 1), torch.cat([rows, torch.zeros(n, n, dtype=torch.float64)], 1)])
    dense = torch.linalg.solve(kkt, torch.cat([-grad, torch.zeros(n, dtype=torch.float64)]))[: n * k]
    torch.testing.assert_close(newton_direction(sigma, y, u, lam).reshape(-1), dense, atol=1e-12, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 20, 200])
def test_newton_dual_newton_and_em_reach_the_same_optimum(k):
    sigma = problem((250, k), seed=k)
    newton = entclust.newton_rce(sigma, lam=100.0)
    assert bool(newton.converged) and newton.gap <= 1e-10
    torch.testing.assert_close(newton.y.sum(-1), torch.ones(250, dtype=torch.float64))
    if k <= 20:
        dual = entclust.dual_newton_rce(sigma, lam=100.0)
        assert abs(newton.objective - dual.objective) <= 1e-6 * abs(dual.objective) + 1e-12
    em = entclust.em_rce(sigma, lam=100.0, max_iter=2000, tol=0, accel="squarem")
    # the gap bounds the distance to the optimum from above: both must respect it
    assert -newton.gap - 1e-12 <= em.objective - newton.objective <= em.gap + 1e-12


def test_newton_batched_skewed_prior_and_errors():
    sigma = problem((3, 40, 5), seed=4)
    prior = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.1], dtype=torch.float64)
    batch = entclust.newton_rce(sigma, prior, lam=10.0)
    for b in range(3):
        single = entclust.newton_rce(sigma[b], prior, lam=10.0)
        torch.testing.assert_close(batch.y[b], single.y)
    assert bool(batch.converged.all())
    zeros = sigma[0].clone()
    zeros[0] = torch.tensor([1.0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="newton_rce needs sigma > 0"):
        entclust.newton_rce(zeros)
    with pytest.raises(ValueError, match="lam must be"):
        entclust.newton_rce(sigma, lam=-1.0)


@pytest.mark.parametrize("solver", ["em_rce", "em_cce"])
def test_squarem_reaches_the_plain_em_fixed_point_in_fewer_iterations(solver):
    sigma = problem((2, 100, 10), seed=5)
    fn = getattr(entclust, solver)
    cap = 20000 if solver == "em_rce" else 1500
    plain = fn(sigma, lam=20.0, max_iter=cap, tol=1e-11)
    fast = fn(sigma, lam=20.0, max_iter=cap, tol=1e-11, accel="squarem")
    if solver == "em_rce":
        torch.testing.assert_close(fast.objective, plain.objective, atol=1e-9, rtol=0)
        assert bool(fast.converged.all())
        assert bool((fast.iterations < plain.iterations).all())
        torch.testing.assert_close(fast.y, plain.y, atol=1e-7, rtol=0)
    else:  # CCE's optimum has y_ik = 0, which neither reaches in the cap: SQUAREM is not worse
        assert bool((fast.objective <= plain.objective + 1e-12).all())
    assert ((fast.y >= 0).all() and torch.allclose(fast.y.sum(-1), torch.ones(2, 100, dtype=torch.float64)))
    with pytest.raises(ValueError, match="accel must be None or 'squarem'"):
        fn(sigma, accel="anderson")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 12), lam=st.floats(0.0, 200.0), seed=st.integers(0, 10**6))
def test_squarem_never_ends_above_its_start(n, k, lam, seed):
    sigma = problem((n, k), seed=seed)
    start = entclust.objective(sigma, sigma, lam=lam)
    res = entclust.em_rce(sigma, lam=lam, max_iter=60, accel="squarem")
    assert res.objective <= start + 1e-12
    assert (res.y >= 0).all() and torch.allclose(res.y.sum(-1), torch.ones(n, dtype=torch.float64))


# (B, N, K): every tail of a vector of float64 classes (K mod 2, 4, 8), several row chunks
SINKHORN_SHAPES = [(1, 1, 1), (3, 30, 3), (2, 40, 9), (1, 257, 10), (2, 60, 17), (1, 2100, 40)]


@pytest.mark.parametrize("shape", SINKHORN_SHAPES, ids=str)
def test_sinkhorn_op_equals_the_pytorch_sweeps(shape):
    """The fused CPU op (float64 vectors, its own exp) against the same log-domain sweeps in
    PyTorch: the same sweep counts, shifts within rounding; a class of prior 0 gets nothing, a
    zero in sigma and sigma^25 down to e^-700 are kept in range."""
    import importlib

    S = importlib.import_module("entclust.solvers.sinkhorn")  # the module (the package exports the function)

    sigma = problem(shape, scale=6.0, seed=sum(shape))
    k = shape[-1]
    if k > 2:
        sigma[0, 0, 1] = 0.0
        sigma[0] /= sigma[0].sum(-1, keepdim=True)
    u = torch.rand(k, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    if k > 2:
        u[2] = 0.0
    u /= u.sum()
    log_u = torch.where(u > 0, torch.log(u), -math.inf)
    log_p = 25.0 * torch.log(sigma.clamp_min(torch.finfo(torch.float64).tiny))
    for tol, max_iter in ((1e-10, 3000), (0.0, 7)):
        fused = S._solve(S._op_sweep(log_p, log_u), log_p, tol, max_iter, None)
        plain = S._solve(S._torch_sweep(log_p, log_u), log_p, tol, max_iter, None)
        assert torch.equal(fused[2], plain[2])  # sweeps, per problem
        for got, want in zip((fused[0], fused[1]), (plain[0], plain[1])):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9, equal_nan=True)
        torch.testing.assert_close(fused[3], plain[3], rtol=1e-6, atol=1e-12)
        if k > 2:
            assert bool(torch.isneginf(fused[1][:, 2]).all())


def _sinkhorn_hard_case(case):
    g = torch.Generator().manual_seed(3)
    u = None
    if case == "dead class":  # sigma^25 of class 0 underflows everywhere: its column sum is taken in the log domain
        sigma = torch.softmax(4 * torch.randn(1, 300, 12, generator=g, dtype=torch.float64), -1)
        sigma[..., 0] = 1e-30
    elif case == "weak class":  # its scaling leaves the range at once: absorbed
        sigma = torch.softmax(2 * torch.randn(1, 200, 9, generator=g, dtype=torch.float64), -1)
        sigma[..., 0] *= 1e-4
    elif case == "one-hot":  # zeros floored at the smallest normal number; two classes nobody predicts
        labels = torch.randint(0, 6, (1, 200), generator=g)
        sigma = torch.nn.functional.one_hot(labels, 8).double()
    else:  # peaked rows whose largest entry is a class of prior 0: their row sums leave the range
        sigma = torch.softmax(40 * torch.randn(2, 150, 30, generator=g, dtype=torch.float64), -1)
        u = torch.rand(30, generator=g, dtype=torch.float64) ** 4 + 1e-6
        u[3] = 0.0
    sigma = sigma / sigma.sum(-1, keepdim=True)
    k = sigma.shape[-1]
    u = torch.full((k,), 1.0 / k, dtype=torch.float64) if u is None else u / u.sum()
    return sigma, u


@pytest.mark.parametrize("case", ["dead class", "weak class", "one-hot", "peaked, prior 0 at the peak"])
def test_sinkhorn_op_rescales_where_the_scaled_plan_loses_range(case):
    """The op sweeps a plan rescaled by the absorbed shifts (no exp a sweep); where a column of it
    underflows, a scaling leaves its range or a row's sum collapses, it goes back to the log
    domain or absorbs afresh. On such problems it still follows the PyTorch log-domain sweeps (a
    row sum that had collapsed made NaN before the row check)."""
    import importlib

    S = importlib.import_module("entclust.solvers.sinkhorn")
    sigma, u = _sinkhorn_hard_case(case)
    log_u = torch.where(u > 0, torch.log(u), -math.inf)
    log_p = 25.0 * torch.log(sigma.clamp_min(torch.finfo(torch.float64).tiny))
    fused = S._solve(S._op_sweep(log_p, log_u), log_p, 1e-10, 400, None)
    plain = S._solve(S._torch_sweep(log_p, log_u), log_p, 1e-10, 400, None)
    assert torch.equal(fused[2], plain[2])
    assert torch.equal(torch.isneginf(fused[1]), torch.isneginf(plain[1]))
    finite = torch.isfinite(plain[1])
    assert bool(torch.isfinite(fused[0]).all()) and bool(torch.isfinite(fused[3]).all())
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(fused[1][finite], plain[1][finite], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(fused[3], plain[3], rtol=1e-6, atol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="an address-space limit (Linux)")
def test_sinkhorn_op_says_when_its_plan_does_not_fit():
    """The rescaled plan is one more N x K float64 buffer: where it cannot be had, a RuntimeError
    that names it and its size, not a bare std::bad_alloc (in a subprocess under an address-space
    limit a little above what it holds already)."""
    import subprocess

    code = """
import resource, torch, entclust
n = k = 4000  # log_p 128 MB; the plan another 128 MB
log_p = torch.zeros(1, n, k, dtype=torch.float64)
log_u = torch.full((k,), -torch.log(torch.tensor(float(k))).item(), dtype=torch.float64)
beta = torch.zeros(1, k, dtype=torch.float64)
entclust.ops.sinkhorn_kernel(log_p[:, :8], log_u, beta, 0.0, 1)  # threads and arenas first
held = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (held + 64 * 2**20, held + 64 * 2**20))
try:
    entclust.ops.sinkhorn_kernel(log_p, log_u, beta, 0.0, 1)
except RuntimeError as error:
    print(str(error).splitlines()[0])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "sinkhorn: out of memory for the rescaled plan of a problem, 4000 x 4000 float64 (0.128 GB" in proc.stdout


def test_sinkhorn_problems_stop_on_their_own_and_the_callback_changes_nothing():
    sigma = torch.stack([problem((60, 5), seed=0), problem((60, 5), 0.3, seed=1), problem((60, 5), 1.0, 2)])
    together = entclust.sinkhorn(sigma, lam_sk=10.0, tol=1e-11)
    assert together.converged.all() and len(set(together.iterations.tolist())) > 1
    for b in range(3):
        alone = entclust.sinkhorn(sigma[b], lam_sk=10.0, tol=1e-11)
        assert torch.equal(alone.y, together.y[b]) and alone.iterations == together.iterations[b]
    errors = []
    watched = entclust.sinkhorn(sigma, lam_sk=10.0, tol=1e-11, callback=lambda it, err: errors.append(err))
    assert len(errors) == int(together.iterations.max())
    # (a sweep an op call: the plan rescaled from the shifts each call, equal to rounding)
    assert torch.equal(watched.iterations, together.iterations)
    torch.testing.assert_close(watched.y, together.y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("check_every", [3, "auto"])
def test_sinkhorn_check_every_runs_the_same_sweeps_in_chunks(check_every):
    """With check_every the sweeps between two callbacks run in one op call, warm-started from
    the last shifts: the same sweeps per problem as without a callback, the result equal to
    rounding, the callback told the sweeps so far on the schedule (every 3, or 1, 2, ..., 8, 9,
    10, 11, ...: 1/8 of those run so far), and a true return stops at that check."""
    sigma = torch.stack([problem((60, 5), seed=0), problem((60, 5), 0.3, seed=1), problem((60, 5), 1.0, 2)])
    alone = entclust.sinkhorn(sigma, lam_sk=10.0, tol=1e-11)
    seen = []
    watched = entclust.sinkhorn(sigma, lam_sk=10.0, tol=1e-11, check_every=check_every,
                                callback=lambda it, err: seen.append((it, err)))
    assert torch.equal(watched.iterations, alone.iterations)
    torch.testing.assert_close(watched.y, alone.y, rtol=0, atol=1e-12)
    counts = [it for it, _ in seen]
    if check_every == 3:
        assert counts[:-1] == list(range(3, 3 * len(counts), 3))
    else:
        assert counts[:9] == [1, 2, 3, 4, 5, 6, 7, 8, 9] and counts[9:12] == [10, 11, 12]
        assert len(counts) < int(alone.iterations.max()) // 4  # O(log n) calls, not one a sweep
    assert counts[-1] >= int(alone.iterations.max()) and seen[-1][1] <= 1e-11
    stopped = entclust.sinkhorn(sigma, lam_sk=10.0, tol=1e-11, check_every=check_every, warn=False,
                                callback=lambda it, err: it >= 20)
    assert int(stopped.iterations.max()) == next(c for c in counts if c >= 20)
    with pytest.raises(ValueError, match="check_every must be an int >= 1 or 'auto', got 0"):
        entclust.sinkhorn(sigma, check_every=0)
    # the PyTorch sweeps (off the CPU) in the same chunks
    import importlib

    S = importlib.import_module("entclust.solvers.sinkhorn")
    log_p = 10.0 * torch.log(sigma)
    log_u = torch.full((5,), -math.log(5.0), dtype=torch.float64)
    whole = S._solve(S._torch_sweep(log_p, log_u), log_p, 1e-11, 2000, None)
    chunked = S._solve(S._torch_sweep(log_p, log_u), log_p, 1e-11, 2000, lambda it, err: None, check_every)
    assert torch.equal(chunked[2], whole[2])
    for got, want in zip(chunked, whole):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_sinkhorn_op_checks_and_opcheck():
    log_p = torch.log(problem((2, 20, 4)))
    log_u = torch.full((4,), -math.log(4), dtype=torch.float64)
    beta = torch.zeros(2, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.entclust.sinkhorn, (log_p, log_u, beta, 1e-9, 50))
    before = beta.clone()
    entclust.ops.sinkhorn_kernel(log_p, log_u, beta, 0.0, 3)
    assert torch.equal(beta, before)  # not modified in place
    with pytest.raises(RuntimeError, match="log_p must be float64"):
        entclust.ops.sinkhorn_kernel(log_p.float(), log_u, beta, 0.0, 3)
    with pytest.raises(RuntimeError, match=r"log_beta must be float64 \(2, 4\)"):
        entclust.ops.sinkhorn_kernel(log_p, log_u, beta[:1], 0.0, 3)
    with pytest.raises(RuntimeError, match="max_iter >= 1"):
        entclust.ops.sinkhorn_kernel(log_p, log_u, beta, 0.0, 0)
    log_p[0, 3, 1] = math.nan  # a NaN is never within tol: every sweep runs, the error is NaN
    _, _, sweeps, error = entclust.ops.sinkhorn_kernel(log_p, log_u, beta, 1e-6, 2000)
    assert sweeps[0] == 2000 and math.isnan(error[0]) and sweeps[1] < 2000 and error[1] <= 1e-6


def test_sinkhorn_gives_the_same_bits_on_any_threads_and_in_a_batch():
    # 5000 x 100: three chunks of rows (chunks.h), run on one thread, on three, and as one of a
    # batch (side by side); the column maxima are exact, the sums added chunk by chunk in order
    sigma = problem((3, 5000, 100), scale=1.0, seed=6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = entclust.sinkhorn(sigma[0], tol=0.0, max_iter=6, warn=False)
        torch.set_num_threads(3)
        three = entclust.sinkhorn(sigma[0], tol=0.0, max_iter=6, warn=False)
        batch = entclust.sinkhorn(sigma, tol=0.0, max_iter=6, warn=False)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.y, three.y) and torch.equal(one.y, batch.y[0])
