"""The certificate of a pseudo-label solve: the objective, the Frank-Wolfe gap and the Lagrangian
duality gap (docs/maths.md), in float64 whatever the dtype of
the solve: fused CPU kernels, or PyTorch over blocks of rows so that it needs O(block) memory on
top of the inputs rather than several float64 copies of them.

Problems in mean form: ``f(y) = (1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar)``, with
``CE = H(sigma, y)`` (``"rce"``) or ``-ln(sigma . y)`` (``"cce"``). Gradient
``g_ik = dCE/dy_ik / N - lam u_k / (N y_bar_k)``; gap ``sum_i (y_i . g_i - min_k g_ik)``: >= 0,
0 exactly at the optimum, and >= f(y) - f*."""
from __future__ import annotations

import torch

from .. import ops
from ..ops.checks import block_rows, check_tensor
from ._problem import check_number, prepare
from .result import SolverResult

PROBLEMS = ("rce", "cce")


def certify(problem: str, sigma3: torch.Tensor, y3: torch.Tensor, u: torch.Tensor, lam: float):
    """``(objective, fw_gap)``, each ``(B,)`` float64, of ``y3`` for the problems ``sigma3`` ``(B, N, K)``:
    the fused CPU kernel (two passes, no N x K temporary), the blocked PyTorch version elsewhere."""
    if sigma3.device.type == "cpu" and sigma3.dtype == y3.dtype and sigma3.dtype in (torch.float32, torch.float64):
        return ops.certificate_kernel(sigma3, y3, u, float(lam), PROBLEMS.index(problem))
    return _certify_blocks(problem, sigma3, y3, u, lam)


def certify_gaps(problem: str, sigma3: torch.Tensor, y3: torch.Tensor, u: torch.Tensor, lam: float):
    """``(objective, fw_gap, duality_gap)``, each ``(B,)`` float64: :func:`certify` and
    :func:`dual_certificate`."""
    objective, gap = certify(problem, sigma3, y3, u, lam)
    return objective, gap, dual_certificate(sigma3, y3, u, lam, problem)


def _column_means(y3: torch.Tensor, rows: int) -> torch.Tensor:
    """``(B, K)`` float64 column means of ``y3`` ``(B, N, K)``, ``rows`` at a time: ``sum(dtype=float64)``
    of all of y would copy it to float64."""
    n = y3.shape[1]
    return sum(y3[:, i:i + rows].sum(-2, dtype=torch.float64) for i in range(0, n, rows)) / n


def _certify_blocks(problem: str, sigma3: torch.Tensor, y3: torch.Tensor, u: torch.Tensor, lam: float):
    """:func:`certify` in float64 PyTorch over blocks of rows (any device)."""
    b, n, k = sigma3.shape
    u64 = u.to(torch.float64)
    rows = block_rows(sigma3.device, b * k)  # (B, rows, K) entries at once (ops.checks.block_entries)
    y_bar = _column_means(y3, rows)
    ce = torch.zeros(b, dtype=torch.float64, device=sigma3.device)
    gap = torch.zeros_like(ce)
    if lam != 0:
        active = u64 > 0
        fair_grad = torch.where(active, -lam * u64 / (n * y_bar), 0.0).unsqueeze(1)  # (B, 1, K)
        fairness = torch.where(active, u64 * torch.log(u64 / y_bar), 0.0).sum(-1)
    for start in range(0, n, rows):
        s = sigma3[:, start:start + rows].to(torch.float64)
        y = y3[:, start:start + rows].to(torch.float64)
        if problem == "rce":
            positive = s > 0
            ce += torch.where(positive, -s * torch.log(y), 0.0).sum((-2, -1))
            g = torch.where(positive, -s / (n * y), 0.0)
        else:
            p = (s * y).sum(-1, keepdim=True)
            ce -= torch.log(p).sum((-2, -1))
            g = -s / (n * p)
        if lam != 0:
            g += fair_grad
        inner = torch.where(y > 0, y * g, 0.0).sum(-1)
        gap += (inner - g.amin(-1)).sum(-1)
    objective = ce / n + lam * fairness if lam != 0 else ce / n
    return objective, gap


def result(problem: str, sigma3, y, u, lam, iterations, converged, criterion: str, certificate: bool) -> SolverResult:
    """A batched :class:`SolverResult`; objective and gaps NaN when ``certificate`` is False."""
    if certificate:
        objective, gap, dual = certify_gaps(problem, sigma3, y, u, lam)
    else:
        objective = gap = dual = torch.full(y.shape[:1], float("nan"), dtype=torch.float64, device=y.device)
    return SolverResult(y, iterations, objective, gap, converged, criterion, dual)


