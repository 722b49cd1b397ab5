"""Second-order solvers of the reverse-CE pseudo-label problem (MATH.md): Newton's method on
the full coupled primal problem (the baseline of seed 004 Table 1) and Newton on its
K-dimensional concave dual, which is exact and far faster than EM where ``lam N >> 1``.
Composite PyTorch in float64 (any device); one problem at a time, a batch problem by problem."""
from __future__ import annotations

import torch

from .. import ops
from ._problem import check_count, check_number, prepare, unbatch
from .certificate import certify
from .result import SolverResult


def _value(sigma, y, u, lam) -> torch.Tensor:
    return certify("rce", sigma.unsqueeze(0), y.unsqueeze(0), u, lam)[0][0]


def _gap(sigma, y, u, lam) -> torch.Tensor:
    return certify("rce", sigma.unsqueeze(0), y.unsqueeze(0), u, lam)[1][0]


def _gradient(sigma, y, u, lam) -> torch.Tensor:
    """``g_ik = -sigma_ik / (N y_ik) - lam u_k / (N y_bar_k)`` (first term 0 where sigma_ik = 0)."""
    n = sigma.shape[0]
    fair = torch.where(u > 0, -lam * u / (n * y.mean(0)), 0.0) if lam != 0 else 0.0
    return torch.where(sigma > 0, -sigma / (n * y), 0.0) + fair


def _finish(sigma, y, u, lam, iterations: int, converged: bool, tol: float) -> SolverResult:
    objective, gap = certify("rce", sigma.unsqueeze(0), y.unsqueeze(0), u, lam)
    return SolverResult(y, torch.tensor(iterations), objective[0], gap[0], torch.tensor(converged),
                        f"Frank-Wolfe gap <= {tol:g}")


def _stack(parts) -> SolverResult:
    """Per-problem results of a batch as one batched SolverResult."""
    return SolverResult(*(torch.stack([getattr(p, f) for p in parts]) for f in SolverResult._fields[:-1]),
                        parts[0].criterion)


def _positive(name: str, sigma3) -> None:
    if not bool((sigma3 > 0).all()):
        raise ValueError(f"{name} needs sigma > 0 everywhere (the log barrier must act on every entry); "
                         f"sigma has {int((sigma3 <= 0).sum())} zero entries: use em_rce")


def newton_rce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float | None = 1e-10,
    max_iter: int = 100,
    y0: torch.Tensor | None = None,
    validate: bool = True,
) -> SolverResult:
    """Newton's method on the full coupled reverse-CE problem, the baseline of seed 004 Table 1
    ("Kelley 1995"), with the Hessian's structure: ``diag(sigma_ik / (N y_ik^2))`` plus, per class,
    the rank-one coupling ``lam u_k / (N^2 y_bar_k^2) 1 1^T`` over the points. The N row
    constraints are exact; the KKT system reduces to K unknowns (one K x K solve and an
    ``O(N K^2)`` product per step; the ``NK x NK`` matrix is never formed). A fraction-to-the-boundary
    rule keeps y inside the simplex, Armijo backtracking on the objective. Stops on the
    Frank-Wolfe gap ``<= tol`` (default 1e-10), or when no step decreases the objective at
    float64 precision (then ``converged`` is False and the gap says how far it is).

    Measured (N = 250, lam = 100, sigma = softmax(3 z), float64): K = 2 in 4-5 steps, K = 20 in
    8-20, K = 200 in 18-21 steps to 1e-10 on two of three draws and 9.5e-10 after 100 on the
    third, where EM is at ~1e-2 after 1000 iterations. Needs ``sigma > 0`` (a zero prior entry is
    allowed: that class only loses its fairness coupling). Composite PyTorch (float64 inside)."""
    sigma3, u, _, y0, batched = prepare("newton_rce", sigma, prior, lam, None, max_iter, y0, validate)
    tol = 1e-10 if tol is None else check_number("newton_rce", "tol", tol)
    _positive("newton_rce", sigma3)
    s64, u64 = sigma3.double(), u.double()
    parts = [_newton(s64[i], u64, float(lam), tol, max_iter, None if y0 is None else y0[i].double())
             for i in range(s64.shape[0])]
    return _as_input(_stack(parts), sigma.dtype, batched)


