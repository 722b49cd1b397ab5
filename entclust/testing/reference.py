"""Pure-PyTorch ground truth: the kernels and the shipped solvers are tested against it, and the
benchmarks use it as their baseline. Plain compositions, no care for speed, and written
independently of the product code: the library never imports this module.

The composite losses of :mod:`entclust.losses` (fairness, MI, Rényi, margin) are themselves
PyTorch compositions and have no separate reference; the deep-clustering losses (Rényi
decisiveness in log space, the symmetric KL, IIC) have the plain definitions at the end.
"""
from __future__ import annotations

import math

import torch

from ..solvers.result import SolverResult


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


# ---- pseudo-label problems and solvers (docs/maths.md, "Pseudo-label problems and solvers") ------
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


def prediction_fairness(logits: torch.Tensor, prior=None) -> torch.Tensor:
    """``KL(u || sigma_bar)``, ``sigma_bar`` the mean of ``softmax(logits)`` over all rows, the plain way."""
    sigma = torch.softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
    return _fairness(sigma, _prior(prior, sigma))


def prediction_fairness_log(logits: torch.Tensor, prior=None) -> torch.Tensor:
    """``KL(u || sigma_bar)`` of each problem of ``(B, N, K)`` logits, ``(B,)``, with ``ln sigma_bar`` a
    log-sum-exp of the log-probabilities (finite for a class whose mean underflows) and the terms of
    ``u_k = 0`` left out before the product (so their gradient is 0, not NaN); in float64."""
    z = logits.double()
    log_bar = torch.logsumexp(torch.log_softmax(z, -1), -2) - math.log(z.shape[-2])
    u = _prior(prior, z)
    alive = u > 0
    terms = torch.where(alive, u * (torch.log(torch.where(alive, u, 1.0)) - log_bar), 0.0)
    return terms.sum(-1)


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



def rce_dual(sigma, w, prior=None, lam: float = 100.0, *, bisections: int = 200) -> torch.Tensor:
    """The Lagrangian dual of the RCE problem at multipliers ``w`` (``(K,)``, ``w_k > 0`` where
    ``u_k > 0``, ``>= 0`` elsewhere) for ``y_bar = z``, one ``(N, K)`` problem, float64, the plain way:
    ``D(w) = (1/N) sum_i min_{y_i in simplex} [-sigma_i . ln y_i - w . y_i]
    + sum_k min_{z_k > 0} [lam u_k ln(u_k / z_k) + w_k z_k]``. The row minimum is
    ``H(sigma_i) + sum_k sigma_ik ln(t_i - w_k) + 1 - t_i`` at the root ``t_i > max_k w_k`` of
    ``sum_k sigma_ik / (t_i - w_k) = 1`` (found by bisection), the z minimum
    ``lam u_k (ln(w_k / lam) + 1)`` at ``z_k = lam u_k / w_k`` (0 where ``u_k = 0`` or ``lam = 0``). Any w gives
    ``D(w) <= min``."""
    sigma, w = sigma.double(), torch.as_tensor(w, dtype=torch.float64)
    u = _prior(prior, sigma).double()
    positive = sigma > 0
    low = w.max().expand(sigma.shape[0]).clone()
    high = low + 2.0
    for _ in range(bisections):  # sum_k sigma_k / (t - w_k) decreases in t; <= 1 at t = max w + 1
        mid = (low + high) / 2
        above = torch.where(positive, sigma / (mid[:, None] - w), 0.0).sum(-1) > 1
        low, high = torch.where(above, mid, low), torch.where(above, high, mid)
    t = high[:, None]
    entropy = torch.where(positive, -sigma * torch.log(sigma), 0.0).sum(-1)
    rows = entropy + torch.where(positive, sigma * torch.log(t - w), 0.0).sum(-1) + 1 - t[:, 0]
    if lam == 0:  # no fairness term: w = 0, and the z part is 0
        return rows.mean()
    return rows.mean() + torch.where(u > 0, lam * u * (torch.log(w / lam) + 1), 0.0).sum()


