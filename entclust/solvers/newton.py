"""Second-order solvers of the reverse-CE pseudo-label problem (docs/maths.md): Newton's method on
the full coupled primal problem (the baseline of Zhang & Boykov 2024 Table 1) and Newton on its
K-dimensional concave dual, which is exact and far faster than EM where ``lam N >> 1``.
Composite PyTorch in float64 (any device); one problem at a time, a batch problem by problem."""
from __future__ import annotations

import torch

from .. import ops
from ._checked import GapTarget, Progress, criterion_met, criterion_text, gap_target
from ._problem import as_input, check_count, check_gap_options, check_number, prepare
from .certificate import certify, certify_gaps
from .result import SolverResult, best_gap


def _value(sigma, y, u, lam) -> torch.Tensor:
    return certify("rce", sigma.unsqueeze(0), y.unsqueeze(0), u, lam)[0][0]


def _gradient(sigma, y, u, lam) -> torch.Tensor:
    """``g_ik = -sigma_ik / (N y_ik) - lam u_k / (N y_bar_k)`` (first term 0 where sigma_ik = 0)."""
    n = sigma.shape[0]
    fair = torch.where(u > 0, -lam * u / (n * y.mean(0)), 0.0) if lam != 0 else 0.0
    return torch.where(sigma > 0, -sigma / (n * y), 0.0) + fair


def _criterion(tol: float, target: GapTarget | None) -> str:
    return criterion_text(target, tol, "duality gap")


def _met(objective, gap, tol: float, target: GapTarget | None, start: float) -> bool:
    """Whether the absolute gap criterion (``tol``) or the gap ``target`` (the relative gap, or the
    gap against the decrease from the start's objective ``start``) holds; ``gap`` the certificate
    (the smaller of the Frank-Wolfe and the duality gap)."""
    as_tensor = lambda v: torch.as_tensor(float(v), dtype=torch.float64)  # noqa: E731
    return bool(criterion_met(as_tensor(gap), as_tensor(objective), as_tensor(start), tol, target))


def _certificate(sigma, y, u, lam):
    """``(objective, fw_gap, duality_gap)`` of one problem, float64 0-d tensors."""
    return (x[0] for x in certify_gaps("rce", sigma.unsqueeze(0), y.unsqueeze(0), u, lam))


def _finish(sigma, y, u, lam, iterations: int, converged: bool, tol: float, target: GapTarget | None = None) -> SolverResult:
    objective, gap, dual = _certificate(sigma, y, u, lam)
    return SolverResult(y, torch.tensor(iterations), objective, gap, torch.tensor(converged),
                        _criterion(tol, target), dual)


def _stack(parts) -> SolverResult:
    """Per-problem results of a batch as one batched SolverResult."""
    fields = {f: torch.stack([torch.as_tensor(getattr(p, f)) for p in parts])
              for f in SolverResult._fields if f != "criterion"}
    return SolverResult(criterion=parts[0].criterion, **fields)


def _positive(name: str, sigma3) -> None:
    if not bool((sigma3 > 0).all()):
        raise ValueError(f"{name} needs sigma > 0 everywhere (the log barrier must act on every entry); "
                         f"sigma has {int((sigma3 <= 0).sum())} zero entries: use em_rce")


