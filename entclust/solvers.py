"""Pseudo-label solvers (sigma fixed, optimise y): MATH.md, "Pseudo-label problems and solvers".

Problems are in mean form, ``(1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar)``, so EM uses
``c = lam N`` (the papers' eq. 15 omits the N). ``sigma`` is ``(N, K)`` for one problem or
``(B, N, K)`` for B independent problems solved in one call.
"""
from __future__ import annotations

import math

import torch

from . import ops, reference
from ._build import compiled_with_cuda
from ._validation import check_distributions, check_tensor, class_dim, prior_vector
from .results import SolverResult

# Default stopping tolerance on max |y_new - y| per problem, by dtype: float32 cannot resolve
# changes much below 1e-7 of a probability.
DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-6}
# Share of the prior mixed into the default start when sigma has exact zeros (see _prepare).
START_MIX = 0.01


def _prepare(name: str, sigma, prior, lam, tol, max_iter, y0, validate, y_name: str = "y0"):
    check_tensor("sigma", sigma)
    if sigma.dtype not in DEFAULT_TOL:
        raise TypeError(f"{name}: sigma must be float32 or float64, got {sigma.dtype}")
    if sigma.dim() not in (2, 3):
        raise ValueError(f"{name}: sigma must have shape (N, K) or (B, N, K), got {tuple(sigma.shape)}")
    if sigma.shape[-1] < 1:
        raise ValueError(f"{name}: need K >= 1 classes, got shape {tuple(sigma.shape)}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"{name}: lam must be a finite number >= 0, got {lam!r}")
    if not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"{name}: max_iter must be an int >= 0, got {max_iter!r}")
    tol = DEFAULT_TOL[sigma.dtype] if tol is None else float(tol)
    if not tol >= 0:
        raise ValueError(f"{name}: tol must be >= 0, got {tol}")
    batched = sigma.dim() == 3
    sigma3 = sigma if batched else sigma.unsqueeze(0)
    k = sigma.shape[-1]
    if validate:
        check_distributions("sigma", sigma3.reshape(-1, k))
    u = prior_vector(prior, k, sigma3)
    if y0 is None and not bool((sigma3 > 0).all()):
        # EM's updates are multiplicative: a y_ik that starts at 0 stays 0, so from y = sigma a
        # class that sigma gives no mass could never receive any (objective +inf when u_k > 0).
        # The fixed point is the global optimum only from a positive start.
        y0 = START_MIX * u + (1 - START_MIX) * sigma3
    elif y0 is not None:
        check_tensor(y_name, y0)
        if y0.shape != sigma.shape or y0.dtype != sigma.dtype or y0.device != sigma.device:
            raise ValueError(f"{name}: {y_name} must match sigma in shape, dtype and device; got {tuple(y0.shape)} "
                             f"{y0.dtype} on {y0.device}")
        if validate:
            check_distributions(y_name, y0.reshape(-1, k))
        y0 = y0 if batched else y0.unsqueeze(0)
    return sigma3, u, tol, y0.contiguous() if y0 is not None else None, batched