def _gap_at_y(objective, dual, sigma, y, prior, lam: float) -> torch.Tensor:
    """``objective(y) - dual(w)`` with the multipliers read off y, ``w_k = lam u_k / y_bar_k`` (0 where
    ``u_k = 0``), one problem, float64."""
    sigma, y = sigma.double(), y.double()
    u = _prior(prior, sigma).double()
    w = torch.where(u > 0, lam * u / y.mean(0), 0.0)
    return objective(sigma, y, u, lam) - dual(sigma, w, u, lam)


def rce_duality_gap(sigma, y, prior=None, lam: float = 100.0) -> torch.Tensor:
    """``rce_objective(y) - rce_dual(w)`` with ``w_k = lam u_k / y_bar_k`` (0 where ``u_k = 0``), one problem."""
    return _gap_at_y(rce_objective, rce_dual, sigma, y, prior, lam)


def cce_dual(sigma, w, prior=None, lam: float = 100.0) -> torch.Tensor:
    """The Lagrangian dual of the collision-CE problem at multipliers ``w`` for ``y_bar = z`` (as
    :func:`rce_dual`), one ``(N, K)`` problem, float64, the plain way:
    ``D(w) = (1/N) sum_i min_{y_i in simplex} [-ln(sigma_i . y_i) - w . y_i] + sum_k lam u_k (ln(w_k / lam) + 1)``.
    The row minimum depends on y only through the point ``(sigma . y, w . y)`` of the polygon spanned
    by the K points ``(sigma_k, w_k)``, and ``-ln a - b`` falls as b grows, so it lies on an edge of
    the polygon's upper boundary: the minimum over every segment between two of the K points
    (``O(K^2)`` a row; at an end, or where the derivative ``-(sigma_j - sigma_k) / a - (w_j - w_k)``
    along it vanishes). Any w gives ``D(w) <= min``."""
    sigma, w = sigma.double(), torch.as_tensor(w, dtype=torch.float64)
    u = _prior(prior, sigma).double()
    vertices = -torch.log(sigma) - w  # (N, K): y one-hot
    ds = sigma[:, :, None] - sigma[:, None, :]  # (N, K, K): sigma_j - sigma_k
    dw = (w[:, None] - w[None, :]).expand_as(ds)  # w_j - w_k
    a = -ds / dw  # where the derivative along the segment from k to j vanishes
    t = (a - sigma[:, None, :]) / ds
    inside = (dw != 0) & (ds != 0) & (t > 0) & (t < 1) & (a > 0)
    a_safe = torch.where(inside, a, 1.0)
    along = torch.where(inside, -torch.log(a_safe) - (w[None, :] + torch.where(inside, t, 0.0) * dw), torch.inf)
    rows = torch.minimum(vertices.amin(-1), along.flatten(1).amin(-1))
    if lam == 0:
        return rows.mean()
    return rows.mean() + torch.where(u > 0, lam * u * (torch.log(w / lam) + 1), 0.0).sum()


