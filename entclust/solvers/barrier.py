"""An interior-point Newton solver of the collision-CE pseudo-label problem (docs/maths.md, "An
interior-point Newton method for the collision-CE problem"): EM and PGD crawl towards its optimum,
whose rows are nearly one-hot, where a log barrier followed down to a small weight reaches a
gap of 1e-9 in about a hundred Newton steps. Composite PyTorch in float64 (any
device); the problems of a batch side by side, each with its own barrier weight."""
from __future__ import annotations

import math

import torch

from ._checked import criterion_met, criterion_text, gap_target
from ._problem import as_input, check_count, check_gap_options, check_number, finite_problems, prepare, unbatch
from .certificate import certify_gaps
from .result import SolverResult, best_gap

# The barrier's weight: its first value, the factor it shrinks by once a point is centred, and its
# floor (the certificate of a centred point is about K times the weight; float64 stops centring it
# near 1e-13, measured at K = 2000, so the floor's stage ends the path).
TAU_START, TAU_SHRINK, TAU_MIN = 1.0, 0.1, 1e-14
START_SHARE = 0.1  # share of the uniform distribution mixed into the start: the barrier needs y > 0
QUIET_STEPS = 5  # steps in a row whose decrease is below rounding after which a point counts as centred


def _barrier_value(sigma, y, u, lam: float, tau) -> torch.Tensor:
    """``N f(y) - tau sum_ik ln y_ik`` of each problem ``(B, N, K)`` (float64 ``(B,)``; tau ``(B,)``)."""
    n = y.shape[-2]
    fair = torch.where(u > 0, u * torch.log(y.mean(-2)), 0.0).sum(-1) if lam != 0 else 0.0
    return -torch.log((sigma * y).sum(-1)).sum(-1) - lam * n * fair - tau * torch.log(y).sum((-2, -1))


def barrier_direction(sigma, y, u, lam: float, tau):
    """The Newton direction ``d`` (rows summing to 0) of ``Phi(y) = N f(y) - tau sum ln y`` at an
    interior y, and its decrement ``-g^T d``; ``(N, K)`` with a number tau, or ``(B, N, K)``
    problems with ``(B,)`` weights. In the scaled variables ``d = y * delta`` the Hessian is,
    per row, ``tau I + a s s^T`` (``s = y * sigma``, ``a = 1 / (sigma . y)^2``) plus, per class k,
    the coupling ``c_k (y_.k)(y_.k)^T`` over the points (``c_k = lam u_k / (N y_bar_k^2)``); the row
    constraints become ``y_i . delta_i = 0``. Each row's constrained inverse is the identity over
    ``tau`` less two rank-one terms, so the KKT system reduces to one K x K positive definite
    solve (``O(N K^2)`` to form it). The gradient is taken with each row's y-weighted mean
    removed: a per-row constant does not change the step (the row multiplier absorbs it), but it
    is of the order of lam while the part that matters shrinks with tau, and left in, its rounding
    turns the step uphill once tau is below about 1e-8."""
    if y.dim() == 2:
        d, decrement = barrier_direction(sigma.unsqueeze(0), y.unsqueeze(0), u, lam,
                                         torch.as_tensor(tau, dtype=y.dtype, device=y.device).reshape(1))
        return d[0], decrement[0]
    _, n, k = y.shape
    t3 = tau[:, None, None]
    p = (sigma * y).sum(-1, keepdim=True)
    active = (u > 0) & (lam != 0)
    y_bar = y.mean(-2, keepdim=True)
    g = -sigma / p - torch.where(active, lam * u / y_bar, 0.0) - t3 / y
    g = g - (y * g).sum(-1, keepdim=True)
    s = y * sigma
    beta = (1.0 / p ** 2) / (t3 + (s * s).sum(-1, keepdim=True) / p ** 2)  # a / (tau + a |s|^2)

    def row_inverse(r):  # (tau I + a s s^T)^{-1} r, row by row
        return (r - beta * s * (s * r).sum(-1, keepdim=True)) / t3

    h = row_inverse(y)
    eta = (y * h).sum(-1, keepdim=True)

    def constrained(r):  # the row's inverse on the plane y . delta = 0
        return row_inverse(r) - h * ((h * r).sum(-1, keepdim=True) / eta)

    root_c = torch.where(active, lam * u / (n * y_bar ** 2), 0.0).sqrt()  # (B, 1, K)
    ys = y * (beta / t3).sqrt() * s
    yh = y * h / eta.sqrt()
    # sum_i Y_i M_i Y_i, M_i the row's constrained inverse: the coupling's K x K Schur complement
    coupled = torch.diag_embed((y * y).sum(-2) / tau[:, None]) - ys.mT @ ys - yh.mT @ yh
    system = torch.eye(k, dtype=y.dtype, device=y.device) + root_c.mT * coupled * root_c
    mg = constrained(-y * g)
    rho = torch.linalg.solve(system, (root_c * (y * mg).sum(-2, keepdim=True)).mT).mT
    d = y * (mg - constrained(y * (root_c * rho)))
    d = d - y * d.sum(-1, keepdim=True)  # on the rows' plane exactly (y sums to 1 in each row)
    return d, -(g * d).sum((-2, -1))