def _squarem(name, accel, step, problem, sigma3, u, lam, tol, max_iter, y0):
    """SQUAREM (S3) on the EM map ``step``, per problem of the batch: ``r = F(y) - y``,
    ``v = F(F(y)) - 2 F(y) + y``, ``alpha = -||r|| / ||v||`` (at most -1), extrapolate
    ``y - 2 alpha r + alpha^2 v``, halve ``alpha`` towards -1 until strictly inside the simplex,
    one EM step from there, and keep it only if the objective did not rise (else ``F(F(y))``)."""
    if accel != "squarem":
        raise ValueError(f"{name}: accel must be None or 'squarem', got {accel!r}")
    objective = reference.rce_objective if problem == "rce" else reference.cce_objective
    s64, u64 = sigma3.double(), u.double()
    value = lambda y: objective(s64, y.double(), u64, lam)  # noqa: E731
    y = (sigma3 if y0 is None else y0).clone()
    b = y.shape[0]
    iterations = torch.zeros(b, dtype=torch.int64, device=y.device)
    converged = torch.zeros(b, dtype=torch.bool, device=y.device)
    current = value(y)
    while int(iterations.max()) < max_iter and not bool(converged.all()):
        y1 = step(y)
        delta = (y1 - y).abs().amax((-2, -1))
        done = delta <= tol
        active = ~converged
        iterations += active.long()
        converged |= done
        if bool(converged.all()) or int(iterations.max()) + 2 > max_iter:  # a cycle costs 2 more
            y = torch.where((active & ~done)[:, None, None], y1, y)
            break
        y2 = step(y1)
        r, v = y1 - y, y2 - 2 * y1 + y
        rn = r.double().flatten(1).norm(dim=1)
        vn = v.double().flatten(1).norm(dim=1).clamp_min(1e-300)
        alpha = torch.minimum(-rn / vn, torch.full_like(rn, -1.0))
        for _ in range(30):  # toward alpha = -1, where the extrapolation is y2 itself
            a = alpha.to(y.dtype)[:, None, None]
            y_ext = y - 2 * a * r + a * a * v
            # strictly inside: no negative entry, and no new zero where F(F(y)) is positive
            # (EM keeps exact zeros, e.g. collision CE's boundary optimum, where they are)
            inside = ((y_ext > 0) | ((y_ext == 0) & (y2 == 0))).all(-1).all(-1)
            if bool(inside.all()):
                break
            alpha = torch.where(inside, alpha, (alpha - 1) / 2)
        y_ext = torch.where(((alpha >= -1) | ~inside)[:, None, None], y2, y_ext)
        y_ext = y_ext / y_ext.sum(-1, keepdim=True)
        y3 = step(y_ext)
        new = value(y3)
        fallback = ~(new <= current) | ~torch.isfinite(new)
        y_new = torch.where(fallback[:, None, None], y2, y3)
        new = torch.where(fallback, value(y2), new)
        keep = (~converged)[:, None, None]
        y = torch.where(keep, y_new, y)
        current = torch.where(~converged, new, current)
        iterations += 2 * (~converged).long()
    return y, iterations, converged


def _certify(problem: str, sigma3, y, u, lam, iterations, converged, criterion, batched) -> SolverResult:
    """Objective and Frank-Wolfe gap, in float64 whatever the dtype of the solve."""
    s64, y64, u64 = sigma3.double(), y.double(), u.double()
    objective = (reference.rce_objective if problem == "rce" else reference.cce_objective)(s64, y64, u64, lam)
    grad = (reference.rce_gradient if problem == "rce" else reference.cce_gradient)(s64, y64, u64, lam)
    gap = reference.fw_gap(grad, y64)
    if not batched:
        y, iterations, objective, gap, converged = (t[0] for t in (y, iterations, objective, gap, converged))
    return SolverResult(y, iterations, objective, gap, converged, criterion)


def em_rce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float | None = None,
    max_iter: int = 1000,
    y0: torch.Tensor | None = None,
    accel: str | None = None,
    validate: bool = True,
) -> SolverResult:
    """EM for the reverse-CE pseudo-label problem
    ``min_y (1/N) sum_i H(sigma_i, y_i) + lam KL(u || y_bar)`` (seed 004 eqs. 45-46), all
    iterations in one fused kernel call:

    E-step ``S_ik = y_ik / sum_j y_jk``, M-step ``y_ik = (sigma_ik + c u_k S_ik) / (1 + c sum_m u_m S_im)``,
    ``c = lam N``; starts from ``y0`` (default ``sigma``). The fixed point is the global optimum.

    Args:
        sigma: ``(N, K)`` or ``(B, N, K)`` predictions, rows on the simplex, float32 or float64.
        prior: ``(K,)`` class prior u (uniform when None); zero entries allowed: such a class
            gets no fairness pull, only its share of sigma.
        lam: fairness weight (>= 0); ``lam = 0`` returns ``y = sigma``.
        tol: stop a problem when ``max |y_new - y| <= tol``; default 1e-10 (float64), 1e-6 (float32).
        max_iter: iteration cap. EM converges linearly, and slowly for large ``lam N``
            (MATH.md): check ``result.fw_gap``, not only ``converged``.
        y0: optional start, same shape as sigma; default sigma, or ``0.99 sigma + 0.01 u`` when
            sigma has exact zeros (EM never moves a y_ik away from 0, so a zero start could
            miss the optimum; the result would show it as a large Frank-Wolfe gap).
        accel: None (plain EM, all iterations in one kernel call) or ``"squarem"``: SQUAREM
            (Varadhan & Roland 2008, scheme S3) on the EM map, each cycle two fused EM steps, an
            extrapolation kept strictly inside the simplex, one stabilising EM step, and a fall
            back to plain EM whenever the objective would rise. Same fixed point; ``iterations``
            counts EM-map evaluations.
        validate: check sigma/y0 are on the simplex and finite (one extra pass).

    Returns a :class:`~entclust.results.SolverResult` with the Frank-Wolfe gap computed in float64.
    """
    sigma3, u, tol, y0, batched = _prepare("em_rce", sigma, prior, lam, tol, max_iter, y0, validate)
    if accel is not None:
        step = lambda y: ops.em_rce(sigma3, u, float(lam), 0.0, 1, y)[0]  # noqa: E731
        y, iterations, converged = _squarem("em_rce", accel, step, "rce", sigma3, u, lam, tol, max_iter, y0)
        return _certify("rce", sigma3, y, u, lam, iterations, converged, f"SQUAREM, max|F(y) - y| <= {tol:g}", batched)
    y, iterations, converged = ops.em_rce(sigma3, u, float(lam), tol, max_iter, y0)
    return _certify("rce", sigma3, y, u, lam, iterations, converged, f"max|dy| <= {tol:g}", batched)


