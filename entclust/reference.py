"""Pure-PyTorch versions of every compiled op: the ground truth the kernels are tested against,
and the baseline the benchmarks compare with. Plain compositions; no care for speed.

The composite losses of :mod:`entclust.losses` (fairness, MI, Rényi, margin) are themselves
PyTorch compositions and have no separate reference.
"""
from __future__ import annotations

import math

import torch

from .results import SolverResult


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return rows
    return rows.mean() if reduction == "mean" else rows.sum()


def reverse_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean", dim: int = -1) -> torch.Tensor:
    """``-sum_k softmax(logits)_k ln y_k``, terms with ``sigma_k = 0`` counted as 0."""
    sigma = torch.softmax(logits, dim)
    terms = -sigma * torch.log(y)
    rows = torch.where(sigma > 0, terms, torch.zeros_like(terms)).sum(dim)
    return _reduce(rows, reduction)


def collision_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean", dim: int = -1) -> torch.Tensor:
    """``-ln sum_k softmax(logits)_k y_k = logsumexp(l) - logsumexp(l + ln y)``."""
    rows = torch.logsumexp(logits, dim) - torch.logsumexp(logits + torch.log(y), dim)
    return _reduce(rows, reduction)


# ---- pseudo-label problems and solvers (MATH.md, "Pseudo-label problems and solvers") ------
# sigma: (N, K) or (B, N, K) for B independent problems; y alike; prior u: (K,) or None
# (uniform). Losses are in mean form, so the EM steps use c = lam * N.

def _prior(prior, sigma: torch.Tensor) -> torch.Tensor:
    k = sigma.shape[-1]
    if prior is None:
        return torch.full((k,), 1.0 / k, dtype=sigma.dtype, device=sigma.device)
    return torch.as_tensor(prior, dtype=sigma.dtype, device=sigma.device)