def newton_direction(sigma, y, u, lam: float) -> torch.Tensor:
    """Newton direction of the reverse-CE problem at an interior y, with the N row constraints
    ``sum_k d_ik = 0`` exact. The Hessian is ``diag(a) + sum_k c_k v_k v_k^T`` with
    ``a_ik = sigma_ik / (N y_ik^2)``, ``c_k = lam u_k / (N^2 y_bar_k^2)`` and ``v_k`` the indicator of
    column k (MATH.md), so the KKT system ``H d + A^T mu = -g, A d = 0`` reduces to K unknowns
    ``s_k = sum_i d_ik``: with ``b = 1/a``, ``B_i = sum_k b_ik``, ``p = b / B`` and the projected
    negative gradient ``r_ik = -g_ik + sum_m p_im g_im``,

        ``(I + diag(c * sum_i b_i) - M diag(c)) s = sum_i b_i * r_i``,  ``M = b^T p`` (K x K),
        ``d_ik = b_ik (r_ik - c_k s_k + sum_m p_im c_m s_m)``.

    Cost O(N K^2) for M plus a K x K solve; the NK x NK Hessian is never formed."""
    n, k = sigma.shape
    y_bar = y.mean(0)
    g = _gradient(sigma, y, u, lam)
    b = n * y * y / sigma
    p = b / b.sum(-1, keepdim=True)
    r = -g + (p * g).sum(-1, keepdim=True)
    c = lam * u / (n * n * y_bar * y_bar)
    system = torch.eye(k, dtype=sigma.dtype, device=sigma.device) + torch.diag(c * b.sum(0)) - (b.T @ p) * c
    s = torch.linalg.solve(system, (b * r).sum(0))
    cs = c * s
    return b * (r - cs + (p * cs).sum(-1, keepdim=True))


def _newton(sigma, u, lam: float, tol: float, max_iter: int, y0) -> SolverResult:
    y = sigma.clone() if y0 is None else y0.clone()
    value = _value(sigma, y, u, lam)
    iterations, converged = 0, False
    noise = 64 * torch.finfo(sigma.dtype).eps
    for iterations in range(max_iter + 1):
        grad = _gradient(sigma, y, u, lam)
        if _gap(sigma, y, u, lam) <= tol:
            converged = True
            break
        if iterations == max_iter:
            break
        try:
            d = newton_direction(sigma, y, u, lam)
        except RuntimeError:  # a singular K x K system (torch.linalg.LinAlgError)
            break
        if not bool(torch.isfinite(d).all()):
            break
        slope = float((grad * d).sum())  # < 0 for a descent direction
        shrink = d < 0
        alpha = min(1.0, 0.99 * float((-y[shrink] / d[shrink]).min())) if bool(shrink.any()) else 1.0
        accepted = False
        while alpha > 1e-14:
            y_try = y + alpha * d
            y_try = y_try / y_try.sum(-1, keepdim=True)  # rows already sum to 1 up to rounding
            v_try = _value(sigma, y_try, u, lam)
            # Armijo; near the optimum the decrease drops below rounding, so accept a step
            # whose predicted decrease is itself below the objective's noise
            if bool(torch.isfinite(v_try)) and (bool(v_try <= value + 1e-4 * alpha * slope)
                                                or -alpha * slope <= noise * (abs(float(value)) + 1)):
                accepted = True
                break
            alpha /= 2
        if not accepted:
            break
        y, value = y_try, v_try
    return _finish(sigma, y, u, lam, iterations, converged, tol)


def _as_input(res: SolverResult, dtype: torch.dtype, batched: bool) -> SolverResult:
    """A float64 result of a composite solver with y in the input's dtype, unbatched if it was."""
    return unbatch(res._replace(y=res.y.to(dtype)), batched)


