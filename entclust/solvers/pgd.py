"""Projected gradient descent on the collision-CE pseudo-label problem (the baseline of seed
003 Table 1) and the exact Euclidean projection onto the simplex it uses."""
from __future__ import annotations

import torch

from .. import ops
from ..ops.checks import check_tensor, class_dim
from ._checked import criterion_text, gap_target, solve_checked
from ._problem import DEFAULT_TOL, check_gap_options, check_number, finite_problems, prepare, unbatch
from .certificate import certify, result
from .result import SolverResult

# Steps tried by step=None, largest first: each a quarter of the last.
AUTO_STEPS = tuple(4.0 ** -i for i in range(11))


def pgd_cce(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    step: float | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    y0: torch.Tensor | None = None,
    tol_gap: float | None = None,
    tol_progress: float | None = None,
    check_every: int | str = 10,
    callback=None,
    validate: bool = True,
    certificate: bool = True,
) -> SolverResult:
    """Projected gradient descent on the collision-CE problem with strong fairness (the
    baseline of Zhang & Boykov 2023b Table 1), fused: per iteration, for every row, the gradient
    ``g_ik = -sigma_ik / (N sigma_i . y_i) - lam u_k / (N y_bar_k)``, a step ``y_i - step g_i`` and the
    exact Euclidean projection onto the simplex (Michelot's algorithm). Stops on ``max|dy| <= tol``.

    Too large a step empties a class (``y_bar_k = 0``), where the gradient is infinite, and the
    iterates become NaN, as the paper warns ("higher step size may lead to the divergence of
    the PGD"). ``step=None`` (default) therefore picks the step per problem: the largest of
    1, 1/4, 1/16, ..., 4^-10 whose run stays finite and ends no worse than the start (each
    rejected step costs one more run). A given ``step`` is used as it is; a run that
    diverges is reported (y NaN, objective NaN, ``converged`` False).
    The weak-fairness variant (eq. 10) is ``entclust.testing.reference.pgd_cce(..., fairness="weak")``.

    ``tol_gap``, ``tol_progress``, ``check_every``, ``callback``: stop on the relative gap (the
    duality gap, or the Frank-Wolfe gap where that is smaller; or the gap against the decrease
    made), checked every ``check_every`` iterations, as in :func:`~entclust.solvers.em_rce` (``tol`` then defaults to no
    step criterion). With ``step=None`` the step is then picked on the first ``check_every``
    iterations (a run that diverges later ends NaN and not converged).
    """
    target = gap_target("pgd_cce", check_gap_options("pgd_cce", tol_gap, check_every, callback), tol_progress)
    sigma3, u, tol, y0, batched = prepare("pgd_cce", sigma, prior, lam, tol, max_iter, y0, validate,
                                          step_tol=target is None)
    lam = float(lam)
    if target is not None or callback is not None:
        return _checked_pgd(sigma3, u, lam, step, tol, target, max_iter, y0, check_every, callback, batched,
                            certificate)
    if step is not None:
        step = check_number("pgd_cce", "step", step, positive=True)
        y, iterations, converged = ops.pgd_cce_kernel(sigma3, u, lam, step, tol, max_iter, y0)
        criterion = f"max|dy| <= {tol:g}, step {step:g}"
    else:
        y, iterations, converged, steps = _auto_step(sigma3, u, lam, tol, max_iter, y0)
        criterion = f"max|dy| <= {tol:g}, step " + ", ".join(f"{s:g}" for s in sorted(set(steps), reverse=True))
    converged = converged & finite_problems(y) & finite_problems(sigma3)
    return unbatch(result("cce", sigma3, y, u, lam, iterations, converged, criterion, certificate), batched)