def _fairness(y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """KL(u || y_bar) per problem; u_k = 0 contributes 0."""
    y_bar = y.mean(-2)
    # u ln(u / y_bar) as one logarithm: xlogy(u, u) - xlogy(u, y_bar) cancels terms of size
    # ~u ln K per class, which at lam = 100, K = 200 costs ~1e-11 of absolute accuracy
    return torch.where(u > 0, u * torch.log(u / y_bar), torch.zeros_like(y_bar)).sum(-1)


def rce_objective(sigma, y, prior=None, lam: float = 100.0) -> torch.Tensor:
    """``(1/N) sum_i H(sigma_i, y_i) + lam KL(u || y_bar)`` per problem (no fairness term at lam = 0)."""
    u = _prior(prior, sigma)
    ce = torch.where(sigma > 0, -sigma * torch.log(y), torch.zeros_like(sigma)).sum(-1).mean(-1)
    return ce + lam * _fairness(y, u) if lam != 0 else ce


def cce_objective(sigma, y, prior=None, lam: float = 100.0) -> torch.Tensor:
    """``-(1/N) sum_i ln(sigma_i . y_i) + lam KL(u || y_bar)`` per problem (no fairness term at lam = 0)."""
    u = _prior(prior, sigma)
    ce = -torch.log((sigma * y).sum(-1)).mean(-1)
    return ce + lam * _fairness(y, u) if lam != 0 else ce


def _fairness_gradient(y, u, lam):
    n = y.shape[-2]
    y_bar = y.mean(-2, keepdim=True)
    if lam == 0:
        return torch.zeros_like(y_bar)
    # d/dy_ik [-lam sum_k u_k ln y_bar_k] = -lam u_k / (N y_bar_k); 0 where u_k = 0
    return torch.where(u > 0, -lam * u / (n * y_bar), torch.zeros_like(y_bar))


def rce_gradient(sigma, y, prior=None, lam: float = 100.0) -> torch.Tensor:
    """``g_ik = -sigma_ik / (N y_ik) - lam u_k / (N y_bar_k)`` (first term 0 where sigma_ik = 0)."""
    n = sigma.shape[-2]
    data = torch.where(sigma > 0, -sigma / (n * y), torch.zeros_like(sigma))
    return data + _fairness_gradient(y, _prior(prior, sigma), lam)


def cce_gradient(sigma, y, prior=None, lam: float = 100.0) -> torch.Tensor:
    """``g_ik = -sigma_ik / (N sigma_i . y_i) - lam u_k / (N y_bar_k)``."""
    n = sigma.shape[-2]
    p = (sigma * y).sum(-1, keepdim=True)
    return -sigma / (n * p) + _fairness_gradient(y, _prior(prior, sigma), lam)


def fw_gap(gradient: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Frank-Wolfe gap ``sum_i (sum_k y_ik g_ik - min_k g_ik)`` per problem: >= 0, 0 exactly at
    the optimum of a convex problem over a product of simplices, and >= f(y) - f*."""
    inner = torch.where(y > 0, y * gradient, torch.zeros_like(y)).sum(-1)
    return (inner - gradient.amin(-1)).sum(-1)


def _e_step(y: torch.Tensor) -> torch.Tensor:
    """S_ik = y_ik / sum_j y_jk (a class no point uses gets S = 0)."""
    col = y.sum(-2, keepdim=True)
    return torch.where(col > 0, y / col, torch.zeros_like(y))


def _finish(sigma, y, prior, lam, iterations, converged, criterion, problem):
    objective = (rce_objective if problem == "rce" else cce_objective)(sigma, y, prior, lam)
    grad = (rce_gradient if problem == "rce" else cce_gradient)(sigma, y, prior, lam)
    return SolverResult(y, iterations, objective, fw_gap(grad, y), converged, criterion)


def _iterate(step, sigma, y, tol, max_iter):
    """Runs ``y <- step(y)`` per problem until max |dy| <= tol; returns y, iterations, converged."""
    batch = sigma.shape[:-2]
    iterations = torch.zeros(batch, dtype=torch.int64, device=sigma.device)
    converged = torch.zeros(batch, dtype=torch.bool, device=sigma.device)
    for _ in range(max_iter):
        y_new = step(y)
        delta = (y_new - y).abs().amax((-2, -1))
        active = ~converged
        y = torch.where(active[..., None, None], y_new, y)
        iterations += active.long()
        converged |= delta <= tol
        if bool(converged.all()):
            break
    return y, iterations, converged


def em_rce(sigma, prior=None, lam: float = 100.0, *, tol: float = 1e-9, max_iter: int = 1000, y0=None) -> SolverResult:
    """EM for the reverse-CE problem (seed 004 eqs. 45-46), from y = sigma unless y0 is given:
    E-step ``S_ik = y_ik / sum_j y_jk``; M-step ``y_ik = (sigma_ik + c u_k S_ik) / (1 + c sum_m u_m S_im)``
    with c = lam N. Stops when max |y_new - y| <= tol."""
    u = _prior(prior, sigma)
    c = lam * sigma.shape[-2]

    def step(y):
        num = sigma + c * u * _e_step(y)
        return num / num.sum(-1, keepdim=True)  # = 1 + c sum_m u_m S_im, as rows of sigma sum to 1

    y, iterations, converged = _iterate(step, sigma, sigma if y0 is None else y0, tol, max_iter)
    return _finish(sigma, y, prior, lam, iterations, converged, f"max|dy| <= {tol:g}", "rce")


def cce_m_step(sigma, a, *, newton_tol: float = 1e-12, newton_max_iter: int = 100) -> torch.Tensor:
    """Per row, ``argmin_y -ln(sigma . y) - sum_k a_k ln y_k`` over the simplex (seed 003 §4 and
    appendix C), with ``b = 1 + sum_k a_k``:

    * some ``a_k = 0`` (``a_k <= 1e-12 b`` counts as 0): free mass on ``c* = argmax_{a_k = 0} sigma_k``, ``sigma . y = sigma_c* / b``,
      ``y_k = a_k / (b (1 - sigma_k / sigma_c*))``, ``y_c* = 1 - sum`` when that is feasible;
    * otherwise (or infeasible: then y = 0 on the classes with a_k = 0):
      ``y_k = a_k / (b - sigma_k / x)`` where x solves ``sum_k y_k(x) = 1``, by Newton from
      Lemma 1's start ``max_k sigma_k / (b - a_k)``, which increases monotonically to the root.
    """
    # a_k below the rounding of b would make b - sigma_k / x cancel: numerically a free class
    a = torch.where(a > 1e-12 * (1 + a.sum(-1, keepdim=True)), a, torch.zeros_like(a))
    pos = a > 0
    b = 1 + a.sum(-1, keepdim=True)
    zero = torch.zeros_like(sigma)

    # appendix C: closed form with the free mass on c*
    sig_free = torch.where(pos, torch.full_like(sigma, -1.0), sigma)
    s_star, c_star = sig_free.max(-1, keepdim=True)
    has_free = (~pos).any(-1, keepdim=True) & (s_star > 0)
    denom = b * (1 - sigma / torch.where(s_star > 0, s_star, torch.ones_like(s_star)))
    closed = torch.where(pos, a / torch.where(denom > 0, denom, torch.ones_like(denom)), zero)
    rest = 1 - closed.sum(-1, keepdim=True)
    feasible = has_free & (rest >= 0) & torch.where(pos, denom > 0, torch.ones_like(pos)).all(-1, keepdim=True)
    closed = closed.scatter(-1, c_star, rest.clamp_min(0))

    # Newton on x over the classes with a_k > 0
    x = torch.where(pos, sigma / (b - a), zero).amax(-1, keepdim=True)  # Lemma 1
    for _ in range(newton_max_iter):
        d = torch.where(pos, b - sigma / x, torch.ones_like(sigma))
        f = torch.where(pos, a / d, zero).sum(-1, keepdim=True) - 1
        df = -torch.where(pos, a * sigma / (x * x * d * d), zero).sum(-1, keepdim=True)
        step = torch.where(df < 0, f / df, torch.zeros_like(f))
        x = x - step
        if bool((f.abs() <= newton_tol).all()):
            break
    d = torch.where(pos, b - sigma / x, torch.ones_like(sigma))
    newton = torch.where(pos, a / d, zero)
    newton = newton / newton.sum(-1, keepdim=True).clamp_min(torch.finfo(sigma.dtype).tiny)
    return torch.where(feasible, closed, newton)


def em_cce(sigma, prior=None, lam: float = 100.0, *, tol: float = 1e-9, max_iter: int = 1000,
           newton_tol: float = 1e-12, newton_max_iter: int = 100, y0=None) -> SolverResult:
    """EM for the collision-CE problem (seed 003): the E-step of :func:`em_rce`, then the
    M-step :func:`cce_m_step` with ``a_ik = c u_k S_ik``, c = lam N."""
    u = _prior(prior, sigma)
    c = lam * sigma.shape[-2]

    def step(y):
        return cce_m_step(sigma, c * u * _e_step(y), newton_tol=newton_tol, newton_max_iter=newton_max_iter)

    y, iterations, converged = _iterate(step, sigma, sigma if y0 is None else y0, tol, max_iter)
    return _finish(sigma, y, prior, lam, iterations, converged, f"max|dy| <= {tol:g}", "cce")


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row (last dim) onto the probability simplex (sort-based,
    Duchi et al. 2008): ``w = max(v - theta, 0)`` with theta from the sorted prefix sums."""
    k = v.shape[-1]
    s, _ = v.sort(-1, descending=True)
    css = s.cumsum(-1) - 1
    ranks = torch.arange(1, k + 1, dtype=v.dtype, device=v.device)
    rho = ((s - css / ranks) > 0).sum(-1, keepdim=True).clamp_min(1)  # >= 1 for finite v
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    return (v - theta).clamp_min(0)


def pgd_cce(sigma, prior=None, lam: float = 100.0, *, step: float = 1.0, fairness: str = "strong",
            tol: float = 1e-9, max_iter: int = 1000, y0=None) -> SolverResult:
    """Projected gradient descent on the collision-CE problem (seed 003 Table 1): a gradient
    step of size ``step`` then exact projection of each row onto the simplex. ``fairness``:
    "strong" (``KL(u||y_bar)``, eq. 11) or "weak" (``KL(y_bar||u)``, eq. 10). The result's
    objective and gap refer to the strong-fairness problem (the one EM solves) when
    ``fairness="strong"``, and are NaN-free but not certificates otherwise."""
    u = _prior(prior, sigma)
    n = sigma.shape[-2]

    def step_fn(y):
        if fairness == "strong":
            g = cce_gradient(sigma, y, u, lam)
        else:
            p = (sigma * y).sum(-1, keepdim=True)
            y_bar = y.mean(-2, keepdim=True)
            g = -sigma / (n * p) + lam * (torch.log(y_bar / u) + 1) / n
        return project_simplex(y - step * g)

    y, iterations, converged = _iterate(step_fn, sigma, sigma if y0 is None else y0, tol, max_iter)
    return _finish(sigma, y, u, lam, iterations, converged, f"max|dy| <= {tol:g}", "cce")


def sinkhorn_knopp(sigma, prior=None, *, lam_sk: float = 25.0, tol: float = 1e-9, max_iter: int = 1000):
    """SeLa's balanced assignment: ``Q = diag(alpha) P diag(beta)`` with ``P = sigma^lam_sk``,
    row sums 1/N and column sums u (log domain). Returns (Q, labels = argmax_k Q_ik, iterations)."""
    u = _prior(prior, sigma)
    n = sigma.shape[-2]
    log_p = lam_sk * torch.log(sigma)
    log_u = torch.log(u)
    log_beta = torch.zeros_like(sigma[..., :1, :])
    iterations = 0
    for iterations in range(1, max_iter + 1):
        log_alpha = -math.log(n) - torch.logsumexp(log_p + log_beta, -1, keepdim=True)
        log_beta = log_u - torch.logsumexp(log_p + log_alpha, -2, keepdim=True)
        row = torch.logsumexp(log_p + log_alpha + log_beta, -1).exp()
        if bool(((row - 1.0 / n).abs() * n <= tol).all()):
            break
    q = (log_p + log_alpha + log_beta).exp()
    return q, q.argmax(-1), iterations


def _rce_rows_given_w(sigma, w, *, tol: float = 1e-15, max_iter: int = 100):
    """For fixed multipliers w, each row's optimum ``y_ik = sigma_ik / (t_i - w_k)`` with t_i the
    root of ``sum_k sigma_ik / (t - w_k) = 1`` above max_k w_k. The sum is convex and decreasing
    in t and >= 1 at ``t = max_k (w_k + sigma_ik)``, so Newton from there rises monotonically.
    Stops when every row has ``|phi| <= tol`` or a step below t's rounding (where t_i - w_k
    cancels, phi cannot get below ~1e-13: without this test every call ran ``max_iter`` steps)."""
    t = (w + sigma).amax(-1, keepdim=True)
    floor = 4 * torch.finfo(sigma.dtype).eps
    for _ in range(max_iter):
        r = sigma / (t - w)
        phi = r.sum(-1, keepdim=True) - 1
        step = phi / (r * r / sigma).sum(-1, keepdim=True)  # -phi / phi'
        t = t + step
        if bool(((phi.abs() <= tol) | (step.abs() <= floor * t.abs())).all()):
            break
    return t, sigma / (t - w)


def _feasible(y: torch.Tensor) -> torch.Tensor:
    """Rows of y(w) renormalised: t_i - w_k can be ~1e-6 of t_i (tiny sigma_ik, large lam u_k),
    so they sum to 1 only to ~1e-10; the primal point that is certified must be exactly feasible
    (the dual steps keep using y(w) itself)."""
    return y / y.sum(-1, keepdim=True)


def _stack(parts) -> SolverResult:
    """Per-problem results of a batch as one batched SolverResult."""
    return SolverResult(*(torch.stack([getattr(p, f) for p in parts]) for f in SolverResult._fields[:-1]),
                        parts[0].criterion)


def dual_newton_rce(sigma, prior=None, lam: float = 100.0, *, tol: float = 1e-10, max_iter: int = 100,
                    warm_start: int = 5, switch_gap: float = 1e-6, polish: int = 50) -> SolverResult:
    """Exact solver of the reverse-CE problem by Newton on its K-dimensional concave dual
    (MATH.md): multipliers w for ``y_bar = z`` give ``z_k = lam u_k / w_k`` and rows
    ``y_ik = sigma_ik / (t_i - w_k)``; dual gradient ``lam u / w - y_bar(w)``, Hessian
    ``-diag(lam u / w^2) - (1/N) sum_i (diag(d_i) - d_i d_i^T / D_i)``, ``d_ik = sigma_ik / (t_i - w_k)^2``.
    Warm start from ``warm_start`` EM steps; backtracking by Armijo on the dual value
    ``D(w) = (1/N) sum_i [-sigma_i . ln y_i - w . y_i] + sum_k lam u_k (ln(w_k / lam) + 1)``
    while the predicted ascent exceeds D's rounding noise, then on the dual gradient norm.
    Every iterate y(w) is primal feasible, so the stopping rule is the Frank-Wolfe gap <= tol.

    Polish: y(w) = sigma / (t - w) loses precision where t_i - w_k is tiny against w_k (a large
    y_ik with a tiny sigma_ik: relative error eps w_k / (t_i - w_k)), so at K = 200 the dual
    alone stalls between 1e-10 and 1e-7. Once its gap is below ``switch_gap`` (or its line
    search stalls, or ``max_iter``), up to ``polish`` steps of :func:`newton_rce` (primal
    variables, no such cancellation) finish from y(w). ``iterations`` counts both.
    A class with ``u_k = 0`` has no fairness term: its multiplier stays ``w_k = 0`` and the
    Newton system is solved over the other classes. Needs sigma > 0 (a zero makes the row
    problems non-smooth; use EM) and lam > 0."""
    if sigma.dim() == 3:
        return _stack([dual_newton_rce(s, prior, lam, tol=tol, max_iter=max_iter, warm_start=warm_start,
                                       switch_gap=switch_gap, polish=polish) for s in sigma])
    u = _prior(prior, sigma)
    if not bool((sigma > 0).all()) or lam <= 0:
        raise ValueError("dual_newton_rce needs sigma > 0 and lam > 0; use em_rce otherwise")
    n = sigma.shape[0]
    on = u > 0  # classes with a fairness term; w_k = 0 for the others
    y = em_rce(sigma, prior, lam, max_iter=warm_start, tol=0).y
    w = lam * u / y.mean(0)
    w_safe = lambda w: torch.where(on, w, 1.0)  # noqa: E731

    def state(w):
        """Row roots, y(w), dual gradient and dual value D(w) = min_{y, z} L(y, z, w)."""
        t, y = _rce_rows_given_w(sigma, w)
        fair = torch.where(on, lam * u * (torch.log(w_safe(w) / lam) + 1), 0.0)
        value = (-(sigma * torch.log(y)).sum() - (y * w).sum()) / n + fair.sum()
        return t, y, torch.where(on, lam * u / w_safe(w) - y.mean(0), 0.0), value

    t, y, grad, value = state(w)
    iterations, converged = 0, False
    switch = max(tol, switch_gap) if polish > 0 else tol
    for iterations in range(max_iter + 1):
        primal = _feasible(y)
        gap = fw_gap(rce_gradient(sigma, primal, u, lam), primal)
        if gap <= switch:
            converged = bool(gap <= tol)
            break
        if iterations == max_iter:
            break
        d = sigma / (t - w) ** 2
        hessian = -torch.diag(lam * u / w_safe(w) ** 2) - (torch.diag(d.sum(0)) - d.T @ (d / d.sum(-1, keepdim=True))) / n
        direction = torch.zeros_like(w)  # ascent: the Hessian is negative definite
        direction[on] = torch.linalg.solve(hessian[on][:, on], -grad[on])
        slope = float(grad @ direction)  # > 0
        # Backtracking inside w > 0: Armijo on the concave dual value while the predicted ascent
        # is above the rounding noise of D; below it (near the optimum, where full Newton steps
        # are right but D cannot resolve them) a decrease of the dual gradient norm instead.
        noise = 64 * torch.finfo(sigma.dtype).eps * (abs(float(value)) + 1)
        norm = float(grad.norm())
        alpha, accepted = 1.0, False
        while alpha > 1e-12:
            w_try = w + alpha * direction
            if bool((w_try[on] > 0).all()):
                t_try, y_try, g_try, v_try = state(w_try)
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
    y = _feasible(y)
    if not converged and polish > 0:
        res = newton_rce(sigma, u, lam, tol=tol, max_iter=polish, y0=y)
        return res._replace(iterations=res.iterations + iterations)
    its = torch.tensor(iterations)
    return _finish(sigma, y, u, lam, its, torch.tensor(converged), f"Frank-Wolfe gap <= {tol:g}", "rce")


def newton_rce_direction(sigma, y, u, lam: float) -> torch.Tensor:
    """Newton direction of the reverse-CE problem at an interior y, with the N row constraints
    ``sum_k d_ik = 0`` exact. The Hessian is ``diag(a) + sum_k c_k v_k v_k^T`` with
    ``a_ik = sigma_ik / (N y_ik^2)``, ``c_k = lam u_k / (N^2 y_bar_k^2)`` and ``v_k`` the indicator of
    column k (MATH.md), so the KKT system ``H d + A^T mu = -g, A d = 0`` reduces to K unknowns
    ``s_k = sum_i d_ik``: with ``b = 1/a``, ``B_i = sum_k b_ik``, ``p = b / B`` and the projected
    negative gradient ``r_ik = -g_ik + sum_m p_im g_im``,

        ``(I + diag(c * sum_i b_i) - M diag(c)) s = sum_i b_i * r_i``,  ``M = b^T p`` (K x K),
        ``d_ik = b_ik (r_ik - c_k s_k + sum_m p_im c_m s_m)``.

    Cost O(N K^2) for M plus a K x K solve; the NK x NK Hessian is never formed."""
    n = sigma.shape[-2]
    y_bar = y.mean(-2)
    g = rce_gradient(sigma, y, u, lam)
    b = n * y * y / sigma
    p = b / b.sum(-1, keepdim=True)
    r = -g + (p * g).sum(-1, keepdim=True)
    c = lam * u / (n * n * y_bar * y_bar)
    m = b.transpose(-1, -2) @ p
    k = sigma.shape[-1]
    system = torch.eye(k, dtype=sigma.dtype, device=sigma.device) + torch.diag(c * b.sum(-2)) - m * c
    s = torch.linalg.solve(system, (b * r).sum(-2))
    cs = c * s
    return b * (r - cs + (p * cs).sum(-1, keepdim=True))


def newton_rce(sigma, prior=None, lam: float = 100.0, *, tol: float = 1e-10, max_iter: int = 100, y0=None) -> SolverResult:
    """Newton's method on the full coupled reverse-CE problem (the baseline of seed 004 Table 1,
    "Kelley 1995"): :func:`newton_rce_direction` for the step, a fraction-to-the-boundary rule
    (at most 0.99 of the way to the nearest ``y_ik = 0``) keeps y inside the simplex, and
    Armijo backtracking on the objective. Stops when the Frank-Wolfe gap <= tol. Needs
    ``sigma > 0`` (the log barrier must act on every entry; use EM otherwise). A zero prior entry
    is fine: that class only loses its fairness coupling (``c_k = 0``)."""
    if sigma.dim() == 3:
        return _stack([newton_rce(s, prior, lam, tol=tol, max_iter=max_iter, y0=None if y0 is None else y0[i])
                       for i, s in enumerate(sigma)])
    u = _prior(prior, sigma)
    if not bool((sigma > 0).all()):
        raise ValueError("newton_rce needs sigma > 0; use em_rce otherwise")
    y = sigma.clone() if y0 is None else y0.clone()
    value = rce_objective(sigma, y, u, lam)
    iterations, converged = 0, False
    noise = 64 * torch.finfo(sigma.dtype).eps
    for iterations in range(max_iter + 1):
        grad = rce_gradient(sigma, y, u, lam)
        if fw_gap(grad, y) <= tol:
            converged = True
            break
        if iterations == max_iter:
            break
        d = newton_rce_direction(sigma, y, u, lam)
        slope = float((grad * d).sum())  # < 0 for a descent direction
        shrink = d < 0
        alpha = min(1.0, 0.99 * float((-y[shrink] / d[shrink]).min())) if bool(shrink.any()) else 1.0
        accepted = False
        while alpha > 1e-14:
            y_try = y + alpha * d
            y_try = y_try / y_try.sum(-1, keepdim=True)  # rows already sum to 1 up to rounding
            v_try = rce_objective(sigma, y_try, u, lam)
            # Armijo; near the optimum the decrease drops below rounding, so accept a step
            # whose predicted decrease is itself below the objective's noise
            if bool(v_try <= value + 1e-4 * alpha * slope) or -alpha * slope <= noise * (abs(float(value)) + 1):
                accepted = True
                break
            alpha /= 2
        if not accepted:
            break
        y, value = y_try, v_try
    its = torch.tensor(iterations)
    return _finish(sigma, y, u, lam, its, torch.tensor(converged), f"Frank-Wolfe gap <= {tol:g}", "rce")