def dual_newton_rce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float = 1e-10,
    max_iter: int = 150,
    warm_start: int = 5,
    switch_gap: float = 1e-6,
    polish: int = 50,
    validate: bool = True,
) -> SolverResult:
    """Exact solver of the reverse-CE problem: Newton on its K-dimensional concave dual (MATH.md),
    one ``O(N K^2)`` product and a ``K x K`` solve per step, stopped on the Frank-Wolfe gap
    ``<= tol`` (every iterate is primal feasible). Where EM crawls linearly (``lam N >> 1``) this
    is far faster. The dual's rows ``sigma / (t - w)`` lose precision where ``t_i - w_k`` cancels,
    so below a gap of ``switch_gap`` (or when the dual line search stalls or its values stop
    being finite) steps of :func:`newton_rce` finish in primal variables, at most ``polish`` of
    them (``polish=0``: the dual alone). ``max_iter`` caps dual and polish steps together; the
    ``warm_start`` EM steps that give the first multipliers are not counted.

    Measured (N = 250, lam = 100, sigma = softmax(3 z), float64, tol = 1e-10, 2 threads):
    K = 20 in 5-7 steps and 0.01 s; K = 200 in 34-84 steps (dual and polish), 0.12-0.32 s, to gaps
    of 1.5e-11 to 7.5e-9 on four draws (the dual alone: 1e-7 after 200 steps on one of them;
    EM: ~1e-2 after 1000 iterations); K = 2000 in 36-49 steps, 5-6.5 s.
    ``converged`` says whether ``tol`` was met; the result is finite for every ``lam >= 0``
    (``lam = 0``: y = sigma, the optimum). Needs ``sigma > 0``; a zero prior entry keeps that
    class's multiplier at 0. Composite PyTorch (float64 inside)."""
    name = "dual_newton_rce"
    sigma3, u, _, _, batched = prepare(name, sigma, prior, lam, None, max_iter, None, validate)
    tol = check_number(name, "tol", tol)
    switch_gap = check_number(name, "switch_gap", switch_gap)
    check_count(name, "warm_start", warm_start)
    check_count(name, "polish", polish)
    _positive(name, sigma3)
    s64, u64 = sigma3.double(), u.double()
    parts = [_dual_newton(s64[i], u64, float(lam), tol, max_iter, warm_start, switch_gap, polish)
             for i in range(s64.shape[0])]
    return _as_input(_stack(parts), sigma.dtype, batched)


def _rows_given_w(sigma, w, *, tol: float = 1e-15, max_iter: int = 100):
    """For fixed multipliers w, each row's optimum ``y_ik = sigma_ik / (t_i - w_k)`` with t_i the
    root of ``sum_k sigma_ik / (t - w_k) = 1`` above max_k w_k. The sum is convex and decreasing
    in t and >= 1 at ``t = max_k (w_k + sigma_ik)``, so Newton from there rises monotonically.
    Stops when every row has ``|phi| <= tol`` or a step below t's rounding (where t_i - w_k
    cancels, phi cannot get below ~1e-13)."""
    t = (w + sigma).amax(-1, keepdim=True)
    floor = 4 * torch.finfo(sigma.dtype).eps
    for _ in range(max_iter):
        r = sigma / (t - w)
        phi = r.sum(-1, keepdim=True) - 1
        step = phi / (r * r / sigma).sum(-1, keepdim=True)  # -phi / phi'
        t = t + step
        if bool(((phi.abs() <= tol) | (step.abs() <= floor * t.abs()) | ~torch.isfinite(step)).all()):
            break
    return t, sigma / (t - w)