def em_cce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float | None = None,
    max_iter: int = 1000,
    newton_tol: float = 1e-12,
    newton_max_iter: int = 50,
    y0: torch.Tensor | None = None,
    accel: str | None = None,
    validate: bool = True,
) -> SolverResult:
    """EM for the collision-CE pseudo-label problem
    ``min_y -(1/N) sum_i ln(sigma_i . y_i) + lam KL(u || y_bar)`` (seed 003), all iterations in
    one fused kernel call: the E-step of :func:`em_rce`, then per row the M-step
    ``argmin_y -ln(sigma . y) - sum_k a_k ln y_k`` with ``a_k = c u_k S_k``, ``c = lam N``:
    Newton on the scalar ``x = sigma . y`` from Lemma 1's start (monotone, a few steps to
    ``|sum_k y_k - 1| <= newton_tol``), or the closed form of appendix C when some ``a_k = 0``
    (a class no point uses, a zero prior entry, or ``lam = 0``, which gives the one-hot argmax).

    ``a_k <= 1e-12 b`` counts as 0 (below that, ``b - sigma_k / x`` cancels in float64), so a
    ``lam`` below about 1e-10 acts as ``lam = 0`` and returns one-hot rows (objective +inf for
    ``lam > 0`` if a class is left empty).

    Arguments (``accel="squarem"`` included) and result as in :func:`em_rce`. Its optimum often has many ``y_ik = 0``, which
    multiplicative updates approach slowly (MATH.md: Frank-Wolfe gap 2.8e-2 after 1000
    iterations at N = 250, K = 200, lam = 100): check ``result.fw_gap``.
    """
    sigma3, u, tol, y0, batched = _prepare("em_cce", sigma, prior, lam, tol, max_iter, y0, validate)
    if not (newton_tol >= 0 and isinstance(newton_max_iter, int) and newton_max_iter >= 1):
        raise ValueError(f"em_cce: need newton_tol >= 0 and newton_max_iter >= 1, got {newton_tol}, {newton_max_iter}")
    if accel is not None:
        step = lambda y: ops.em_cce(sigma3, u, float(lam), 0.0, 1, float(newton_tol), newton_max_iter, y)[0]  # noqa: E731
        y, iterations, converged = _squarem("em_cce", accel, step, "cce", sigma3, u, lam, tol, max_iter, y0)
        return _certify("cce", sigma3, y, u, lam, iterations, converged, f"SQUAREM, max|F(y) - y| <= {tol:g}", batched)
    y, iterations, converged = ops.em_cce(sigma3, u, float(lam), tol, max_iter, float(newton_tol), newton_max_iter, y0)
    return _certify("cce", sigma3, y, u, lam, iterations, converged, f"max|dy| <= {tol:g}", batched)


