"""An interior-point Newton solver of the collision-CE pseudo-label problem (docs/maths.md, "An
interior-point Newton method for the collision-CE problem"): EM and PGD crawl towards its optimum,
whose rows are nearly one-hot, where a log barrier followed down to a small weight reaches a
Frank-Wolfe gap of 1e-9 in about a hundred Newton steps. Composite PyTorch in float64 (any
device); one problem at a time, a batch problem by problem."""
from __future__ import annotations

import math

import torch

from ._checked import Progress, criterion_text, gap_met, gap_target
from ._problem import as_input, check_count, check_gap_options, check_number, prepare, stack_results
from .certificate import certify
from .result import SolverResult

# The barrier's weight: its first value, the factor it shrinks by once a point is centred, and its
# floor (the certificate of a centred point is about K times the weight; float64 stops centring it
# near 1e-13, measured at K = 2000, so the floor's stage ends the path).
TAU_START, TAU_SHRINK, TAU_MIN = 1.0, 0.1, 1e-14
START_SHARE = 0.1  # share of the uniform distribution mixed into the start: the barrier needs y > 0
QUIET_STEPS = 5  # steps in a row whose decrease is below rounding after which a point counts as centred


def _barrier_value(sigma, y, u, lam: float, tau: float) -> torch.Tensor:
    """``N f(y) - tau sum_ik ln y_ik`` of one problem (float64 0-d)."""
    n = y.shape[0]
    fair = torch.where(u > 0, u * torch.log(y.mean(0)), 0.0).sum() if lam != 0 else 0.0
    return -torch.log((sigma * y).sum(-1)).sum() - lam * n * fair - tau * torch.log(y).sum()


def barrier_direction(sigma, y, u, lam: float, tau: float):
    """The Newton direction ``d`` (rows summing to 0) of ``Phi(y) = N f(y) - tau sum ln y`` at an
    interior y, and its decrement ``-g^T d``. In the scaled variables ``d = y * delta`` the Hessian is,
    per row, ``tau I + a s s^T`` (``s = y * sigma``, ``a = 1 / (sigma . y)^2``) plus, per class k,
    the coupling ``c_k (y_.k)(y_.k)^T`` over the points (``c_k = lam u_k / (N y_bar_k^2)``); the row
    constraints become ``y_i . delta_i = 0``. Each row's constrained inverse is the identity over
    ``tau`` less two rank-one terms, so the KKT system reduces to one K x K positive definite
    solve (``O(N K^2)`` to form it). The gradient is taken with each row's y-weighted mean
    removed: a per-row constant does not change the step (the row multiplier absorbs it), but it
    is of the order of lam while the part that matters shrinks with tau, and left in, its rounding
    turns the step uphill once tau is below about 1e-8."""
    n, k = y.shape
    p = (sigma * y).sum(-1, keepdim=True)
    active = (u > 0) & (lam != 0)
    g = -sigma / p - torch.where(active, lam * u / y.mean(0), 0.0) - tau / y
    g = g - (y * g).sum(-1, keepdim=True)
    s = y * sigma
    beta = (1.0 / p ** 2) / (tau + (s * s).sum(-1, keepdim=True) / p ** 2)  # a / (tau + a |s|^2)

    def row_inverse(r):  # (tau I + a s s^T)^{-1} r, row by row
        return (r - beta * s * (s * r).sum(-1, keepdim=True)) / tau

    h = row_inverse(y)
    eta = (y * h).sum(-1, keepdim=True)

    def constrained(r):  # the row's inverse on the plane y . delta = 0
        return row_inverse(r) - h * ((h * r).sum(-1, keepdim=True) / eta)

    c = torch.where(active, lam * u / (n * y.mean(0) ** 2), 0.0)
    root_c = c.sqrt()
    ys = y * (beta / tau).sqrt() * s
    yh = y * h / eta.sqrt()
    # sum_i Y_i M_i Y_i, M_i the row's constrained inverse: the coupling's K x K Schur complement
    coupled = torch.diag((y * y).sum(0) / tau) - ys.T @ ys - yh.T @ yh
    system = torch.eye(k, dtype=y.dtype, device=y.device) + root_c[:, None] * coupled * root_c[None, :]
    mg = constrained(-y * g)
    rho = torch.linalg.solve(system, root_c * (y * mg).sum(0))
    d = y * (mg - constrained(y * (root_c * rho)))
    d = d - y * d.sum(-1, keepdim=True)  # on the rows' plane exactly (y sums to 1 in each row)
    return d, -(g * d).sum()