def _line_search(sigma, y, u, lam: float, tau, d, decrement, noise: float, wanted):
    """Damped steps along ``d`` for the problems ``wanted``: per problem the largest of 0.95 of the
    way to the boundary, halved, that satisfies Armijo on the barrier objective, or whose
    predicted decrease is below its rounding and that does not raise it beyond that (quiet).
    Returns ``(y, stepped, quiet)``."""
    value = _barrier_value(sigma, y, u, lam, tau)
    level = noise * (value.abs() + 1)
    room = torch.where(d < 0, -y / torch.where(d < 0, d, -1.0), math.inf).amin((-2, -1))
    alpha = torch.clamp(0.95 * room, max=1.0)
    out, stepped, quiet = y.clone(), torch.zeros_like(wanted), torch.zeros_like(wanted)
    pending = wanted.clone()
    while bool(pending.any()):
        candidate = y + alpha[:, None, None] * d
        candidate = candidate / candidate.sum(-1, keepdim=True)
        v_try = _barrier_value(sigma, candidate, u, lam, tau)
        finite = torch.isfinite(v_try)
        armijo = finite & (v_try <= value - 1e-4 * alpha * decrement)
        hushed = finite & ~armijo & (alpha * decrement <= level) & (v_try <= value + level)
        take = pending & (armijo | hushed)
        out[take] = candidate[take]
        stepped |= take
        quiet |= take & hushed
        pending &= ~take
        alpha = torch.where(pending, alpha / 2, alpha)
        pending &= alpha > 1e-14
    return out, stepped, quiet