def newton_rce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float | None = None,
    max_iter: int = 100,
    y0: torch.Tensor | None = None,
    warm_start: int = 5,
    tol_gap: float | None = None,
    tol_progress: float | None = None,
    callback=None,
    validate: bool = True,
) -> SolverResult:
    """Newton's method on the full coupled reverse-CE problem, the baseline of Zhang & Boykov 2024 Table 1
    ("Kelley 1995"), with the Hessian's structure: ``diag(sigma_ik / (N y_ik^2))`` plus, per class,
    the rank-one coupling ``lam u_k / (N^2 y_bar_k^2) 1 1^T`` over the points. The N row
    constraints are exact; the KKT system reduces to K unknowns (one K x K solve and an
    ``O(N K^2)`` product per step; the ``NK x NK`` matrix is never formed). A fraction-to-the-boundary
    rule keeps y inside the simplex, Armijo backtracking on the objective. A step the boundary
    cuts below 1/10 (confident sigma: ``-sigma_ik ln y_ik`` with sigma_ik ~ 1e-20 is nearly linear,
    and plain Newton jams there) is damped with a log barrier's curvature until full steps return;
    at the fifth cut step with no full step between, the solve follows a log-barrier path once,
    from the centre ``y ~ sigma + 1/K`` down towards the problem itself (``sigma + tau``, tau
    lowered tenfold from centre to centre; docs/maths.md), then damped steps go on; all counted in
    ``max_iter``. Stops on the certificate (the duality gap, :attr:`SolverResult.gap`) ``<= tol``
    (default 1e-10), or when no step decreases the objective at float64 precision, or the path's
    certificate stops improving (then ``converged`` is False and the gap says how far it is;
    float64 certifies confident sigma at K = 200 to 1e-9 .. 1e-6, docs/benchmarks.md). Returns the
    lowest point it passed. Starts from ``y0``, or from ``warm_start`` fused EM steps from sigma
    (``0``: sigma itself; at a large ``lam`` the start sigma is far from fair, and its Newton
    systems are too ill-conditioned to make progress from there).

    Needs ``sigma > 0`` (a zero prior entry is allowed: that class only loses its fairness
    coupling). Composite PyTorch (float64 inside); its steps and times against EM's are in
    docs/benchmarks.md ("Second-order solvers").

    ``tol_gap``: stop instead when the relative gap ``fw_gap / (1 + |objective|)`` is <= ``tol_gap``,
    ``tol_progress``: or when the gap is at most ``tol_progress`` times the decrease since the
    start (as in :func:`~entclust.solvers.em_rce`); either makes ``tol`` default to no absolute
    criterion. ``callback(result)``: called after the start and every step with the batch's
    current state (problems are solved one after another), a true return stops (as in
    :func:`~entclust.solvers.em_rce`)."""
    name = "newton_rce"
    tol_gap = check_gap_options(name, tol_gap, 1, callback)
    target = gap_target(name, tol_gap, tol_progress)
    sigma3, u, _, y0, batched = prepare(name, sigma, prior, lam, None, max_iter, y0, validate, start=False)
    tol = (1e-10 if target is None else 0.0) if tol is None else check_number(name, "tol", tol)
    check_count(name, "warm_start", warm_start)
    _positive(name, sigma3)
    given = y0 is not None  # tol_progress counts the decrease from the caller's y0, else from sigma
    if y0 is None and warm_start > 0:
        y0 = ops.em_rce_kernel(sigma3, u, float(lam), 0.0, warm_start, None)[0]
    s64, u64 = sigma3.double(), u.double()
    starts = s64 if y0 is None else y0.double()
    progress = Progress("rce", s64, starts, u64, float(lam), callback, batched, _criterion(tol, target))
    parts = []
    for i in range(s64.shape[0]):
        report = lambda *state, i=i: progress.report(i, *state)  # noqa: E731
        origin = None if given else float(_value(s64[i], s64[i], u64, float(lam)))
        parts.append(_newton(s64[i], u64, float(lam), tol, max_iter, starts[i], target, report, start=origin))
    return as_input(_stack(parts), sigma.dtype, batched)