def pgd_cce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    step: float = 1.0,
    tol: float | None = None,
    max_iter: int = 1000,
    y0: torch.Tensor | None = None,
    validate: bool = True,
) -> SolverResult:
    """Projected gradient descent on the collision-CE problem with strong fairness (the
    baseline of seed 003 Table 1), fused: per iteration, for every row, the gradient
    ``g_ik = -sigma_ik / (N sigma_i . y_i) - lam u_k / (N y_bar_k)``, a step ``y_i - step g_i`` and the
    exact Euclidean projection onto the simplex (Michelot's algorithm). Stops on ``max|dy| <= tol``.

    Too large a step empties a class (``y_bar_k = 0``), where the gradient is infinite: the
    iterates then become NaN and the result reports it (objective NaN, ``converged`` False),
    as the paper warns ("higher step size may lead to the divergence of the PGD").
    The weak-fairness variant (eq. 10) is ``entclust.reference.pgd_cce(..., fairness="weak")``.
    """
    sigma3, u, tol, y0, batched = _prepare("pgd_cce", sigma, prior, lam, tol, max_iter, y0, validate)
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"pgd_cce: step must be a finite number > 0, got {step!r}")
    y, iterations, converged = ops.pgd_cce(sigma3, u, float(lam), float(step), tol, max_iter, y0)
    converged = converged & torch.isfinite(y).all(-1).all(-1)
    return _certify("cce", sigma3, y, u, lam, iterations, converged, f"max|dy| <= {tol:g}", batched)


