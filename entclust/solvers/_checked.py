"""Solves that are checked on the certificate as they go: stopping on the relative gap
(``tol_gap=``, ``tol_progress=``; the duality gap, or the Frank-Wolfe gap where it is smaller) and
reporting to a ``callback``, for the fused solvers (iterations in
chunks of ``check_every`` between two certificates) and for the sequential ones (Newton, every
step).

A check costs a certificate (objective and gaps, float64: the duality gap about twice the
Frank-Wolfe gap's price; ``python benchmarks/bench_duality_gap.py`` times both, docs/maths.md
gives the figures) and some Python, against microseconds an EM iteration, hence
``check_every="auto"``; ``entclust.solvers.compare`` reports the measured cost."""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._problem import check_number, finite_problems, unbatch
from .certificate import certify_gaps
from .result import SolverResult, best_gap, relative_gap


class GapTarget:
    """What a checked solve stops a problem on: its relative gap ``gap / (1 + |objective|) <= tol_gap``,
    or (``tol_progress``) a gap that is at most ``tol_progress`` times the decrease of the objective
    since the start, ``gap <= tol_progress (objective_start - objective)``. The gap is the problem's
    certificate: the smaller of the duality gap and the Frank-Wolfe gap
    (:func:`~entclust.solvers.result.best_gap`). It bounds
    ``objective - f*``, so the second means the solve has made at least ``1 / (1 + tol_progress)``
    of the largest decrease it could make from its start: an inexact block step of a training
    loop that keeps a fixed share of the exact one (at ``tol_progress = 0.1``, 91 %)."""

    def __init__(self, tol_gap: float | None, tol_progress: float | None):
        self.tol_gap, self.tol_progress = tol_gap, tol_progress

    def met(self, gap: torch.Tensor, objective: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        met = torch.zeros_like(gap, dtype=torch.bool)
        if self.tol_gap is not None:
            met |= relative_gap(gap, objective) <= self.tol_gap
        if self.tol_progress is not None:
            met |= gap <= self.tol_progress * (start - objective)
        return met

    def __str__(self) -> str:
        parts = [] if self.tol_gap is None else [f"relative duality gap <= {self.tol_gap:g}"]
        if self.tol_progress is not None:
            parts.append(f"duality gap <= {self.tol_progress:g} x decrease")
        return " or ".join(parts)


def criterion_met(gap, objective, start, tol: float, target: GapTarget | None) -> torch.Tensor:
    """Whether each problem meets a sequential solver's criterion: its certificate ``gap <= tol``
    (the absolute criterion), or the gap ``target``; ``start`` the objective its decrease counts
    from. Tensors of one shape (``(B,)``, or 0-d)."""
    met = gap <= tol
    return met | target.met(gap, objective, start) if target is not None else met


def gap_target(name: str, tol_gap: float | None, tol_progress) -> GapTarget | None:
    """The checked ``tol_progress`` (None or a number >= 0) with ``tol_gap`` (checked already) as a
    :class:`GapTarget` on the certificate (the duality gap, or the Frank-Wolfe gap where smaller),
    or None when neither is given."""
    if tol_progress is not None:
        tol_progress = check_number(name, "tol_progress", tol_progress)
    if tol_gap is None and tol_progress is None:
        return None
    return GapTarget(tol_gap, tol_progress)


def criterion_text(target, tol: float, step: str = "max|dy|") -> str:
    """What a solve stops on: its gap target (a :class:`GapTarget`, or a relative ``tol_gap`` on the
    duality gap; and its own ``step`` criterion where ``tol > 0``), or only the step criterion
    when it is None."""
    if target is None:
        return f"{step} <= {tol:g}"
    text = str(target) if isinstance(target, GapTarget) else f"relative duality gap <= {target:g}"
    return text + (f" or {step} <= {tol:g}" if tol > 0 else "")


AUTO_SHARE = 8  # check_every="auto": the next check after 1/8 of the iterations run so far


def next_chunk(check_every, count: int) -> int:
    """Iterations until the next check: ``check_every``, or for ``"auto"`` ``max(1, count // 8)``
    (checks after 1, 2, ..., 8, 9, 10, ... iterations, then ever sparser: O(log n) certificates in
    all, and a stop at most 1/8 past the first iteration that met the target)."""
    return max(1, count // AUTO_SHARE) if check_every == "auto" else check_every


def run_checked(problem: str, sigma3, u, lam: float, y0, chunk: Callable, *, target: GapTarget | None, step_tol: bool,
                max_iter: int, check_every: int, callback, batched: bool, criterion: str):
    """Runs ``chunk(index, sigma, y, m) -> (y, iterations, step_done)`` (at most ``m`` iterations of
    the problems ``index``, warm-started at ``y``) until every problem is done. A problem is done
    when it met its gap ``target`` (then ``converged``), when its own step criterion
    fired (``step_tol``; ``converged`` too when ``target`` is None), when its certificate is not
    finite (a run that diverged), or at ``max_iter``.
    ``callback(result)`` sees the state after the start and after each chunk (the result type the
    solver returns); a true return stops the solve. Returns ``(y, iterations, converged, objective, gap)``."""
    b = sigma3.shape[0]
    device = sigma3.device
    y = (sigma3 if y0 is None else y0).clone()
    iterations = torch.zeros(b, dtype=torch.int64, device=device)
    converged = torch.zeros(b, dtype=torch.bool, device=device)
    stopped = torch.zeros(b, dtype=torch.bool, device=device)
    objective, gap, dual = certify_gaps(problem, sigma3, y, u, lam)
    start = objective.clone()
    count = 0  # iterations run by every problem still active (they run in step)
    while True:
        if target is not None:
            converged |= ~stopped & target.met(best_gap(gap, dual), objective, start)
        if callback is not None and callback(unbatch(SolverResult(y, iterations, objective, gap, converged, criterion,
                                                                  dual), batched)):
            break
        active = ~(converged | stopped)
        left = int(active.sum())
        if left == 0 or count >= max_iter:
            break
        m = min(next_chunk(check_every, count), max_iter - count)
        count += m
        # every problem active (the common case, and B = 1): no gathering and scattering
        index = None if left == b else active.nonzero().squeeze(1)
        s = sigma3 if index is None else sigma3.index_select(0, index).contiguous()
        y_sub, its, done = chunk(index, s, y if index is None else y.index_select(0, index).contiguous(), m)
        o, g, dg = certify_gaps(problem, s, y_sub, u, lam)
        ends = ~torch.isfinite(g)  # diverged (PGD with too large a step): no point going on
        if step_tol and target is not None:
            ends |= done  # stopped by its own criterion, converged only if the gap says so
        if index is None:
            y, objective, gap, dual = y_sub, o, g, dg
            iterations += its
            stopped |= ends
            if step_tol and target is None:
                converged |= done
        else:
            y[index], objective[index], gap[index], dual[index] = y_sub, o, g, dg
            iterations[index] += its
            stopped[index] |= ends
            if step_tol and target is None:
                converged[index] |= done
    return y, iterations, converged, objective, gap, dual


def solve_checked(problem: str, sigma3, u, lam: float, y0, chunk: Callable, *, tol: float, target: GapTarget | None,
                  max_iter: int, check_every, callback, batched: bool, certificate: bool, criterion: str):
    """:func:`run_checked` as a solver's result: ``tol > 0`` keeps the step criterion beside the
    gap, ``converged`` is never True for a non-finite y, and ``certificate=False`` leaves the
    objective and gap NaN (they were computed for the checks)."""
    y, iterations, converged, objective, gap, dual = run_checked(
        problem, sigma3, u, lam, y0, chunk, target=target, step_tol=tol > 0 or target is None, max_iter=max_iter,
        check_every=check_every, callback=callback, batched=batched, criterion=criterion)
    converged = converged & finite_problems(y) & finite_problems(sigma3)
    if not certificate:
        objective = gap = dual = torch.full_like(objective, float("nan"))
    return unbatch(SolverResult(y, iterations, objective, gap, converged, criterion, dual), batched)


class Progress:
    """The batch-wide state that a sequential solver (one problem, one step at a time) shows its
    ``callback``: every problem's current y, iterations, objective and gap, the ones not reached
    yet at their start. ``report(i, y, iterations, objective, gap)`` updates problem i and calls
    the callback; a true return means stop."""

    def __init__(self, problem: str, sigma3, start, u, lam: float, callback, batched: bool, criterion: str):
        self.callback, self.batched, self.criterion = callback, batched, criterion
        if callback is None:
            return
        self.y = start.clone()
        self.objective, self.gap, self.dual = certify_gaps(problem, sigma3, self.y, u, lam)
        b = sigma3.shape[0]
        self.iterations = torch.zeros(b, dtype=torch.int64, device=sigma3.device)
        self.converged = torch.zeros(b, dtype=torch.bool, device=sigma3.device)
        self.stopped = False

    def report(self, i: int, y, iterations: int, objective, gap, converged: bool = False, dual=math.nan) -> bool:
        if self.callback is None:
            return False
        if self.stopped:
            return True
        self.y[i] = y
        self.iterations[i], self.objective[i], self.gap[i], self.converged[i] = iterations, objective, gap, converged
        self.dual[i] = dual
        state = SolverResult(self.y, self.iterations, self.objective, self.gap, self.converged, self.criterion,
                             self.dual)
        self.stopped = bool(self.callback(unbatch(state, self.batched)))
        return self.stopped