def newton_direction(sigma, y, u, lam: float, damping: float = 0.0) -> torch.Tensor:
    """Newton direction of the reverse-CE problem at an interior y, with the N row constraints
    ``sum_k d_ik = 0`` exact (sigma > 0; the rows of ``sigma + tau`` give the barrier path's
    problems, which weigh each row by ``1 + K tau``). The Hessian is ``diag(a) + sum_k c_k v_k v_k^T``
    with ``a_ik = (sigma_ik + damping) / (N y_ik^2)`` (``damping = 0``: the true Hessian; > 0 adds a
    log barrier's curvature, which keeps the step inside the simplex where sigma_ik is tiny),
    ``c_k = lam u_k / (N^2 y_bar_k^2)`` and ``v_k`` the indicator of column k (docs/maths.md), so
    the KKT system ``H d + A^T mu = -g, A d = 0`` reduces to K unknowns ``s_k = sum_i d_ik``: with
    ``b = 1/a``, ``B_i = sum_k b_ik``, ``p = b / B`` and the projected negative gradient
    ``r_ik = -g_ik + sum_m p_im g_im``,

        ``(I + diag(c * sum_i b_i) - M diag(c)) s = sum_i b_i * r_i``,  ``M = b^T p`` (K x K),
        ``d_ik = b_ik (r_ik - c_k s_k + sum_m p_im c_m s_m)``.

    Cost O(N K^2) for M plus a K x K solve; the NK x NK Hessian is never formed."""
    n, k = sigma.shape
    y_bar = y.mean(0)
    g = _gradient(sigma, y, u, lam)
    b = n * y * y / (sigma + damping) if damping else n * y * y / sigma
    p = b / b.sum(-1, keepdim=True)
    r = -g + (p * g).sum(-1, keepdim=True)
    c = lam * u / (n * n * y_bar * y_bar)
    system = torch.eye(k, dtype=sigma.dtype, device=sigma.device) + torch.diag(c * b.sum(0)) - (b.T @ p) * c
    s = torch.linalg.solve(system, (b * r).sum(0))
    cs = c * s
    return b * (r - cs + (p * cs).sum(-1, keepdim=True))


# newton_rce's log-barrier path, taken once Newton steps jam (docs/maths.md, "Newton on confident
# sigma"): the barrier weight tau of -(1/N) sum_ik (sigma_ik + tau) ln y_ik starts at 1/K and
# shrinks tenfold once a point is centred (its Newton decrement <= CENTRED K tau, 1 % of a centred
# point's gap K tau); a stage takes at most STAGE_STEPS steps; the path ends when its certificate
# has not improved for STALL stages (float64 cannot certify much closer there).
PATH_SHRINK, CENTRED, STAGE_STEPS, STALL = 0.1, 1e-2, 30, 2
# A plain step cut below 1/10 raises a damping of the Hessian (x10 from MIN_DAMPING, newton_direction's
# ``damping``), a full step lowers it (/10, to 0): ordinary problems keep Newton's quadratic steps.
# At PATH_DAMPING the path is taken (once); at MAX_DAMPING with no step accepted the solve ends (no
# step lowers the objective at float64 precision).
MIN_DAMPING, PATH_DAMPING, MAX_DAMPING = 1e-10, 1e-7, 1e2


def _step(value_at, y, d, decrement: float, noise: float):
    """A damped step along ``d``: the largest of 0.99 of the way to the boundary, halved, that
    meets Armijo on ``value_at``, or whose predicted decrease is below rounding without a rise
    beyond it; where ``d`` is not a descent direction beyond rounding (Armijo would allow a rise,
    and at lam = 1e12 the steps climbed), only a step that lowers the value beyond rounding.
    Returns ``(y_new, alpha, value at y_new)``, or ``(None, 0.0, None)`` when none is found."""
    value = float(value_at(y))
    level = noise * (abs(value) + 1)
    # a decrement below minus the rounding: the system was too ill-conditioned to give a descent
    # direction, and only a real decrease will do
    descent = decrement > -level
    shrink = d < 0
    alpha = min(1.0, 0.99 * float((-y[shrink] / d[shrink]).min())) if bool(shrink.any()) else 1.0
    while alpha > 1e-14:
        y_try = y + alpha * d
        y_try = y_try / y_try.sum(-1, keepdim=True)  # rows already sum to 1 up to rounding
        v_try = float(value_at(y_try))
        # near the optimum the decrease drops below rounding: accept a step whose predicted decrease
        # is itself below the noise, unless it rises by more than rounding could explain (at a huge
        # lam a tiny predicted change can hide a jump)
        if descent:
            ok = v_try <= value - 1e-4 * alpha * decrement or (alpha * decrement <= level
                                                                 and v_try <= value + 1e-8 * (abs(value) + 1))
        else:
            ok = v_try < value - level
        if ok:
            return y_try, alpha, v_try
        alpha /= 2
    return None, 0.0, None