def _pair(name: str, sigma, y, prior, lam, problem: str):
    if problem not in PROBLEMS:
        raise ValueError(f"{name}: problem must be 'rce' or 'cce', got {problem!r}")
    check_tensor("y", y)
    lam = check_number(name, "lam", lam)
    sigma3, u, _, y3, batched = prepare(name, sigma, prior, lam, None, 0, y, True, y_name="y")
    return sigma3, y3, u, lam, batched


def objective(sigma: torch.Tensor, y: torch.Tensor, prior=None, lam: float = 100.0, *, problem: str = "rce"):
    """Value of the pseudo-label problem at ``y``: ``(1/N) sum_i H(sigma_i, y_i) + lam KL(u || y_bar)``
    (``problem="rce"``) or ``-(1/N) sum_i ln(sigma_i . y_i) + lam KL(u || y_bar)`` (``"cce"``);
    a scalar, or ``(B,)`` for batched ``(B, N, K)`` inputs. Computed in float64."""
    sigma3, y3, u, lam, batched = _pair("objective", sigma, y, prior, lam, problem)
    out = certify(problem, sigma3, y3, u, lam)[0]
    return out if batched else out[0]


def fw_gap(sigma: torch.Tensor, y: torch.Tensor, prior=None, lam: float = 100.0, *, problem: str = "rce"):
    """Frank-Wolfe gap ``sum_i (sum_k y_ik g_ik - min_k g_ik)`` of the problem at ``y`` (docs/maths.md):
    >= 0, 0 exactly at the optimum, an upper bound on ``objective(y) - min``; needs no knowledge
    of the solver and holds on the simplex boundary. Computed in float64."""
    sigma3, y3, u, lam, batched = _pair("fw_gap", sigma, y, prior, lam, problem)
    out = certify(problem, sigma3, y3, u, lam)[1]
    return out if batched else out[0]


def dual_certificate(sigma3: torch.Tensor, y3: torch.Tensor, u: torch.Tensor, lam: float,
                     problem: str = "rce") -> torch.Tensor:
    """The duality gap of ``y3`` for the problems ``sigma3`` ``(B, N, K)``, ``(B,)`` float64: the fused
    CPU kernel (two passes and a scalar Newton per row for reverse CE; a walk along each row's
    envelope for collision CE), the blocked PyTorch version elsewhere."""
    if sigma3.device.type == "cpu" and sigma3.dtype == y3.dtype and sigma3.dtype in (torch.float32, torch.float64):
        return ops.duality_gap_kernel(sigma3, y3, u, float(lam), PROBLEMS.index(problem))
    return _duality_gap_blocks(sigma3, y3, u, lam, problem)


def _row_roots(s, d, guess, *, max_iter: int = 100, every: int | None = None):
    """Per row, ``tau >= 0`` maximising the row's dual ``sum_k s_k ln(tau + d_k) - tau`` (the root of
    ``phi(tau) = sum_k s_k / (tau + d_k) - 1``, or 0 where ``phi(0) <= 0``), with ``d >= 0`` and
    ``s = 0`` entries ignored. ``phi`` is convex and decreasing, so Newton from a point where
    ``phi >= 0`` rises monotonically to the root; it starts at ``guess`` where that holds (near the
    optimum ``guess`` is the root itself), else one Newton step left of it (``phi`` is convex, so that
    lands left of the root), else at ``max(0, max_k (s_k - d_k))``. Any ``tau`` gives
    a valid bound, so the iteration count only decides how tight it is."""
    positive = s > 0

    def phi(tau):
        return torch.where(positive, s / (tau + d), 0.0).sum(-1, keepdim=True) - 1

    left = torch.where(positive, s - d, 0.0).amax(-1, keepdim=True).clamp_min(0.0)
    # where phi(guess) < 0, one Newton step from it lands left of the root (phi is convex)
    at_guess = phi(guess)
    slope = torch.where(positive, s / (guess + d) ** 2, 0.0).sum(-1, keepdim=True)
    stepped = torch.maximum(left, guess + at_guess / slope)
    tau = torch.where(guess > left, torch.where(at_guess >= 0, guess, stepped), left)
    tau = torch.where(torch.isfinite(tau), tau, left)
    floor = 4 * torch.finfo(s.dtype).eps
    # each convergence test is a host sync: off the CPU, test after every 4th step (Newton from a
    # start this near takes a few; the steps after convergence are zero or rounding-sized)
    every = every or (1 if s.device.type == "cpu" else 4)
    for it in range(max_iter):
        r = torch.where(positive, s / (tau + d), 0.0)
        f = r.sum(-1, keepdim=True) - 1
        slope = (r * r / torch.where(positive, s, 1.0)).sum(-1, keepdim=True)  # -phi'(tau) > 0
        step = torch.where(f > 0, f / slope, 0.0)  # phi(tau) <= 0 at tau = 0 keeps tau = 0
        step = torch.nan_to_num(step, nan=0.0, posinf=0.0)
        tau = tau + step
        if (it + 1) % every == 0 and bool((step <= floor * tau).all()):
            break
    return tau