def cce_duality_gap(sigma, y, prior=None, lam: float = 100.0) -> torch.Tensor:
    """``cce_objective(y) - cce_dual(w)`` with ``w_k = lam u_k / y_bar_k`` (0 where ``u_k = 0``), one problem."""
    return _gap_at_y(cce_objective, cce_dual, sigma, y, prior, lam)


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
    """EM for the reverse-CE problem (Zhang & Boykov 2024 eqs. 45-46), from y = sigma unless y0 is given:
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
    """Per row, ``argmin_y -ln(sigma . y) - sum_k a_k ln y_k`` over the simplex (Zhang & Boykov 2023b §4 and
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


def em_rce_block(sigma, y, rest, prior=None, lam: float = 100.0, *, n_total: int, iterations: int):
    """EM restricted to a block of rows of a problem of ``n_total`` points: the other
    rows are fixed and contribute the column sums ``rest`` (K,). E-step over all points,
    ``S_ik = y_ik / (rest_k + sum_{j in block} y_jk)``; the M-step of :func:`em_rce` with
    ``c = lam n_total``, for the block's rows only. Returns the block's y after ``iterations``."""
    u = _prior(prior, sigma)
    c = lam * n_total
    for _ in range(iterations):
        col = rest + y.sum(-2)
        num = sigma + c * u * torch.where(col > 0, y / col, torch.zeros_like(y))
        y = num / num.sum(-1, keepdim=True)
    return y


def em_cce(sigma, prior=None, lam: float = 100.0, *, tol: float = 1e-9, max_iter: int = 1000,
           newton_tol: float = 1e-12, newton_max_iter: int = 100, y0=None) -> SolverResult:
    """EM for the collision-CE problem (Zhang & Boykov 2023b): the E-step of :func:`em_rce`, then the
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
    """Projected gradient descent on the collision-CE problem (Zhang & Boykov 2023b Table 1): a gradient
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
    """SeLa's balanced assignment by plain matrix scaling (no log domain: for sigma whose power
    ``sigma^lam_sk`` stays in float64's range): ``Q = diag(a) P diag(b)``, ``P = sigma^lam_sk``, row
    sums 1/N, column sums u. Returns (Q, labels = argmax_k Q_ik, sweeps)."""
    u = _prior(prior, sigma)
    n = sigma.shape[-2]
    p = sigma ** lam_sk
    b = torch.ones_like(sigma[..., :1, :])
    sweeps = 0
    for sweeps in range(1, max_iter + 1):
        a = (1.0 / n) / (p * b).sum(-1, keepdim=True)
        b = u / (p * a).sum(-2, keepdim=True)
        rows = (p * a * b).sum(-1)
        if bool(((rows - 1.0 / n).abs() * n <= tol).all()):
            break
    q = p * a * b
    return q, q.argmax(-1), sweeps


# ---- deep clustering losses ----------------------------------------------------------------

def renyi_entropy(p: torch.Tensor, alpha: float) -> torch.Tensor:
    """``ln(sum_k p_k^alpha) / (1 - alpha)`` of each row, straight from the definition
    (``alpha = inf``: ``-ln max_k p_k``; ``alpha = 1``: Shannon)."""
    if alpha == float("inf"):
        return -torch.log(p.max(-1).values)
    if alpha == 1.0:
        return -(p * torch.log(p)).sum(-1)
    return torch.log((p ** alpha).sum(-1)) / (1.0 - alpha)


def renyi_mi_loss(logits: torch.Tensor, alpha: float, weight: float = 1.0, prior=None) -> torch.Tensor:
    """Zhang & Boykov 2024 eq. 48 without the margin: ``mean_i R_alpha(sigma_i) + w KL(sigma_bar || u)`` over all rows."""
    sigma = torch.softmax(logits.reshape(-1, logits.shape[-1]), -1)
    u = _prior(prior, sigma)
    sigma_bar = sigma.mean(0)
    return renyi_entropy(sigma, alpha).mean() + weight * (sigma_bar * torch.log(sigma_bar / u)).sum()


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) + KL(q || p)`` of each row of two probability tensors."""
    return (p * torch.log(p / q)).sum(-1) + (q * torch.log(q / p)).sum(-1)


def iic_loss(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """IIC's loss for two ``(n, K)`` probability tensors, the plain way: the joint
    ``P = sym(p1^T p2 / n)`` and ``-sum_kl P_kl ln(P_kl / (P_k. P_.l))``."""
    joint = p1.T @ p2 / p1.shape[0]
    joint = (joint + joint.T) / 2
    joint = joint / joint.sum()
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    return -(joint * torch.log(joint / outer)).sum()


def linear_self_labeling(x: torch.Tensor, weight: torch.Tensor, bias, fair: torch.Tensor, *, iterations: int = 10,
                         reduction: str = "mean"):
    """The fused linear self-labeling op the plain way, with the full ``(B, K)`` logits:
    ``sigma = softmax(x weight^T + bias)``; ``iterations`` reverse-CE M-steps from ``y = sigma``
    against the fixed fairness weights ``fair`` (``c u_k / col_k``), ``y <- (sigma + fair y) /
    (1 + fair . y)``, with no gradient through y; loss ``H(sigma_i, y_i)`` reduced by mean or sum.
    Returns ``(loss, labels = argmax y, column sums of y in float64)``."""
    logits = x @ weight.T if bias is None else x @ weight.T + bias
    sigma = torch.softmax(logits, -1)
    a = fair.to(sigma.dtype)
    with torch.no_grad():
        y = sigma.detach().clone()
        for _ in range(iterations):
            y = (sigma + a * y) / (1.0 + (a * y).sum(-1, keepdim=True))
    rows = torch.where(sigma > 0, -sigma * torch.log(y), torch.zeros_like(sigma)).sum(-1)
    loss = rows.mean() if reduction == "mean" else rows.sum()
    return loss, y.argmax(-1), y.sum(0, dtype=torch.float64)


def top_entries(logits: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` largest entries of each row of ``logits`` ``(b, K)`` and their classes, by a
    stable descending sort (ties to the lower class)."""
    values, index = torch.sort(logits, dim=-1, descending=True, stable=True)
    return values[:, :top], index[:, :top]