def _checked_pgd(sigma3, u, lam, step, tol, target, max_iter, y0, check_every, callback, batched, certificate):
    """PGD checked on the certificate every ``check_every`` iterations (``solve_checked``), with one
    step per problem: the given one, or the one ``_auto_step`` picks on a first short run."""
    b = sigma3.shape[0]
    if step is not None:
        steps = torch.full((b,), check_number("pgd_cce", "step", step, positive=True), dtype=torch.float64)
    else:
        trial = min(10 if check_every == "auto" else check_every, max_iter)
        steps = torch.tensor(_auto_step(sigma3, u, lam, tol, trial, y0)[3], dtype=torch.float64)

    def chunk(index, s, y, m):  # index None: every problem
        mine = steps if index is None else steps[index.cpu()]
        if bool((mine == mine[0]).all()):  # one step for all: one fused call
            return ops.pgd_cce_kernel(s, u, lam, float(mine[0]), tol, m, y)
        out_y, out_it, out_done = torch.empty_like(y), torch.zeros(len(mine), dtype=torch.int64, device=y.device), \
            torch.zeros(len(mine), dtype=torch.bool, device=y.device)
        for value in mine.unique().tolist():  # one fused call per distinct step
            rows = (mine == value).nonzero().squeeze(1).to(y.device)
            y_r, it_r, done_r = ops.pgd_cce_kernel(s.index_select(0, rows).contiguous(), u, lam, value, tol, m,
                                            y.index_select(0, rows).contiguous())
            out_y[rows], out_it[rows], out_done[rows] = y_r, it_r, done_r
        return out_y, out_it, out_done

    names = ", ".join(f"{v:g}" for v in sorted(set(steps.tolist()), reverse=True))
    return solve_checked("cce", sigma3, u, lam, y0, chunk, tol=tol, target=target, max_iter=max_iter,
                         check_every=check_every, callback=callback, batched=batched, certificate=certificate,
                         criterion=criterion_text(target, tol) + f", step {names}")


def _auto_step(sigma3, u, lam, tol, max_iter, y0):
    """Per problem, the first step of AUTO_STEPS whose run is finite and not above the start."""
    start = sigma3 if y0 is None else y0
    ceiling = certify("cce", sigma3, start, u, lam)[0]
    b = sigma3.shape[0]
    y = torch.full_like(sigma3, float("nan"))
    iterations = torch.zeros(b, dtype=torch.int64, device=sigma3.device)
    converged = torch.zeros(b, dtype=torch.bool, device=sigma3.device)
    steps = [AUTO_STEPS[-1]] * b
    todo = torch.arange(b, device=sigma3.device)
    for step in AUTO_STEPS:
        s, y_start = sigma3[todo], (None if y0 is None else y0[todo].contiguous())
        y_try, its, conv = ops.pgd_cce_kernel(s.contiguous(), u, lam, step, tol, max_iter, y_start)
        value = certify("cce", s, y_try, u, lam)[0]
        ok = finite_problems(y_try) & (value <= ceiling[todo] * (1 + 1e-12) + 1e-12)
        if step == AUTO_STEPS[-1]:
            ok = torch.ones_like(ok)  # the smallest step's run is reported whatever it gave
        y[todo[ok]], iterations[todo[ok]], converged[todo[ok]] = y_try[ok], its[ok], conv[ok]
        for index in todo[ok].tolist():
            steps[index] = step
        todo = todo[~ok]
        if todo.numel() == 0:
            break
    return y, iterations, converged, steps


def project_simplex(v: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Exact Euclidean projection of every vector along ``dim`` onto the probability simplex:
    ``argmin_{w in simplex} ||w - v||``, i.e. ``max(v - theta, 0)``, theta by Michelot's algorithm
    (1986: average the entries above theta, drop those below, repeat; exact, no sort) on the
    entries shifted by their maximum, so any finite magnitude works, float64 inside.
    float32/float64; a vector with NaN/Inf raises. Fused kernels on CPU and CUDA."""
    check_tensor("v", v)
    if v.dtype not in DEFAULT_TOL:
        raise TypeError(f"project_simplex: v must be float32 or float64, got {v.dtype}")
    dim = class_dim("v", v, dim)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("project_simplex: v must be finite")
    moved = v.movedim(dim, -1)
    out = ops.project_simplex_kernel(moved.reshape(-1, moved.shape[-1]))
    return out.reshape(moved.shape).movedim(-1, dim)