def dual_distances(y_bar: torch.Tensor, u: torch.Tensor, lam: float):
    """The multipliers ``w = lam u / y_bar`` (0 where ``u = 0``) of :func:`duality_gap` as the rows
    use them: ``(w_max - lam, d)`` with ``d_k = w_max - w_k >= 0`` (``y_bar`` ``(..., K)`` float64).
    They are kept as ``omega = w - lam``, so no term of size lam has to cancel."""
    u64 = u.to(torch.float64)
    if lam == 0:  # w = 0 everywhere (0 * (u / 0) would be NaN for an empty class)
        omega = torch.zeros_like(y_bar)
    else:
        omega = torch.where(u64 > 0, lam * (u64 / y_bar - 1), -lam)
    omega_max = omega.amax(-1)
    return omega_max, omega_max.unsqueeze(-1) - omega


def float64_blocks(sigma3: torch.Tensor, y3: torch.Tensor):
    """``(s, y)``: float64 copies of the same blocks of rows of ``(B, N, K)`` problems, as many rows at
    a time as :func:`~entclust.ops.checks.block_rows` allows on their device."""
    b, n, k = sigma3.shape
    rows = block_rows(sigma3.device, b * k)
    for start in range(0, n, rows):
        yield sigma3[:, start:start + rows].to(torch.float64), y3[:, start:start + rows].to(torch.float64)


