"""The pure-PyTorch ground truth in entclust.testing.reference, which the solver kernels and
the shipped solvers are tested against, checked here against optimality conditions."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entclust.testing import reference as R


def problem(n, k, scale=3.0, seed=0, batch=()):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(*batch, n, k, generator=g, dtype=torch.float64), -1)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.floats(0.01, 20.0), st.integers(0, 2**31 - 1))
def test_project_simplex_is_the_projection(k, scale, seed):
    g = torch.Generator().manual_seed(seed)
    v = scale * torch.randn(5, k, generator=g, dtype=torch.float64)
    w = R.project_simplex(v)
    assert torch.all(w >= 0) and torch.allclose(w.sum(-1), torch.ones(5, dtype=w.dtype))
    # KKT: w = max(v - theta, 0): v - w is the same theta on the support and >= v off it
    theta = torch.where(w > 0, v - w, torch.full_like(v, -math.inf)).amax(-1, keepdim=True)
    assert torch.allclose(torch.where(w > 0, v - w, theta), theta.expand_as(v), atol=1e-12)
    assert torch.all(torch.where(w > 0, theta, v) <= theta + 1e-12)
    torch.testing.assert_close(R.project_simplex(w), w)  # points of the simplex stay put


def test_project_simplex_propagates_nan_without_crashing():
    out = R.project_simplex(torch.tensor([[math.nan, 1.0], [0.2, 0.8]]))
    assert torch.isnan(out[0]).all() and torch.allclose(out[1], torch.tensor([0.2, 0.8]))


@pytest.mark.parametrize("case", ["positive", "some_zero", "all_zero", "large"])
def test_cce_m_step_is_optimal(case):
    g = torch.Generator().manual_seed(3)
    sigma = problem(200, 6, 2.0, seed=4)
    a = 3 * torch.rand(200, 6, generator=g, dtype=torch.float64)
    if case == "some_zero":
        a[:, :3] = 0
    elif case == "all_zero":
        a.zero_()
    elif case == "large":
        a *= 1e4
    y = R.cce_m_step(sigma, a)
    assert torch.allclose(y.sum(-1), torch.ones(200, dtype=y.dtype)) and torch.all(y >= 0)
    x = (sigma * y).sum(-1, keepdim=True)
    grad = -sigma / x - torch.where(a > 0, a / y, torch.zeros_like(y))
    row_gap = torch.where(y > 0, y * grad, torch.zeros_like(y)).sum(-1) - grad.amin(-1)
    assert row_gap.max() < 1e-8 * (1 + a.sum(-1).max())
    if case == "all_zero":  # lam = 0: the one-hot argmax
        torch.testing.assert_close(y, torch.nn.functional.one_hot(sigma.argmax(-1), 6).double())
    if case == "positive":  # Property 1: positive starts stay positive
        assert torch.all(y > 0)


# (solver, lam, logit scale, gap reached in 3000 iterations): CCE's multiplicative updates
# crawl towards optima with y_ik -> 0, so its max|dy| criterion is not met there (MATH.md).
@pytest.mark.parametrize("solver, lam, scale, gap", [(R.em_rce, 1.0, 2.0, 1e-10), (R.em_cce, 1.0, 2.0, 1e-7)])
def test_em_objective_never_increases_and_gap_bounds_suboptimality(solver, lam, scale, gap):
    sigma = problem(40, 5, scale)
    objectives = [solver(sigma, lam=lam, max_iter=t, tol=0).objective.item() for t in (1, 2, 4, 8, 16, 64)]
    assert all(b <= a + 1e-12 for a, b in zip(objectives, objectives[1:]))
    early = solver(sigma, lam=lam, max_iter=3, tol=0)
    final = solver(sigma, lam=lam, max_iter=3000, tol=1e-13)
    assert early.fw_gap >= early.objective - final.objective - 1e-12  # the gap bounds f(y) - f*
    assert final.fw_gap < gap
    assert bool(final.converged) == (solver is R.em_rce)
    assert torch.allclose(final.y.sum(-1), torch.ones(40, dtype=torch.float64))


def test_em_rce_limits():
    sigma = problem(30, 4)
    torch.testing.assert_close(R.em_rce(sigma, lam=0.0).y, sigma)  # lam -> 0: y = sigma
    u = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    big = R.em_rce(sigma, prior=u, lam=1e6, max_iter=5000, tol=1e-14)
    torch.testing.assert_close(big.y.mean(0), u, atol=1e-5, rtol=0)  # lam -> inf: y_bar = u


def test_em_cce_lambda_zero_is_one_hot():
    sigma = problem(30, 4)
    y = R.em_cce(sigma, lam=0.0).y
    torch.testing.assert_close(y, torch.nn.functional.one_hot(sigma.argmax(-1), 4).double())


@pytest.mark.parametrize("solver", [R.em_rce, R.em_cce])
def test_batched_equals_per_problem(solver):
    sigma = problem(25, 4, batch=(3,))
    batched = solver(sigma, lam=5.0, max_iter=50, tol=0)
    for b in range(3):
        single = solver(sigma[b], lam=5.0, max_iter=50, tol=0)
        torch.testing.assert_close(batched.y[b], single.y)
        torch.testing.assert_close(batched.objective[b], single.objective)


def test_pgd_and_em_reach_the_same_collision_optimum():
    sigma = problem(50, 2, 2.0)
    em = R.em_cce(sigma, lam=1.0, max_iter=5000, tol=1e-14)
    pgd = R.pgd_cce(sigma, lam=1.0, step=1.0, max_iter=20000, tol=1e-14)
    assert em.fw_gap < 1e-8 and pgd.fw_gap < 1e-6
    assert abs(em.objective.item() - pgd.objective.item()) <= 1e-6 * abs(em.objective.item())


def test_sinkhorn_marginals():
    sigma = problem(60, 5)
    u = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.3], dtype=torch.float64)
    q, labels, iterations = R.sinkhorn_knopp(sigma, u, lam_sk=10.0, tol=1e-12)
    torch.testing.assert_close(q.sum(-1), torch.full((60,), 1 / 60, dtype=torch.float64))
    torch.testing.assert_close(q.sum(0), u, atol=1e-9, rtol=0)
    assert labels.shape == (60,) and iterations < 1000


def test_the_shipped_sinkhorn_matches_the_reference_alone_and_batched():
    import entclust

    sigma = problem(60, 5)
    u = torch.tensor([0.1, 0.1, 0.2, 0.3, 0.3], dtype=torch.float64)
    q, labels, iterations = R.sinkhorn_knopp(sigma, u, lam_sk=10.0, tol=1e-12)
    result = entclust.sinkhorn(sigma, u, lam_sk=10.0, tol=1e-12)
    torch.testing.assert_close(result.y / 60, q, atol=1e-12, rtol=1e-9)
    assert torch.equal(result.labels, labels) and result.iterations == iterations and result.converged
    batch = torch.stack([sigma, problem(60, 5, 3.0)])
    together = entclust.sinkhorn(batch, u, lam_sk=10.0, tol=1e-12)
    assert together.y.shape == (2, 60, 5) and bool(together.converged.all())
    for b in range(2):
        alone = entclust.sinkhorn(batch[b], u, lam_sk=10.0, tol=1e-12)
        torch.testing.assert_close(together.y[b], alone.y, atol=1e-10, rtol=0)
        assert together.objective[b].item() == pytest.approx(alone.objective, rel=1e-10)


def test_sinkhorn_knopp_is_deprecated_and_keeps_its_tuple_for_one_release():
    import entclust

    sigma = problem(40, 4)
    with pytest.warns(DeprecationWarning, match="use entclust.sinkhorn, which returns a SolverResult"):
        q, labels, sweeps = entclust.sinkhorn_knopp(sigma, lam_sk=5.0)
    result = entclust.sinkhorn(sigma, lam_sk=5.0)
    torch.testing.assert_close(q, result.y / 40)
    assert torch.equal(labels, result.labels) and sweeps == result.iterations