def _barrier(sigma, u, lam: float, tol: float, max_iter: int, y0, target, start, criterion: str, callback,
             batched: bool):
    """The problems ``(B, N, K)`` side by side from the interior starts ``y0``, each with its own
    weight tau; ``start`` ``(B,)`` the objectives the decrease of the target counts from.
    Returns ``(y, iterations, objective, gap, dual, converged)``: a problem that ends short of its
    criterion gives the lowest point it passed (of points level with it up to rounding, the
    best certified)."""
    b, n, k = sigma.shape
    device = sigma.device
    y = y0.clone()
    tau = torch.full((b,), TAU_START, dtype=sigma.dtype, device=device)
    quiet = torch.zeros(b, dtype=torch.int64, device=device)
    iterations = torch.zeros(b, dtype=torch.int64, device=device)
    live = torch.ones(b, dtype=torch.bool, device=device)
    converged = torch.zeros_like(live)
    best, best_value = y.clone(), torch.full_like(tau, math.inf)
    best_gaps = torch.full((2, b), math.inf, dtype=tau.dtype, device=device)  # Frank-Wolfe and duality gap
    noise = 64 * torch.finfo(sigma.dtype).eps
    for step in range(max_iter + 1):
        objective, gap, dual = certify_gaps("cce", sigma, y, u, lam)
        cert = best_gap(gap, dual)
        level = noise * (objective.abs() + 1)
        better = live & ((objective < best_value - level)
                         | ((objective <= best_value + level) & (cert < best_gap(best_gaps[0], best_gaps[1]))))
        best[better] = y[better]
        best_value = torch.where(better, torch.minimum(best_value, objective), best_value)
        best_gaps = torch.where(better, torch.stack([gap, dual]), best_gaps)
        met = criterion_met(cert, objective, start, tol, target)
        converged |= live & met
        live &= ~met
        if callback is not None and callback(unbatch(SolverResult(y, iterations, objective, gap, converged, criterion,
                                                                  dual), batched)):
            break
        if not bool(live.any()) or step == max_iter:
            break
        index = live.nonzero().squeeze(1)
        s_i, y_i, t_i = sigma[index], y[index], tau[index]
        d, decrement = barrier_direction(s_i, y_i, u, lam, t_i)
        finite = torch.isfinite(d).flatten(1).all(1) & torch.isfinite(decrement)
        centred = decrement <= 1e-3 * t_i * n
        wanted = finite & (decrement > 0) & (quiet[index] < QUIET_STEPS)
        y_new, stepped, hushed = _line_search(s_i, y_i, u, lam, t_i, torch.where(finite[:, None, None], d, 0.0),
                                              torch.where(finite, decrement, 0.0), noise, wanted)
        y[index] = y_new
        iterations[index] += 1
        floor = t_i <= TAU_MIN
        # no step lowers Phi at float64 precision (or none was tried): as far as this tau goes; at the
        # floor, or with a step that is not finite, the problem ends
        ends = ~stepped & (floor | ~finite)
        lower = (~stepped & ~floor & finite) | (stepped & centred & ~floor)  # a centred step is taken all the same
        quiet[index] = torch.where(stepped & ~lower, torch.where(hushed, quiet[index] + 1, 0), 0)
        tau[index] = torch.where(lower, torch.clamp(t_i * TAU_SHRINK, min=TAU_MIN), t_i)
        live[index] &= ~ends
    # the loop ends right after certifying the current y (a problem that ended earlier kept its y)
    fallback = ~converged & (best_value < math.inf)
    y = torch.where(fallback[:, None, None], best, y)
    objective = torch.where(fallback, best_value, objective)
    gap, dual = torch.where(fallback, best_gaps, torch.stack([gap, dual]))
    return y, iterations, objective, gap, dual, converged


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
    gap is about ``K tau``, so the path reaches a gap of 1e-9 in about a hundred steps
    (5 to 10 for each tenfold drop of tau), where EM and PGD need tens of thousands of
    iterations (docs/benchmarks.md). Below tau of about 1e-13 float64 no longer centres the point
    (the Newton systems carry ``1 / tau``): the smallest gap is about ``K 1e-13`` (measured 2e-11 to
    3e-11 at K = 200, 1e-10 to 8e-10 at K = 2000). Each step solves the KKT system with its
    structure (:func:`barrier_direction`: one K x K solve and ``O(N K^2)`` products; the ``NK x NK``
    Hessian is never formed); a fraction-to-the-boundary rule keeps y > 0, Armijo
    backtracking on the barrier objective.

    Stops on the certificate (the duality gap, or the Frank-Wolfe gap where that is smaller,
    :func:`~entclust.solvers.result.best_gap`) ``<= tol`` (default 1e-9), or with
    ``tol_gap`` / ``tol_progress`` as :func:`~entclust.solvers.em_cce` (either makes ``tol``
    default to no absolute criterion); ``max_iter`` counts Newton steps. ``converged`` is False
    when ``max_iter`` ran out or tau reached its floor first, and the gap then says how far the
    solve is (at lam = 1e4, 2 of about 70 random problems up to 40 x 15 stopped at a gap of 4e-5
    and 6e-5; SQUAREM EM, 200 000 iterations, ended one of them 25 % above its objective). Such a
    problem returns the lowest point it passed (of points level with it up to rounding, the one
    with the smallest gap), and no problem ends above its start. Starts from ``y0``, or from
    sigma, mixed with 1/10 of the uniform distribution (the barrier needs every ``y_ik > 0``);
    sigma may have zeros, a prior zero entries (such a class loses its fairness coupling). The
    problems of a batch run side by side, each with its own tau. ``callback(result)``: called
    with the whole batch after the start and every step, a true return stops (as in
    :func:`~entclust.solvers.em_rce`). Composite PyTorch, float64 inside, y returned in sigma's
    dtype."""
    name = "newton_cce"
    tol_gap = check_gap_options(name, tol_gap, 1, callback)
    target = gap_target(name, tol_gap, tol_progress)
    sigma3, u, _, y0, batched = prepare(name, sigma, prior, lam, None, max_iter, y0, validate, start=False)
    tol = (1e-9 if target is None else 0.0) if tol is None else check_number(name, "tol", tol)
    check_count(name, "max_iter", max_iter)
    s64, u64, lam = sigma3.double(), u.double(), float(lam)
    origin = s64 if y0 is None else y0.double()  # tol_progress counts the decrease from here
    criterion = criterion_text(target, tol, "duality gap")
    start, start_gap, start_dual = certify_gaps("cce", s64, origin, u64, lam)
    if s64.shape[-1] == 1:
        y = torch.ones_like(s64)
        objective, gap, dual = certify_gaps("cce", s64, y, u64, lam)
        res = SolverResult(y, torch.zeros_like(start, dtype=torch.int64), objective, gap,
                           torch.ones_like(start, dtype=torch.bool), criterion, dual)
        return as_input(res, sigma.dtype, batched)
    starts = (1 - START_SHARE) * origin + START_SHARE / s64.shape[-1]
    y, iterations, objective, gap, dual, converged = _barrier(s64, u64, lam, tol, max_iter, starts, target, start,
                                                              criterion, callback, batched)
    # a problem that stopped above the objective of its own start (y0 or sigma): that is the better answer
    worse = torch.isfinite(start) & (objective > start)
    if bool(worse.any()):
        y = torch.where(worse[:, None, None], origin, y)
        objective, gap = torch.where(worse, start, objective), torch.where(worse, start_gap, gap)
        dual = torch.where(worse, start_dual, dual)
        converged = torch.where(worse, criterion_met(best_gap(start_gap, start_dual), start, start, tol, target),
                                converged)
    converged = converged & finite_problems(y)
    res = SolverResult(y, iterations, objective, gap, converged, criterion, dual)
    return as_input(res, sigma.dtype, batched)


__all__ = ["barrier_direction", "newton_cce"]