def project_simplex(v: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Exact Euclidean projection of every vector along ``dim`` onto the probability simplex:
    ``argmin_{w in simplex} ||w - v||``, i.e. ``max(v - theta, 0)``, theta by Michelot's algorithm
    (1986: average the entries above theta, drop those below, repeat; exact, no sort), float64
    inside. float32/float64; a vector with NaN/Inf raises. Fused kernels on CPU and CUDA."""
    check_tensor("v", v)
    if v.dtype not in DEFAULT_TOL:
        raise TypeError(f"project_simplex: v must be float32 or float64, got {v.dtype}")
    dim = class_dim("v", v, dim)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("project_simplex: v must be finite")
    moved = v.movedim(dim, -1)
    out = ops.project_simplex(moved.reshape(-1, moved.shape[-1]))
    return out.reshape(moved.shape).movedim(-1, dim)


def has_kernels(device: torch.device) -> bool:
    """Whether the fused solver kernels run on ``device`` in this build (CPU always; CUDA when
    entclust was compiled with its CUDA kernels)."""
    return device.type == "cpu" or (device.type == "cuda" and compiled_with_cuda())


def _pair(name: str, sigma, y, prior, lam, problem: str):
    if problem not in ("rce", "cce"):
        raise ValueError(f"{name}: problem must be 'rce' or 'cce', got {problem!r}")
    if y is None:
        raise ValueError(f"{name}: y is required")
    sigma3, u, _, y3, batched = _prepare(name, sigma, prior, lam, None, 0, y, True, y_name="y")
    return sigma3, y3, u, batched


def objective(sigma: torch.Tensor, y: torch.Tensor, prior=None, lam: float = 100.0, *, problem: str = "rce"):
    """Value of the pseudo-label problem at ``y``: ``(1/N) sum_i H(sigma_i, y_i) + lam KL(u || y_bar)``
    (``problem="rce"``) or ``-(1/N) sum_i ln(sigma_i . y_i) + lam KL(u || y_bar)`` (``"cce"``);
    a scalar, or ``(B,)`` for batched ``(B, N, K)`` inputs. Computed in float64."""
    sigma3, y3, u, batched = _pair("objective", sigma, y, prior, lam, problem)
    fn = reference.rce_objective if problem == "rce" else reference.cce_objective
    out = fn(sigma3.double(), y3.double(), u.double(), lam)
    return out if batched else out[0]


def fw_gap(sigma: torch.Tensor, y: torch.Tensor, prior=None, lam: float = 100.0, *, problem: str = "rce"):
    """Frank-Wolfe gap ``sum_i (sum_k y_ik g_ik - min_k g_ik)`` of the problem at ``y`` (MATH.md):
    >= 0, 0 exactly at the optimum, an upper bound on ``objective(y) - min``; needs no knowledge
    of the solver and holds on the simplex boundary. Computed in float64."""
    sigma3, y3, u, batched = _pair("fw_gap", sigma, y, prior, lam, problem)
    grad_fn = reference.rce_gradient if problem == "rce" else reference.cce_gradient
    out = reference.fw_gap(grad_fn(sigma3.double(), y3.double(), u.double(), lam), y3.double())
    return out if batched else out[0]


def dual_newton_rce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float = 1e-10,
    max_iter: int = 100,
    warm_start: int = 5,
    switch_gap: float = 1e-6,
    polish: int = 50,
    validate: bool = True,
) -> SolverResult:
    """Exact solver of the reverse-CE problem: Newton on its K-dimensional concave dual (MATH.md),
    one ``O(N K^2)`` product and a ``K x K`` solve per step, stopped on the Frank-Wolfe gap
    ``<= tol`` (every iterate is primal feasible). Where EM crawls linearly (``lam N >> 1``) this
    is far faster. The dual's rows ``sigma / (t - w)`` lose precision where ``t_i - w_k`` cancels,
    so below a gap of ``switch_gap`` (or when the dual line search stalls) up to ``polish``
    steps of :func:`newton_rce` finish in primal variables (``polish=0``: the dual alone).

    Measured (N = 250, lam = 100, sigma = softmax(3 z), float64, tol = 1e-10, 2 threads):
    K = 20 in 5-7 steps and 0.01 s; K = 200 in 34-84 steps (dual and polish), 0.12-0.32 s, to gaps
    of 1.5e-11 to 7.5e-9 on four draws (the dual alone: 1e-7 after 200 steps on one of them;
    EM: ~1e-2 after 1000 iterations); K = 2000 in 36-49 steps, 5-6.5 s.
    ``converged`` says whether ``tol`` was met.
    Needs ``sigma > 0`` and ``lam > 0``; a zero prior entry keeps that class's multiplier at 0.
    Composite PyTorch (float64 inside)."""
    sigma3, u, _, _, batched = _prepare("dual_newton_rce", sigma, prior, lam, None, max_iter, None, validate)
    if not (isinstance(polish, int) and polish >= 0 and switch_gap >= 0):
        raise ValueError(f"dual_newton_rce: need polish an int >= 0 and switch_gap >= 0, got {polish!r}, {switch_gap!r}")
    res = reference.dual_newton_rce(sigma3.double(), u.double(), lam, tol=tol, max_iter=max_iter,
                                    warm_start=warm_start, switch_gap=switch_gap, polish=polish)
    return _as_input(res, sigma.dtype, batched)


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
    Frank-Wolfe gap ``<= tol`` (default 1e-10).

    Measured (N = 250, lam = 100, sigma = softmax(3 z), float64): K = 2 in 4-5 steps, K = 20 in
    8-20, K = 200 in 18-21 steps to 1e-10 on two of three draws and 9.5e-10 after 100 on the
    third, where EM is at ~1e-2 after 1000 iterations. Needs ``sigma > 0`` (a zero prior entry is
    allowed: that class only loses its fairness coupling).
    Composite PyTorch (float64 inside; any device)."""
    sigma3, u, _, y0, batched = _prepare("newton_rce", sigma, prior, lam, None, max_iter, y0, validate)
    tol = 1e-10 if tol is None else float(tol)
    res = reference.newton_rce(sigma3.double(), u.double(), lam, tol=tol, max_iter=max_iter,
                               y0=None if y0 is None else y0.double())
    return _as_input(res, sigma.dtype, batched)


def _as_input(res: SolverResult, dtype: torch.dtype, batched: bool) -> SolverResult:
    """A float64 result of a composite solver with y in the input's dtype, unbatched if it was."""
    res = res._replace(y=res.y.to(dtype))
    return res if batched else SolverResult(*(t[0] for t in res[:5]), res.criterion)


def sinkhorn_knopp(sigma: torch.Tensor, prior=None, *, lam_sk: float = 25.0, tol: float = 1e-9,
                   max_iter: int = 1000, validate: bool = True):
    """SeLa's balanced hard assignment: ``Q = diag(alpha) P diag(beta)``, ``P = sigma^lam_sk``, with
    row sums 1/N and column sums ``u`` (log domain). Returns ``(Q, labels, iterations)`` with
    ``labels = argmax_k Q_ik``. Composite PyTorch."""
    sigma3, u, _, _, batched = _prepare("sinkhorn_knopp", sigma, prior, 0.0, None, max_iter, None, validate)
    if not lam_sk > 0:
        raise ValueError(f"sinkhorn_knopp: lam_sk must be > 0, got {lam_sk}")
    q, labels, iterations = reference.sinkhorn_knopp(sigma3, u, lam_sk=lam_sk, tol=tol, max_iter=max_iter)
    return (q, labels, iterations) if batched else (q[0], labels[0], iterations)