def linear_top_entries(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                       top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_entries` of the logits ``x @ weight.T + bias``, formed in float64 (the op sums
    in float32 in its own order: compare its values to these within a tolerance)."""
    return top_entries(torch.addmm(bias.double(), x.double(), weight.double().T), top)


def sparse_em_rows(values: torch.Tensor, index: torch.Tensor, rest: torch.Tensor, cu: torch.Tensor, iterations: int,
                   update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-CE pseudo-labels on each row's entries, in float64: ``sigma = softmax(values)``,
    ``y = sigma``, then ``iterations`` M-steps ``y <- (sigma + w y) / (1 + sum w y)`` with
    ``w = cu_k / col_k`` at each entry's class (0 where ``col_k = 0``), ``col = rest + the column
    sums of y`` after every step (``update``) or ``col = rest`` throughout. Returns ``y`` in the
    dtype of ``values`` and ``rest + the column sums of the final y``."""
    sigma = torch.softmax(values.double(), -1)
    flat = index.reshape(-1)

    def columns(y):
        return rest + torch.zeros_like(rest).index_add_(0, flat, y.reshape(-1))

    def weights(col):
        return torch.where(col > 0, cu / col.clamp_min(torch.finfo(torch.float64).tiny), 0.0)[index]

    y = sigma.clone()
    w = weights(columns(y) if update else rest)
    for _ in range(iterations):
        a = w * y
        y = (sigma + a) / (1.0 + a.sum(-1, keepdim=True))
        if update:
            w = weights(columns(y))
    return y.to(values.dtype), columns(y)


def sparse_centre_sums(k: int, y: torch.Tensor, index: torch.Tensor,
                       x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums (K, D), mass (K,))`` float64: ``sums_k = sum y_ij x_i`` and ``mass_k = sum y_ij`` over
    the entries ``(i, j)`` with ``index_ij = k``, by a dense ``(b, K)`` matrix of y."""
    dense = torch.zeros(y.shape[0], k, dtype=torch.float64).scatter_add_(1, index, y.double())
    return dense.T @ x.double(), dense.sum(0)


def kmeans_plusplus(points: torch.Tensor, first: int, draws: torch.Tensor) -> torch.Tensor:
    """Greedy k-means++ seeds the plain way, in float64: seed 0 is ``first``; seed c the candidate of
    lowest total ``sum_i min(d2_i, |x_i - x_cand|^2)`` among ``searchsorted(cumsum(d2), draw * sum(d2))``
    for the draws ``draws[c - 1]``, d2 the squared distances to the nearest seed so far. Returns
    the seeds' indices ``(K,)``."""
    x = points.double()
    m = x.shape[0]
    chosen = [first]
    d2 = (x - x[first]).square().sum(1)
    for row in draws:
        cumulative = torch.cumsum(d2, 0)
        candidates = torch.searchsorted(cumulative, row * cumulative[-1]).clamp_(max=m - 1)
        dist = torch.minimum((x[None, :, :] - x[candidates][:, None, :]).square().sum(-1), d2)
        best = int(dist.sum(1).argmin())
        d2 = dist[best]
        chosen.append(int(candidates[best]))
    return torch.tensor(chosen, dtype=torch.int64)

