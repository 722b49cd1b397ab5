"""The shipped second-order solvers (entclust.solvers.newton): dual Newton and primal Newton
on the reverse-CE problem, checked against the testing reference's EM and the optimality
certificate."""
import pytest
import torch

import entclust
from entclust.testing import reference as R

from .test_reference_solvers import problem


@pytest.mark.parametrize("k", [2, 20, 200])
def test_dual_newton_certifies_the_optimum_em_approaches(k):
    sigma = problem(250, k, seed=k)
    exact = entclust.dual_newton_rce(sigma, lam=100.0, tol=1e-9, max_iter=150)
    assert torch.allclose(exact.y.sum(-1), torch.ones(250, dtype=torch.float64)) and torch.all(exact.y > 0)
    if k <= 20:
        assert bool(exact.converged) and exact.iterations <= 10 and -1e-9 <= exact.gap <= 1e-9
    else:  # K = 200: dual steps, then the primal polish
        assert -1e-9 <= exact.gap <= 1e-8
    em = R.em_rce(sigma, lam=100.0, max_iter=300, tol=0)
    # EM's value is above the optimum by at most its own gap, and dual Newton is at least as good
    assert exact.objective <= em.objective + 1e-12
    assert em.objective - exact.objective <= em.gap + 1e-12


def test_dual_newton_in_shifted_multipliers_reaches_1e_8_alone():
    # the benchmark's first draw (sigma = softmax(3 z), N = 250, K = 200), where the dual steps in
    # w alone stalled at a gap of ~1e-7 (y(w) = sigma / (t - w) cancels); in omega = w - lam they
    # reach 1e-8 without the primal polish, and the polish does not undo it
    g = torch.Generator().manual_seed(0)
    sigma = torch.softmax(3 * torch.randn(1, 250, 200, generator=g, dtype=torch.float64), -1)[0]
    alone = entclust.dual_newton_rce(sigma, lam=100.0, tol=1e-8, max_iter=150, polish=0)
    full = entclust.dual_newton_rce(sigma, lam=100.0, tol=1e-8, max_iter=150)
    assert bool(alone.converged) and 0 <= alone.fw_gap <= 1e-8
    assert bool(full.converged) and 0 <= full.fw_gap <= 1e-8
    assert abs(float(full.objective - alone.objective)) <= 1e-12


def test_dual_newton_batched_and_refuses_zeros():
    sigma = problem(30, 4, batch=(2,))
    both = entclust.dual_newton_rce(sigma, lam=10.0)
    torch.testing.assert_close(both.y[1], entclust.dual_newton_rce(sigma[1], lam=10.0).y)
    with pytest.raises(ValueError, match="needs sigma > 0"):
        entclust.dual_newton_rce(torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64))


@pytest.mark.parametrize("solver", ["newton_rce", "dual_newton_rce"])
def test_newton_solvers_accept_a_zero_prior_entry(solver):
    # class 2 has u_2 = 0: no fairness pull, only its sigma mass; EM (which allows it) agrees
    sigma = problem(60, 5, seed=4)
    prior = torch.tensor([0.3, 0.3, 0.0, 0.2, 0.2], dtype=torch.float64)
    res = getattr(entclust, solver)(sigma, prior, lam=5.0, tol=1e-11, max_iter=100)
    em = R.em_rce(sigma, prior, lam=5.0, tol=0, max_iter=20000)
    assert bool(res.converged) and 0 <= res.gap <= 1e-11 and em.fw_gap < 1e-10
    torch.testing.assert_close(res.y, em.y, rtol=0, atol=1e-7)  # a gap of 1e-11 leaves y ~1e-8 from the optimum
    assert torch.isfinite(res.y).all() and res.objective <= em.objective + res.gap + 1e-13


def test_newton_never_ends_above_a_point_it_passed():
    """Confident sigma (logits 10 N(0, 1)): from a near-optimal start Newton's noise-level steps
    rose by 1.3e-7 in 17 steps; it now returns the lowest point it passed, never above its start."""
    g = torch.Generator().manual_seed(2)
    sigma = torch.softmax(10 * torch.randn(250, 10, generator=g, dtype=torch.float64), -1)
    start = entclust.em_rce(sigma, lam=100.0, accel="squarem", max_iter=3000, tol=0.0).y
    res = entclust.newton_rce(sigma, lam=100.0, y0=start, max_iter=30)
    assert res.objective <= float(entclust.objective(sigma, start)) + 1e-15
    lowest = []
    entclust.newton_rce(sigma, lam=100.0, max_iter=80, callback=lambda r: lowest.append(float(r.objective)))
    assert entclust.newton_rce(sigma, lam=100.0, max_iter=80).objective == pytest.approx(min(lowest), abs=1e-15)


