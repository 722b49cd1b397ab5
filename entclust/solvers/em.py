"""EM for the pseudo-label problems (sigma fixed, optimise y): docs/maths.md, "Pseudo-label problems
and solvers". All iterations run in one fused kernel call; SQUAREM optionally accelerates them.

Problems are in mean form, ``(1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar)``, so EM uses
``c = lam N`` (the papers' eq. 15 omits the N). ``sigma`` is ``(N, K)`` for one problem or
``(B, N, K)`` for B independent problems solved in one call.
"""
from __future__ import annotations

import torch

from .. import ops
from ._checked import criterion_text, gap_target, solve_checked
from ._problem import check_count, check_gap_options, check_number, finite_problems, prepare, unbatch
from .certificate import certify, result
from .result import SolverResult


def em_rce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    tol: float | None = None,
    max_iter: int = 1000,
    y0: torch.Tensor | None = None,
    accel: str | None = None,
    tol_gap: float | None = None,
    tol_progress: float | None = None,
    check_every: int | str = 10,
    callback=None,
    validate: bool = True,
    certificate: bool = True,
) -> SolverResult:
    """EM for the reverse-CE pseudo-label problem
    ``min_y (1/N) sum_i H(sigma_i, y_i) + lam KL(u || y_bar)`` (Zhang & Boykov 2024 eqs. 45-46), all
    iterations in one fused kernel call:

    E-step ``S_ik = y_ik / sum_j y_jk``, M-step ``y_ik = (sigma_ik + c u_k S_ik) / (1 + c sum_m u_m S_im)``,
    ``c = lam N``; starts from ``y0`` (default ``sigma``). The fixed point is the global optimum.

    Args:
        sigma: ``(N, K)`` or ``(B, N, K)`` predictions, rows on the simplex, float32 or float64.
        prior: ``(K,)`` class prior u (uniform when None); zero entries allowed: such a class
            gets no fairness pull, only its share of sigma.
        lam: fairness weight (>= 0); ``lam = 0`` returns ``y = sigma``.
        tol: stop a problem when ``max |y_new - y| <= tol``; default 1e-10 (float64), 1e-6 (float32),
            or no step criterion when ``tol_gap`` is given.
        max_iter: iteration cap. EM converges linearly, and slowly for large ``lam N``
            (docs/maths.md): check ``result.gap``, not only ``converged``.
        y0: optional start, same shape as sigma; default sigma, or ``0.99 sigma + 0.01 u`` when
            sigma has exact zeros (EM never moves a y_ik away from 0, so a zero start could
            miss the optimum; the result would show it as a large gap).
        accel: None (plain EM, all iterations in one kernel call) or ``"squarem"``: SQUAREM
            (Varadhan & Roland 2008, scheme S3) on the EM map, each cycle two fused EM steps, an
            extrapolation kept strictly inside the simplex, one stabilising EM step, and a fall
            back to plain EM whenever the objective would rise. Same fixed point; ``iterations``
            counts EM-map evaluations.
        tol_gap: stop a problem when its relative gap ``gap / (1 + |objective|)`` is ``<= tol_gap``
            (:attr:`~entclust.SolverResult.gap`: the duality gap, or the Frank-Wolfe gap where
            that is smaller; the criterion every solver shares;
            ``converged`` then says whether it was met); checked every ``check_every`` iterations.
        tol_progress: stop a problem when its gap is ``<= tol_progress`` times the
            decrease of the objective since the start (the solve then made at least
            ``1 / (1 + tol_progress)`` of the decrease it could make: the criterion of
            :class:`~entclust.SelfLabeling`'s inexact steps); with ``tol_gap``, either stops.
        check_every: iterations between two checks when ``tol_gap`` or ``callback`` is given, or
            ``"auto"``: after 1, 2, ..., 8 iterations, then every 1/8 of those run so far (O(log n)
            checks, a stop at most 1/8 past the first iteration that met the target). A check costs
            a certificate plus ~0.2 ms of Python (measured at 250 x 20: 0.27 ms a check against
            8 us an EM iteration), so checking every iteration makes small problems slow.
        callback: called with the current :class:`~entclust.SolverResult` after the start and
            after every check; a true return stops the solve (as scipy's callbacks).
        validate: check sigma/y0 are on the simplex and finite (two reductions over each).
        certificate: compute the objective and both gaps (float64, fused on the CPU: about the
            cost of two to four EM iterations); ``False`` leaves them NaN.

    Returns a :class:`~entclust.SolverResult`. ``converged`` is False for a problem whose y
    is not finite (NaN input with ``validate=False``), whatever the stopping rule said.

    Example::

        >>> sigma = torch.softmax(3 * torch.randn(250, 20, dtype=torch.float64), -1)
        >>> res = em_rce(sigma, lam=100.0, tol_gap=1e-6, max_iter=100_000)
        >>> res.converged, res.relative_gap <= 1e-6
        (True, True)
    """
    target = gap_target("em_rce", check_gap_options("em_rce", tol_gap, check_every, callback), tol_progress)
    sigma3, u, tol, y0, batched = prepare("em_rce", sigma, prior, lam, tol, max_iter, y0, validate,
                                          step_tol=target is None)

    def chunk(index, s, y, m):  # at most m iterations of the problems s from y (None: the default start)
        if accel is None:
            return ops.em_rce_kernel(s, u, lam, tol, m, y)
        return squarem("em_rce", accel, lambda z: ops.em_rce_kernel(s, u, lam, 0.0, 1, z)[0], "rce", s, u, lam, tol, m, y)

    return _solve("rce", sigma3, u, lam, y0, chunk, tol, target, max_iter, check_every, callback, batched,
                  certificate, accel)


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
    tol_gap: float | None = None,
    tol_progress: float | None = None,
    check_every: int | str = 10,
    callback=None,
    validate: bool = True,
    certificate: bool = True,
) -> SolverResult:
    """EM for the collision-CE pseudo-label problem
    ``min_y -(1/N) sum_i ln(sigma_i . y_i) + lam KL(u || y_bar)`` (Zhang & Boykov 2023b), all iterations in
    one fused kernel call: the E-step of :func:`em_rce`, then per row the M-step
    ``argmin_y -ln(sigma . y) - sum_k a_k ln y_k`` with ``a_k = c u_k S_k``, ``c = lam N``:
    Newton on the scalar ``x = sigma . y`` from Lemma 1's start (monotone, a few steps to
    ``|sum_k y_k - 1| <= newton_tol``), or the closed form of appendix C when some ``a_k = 0``
    (a class no point uses, a zero prior entry, or ``lam = 0``, which gives the one-hot argmax).

    ``a_k <= 1e-12 b`` counts as 0 (below that, ``b - sigma_k / x`` cancels in float64), so a
    ``lam`` below about 1e-10 acts as ``lam = 0`` and returns one-hot rows (objective +inf for
    ``lam > 0`` if a class is left empty).

    Arguments (``accel="squarem"`` included) and result as in :func:`em_rce`. Its optimum often has many ``y_ik = 0``, which
    multiplicative updates approach slowly (docs/maths.md: Frank-Wolfe gap 2.8e-2 after 1000
    iterations at N = 250, K = 200, lam = 100): check ``result.gap``.
    """
    target = gap_target("em_cce", check_gap_options("em_cce", tol_gap, check_every, callback), tol_progress)
    sigma3, u, tol, y0, batched = prepare("em_cce", sigma, prior, lam, tol, max_iter, y0, validate,
                                          step_tol=target is None)
    newton_tol = check_number("em_cce", "newton_tol", newton_tol)
    check_count("em_cce", "newton_max_iter", newton_max_iter, 1)

    def chunk(index, s, y, m):
        if accel is None:
            return ops.em_cce_kernel(s, u, lam, tol, m, newton_tol, newton_max_iter, y)
        step = lambda z: ops.em_cce_kernel(s, u, lam, 0.0, 1, newton_tol, newton_max_iter, z)[0]  # noqa: E731
        return squarem("em_cce", accel, step, "cce", s, u, lam, tol, m, y)

    return _solve("cce", sigma3, u, lam, y0, chunk, tol, target, max_iter, check_every, callback, batched,
                  certificate, accel)