def dual_row_sums(sigma3: torch.Tensor, y3: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``(B,)`` float64 sums over the rows of ``(B, N, K)`` problems of each row's duality gap for the
    distances ``d`` ``(B, K)`` (:func:`dual_distances`):
    ``sum_k s_k ln(s_k / ((tau + d_k) y_k)) + tau - |s| + d . y`` (>= 0 for a row on the simplex), in
    PyTorch over blocks of rows."""
    d = d.unsqueeze(1)  # (B, 1, K)
    total = torch.zeros(sigma3.shape[0], dtype=torch.float64, device=sigma3.device)
    for s, y in float64_blocks(sigma3, y3):
        mass = s.sum(-1, keepdim=True)  # 1 up to the rounding the validation allows
        excess = (d * y).sum(-1, keepdim=True)
        tau = _row_roots(s, d, mass - excess)
        positive = s > 0
        row = torch.where(positive, s * (torch.log(s / (tau + d)) - torch.log(y)), 0.0).sum(-1)
        total += (row + (tau - mass + excess).squeeze(-1)).sum(-1)
    return total


ENVELOPE_STEPS = 64  # most lines a row's walk passes (any scale gives a valid bound; 1-2 near the optimum)


def envelope_minimum(s: torch.Tensor, d: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per row of ``s`` ``(..., K)`` (float64, entries >= 0, some > 0), the ``x > 0`` minimising the
    convex ``max_k (x s_k - d_k) - ln x``, walking the upper envelope of the lines ``x s_k - d_k`` from
    ``scale`` ``(..., 1)``: on a line of slope ``s_a`` the function's minimum is at ``x = 1 / s_a``,
    unless another line overtakes first (slope above ``s_a`` to the right, below it to the left);
    then the walk moves to that crossing and on along the new line, never turning back. It ends
    where ``1 / x`` lies between the slopes meeting at x: the exact minimum, after one or two
    lines near the optimum, at most :data:`ENVELOPE_STEPS`."""
    x = scale.clone()
    a = (x * s - d).argmax(-1, keepdim=True)
    slope, dist = s.gather(-1, a), d.gather(-1, a)
    right, left = slope * x < 1, slope * x > 1
    for _ in range(ENVELOPE_STEPS):
        if not bool((right | left).any()):
            break
        rise = s - slope  # where line j meets line a: x = (d_j - d_a) / (s_j - s_a)
        cross = (d - dist) / torch.where(rise != 0, rise, 1.0)
        ahead = torch.where(rise > 0, cross, torch.inf).clamp_min(x)
        behind = torch.where(rise < 0, cross, -torch.inf).clamp_max(x)
        j_right, j_left = ahead.argmin(-1, keepdim=True), behind.argmax(-1, keepdim=True)
        b_right, b_left = ahead.gather(-1, j_right), behind.gather(-1, j_left)
        target = 1 / slope  # inf for a line of slope 0
        stop_right = right & (target <= b_right)
        stop_left = left & (target >= b_left)
        move_right, move_left = right & ~stop_right, left & ~stop_left
        moved = torch.where(move_right, b_right, torch.where(move_left, b_left, x))
        x = torch.where(stop_right | stop_left, target, moved)
        a = torch.where(move_right, j_right, torch.where(move_left, j_left, a))
        slope, dist = s.gather(-1, a), d.gather(-1, a)
        right = move_right & (slope * x < 1)
        left = move_left & (slope * x > 1)
    return x


def cce_dual_row_sums(sigma3: torch.Tensor, y3: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """:func:`dual_row_sums` of collision-CE problems (docs/maths.md, "A duality gap for the CCE
    problem"): each row's gap ``-ln p - w . y - min_{x > 0} [1 + ln x - max_k (x s_k + w_k)]``
    (``p = s . y``; the row's exact dual by minimax), written as
    ``sum_k y_k (M - v_k) + (x p - 1 - ln(x p)) + M (1 - sum_k y_k)`` with ``v_k = x s_k - d_k``,
    ``M = max_k v_k`` at the minimising x (:func:`envelope_minimum`, from ``x = 1 / p``, where the
    gap is the row's Frank-Wolfe gap); infinite where ``p = 0``."""
    d = d.unsqueeze(1)  # (B, 1, K)
    total = torch.zeros(sigma3.shape[0], dtype=torch.float64, device=sigma3.device)
    for s, y in float64_blocks(sigma3, y3):
        p = (s * y).sum(-1, keepdim=True)
        x = envelope_minimum(s, d.expand_as(s), 1 / p)
        v = x * s - d
        top = v.amax(-1, keepdim=True)
        q = x * p
        row = (y * (top - v)).sum(-1, keepdim=True) + (q - 1 - torch.log1p(q - 1)) + top * (1 - y.sum(-1, keepdim=True))
        total += torch.where(p > 0, row, torch.inf).squeeze(-1).sum(-1)
    return total


def dual_total(row_sums, n: int, omega_max, y_bar: torch.Tensor, u: torch.Tensor, lam: float):
    """The duality gap from the rows' sums: their mean plus what the identity behind the row form
    (``sum_k y_bar_k = 1``) leaves after rounding, ``w_max (1 - sum_k y_bar_k)``; at least 0, and
    infinite where a class with ``u_k > 0`` has no mass (``lam > 0``: the objective is infinite)."""
    gap = (row_sums / n + (omega_max + lam) * (1 - y_bar.sum(-1))).clamp_min(0.0)
    if lam == 0:
        return gap
    return torch.where(((u > 0) & (y_bar <= 0)).any(-1), torch.inf, gap)


def _duality_gap_blocks(sigma3: torch.Tensor, y3: torch.Tensor, u: torch.Tensor, lam: float,
                        problem: str = "rce") -> torch.Tensor:
    """:func:`duality_gap` of ``(B, N, K)`` problems, ``(B,)`` float64, over blocks of rows."""
    b, n, k = sigma3.shape
    rows = block_rows(sigma3.device, b * k)
    y_bar = _column_means(y3, rows)
    omega_max, d = dual_distances(y_bar, u, lam)
    sums = dual_row_sums(sigma3, y3, d) if problem == "rce" else cce_dual_row_sums(sigma3, y3, d)
    return dual_total(sums, n, omega_max, y_bar, u, lam)


def duality_gap(sigma: torch.Tensor, y: torch.Tensor, prior=None, lam: float = 100.0, *, problem: str = "rce"):
    """Lagrangian duality gap of the problem at ``y`` (docs/maths.md, "A tighter certificate" and "A
    duality gap for the CCE problem"): ``objective(y) - D(w)`` with the multipliers
    ``w_k = lam u_k / y_bar_k`` read off y and the dual ``D`` evaluated exactly row by row. Like the
    Frank-Wolfe gap it is >= 0 and an upper bound on ``objective(y) - min``, but never larger (in
    exact arithmetic), and far tighter where y is near the optimum or, for reverse CE, sigma has tiny
    entries: the Frank-Wolfe gap linearises the rows' cross-entropy, the dual keeps it exact.
    Measured (docs/maths.md): reverse CE, 250 x 10, ``lam = 100``, EM after 10 iterations with
    ``objective - min = 1.1e-4``: 1.9e-4 against 7.1e-2; collision CE, softmax(10 z), EM after 10 000
    iterations with ``objective - min = 2.0e-4``: 3.5e-4 against 6.8e-3. Computed in
    float64 over blocks of rows; a scalar, or ``(B,)`` for batched inputs."""
    sigma3, y3, u, lam, batched = _pair("duality_gap", sigma, y, prior, lam, problem)
    out = dual_certificate(sigma3, y3, u, lam, problem)
    return out if batched else out[0]