def _dual_newton(sigma, u, lam, tol, max_iter, warm_start, switch_gap, polish) -> SolverResult:
    """One problem; see :func:`dual_newton_rce`. Multipliers w for ``y_bar = z`` give
    ``z_k = lam u_k / w_k`` and rows ``y_ik = sigma_ik / (t_i - w_k)``; dual gradient
    ``lam u / w - y_bar(w)``, Hessian ``-diag(lam u / w^2) - (1/N) sum_i (diag(d_i) - d_i d_i^T / D_i)``,
    ``d_ik = sigma_ik / (t_i - w_k)^2``. Backtracking by Armijo on the dual value
    ``D(w) = (1/N) sum_i [-sigma_i . ln y_i - w . y_i] + sum_k lam u_k (ln(w_k / lam) + 1)`` while
    the predicted ascent exceeds D's rounding noise, then on the dual gradient norm."""
    if lam == 0:  # no coupling: every row's optimum is y_i = sigma_i
        return _finish(sigma, sigma.clone(), u, lam, 0, True, tol)
    n = sigma.shape[0]
    on = u > 0  # classes with a fairness term; w_k = 0 for the others
    start, _, _ = ops.em_rce(sigma.unsqueeze(0), u, lam, 0.0, warm_start, None)
    start = start[0]
    w = torch.where(on, lam * u / start.mean(0), 0.0)
    w_safe = lambda w: torch.where(on, w, 1.0)  # noqa: E731

    def state(w):
        """Row roots, y(w), dual gradient and dual value D(w) = min_{y, z} L(y, z, w)."""
        t, y = _rows_given_w(sigma, w)
        fair = torch.where(on, lam * u * (torch.log(w_safe(w) / lam) + 1), 0.0)
        value = (-(sigma * torch.log(y)).sum() - (y * w).sum()) / n + fair.sum()
        return t, y, torch.where(on, lam * u / w_safe(w) - y.mean(0), 0.0), value

    def usable(*tensors) -> bool:
        return all(bool(torch.isfinite(x).all()) for x in tensors)

    t, y, grad, value = state(w)
    iterations, converged = 0, False
    best = start  # the last finite, exactly feasible primal point
    switch = max(tol, switch_gap) if polish > 0 else tol
    if usable(t, y, grad, value):
        for iterations in range(max_iter + 1):
            primal = y / y.sum(-1, keepdim=True)  # y(w) sums to 1 only to ~1e-10 where t - w cancels
            if not usable(primal):
                break
            best = primal
            gap = _gap(sigma, primal, u, lam)
            if gap <= switch:
                converged = bool(gap <= tol)
                break
            if iterations == max_iter:
                break
            d = sigma / (t - w) ** 2
            hessian = (-torch.diag(lam * u / w_safe(w) ** 2)
                       - (torch.diag(d.sum(0)) - d.T @ (d / d.sum(-1, keepdim=True))) / n)
            direction = torch.zeros_like(w)  # ascent: the Hessian is negative definite
            try:
                direction[on] = torch.linalg.solve(hessian[on][:, on], -grad[on])
            except RuntimeError:  # singular at this precision
                break
            slope = float(grad @ direction)  # > 0
            if not slope > 0:
                break
            # Armijo on the concave dual value while the predicted ascent is above the rounding
            # noise of D; below it a decrease of the dual gradient norm instead
            noise = 64 * torch.finfo(sigma.dtype).eps * (abs(float(value)) + 1)
            norm = float(grad.norm())
            alpha, accepted = 1.0, False
            while alpha > 1e-12:
                w_try = w + alpha * direction
                if bool((w_try[on] > 0).all()):
                    t_try, y_try, g_try, v_try = state(w_try)
                    if usable(t_try, y_try, g_try, v_try):
                        if alpha * slope > noise:
                            accepted = bool(v_try >= value + 1e-4 * alpha * slope)
                        else:
                            accepted = float(g_try.norm()) <= (1 - 1e-4 * alpha) * norm
                        if accepted:
                            break
                alpha /= 2
            if not accepted:
                break  # no ascent left at this precision
            w, t, y, grad, value = w_try, t_try, y_try, g_try, v_try
    polish = min(polish, max_iter - iterations)
    if not converged and polish > 0:
        res = _newton(sigma, u, lam, tol, polish, best)
        return res._replace(iterations=res.iterations + iterations)
    return _finish(sigma, best, u, lam, iterations, converged, tol)