def check_accel(name: str, accel) -> None:
    if accel != "squarem":
        raise ValueError(f"{name}: accel must be None or 'squarem', got {accel!r}")


def _solve(problem, sigma3, u, lam, y0, chunk, tol, target, max_iter, check_every, callback, batched, certificate,
           accel):
    """One fused call of ``max_iter`` iterations, or, with a gap ``target`` or ``callback``, chunks
    checked on the certificate every ``check_every`` iterations (:func:`solve_checked`)."""
    if accel is not None:
        check_accel(f"em_{problem}", accel)
    criterion = ("SQUAREM, " if accel is not None else "") + criterion_text(
        target, tol, "max|F(y) - y|" if accel is not None and target is None else "max|dy|")
    if target is not None or callback is not None:
        return solve_checked(problem, sigma3, u, lam, y0, chunk, tol=tol, target=target, max_iter=max_iter,
                             check_every=check_every, callback=callback, batched=batched, certificate=certificate,
                             criterion=criterion)
    y, iterations, converged = chunk(None, sigma3, y0, max_iter)
    converged = converged & finite_problems(y) & finite_problems(sigma3)
    return unbatch(result(problem, sigma3, y, u, lam, iterations, converged, criterion, certificate), batched)


def squarem(name, accel, step, problem, sigma3, u, lam, tol, max_iter, y0):
    """SQUAREM (S3) on the EM map ``step``, per problem of the batch: ``r = F(y) - y``,
    ``v = F(F(y)) - 2 F(y) + y``, ``alpha = -||r|| / ||v||`` (at most -1), extrapolate
    ``y - 2 alpha r + alpha^2 v``, halve ``alpha`` towards -1 until strictly inside the simplex,
    one EM step from there, and keep it only if the objective did not rise (else ``F(F(y))``)."""
    check_accel(name, accel)
    value = lambda y: certify(problem, sigma3, y, u, lam)[0]  # noqa: E731
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