def _newton(sigma, u, lam: float, tol: float, max_iter: int, y0, target: GapTarget | None = None, report=None,
            offset: int = 0, start: float | None = None) -> SolverResult:
    """One problem; ``report(y, iterations, objective, gap, met) -> stop`` sees every iterate
    (its iteration count plus ``offset``); ``start``: the objective the decrease of the target is
    counted from (default: at ``y0``). Plain Newton steps until one jams, then :func:`_path`."""
    y = sigma.clone() if y0 is None else y0.clone()
    start = float(_value(sigma, y, u, lam)) if start is None else start
    noise = 64 * torch.finfo(sigma.dtype).eps
    value_at = lambda point: _value(sigma, point, u, lam)  # noqa: E731
    best, best_value = y, float(value_at(y))  # the noise-level steps may rise a little: keep the lowest point
    iterations, converged, damping = 0, False, 0.0
    path = "not taken"  # then "next" (the path follows once the last plain point is reported), "taken"
    reported = False  # whether this point's count was reported already (by the path)
    while True:
        objective, gap, dual = _certificate(sigma, y, u, lam)
        met = _met(objective, best_gap(gap, dual), tol, target, start)
        if report is not None and not reported and report(y, offset + iterations, objective, gap, met, dual):
            converged = met
            break
        if met:
            converged = True
            break
        if iterations >= max_iter:
            break
        if path == "next":
            path = "taken"
            y_path, steps, met, stop = _path(sigma, u, lam, tol, max_iter - iterations, target, report,
                                             offset + iterations, start)
            iterations += steps
            if met or float(value_at(y_path)) <= best_value:
                y, best, best_value = y_path, y_path, float(value_at(y_path))
            if stop or steps == 0 or iterations >= max_iter:
                converged = met
                break
            reported = True  # its last point was (its best may be an earlier stage's end)
            continue
        try:
            d = newton_direction(sigma, y, u, lam, damping)
        except RuntimeError:  # a singular K x K system (torch.linalg.LinAlgError)
            break
        if not bool(torch.isfinite(d).all()):
            break
        decrement = -float((_gradient(sigma, y, u, lam) * d).sum())  # > 0, up to rounding near the optimum
        y_new, alpha, value = _step(value_at, y, d, decrement, noise)
        reported = y_new is None  # no step: the same point again
        if y_new is not None:
            y, iterations = y_new, iterations + 1
            if value <= best_value:
                best, best_value = y, value
        # Confident sigma (entries ~1e-20) makes -sigma_ik ln y_ik nearly linear in y_ik: the step
        # runs into the simplex's boundary and is cut to nothing (jamming, as an interior-point
        # method without a barrier). A step cut below 1/10, or none, raises the damping, a full
        # step lowers it; a cut step that finds it at PATH_DAMPING (the fifth, none full between)
        # takes the barrier path once, and damped plain steps go on from its end.
        if alpha < 0.1 and path == "not taken" and damping >= PATH_DAMPING:
            path, damping = "next", 0.0
        elif alpha < 0.1:
            if y_new is None and damping >= MAX_DAMPING:  # no step lowers the objective at float64 precision
                break
            damping = max(10 * damping, MIN_DAMPING)
        elif alpha == 1.0:
            damping = damping / 10 if damping > MIN_DAMPING else 0.0
    if not converged and float(value_at(y)) > best_value:  # ended above a point it passed: return that point
        res = _finish(sigma, best, u, lam, iterations, False, tol, target)
        return res._replace(converged=torch.tensor(_met(res.objective, res.gap, tol, target, start)))
    return _finish(sigma, y, u, lam, iterations, converged, tol, target)


