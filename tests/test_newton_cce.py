"""The interior-point Newton solver of the collision-CE problem (entclust.solvers.barrier): its
Newton system against a dense KKT solve of autograd's Hessian, its optimum against the testing
reference's EM and the certificate, properties, and the options every solver shares."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import entclust
from entclust.solvers.barrier import barrier_direction
from entclust.testing import reference as R

from .test_reference_solvers import problem


def test_direction_solves_the_dense_kkt_system_of_autograds_hessian():
    n, k, lam, tau = 6, 4, 3.0, 0.1
    g = torch.Generator().manual_seed(1)
    sigma = problem(n, k, seed=2)
    y = torch.softmax(torch.randn(n, k, generator=g, dtype=torch.float64), -1)
    u = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), -1)

    def phi(flat):
        yy = flat.view(n, k)
        return (-torch.log((sigma * yy).sum(-1)).sum() - lam * n * (u * torch.log(yy.mean(0))).sum()
                - tau * torch.log(yy).sum())

    flat = y.flatten()
    grad = torch.autograd.functional.jacobian(phi, flat)
    hess = torch.autograd.functional.hessian(phi, flat)
    rows = torch.kron(torch.eye(n, dtype=torch.float64), torch.ones(1, k, dtype=torch.float64))  # A d = 0
    kkt = torch.cat([torch.cat([hess, rows.T], 1), torch.cat([rows, torch.zeros(n, n, dtype=torch.float64)], 1)])
    dense = torch.linalg.solve(kkt, torch.cat([-grad, torch.zeros(n, dtype=torch.float64)]))[:n * k].view(n, k)
    d, decrement = barrier_direction(sigma, y, u, lam, tau)
    torch.testing.assert_close(d, dense, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(decrement, -(grad * dense.flatten()).sum(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [2, 20, 200])
def test_newton_cce_certifies_the_optimum_em_approaches(k):
    sigma = problem(250, k, seed=k)
    exact = entclust.newton_cce(sigma, lam=100.0, tol=1e-10)
    assert bool(exact.converged) and 0 <= exact.duality_gap <= exact.fw_gap <= 2e-10 and exact.iterations <= 150
    assert torch.all(exact.y >= 0) and torch.allclose(exact.y.sum(-1), torch.ones(250, dtype=torch.float64))
    em = R.em_cce(sigma, lam=100.0, max_iter=200, tol=0)
    # EM's value is above the optimum by at most its own gap, and Newton's is at least as good
    assert exact.objective <= em.objective + 1e-12
    assert em.objective - exact.objective <= em.fw_gap + 1e-12
    assert exact.fw_gap <= 1e-3 * em.fw_gap  # what the solver is for: EM crawls to this optimum
    assert exact.criterion == "duality gap <= 1e-10" and exact.gap == exact.duality_gap <= 1e-10


def test_what_is_unique_at_the_optimum_matches_a_long_em_run():
    # the optimum's y need not be unique, but sigma_i . y_i (-ln is strictly convex) and y_bar are
    sigma = problem(40, 5, scale=2.0, seed=3)
    prior = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], dtype=torch.float64)
    exact = entclust.newton_cce(sigma, prior, lam=2.0, tol=1e-12)
    em = entclust.em_cce(sigma, prior, lam=2.0, tol=0, max_iter=20000, accel="squarem", tol_gap=1e-13)
    assert bool(exact.converged) and em.gap <= 1e-11
    assert abs(exact.objective - em.objective) <= 1e-11
    torch.testing.assert_close((sigma * exact.y).sum(-1), (sigma * em.y).sum(-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(exact.y.mean(0), em.y.mean(0), rtol=0, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 12), st.floats(0.0, 300.0), st.integers(0, 2**31 - 1))
def test_newton_cce_properties(n, k, lam, seed):
    sigma = problem(n, k, scale=4.0, seed=seed)
    res = entclust.newton_cce(sigma, lam=lam)
    assert torch.isfinite(res.y).all() and torch.all(res.y >= 0)
    torch.testing.assert_close(res.y.sum(-1), torch.ones(n, dtype=torch.float64))
    start = entclust.objective(sigma, sigma, lam=lam, problem="cce")
    assert res.objective <= start + 1e-12  # never worse than its start
    assert bool(res.converged) == (res.gap <= 1e-9)
    assert res.duality_gap <= res.fw_gap + 1e-12
    assert bool(res.converged)  # every draw of these sizes reaches the default tolerance


def test_batched_equals_single_and_float32_and_inputs_untouched():
    sigma = problem(30, 6, batch=(3,), seed=5)
    before = sigma.clone()
    both = entclust.newton_cce(sigma, lam=10.0)
    assert torch.equal(sigma, before) and both.y.shape == sigma.shape and both.converged.all()
    for b in range(3):
        one = entclust.newton_cce(sigma[b], lam=10.0)
        torch.testing.assert_close(both.y[b], one.y)
        assert int(both.iterations[b]) == one.iterations
    f32 = entclust.newton_cce(sigma.float(), lam=10.0)
    assert f32.y.dtype == torch.float32 and f32.converged.all()
    torch.testing.assert_close(f32.y, both.y.float(), rtol=0, atol=1e-5)


def test_zeros_in_sigma_and_in_the_prior_and_lam_zero_and_one_class():
    sigma = problem(50, 7, seed=6)
    zeros = sigma.clone()
    zeros[:, 0] = 0
    zeros = zeros / zeros.sum(-1, keepdim=True)
    res = entclust.newton_cce(zeros, lam=100.0)  # sigma_i0 = 0: the barrier does not need sigma > 0
    assert bool(res.converged) and res.fw_gap <= 1e-9
    prior = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0], dtype=torch.float64)
    res = entclust.newton_cce(sigma, prior, lam=10.0, tol=1e-11)
    em = entclust.em_cce(sigma, prior, lam=10.0, tol=0, max_iter=20000, accel="squarem", tol_gap=1e-12)
    assert bool(res.converged) and abs(res.objective - em.objective) <= 1e-10
    flat = entclust.newton_cce(sigma, lam=0.0)  # no fairness: each row one-hot on its argmax
    assert bool(flat.converged)
    assert torch.equal(flat.y.argmax(-1), sigma.argmax(-1)) and float(flat.y.amax(-1).min()) > 1 - 1e-8
    one = entclust.newton_cce(torch.ones(4, 1, dtype=torch.float64))
    assert bool(one.converged) and torch.equal(one.y, torch.ones(4, 1, dtype=torch.float64))


def test_stopping_options_y0_and_an_early_end():
    sigma = problem(100, 10, seed=7)
    loose = entclust.newton_cce(sigma, lam=100.0, tol_gap=1e-3)
    full = entclust.newton_cce(sigma, lam=100.0)
    assert bool(loose.converged) and loose.relative_gap <= 1e-3 and loose.iterations < full.iterations
    assert loose.criterion == "relative duality gap <= 0.001"
    start = entclust.objective(sigma, sigma, lam=100.0, problem="cce")
    progress = entclust.newton_cce(sigma, lam=100.0, tol_progress=0.5)
    assert bool(progress.converged) and progress.gap <= 0.5 * (start - progress.objective)
    seen = []
    stopped = entclust.newton_cce(sigma, lam=100.0, callback=lambda r: seen.append(r.iterations) or len(seen) == 3)
    assert seen == [0, 1, 2] and stopped.iterations == 2 and not stopped.converged
    short = entclust.newton_cce(sigma, lam=100.0, max_iter=2)
    assert not short.converged and short.objective <= start + 1e-12
    warm = entclust.newton_cce(sigma, lam=100.0, y0=full.y)  # a start at the optimum stays there
    assert bool(warm.converged) and abs(warm.objective - full.objective) <= 1e-10
    with pytest.raises(ValueError, match="rows of sigma must sum to 1"):
        entclust.newton_cce(sigma * 1.1)
    with pytest.raises(ValueError, match="max_iter"):
        entclust.newton_cce(sigma, max_iter=-1)


def test_self_labeling_and_compare_use_it():
    logits = 3 * torch.randn(64, 10, generator=torch.Generator().manual_seed(8))
    criterion = entclust.SelfLabeling("cce", solver="newton", tol_gap=1e-8)
    loss, y = criterion(logits, return_labels=True)
    assert torch.isfinite(loss) and criterion.stats["unconverged"] == 0 and criterion.last_result.relative_gap <= 1e-8
    table = entclust.solvers.compare(problem(100, 10, seed=9), lam=100.0, problem="cce", target_gap=1e-8,
                                     solvers=["em_cce", "newton_cce"], time_limit=5.0, warmup=False)
    rows = {row["solver"]: row for row in table.rows}
    assert rows["newton_cce"]["converged"] and rows["newton_cce"]["stop"] == "target gap"