def _finish(sigma, y, u, lam, iterations, converged, criterion) -> SolverResult:
    objective, gap = (x[0] for x in certify("cce", sigma.unsqueeze(0), y.unsqueeze(0), u, lam))
    return SolverResult(y, torch.tensor(iterations), objective, gap, torch.tensor(converged), criterion,
                        torch.tensor(math.nan, dtype=torch.float64))


def _line_search(sigma, y, u, lam: float, tau: float, d, decrement: float, noise: float):
    """A damped step along ``d``: the largest of 0.95 of the way to the boundary, halved, that
    satisfies Armijo on the barrier objective, or whose predicted decrease is below its rounding
    and that does not raise it beyond that (then flagged quiet). ``(y, quiet)`` or None."""
    value = float(_barrier_value(sigma, y, u, lam, tau))
    level = noise * (abs(value) + 1)
    shrink = d < 0
    alpha = min(1.0, 0.95 * float((-y[shrink] / d[shrink]).min())) if bool(shrink.any()) else 1.0
    while alpha > 1e-14:
        candidate = y + alpha * d
        candidate = candidate / candidate.sum(-1, keepdim=True)
        v_try = float(_barrier_value(sigma, candidate, u, lam, tau))
        if math.isfinite(v_try):
            if v_try <= value - 1e-4 * alpha * decrement:
                return candidate, False
            if alpha * decrement <= level and v_try <= value + level:
                return candidate, True
        alpha /= 2
    return None


def _barrier(sigma, u, lam: float, tol: float, max_iter: int, y0, target, report, start: float,
             criterion: str) -> SolverResult:
    """One problem, from the interior start ``y0``; ``start`` is the objective the decrease of
    the target counts from. Returns the lowest point it passed (the start included)."""
    n, k = sigma.shape
    if k == 1:
        return _finish(sigma, torch.ones_like(sigma), u, lam, 0, True, criterion)
    y = y0.clone()
    tau, quiet = TAU_START, 0
    best, best_value, best_gap, converged = y, math.inf, math.inf, False
    noise = 64 * torch.finfo(sigma.dtype).eps
    for iterations in range(max_iter + 1):
        objective, gap = (x[0] for x in certify("cce", sigma.unsqueeze(0), y.unsqueeze(0), u, lam))
        # the lowest point so far; among points level with it up to rounding, the best certified
        level = noise * (abs(float(objective)) + 1)
        if float(objective) < best_value - level or (float(objective) <= best_value + level and float(gap) < best_gap):
            best, best_value, best_gap = y, min(best_value, float(objective)), float(gap)
        met = gap_met(objective, gap, tol, target, start)
        if report(y, iterations, objective, gap, met) or met:
            converged = met
            break
        if iterations == max_iter:
            break
        d, decrement = barrier_direction(sigma, y, u, lam, tau)
        if not bool(torch.isfinite(d).all()):
            break
        centred = float(decrement) <= 1e-3 * tau * n
        y_try = _line_search(sigma, y, u, lam, tau, d, float(decrement), noise) \
            if float(decrement) > 0 and quiet < QUIET_STEPS else None
        if y_try is None:  # no step lowers Phi at float64 precision: as far as this tau goes
            if tau <= TAU_MIN:
                break
            tau, quiet = max(tau * TAU_SHRINK, TAU_MIN), 0
            continue
        y, quiet = y_try[0], (quiet + 1 if y_try[1] else 0)
        if centred and tau > TAU_MIN:  # the step is taken all the same: an interior optimum needs it
            tau, quiet = max(tau * TAU_SHRINK, TAU_MIN), 0
    if not converged and best is not y:
        res = _finish(sigma, best, u, lam, iterations, False, criterion)
        return res._replace(converged=torch.tensor(gap_met(res.objective, res.gap, tol, target, start)))
    return _finish(sigma, y, u, lam, iterations, converged, criterion)