@pytest.mark.parametrize("seed", [1, 2])
def test_newton_solvers_on_confident_predictions(seed):
    """Logits 10 N(0, 1) (sigma entries down to 1e-27): plain Newton jammed at the simplex's boundary
    4.4e-3 above the optimum on seed 2 (relative Frank-Wolfe gaps 0.2-5); the damped step reaches
    the duality gap's target on seed 1 (and 0, not run here) and is within 1e-7 of SQUAREM's best on seed 2."""
    g = torch.Generator().manual_seed(seed)
    sigma = torch.softmax(10 * torch.randn(250, 10, generator=g, dtype=torch.float64), -1)
    best = entclust.em_rce(sigma, lam=100.0, accel="squarem", tol_gap=1e-12, max_iter=5000)
    for solver in (entclust.newton_rce, entclust.dual_newton_rce):
        res = solver(sigma, lam=100.0)
        assert res.objective <= best.objective + 1e-7
        assert res.objective - best.objective <= res.gap + 1e-12  # consistent with its certificate (f* <= best)
        if seed == 1:
            assert res.converged and res.gap <= 1e-10


def _confident_wide():
    """``python benchmarks/newton_confident.py --wide``'s hardest draw: softmax(20 z), 250 x 200."""
    g = torch.Generator().manual_seed(5)
    return torch.softmax(20 * torch.randn(250, 200, generator=g, dtype=torch.float64), -1)


def test_newton_takes_the_barrier_path_where_plain_steps_jam(monkeypatch):
    """At K = 200 on confident sigma the damped Newton steps jammed 8 % above the optimum
    (objective 0.752 after 100 steps, Frank-Wolfe gap 0.61); the log-barrier path certifies a
    relative duality gap of 1e-6 in about 35 steps. Without the path (never taken) the same call
    stays far from it, so the path is what does it."""
    sigma = _confident_wide()
    res = entclust.newton_rce(sigma, lam=100.0, tol_gap=1e-6)
    assert bool(res.converged) and res.iterations <= 60
    assert res.duality_gap <= 1e-6 * (1 + res.objective)  # f(y) - f* <= the duality gap
    assert torch.all(res.y > 0) and torch.allclose(res.y.sum(-1), torch.ones(250, dtype=torch.float64))
    em = entclust.em_rce(sigma, lam=100.0, max_iter=1000, tol=0.0)
    assert res.objective <= em.objective
    monkeypatch.setattr(entclust.solvers.newton, "PATH_DAMPING", float("inf"))
    plain = entclust.newton_rce(sigma, lam=100.0, tol_gap=1e-6)
    assert not bool(plain.converged) and plain.objective > res.objective + 1e-2


def test_newton_callback_stops_inside_the_path():
    sigma = _confident_wide()[:100, :50]
    sigma = sigma / sigma.sum(-1, keepdim=True)
    seen = []
    res = entclust.newton_rce(sigma, lam=100.0, callback=lambda r: seen.append(int(r.iterations)) or len(seen) == 20)
    # every step reported once, in order (plain, path and damped steps alike), and the stop is where it was asked
    assert seen == list(range(20)) and int(res.iterations) == 19


def test_newton_takes_no_step_uphill_at_a_huge_lam():
    """At lam = 1e12 the K x K systems are so ill-conditioned that the Newton direction can point
    uphill (its decrement -3.6e11); Armijo with that decrement allowed rises, and the steps climbed
    to an objective of 5.68 (its optimum is about 0.43). Such a direction now takes only a step
    that lowers the objective."""
    g = torch.Generator().manual_seed(1)
    sigma = torch.softmax(20 * torch.randn(120, 30, generator=g, dtype=torch.float64), -1)
    res = entclust.newton_rce(sigma, lam=1e12)
    assert torch.isfinite(res.y).all() and res.objective < 0.5
    moderate = entclust.newton_rce(sigma, lam=1e6)
    assert abs(float(moderate.objective) - 0.428571910) < 1e-8  # dual_newton_rce's optimum at this lam