def _path(sigma, u, lam: float, tol: float, budget: int, target, report, offset: int, start: float):
    """newton_rce's barrier path (the constants above) from ``y = (sigma + 1/K) / 2``, at most
    ``budget`` Newton steps, each reported as in :func:`_newton` (numbered on from ``offset``).
    The centre of weight tau minimises ``f(y) - (tau/N) sum_ik ln y_ik``: the problem with
    ``sigma + tau`` in place of sigma, whose Newton step :func:`newton_direction` gives; a
    centre's gap on the problem itself is about ``K tau``. Returns ``(y, steps, met, stop)``: the
    point that met the criterion or at which ``report`` stopped the solve (``stop``), or else the
    stage end of the lowest objective (of ends level with it up to rounding, the best certified)."""
    n, k = sigma.shape
    tau = 1.0 / k
    y = (sigma + tau) / (sigma + tau).sum(-1, keepdim=True)
    noise = 64 * torch.finfo(sigma.dtype).eps
    steps, stalled, least = 0, 0, float("inf")
    best, best_value, best_cert = y, float("inf"), float("inf")
    while steps < budget and stalled < STALL and tau > 0:
        shifted = sigma + tau
        value_at = lambda point: -(shifted * torch.log(point)).sum() / n + _fairness(point, u, lam)  # noqa: E731
        certified = None  # the certificate of the stage's last step
        for _ in range(STAGE_STEPS):
            if steps >= budget:
                break
            try:
                d = newton_direction(shifted, y, u, lam)
            except RuntimeError:
                break
            decrement = -float((_gradient(shifted, y, u, lam) * d).sum())
            if not decrement > CENTRED * k * tau:  # centred (or the direction is not finite)
                break
            y_new, _, _ = _step(value_at, y, d, decrement, noise)
            if y_new is None:  # no step lowers the barrier problem at float64 precision: centred
                break
            y, steps = y_new, steps + 1
            objective, gap, dual = _certificate(sigma, y, u, lam)
            certified = objective, gap, dual
            met = _met(objective, best_gap(gap, dual), tol, target, start)
            if (report is not None and report(y, offset + steps, objective, gap, met, dual)) or met:
                return y, steps, met, True
        objective, gap, dual = certified if certified is not None else _certificate(sigma, y, u, lam)
        objective, cert = float(objective), float(best_gap(gap, dual))
        level = noise * (abs(objective) + 1)
        if objective < best_value - level or (objective <= best_value + level and cert < best_cert):
            best, best_value, best_cert = y, min(objective, best_value), cert
        stalled = 0 if cert < least else stalled + 1
        least = min(least, cert)
        tau *= PATH_SHRINK
    return best, steps, False, False


def _fairness(y, u, lam: float) -> torch.Tensor:
    """``lam KL(u || y_bar) = lam sum_k u_k ln(u_k / y_bar_k)``, the barrier value's fairness term,
    near 0 where y is fair (so the value's rounding, and with it the line search's noise level,
    does not grow as ``lam ln K`` would with the constant left in). The fused certificate
    (:func:`_value`) computes the same to rounding; its last bits steer the line search, and the
    path's figures in docs/benchmarks.md were measured with this one."""
    if lam == 0:
        return torch.zeros((), dtype=y.dtype, device=y.device)
    return lam * torch.where(u > 0, u * torch.log(u / y.mean(0)), 0.0).sum()