def newton_cce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float | None = None,
    max_iter: int = 300,
    y0: torch.Tensor | None = None,
    tol_gap: float | None = None,
    tol_progress: float | None = None,
    callback=None,
    validate: bool = True,
) -> SolverResult:
    """Interior-point Newton for the collision-CE pseudo-label problem
    ``min_y -(1/N) sum_i ln(sigma_i . y_i) + lam KL(u || y_bar)``: Newton steps on
    ``N f(y) - tau sum_ik ln y_ik`` over the row simplices, ``tau`` lowered by 10 each time the
    point is centred (Newton decrement ``<= 1e-3 tau N``), from 1 down to 1e-14. A centred point's
    Frank-Wolfe gap is about ``K tau``, so the path reaches a gap of 1e-9 in about a hundred steps
    (5 to 10 for each tenfold drop of tau), where EM and PGD need tens of thousands of
    iterations (docs/benchmarks.md). Below tau of about 1e-13 float64 no longer centres the point
    (the Newton systems carry ``1 / tau``): the smallest gap is about ``K 1e-13`` (2e-11 at K = 200,
    2e-10 at K = 2000). Each step solves the KKT system with its
    structure (:func:`barrier_direction`: one K x K solve and ``O(N K^2)`` products; the ``NK x NK``
    Hessian is never formed); a fraction-to-the-boundary rule keeps y > 0, Armijo
    backtracking on the barrier objective.

    Stops on the certificate (the Frank-Wolfe gap) ``<= tol`` (default 1e-9), or with
    ``tol_gap`` / ``tol_progress`` as :func:`~entclust.solvers.em_cce` (either makes ``tol``
    default to no absolute criterion); ``max_iter`` counts Newton steps. ``converged`` is False
    when ``max_iter`` ran out or tau reached its floor first, and the gap then says how far the
    solve is (at lam = 1e4, 2 of about 70 random problems up to 40 x 15 stopped at a gap of 4e-5
    and 6e-5; SQUAREM EM, 200 000 iterations, ended one of them 25 % above its objective). Returns the lowest point it passed (the start included; of points
    level with it up to rounding, the one with the smallest gap), so it is never worse than its
    start. Starts from ``y0``, or from sigma, mixed with 1/10 of the uniform distribution (the
    barrier needs every ``y_ik > 0``); sigma may have zeros, a prior zero entries (such a class
    loses its fairness coupling). ``callback(result)``: called after the start and every step,
    a true return stops (as in :func:`~entclust.solvers.em_rce`). Composite PyTorch, float64
    inside, y returned in sigma's dtype."""
    name = "newton_cce"
    tol_gap = check_gap_options(name, tol_gap, 1, callback)
    target = gap_target(name, tol_gap, tol_progress, "cce")
    sigma3, u, _, y0, batched = prepare(name, sigma, prior, lam, None, max_iter, y0, validate, start=False)
    tol = (1e-9 if target is None else 0.0) if tol is None else check_number(name, "tol", tol)
    check_count(name, "max_iter", max_iter)
    s64, u64, lam = sigma3.double(), u.double(), float(lam)
    origin = s64 if y0 is None else y0.double()  # tol_progress counts the decrease from here
    starts = (1 - START_SHARE) * origin + START_SHARE / s64.shape[-1]
    criterion = criterion_text(target, tol, "Frank-Wolfe gap")
    progress = Progress("cce", s64, origin, u64, lam, callback, batched, criterion)
    origin_values, origin_gaps = certify("cce", s64, origin, u64, lam)
    parts = []
    for i in range(s64.shape[0]):
        report = lambda y, it, objective, gap, met, i=i: progress.report(i, y, it, objective, gap, met)  # noqa: E731
        start = float(origin_values[i])
        part = _barrier(s64[i], u64, lam, tol, max_iter, starts[i], target, report, start, criterion)
        if not math.isfinite(start) or float(part.objective) <= start:
            parts.append(part)
        else:  # stopped above the objective of its own start (y0 or sigma): that is the better answer
            parts.append(part._replace(y=origin[i].clone(), objective=origin_values[i], fw_gap=origin_gaps[i],
                                       converged=torch.tensor(gap_met(origin_values[i], origin_gaps[i], tol, target,
                                                                   start))))
    return as_input(stack_results(parts), sigma.dtype, batched)


__all__ = ["barrier_direction", "newton_cce"]