def dual_newton_rce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float | None = None,
    max_iter: int = 150,
    warm_start: int = 5,
    switch_gap: float = 1e-6,
    polish: int = 50,
    tol_gap: float | None = None,
    tol_progress: float | None = None,
    callback=None,
    validate: bool = True,
) -> SolverResult:
    """Exact solver of the reverse-CE problem: Newton on its K-dimensional concave dual (docs/maths.md),
    one ``O(N K^2)`` product and a ``K x K`` solve per step, stopped on the certificate (the duality
    gap, :attr:`SolverResult.gap`) ``<= tol`` (every iterate is primal feasible). Where EM crawls
    linearly (``lam N >> 1``) this is far faster. The dual's rows ``sigma / (t - w)`` lose precision
    where ``t_i - w_k`` cancels, so below a Frank-Wolfe gap of ``switch_gap`` (or when the dual line
    search stalls or its values stop being finite) steps of :func:`newton_rce` finish in primal
    variables, at most ``polish`` of them (``polish=0``: the dual alone). ``max_iter`` caps dual and
    polish steps together; the ``warm_start`` EM steps that give the first multipliers are not counted.

    ``converged`` says whether ``tol`` was met; the result is finite for every ``lam >= 0``
    (``lam = 0``: y = sigma, the optimum). Needs ``sigma > 0``; a zero prior entry keeps that
    class's multiplier at 0. Composite PyTorch (float64 inside).

    ``tol`` defaults to 1e-10, or to no absolute criterion when ``tol_gap`` or ``tol_progress`` (as
    in :func:`newton_rce`; the decrease counted from sigma) is given; ``callback`` as in
    :func:`newton_rce`, after every dual or polish step."""
    name = "dual_newton_rce"
    tol_gap = check_gap_options(name, tol_gap, 1, callback)
    target = gap_target(name, tol_gap, tol_progress)
    sigma3, u, _, _, batched = prepare(name, sigma, prior, lam, None, max_iter, None, validate, start=False)
    tol = (1e-10 if target is None else 0.0) if tol is None else check_number(name, "tol", tol)
    switch_gap = check_number(name, "switch_gap", switch_gap)
    check_count(name, "warm_start", warm_start)
    check_count(name, "polish", polish)
    _positive(name, sigma3)
    s64, u64 = sigma3.double(), u.double()
    progress = Progress("rce", s64, s64, u64, float(lam), callback, batched, _criterion(tol, target))
    parts = []
    for i in range(s64.shape[0]):
        report = lambda *state, i=i: progress.report(i, *state)  # noqa: E731
        parts.append(_dual_newton(s64[i], u64, float(lam), tol, max_iter, warm_start, switch_gap, polish, target,
                                  report))
    return as_input(_stack(parts), sigma.dtype, batched)


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


def _dual_newton(sigma, u, lam, tol, max_iter, warm_start, switch_gap, polish, target=None, report=None) -> SolverResult:
    """One problem; see :func:`dual_newton_rce`. Multipliers w for ``y_bar = z`` give
    ``z_k = lam u_k / w_k`` and rows ``y_ik = sigma_ik / (t_i - w_k)``; dual gradient
    ``lam u / w - y_bar(w)``, Hessian ``-diag(lam u / w^2) - (1/N) sum_i (diag(d_i) - d_i d_i^T / D_i)``,
    ``d_ik = sigma_ik / (t_i - w_k)^2``. Backtracking by Armijo on the dual value while the
    predicted ascent exceeds its rounding noise, then on the dual gradient norm.

    The rows depend on t_i - w_k only, and at the optimum w_k ~ lam (y_bar ~ u), so the
    multipliers are kept as ``omega = w - lam`` on the classes with u_k > 0 (``w = 0``, i.e.
    ``omega = -lam``, on the others): at lam = 1e12, w itself would resolve t - w to ~1e-4.
    In these variables, with the constants dropped,
    ``D = (1/N) sum_i [-sigma_i . ln y_i - sum_{u_k>0} omega_k y_ik + lam sum_{u_k=0} y_ik]
    + sum_{u_k>0} lam u_k log1p(omega_k / lam)``, gradient ``u / (1 + omega / lam) - y_bar``."""
    if lam == 0:  # no coupling: every row's optimum is y_i = sigma_i
        return _finish(sigma, sigma.clone(), u, lam, 0, True, tol, target)
    n = sigma.shape[0]
    on = u > 0  # classes with a fairness term
    start, _, _ = ops.em_rce_kernel(sigma.unsqueeze(0), u, lam, 0.0, warm_start, None)
    start = start[0]
    y_bar = start.mean(0)
    omega = torch.where(on, lam * (u - y_bar) / y_bar, 0.0)

    def state(omega):
        """Row roots, y(omega), dual gradient and dual value."""
        t, y = _rows_given_w(sigma, torch.where(on, omega, -lam))
        ratio = torch.where(on, omega / lam, 0.0)
        value = ((-(sigma * torch.log(y)).sum() - (torch.where(on, omega, 0.0) * y).sum()
                  + lam * torch.where(on, 0.0, y).sum()) / n + (lam * u * torch.log1p(ratio)).sum())
        grad = torch.where(on, u / (1 + ratio) - y.mean(0), 0.0)
        return t, y, grad, value

    def usable(*tensors) -> bool:
        return all(bool(torch.isfinite(x).all()) for x in tensors)

    def inside(omega) -> bool:  # w = lam + omega > 0
        return bool((omega[on] > -lam).all())

    t, y, grad, value = state(omega)
    # omega = 0 (w = lam for every class: y(0) = sigma) is the other natural start; at large lam
    # the warm start's omega = lam (u - y_bar) / y_bar amplifies y_bar's last digits. Keep the
    # start with the higher dual value (every omega gives a lower bound on the optimum).
    plain = state(torch.zeros_like(omega))
    if usable(*plain) and (not usable(t, y, grad, value) or float(plain[3]) > float(value)):
        omega = torch.zeros_like(omega)
        t, y, grad, value = plain
    iterations, converged = 0, False
    # the primal point with the lowest objective so far (all are feasible): the dual's iterates
    # can be poor primal points where t - w cancels, and the result is never worse than the start
    best, best_value = start, float(_value(sigma, start, u, lam))
    origin = float(_value(sigma, sigma, u, lam))  # the decrease of tol_progress is counted from sigma
    switch = max(tol, switch_gap) if polish > 0 else tol
    if usable(t, y, grad, value):
        for iterations in range(max_iter + 1):
            primal = y / y.sum(-1, keepdim=True)  # y(w) sums to 1 only to ~1e-10 where t - w cancels
            if not usable(primal):
                break
            primal_value, gap, dual = (float(x) for x in _certificate(sigma, primal, u, lam))
            if primal_value <= best_value:
                best, best_value = primal, primal_value
            met = _met(primal_value, best_gap(gap, dual), tol, target, origin)
            if report is not None and report(primal, iterations, primal_value, gap, met, dual):
                if met:
                    return _finish(sigma, primal, u, lam, iterations, True, tol, target)
                res = _finish(sigma, best, u, lam, iterations, False, tol, target)  # the best point so far
                return res._replace(converged=torch.tensor(_met(res.objective, res.gap, tol, target, origin)))
            if gap <= switch or met:
                converged = met
                break
            if iterations == max_iter:
                break
            d = sigma / (t - torch.where(on, omega, -lam)) ** 2
            curvature = torch.where(on, u / (lam * (1 + omega / lam) ** 2), 1.0)  # lam u / w^2
            hessian = -torch.diag(curvature) - (torch.diag(d.sum(0)) - d.T @ (d / d.sum(-1, keepdim=True))) / n
            direction = torch.zeros_like(omega)  # ascent: the Hessian is negative definite
            try:
                direction[on] = torch.linalg.solve(hessian[on][:, on], -grad[on])
            except RuntimeError:  # singular at this precision
                break
            slope = float(grad @ direction)  # > 0
            if not slope > 0:
                break
            noise = 64 * torch.finfo(sigma.dtype).eps * (abs(float(value)) + 1)
            norm = float(grad.norm())
            alpha, accepted = 1.0, False
            while alpha > 1e-12:
                trial = omega + alpha * direction
                if inside(trial):
                    t_try, y_try, g_try, v_try = state(trial)
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
            omega, t, y, grad, value = trial, t_try, y_try, g_try, v_try
    polish = min(polish, max_iter - iterations)
    if not converged and polish > 0:
        res = _newton(sigma, u, lam, tol, polish, best, target, report, offset=iterations, start=origin)
        # keep the polish unless it ended above the best point beyond rounding (it only
        # accepts steps that do not rise, so that happens where its systems are ill-conditioned)
        if float(res.objective) <= best_value + 1e-12 * (abs(best_value) + 1):
            return res._replace(iterations=res.iterations + iterations)
    res = _finish(sigma, best, u, lam, iterations, False, tol, target)
    return res._replace(converged=torch.tensor(_met(res.objective, res.gap, tol, target, origin)))
