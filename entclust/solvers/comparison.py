"""Pseudo-label solvers side by side on one problem (or one batch of problems), each run to the
same certificate: the relative gap ``gap / (1 + |objective|)`` (docs/maths.md), the duality gap
(:attr:`SolverResult.gap`, the Frank-Wolfe gap where that is smaller; it bounds ``f(y) - f*``
whatever the solver did, so the numbers mean the same thing for every row).

Example::

    >>> import torch, entclust
    >>> sigma = torch.softmax(3 * torch.randn(250, 20, dtype=torch.float64), -1)
    >>> result = entclust.solvers.compare(sigma, lam=100.0, target_gap=1e-6, time_limit=5.0)
    >>> print(result.table())          # markdown: time and iterations to each gap level
    >>> result.plot("gap_vs_time.png") # the papers' convergence plot, one line per solver
    >>> result.rows[0]["converged"]    # plain Python values, ready for pandas.DataFrame(result.rows)
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch

from ._checked import criterion_text, next_chunk
from ._problem import check_gap_options, check_number, check_sigma
from .barrier import newton_cce
from .certificate import certify_gaps
from .em import em_cce, em_rce
from .newton import dual_newton_rce, newton_rce
from .pgd import pgd_cce
from .result import SolverResult, best_gap, relative_gap
from .sinkhorn import sinkhorn

RCE_SOLVERS = ("em_rce", "em_rce_squarem", "newton_rce", "dual_newton_rce", "em_rce_compiled", "sinkhorn_knopp")
CCE_SOLVERS = ("em_cce", "em_cce_squarem", "pgd_cce", "newton_cce", "sinkhorn_knopp")
# The problem each solver minimises; Sinkhorn-Knopp solves its own (SeLa's entropic transport).
PROBLEM_OF = {"em_rce": "rce", "em_rce_squarem": "rce", "newton_rce": "rce", "dual_newton_rce": "rce",
              "em_rce_compiled": "rce", "em_cce": "cce", "em_cce_squarem": "cce", "pgd_cce": "cce", "newton_cce": "cce",
              "sinkhorn_knopp": None}
# Iteration caps: the time limit is what ends a slow first-order run, not these.
MAX_ITER = {"newton_rce": 1000, "dual_newton_rce": 1000, "newton_cce": 1000, "sinkhorn_knopp": 100_000}
FIRST_ORDER_MAX_ITER = 10_000_000


def default_levels(target_gap: float) -> tuple[float, ...]:
    """1e-2, 1e-4, ... down to ``target_gap`` (which is always the last level)."""
    levels = [10.0 ** -e for e in range(2, 40, 2) if 10.0 ** -e > target_gap * (1 + 1e-9)]
    return tuple(levels) + (target_gap,)


@dataclass
class Comparison:
    """What :func:`compare` measured.

    ``rows``: one dict per solver (plain Python values): ``solver``, ``objective_kind`` (``"rce"``,
    ``"cce"``, or ``"own"`` for Sinkhorn-Knopp), ``seconds`` and ``iterations`` at the end,
    ``objective`` (mean over the batch), ``fw_gap``, ``duality_gap`` (None for collision CE) and
    ``relative_gap`` (of the tighter one; each the largest over the batch),
    ``converged`` (every problem reached ``target_gap``), ``stop`` (why it ended: ``"target gap"``,
    ``"time limit"``, ``"iteration limit"``, ``"no progress"``, ``"not finite"``), ``checks`` (how
    many certificates it took) and ``check_s`` (the measured seconds of one certificate; they
    and the bookkeeping of each check are included in ``seconds``: fewer checks, larger
    ``check_every``, cost less), ``seconds_to`` / ``iterations_to``: per gap level, the first check at or below
    it (None: not reached), ``setup_s`` (work before the first iteration that the times leave
    out: torch.compile's compilation).
    ``traces``: per solver, a list of ``(seconds, iterations, relative gap, objective)`` at each check
    (for Sinkhorn-Knopp: ``(seconds, sweeps, row-sum error, nan)``, its own criterion).
    ``setting``: the problem and the options (shape, dtype, device, lam, target, levels, limit).
    """

    rows: list = field(default_factory=list)
    traces: dict = field(default_factory=dict)
    setting: dict = field(default_factory=dict)

    def table(self) -> str:
        """A markdown table: per solver, time (and iterations) to each gap level, then the end state."""
        levels = self.setting["levels"]
        head = ["solver"] + [f"to {lv:.0e}" for lv in levels] + ["iterations", "seconds", "relative gap", "objective",
                                                                 "stop", "checks", "s / certificate"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["solver"] + (" (own objective)" if r["objective_kind"] == "own" else "")]
            for lv in levels:
                s, it = r["seconds_to"][_key(lv)], r["iterations_to"][_key(lv)]
                cells.append("—" if s is None else f"{_fmt_s(s)} ({it})")
            cells += [str(r["iterations"]), _fmt_s(r["seconds"]), _fmt_g(r["relative_gap"]),
                      _fmt_obj(r["objective"]), r["stop"], str(r["checks"]), _fmt_s(r["check_s"])]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"setting": self.setting, "rows": self.rows,
                "traces": {k: [list(p) for p in v] for k, v in self.traces.items()}}

    def plot(self, path: str | None = None, ax=None, title: str | None = None):
        """Relative gap against seconds, log-log, one line per solver (Sinkhorn-Knopp, whose
        objective is another, is left out); saved to ``path`` when given. Returns the axes."""
        import matplotlib

        if ax is None and path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, trace in self.traces.items():
            if name == "sinkhorn_knopp":  # its trace is its own row-sum error, not a gap
                continue
            pts = [(t, g) for t, _, g, _ in trace if t > 0 and g == g]
            if pts:
                ax.plot([t for t, _ in pts], [max(g, 1e-17) for _, g in pts], "-" if len(pts) > 8 else "o-",
                        label=name, markersize=3)
        ax.axhline(self.setting["target_gap"], color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("seconds")
        ax.set_ylabel("relative gap (certificate)")
        s = self.setting
        ax.set_title(title or f"{s['problem']} pseudo-labels, B×N×K = {s['shape']}, lam = {s['lam']:g}, {s['dtype']}",
                     fontsize=9)
        ax.legend(fontsize=7)
        if own:
            fig.tight_layout()
            if path is not None:
                fig.savefig(path, dpi=120)
                plt.close(fig)
        return ax

    def __str__(self) -> str:
        return self.table()


def _key(level: float) -> str:
    return f"{level:.0e}"


def _fmt_s(s) -> str:
    return "—" if s is None or s != s else (f"{s:.3g} s" if s >= 1 else f"{s * 1e3:.3g} ms")


def _fmt_g(g) -> str:
    return "—" if g is None or g != g else f"{g:.1e}"


def _fmt_obj(v) -> str:
    return "—" if v is None or v != v else f"{v:.8g}"


class _Recorder:
    """The callback :func:`compare` hands a solver: a trace point per check (its own time left out
    of the clock), and a stop once the time limit has passed."""

    def __init__(self, time_limit: float, device: torch.device):
        self.time_limit, self.device = time_limit, device
        self.trace, self.excluded, self.timed_out = [], 0.0, False
        self.t0 = time.perf_counter()

    def __call__(self, state: SolverResult) -> bool:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        seconds = now - self.t0 - self.excluded
        rel = torch.as_tensor(state.relative_gap, dtype=torch.float64).reshape(-1)
        objective = torch.as_tensor(state.objective, dtype=torch.float64).reshape(-1)
        iterations = int(torch.as_tensor(state.iterations).max())
        worst = float(rel.max()) if bool(torch.isfinite(rel).all()) else math.nan
        self.trace.append((seconds, iterations, worst, float(objective.mean())))
        self.excluded += time.perf_counter() - now
        if seconds > self.time_limit:
            self.timed_out = True
            return True
        return False


def _em_rce_step(sigma, y, cu):
    """One reverse-CE EM step in plain PyTorch, the function a user would hand to torch.compile."""
    num = sigma + cu * (y / y.sum(-2, keepdim=True))
    return num / num.sum(-1, keepdim=True)


_COMPILED = {}


def _compiled_step():
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_em_rce_step, dynamic=False)
    return _COMPILED["step"]


def em_rce_compiled(sigma3, u, lam, *, tol_gap, max_iter, check_every, callback):
    """Reverse-CE EM as a user would write it: ``torch.compile`` of the plain step, looped, with
    the certificate every ``check_every`` steps. Returns a batched :class:`SolverResult`."""
    step = _compiled_step()
    n = sigma3.shape[-2]
    cu = (lam * n) * u.to(sigma3.dtype)
    y = sigma3.clone()
    b = sigma3.shape[0]
    iterations = torch.zeros(b, dtype=torch.int64, device=sigma3.device)
    converged = torch.zeros(b, dtype=torch.bool, device=sigma3.device)
    criterion = criterion_text(tol_gap, 0.0)
    while True:
        objective, gap, dual = certify_gaps("rce", sigma3, y, u, lam)
        converged = relative_gap(best_gap(gap, dual), objective) <= tol_gap
        state = SolverResult(y, iterations, objective, gap, converged, criterion, dual)
        if callback(state) or bool(converged.all()) or int(iterations.max()) >= max_iter:
            return state
        m = min(next_chunk(check_every, int(iterations.max())), max_iter - int(iterations.max()))
        for _ in range(m):
            y = step(sigma3, y, cu)
        iterations += m


def _fixed_step(name: str):
    """``"pgd_cce@0.5"`` -> 0.5 (PGD with that step), else None."""
    if name.startswith("pgd_cce@"):
        try:
            step = float(name.split("@", 1)[1])
        except ValueError:
            return None
        return step if step > 0 and math.isfinite(step) else None
    return None


def _run(name, sigma, prior, lam, target_gap, max_iter, check_every, recorder):
    """One solver to the target; a batched-or-not SolverResult as the solver returns it."""
    common = dict(tol_gap=target_gap, max_iter=max_iter, callback=recorder, validate=False)
    if _fixed_step(name) is not None:
        return pgd_cce(sigma, prior, lam, step=_fixed_step(name), check_every=check_every, **common)
    if name in ("em_rce", "em_rce_squarem", "em_cce", "em_cce_squarem", "pgd_cce"):
        fn = {"em_rce": em_rce, "em_rce_squarem": em_rce, "em_cce": em_cce, "em_cce_squarem": em_cce,
              "pgd_cce": pgd_cce}[name]
        extra = {"accel": "squarem"} if name.endswith("squarem") else {}
        if extra and check_every != "auto":  # a SQUAREM cycle is 3 EM-map evaluations: fewer is plain EM
            check_every = max(check_every, 3)
        return fn(sigma, prior, lam, check_every=check_every, **extra, **common)
    if name == "newton_rce":
        return newton_rce(sigma, prior, lam, **common)
    if name == "dual_newton_rce":
        return dual_newton_rce(sigma, prior, lam, **common)
    if name == "newton_cce":
        return newton_cce(sigma, prior, lam, **common)
    raise AssertionError(name)


def _check_solvers(solvers, problem: str) -> tuple[str, ...]:
    known = RCE_SOLVERS if problem == "rce" else CCE_SOLVERS
    if solvers is None:
        return known
    if isinstance(solvers, str):
        solvers = (solvers,)
    solvers = tuple(solvers)
    if not solvers:
        raise ValueError("compare: solvers must name at least one solver")
    for name in solvers:
        if name not in known and not (problem == "cce" and _fixed_step(name) is not None):
            raise ValueError(f"compare: solvers: {name!r} does not solve the {problem!r} problem; "
                             f"choose from {', '.join(known)}" + (" or pgd_cce@STEP" if problem == "cce" else ""))
    return solvers


def compare(
    sigma: torch.Tensor,
    prior=None,
    lam: float = 100.0,
    *,
    problem: str = "rce",
    solvers=None,
    target_gap: float = 1e-6,
    levels=None,
    time_limit: float = 10.0,
    check_every: int | str = "auto",
    warmup: bool = True,
    verbose: bool = False,
) -> Comparison:
    """Run pseudo-label solvers on one problem (``sigma`` ``(N, K)``) or a batch (``(B, N, K)``)
    to one common certificate, the relative gap ``gap / (1 + |objective|)`` (the duality gap, or the
    Frank-Wolfe gap where that is smaller).

    Args:
        sigma: ``Tensor[N, K]`` or ``Tensor[B, N, K]``, rows on the simplex, float32 or float64,
            on any device the solvers run on (a batch is solved in one call where the solver is
            batched, problem after problem by Newton; the gap reported is the largest of the batch).
        prior: ``Tensor[K]`` class prior u (uniform when None).
        lam: fairness weight of the mean-form problem (docs/maths.md).
        problem: ``"rce"`` (reverse CE: EM, EM + SQUAREM, Newton, dual Newton, torch.compile of the
            plain EM step) or ``"cce"`` (collision CE: EM, EM + SQUAREM, PGD). Sinkhorn-Knopp runs
            beside either on its own objective (SeLa's transport problem; its row is marked so and
            its time is to its own criterion, row sums within ``target_gap``).
        solvers: names to run (default: every solver of ``problem``; see ``RCE_SOLVERS``, ``CCE_SOLVERS``);
            ``"pgd_cce@0.01"`` is PGD with that fixed step (default: its step search).
        target_gap: the relative gap every solver runs to (or to ``time_limit``).
        levels: gap levels to report the time to (default 1e-2, 1e-4, ... down to ``target_gap``).
        time_limit: seconds per solver; a run past it stops at its next check and says so.
        check_every: iterations between two certificates for the first-order solvers (Newton
            checks every step): an int, or ``"auto"`` (default): after 1, 2, ..., 8 iterations,
            then every 1/8 of those run so far, so the times to each level are within 1/8 of the
            iterations and the checks (a certificate and ~0.2 ms of Python each, reported) stay
            a small share of a long run.
        warmup: run each solver once for a few iterations first (thread pools, kernels loaded,
            torch.compile's compilation, whose time is reported as ``setup_s``).
        verbose: a line on stderr as each solver finishes (a run can take ``time_limit`` seconds).

    Returns:
        A :class:`Comparison`: ``rows`` (one dict per solver), ``traces`` (seconds, iterations,
        relative gap, objective at each check), ``table()``, ``plot()``, ``to_dict()``.
    """
    check_sigma("compare", sigma)
    if problem not in ("rce", "cce"):
        raise ValueError(f"compare: problem must be 'rce' or 'cce', got {problem!r}")
    lam = check_number("compare", "lam", lam)
    target_gap = check_number("compare", "target_gap", target_gap, positive=True)
    time_limit = check_number("compare", "time_limit", time_limit, positive=True)
    check_gap_options("compare", None, check_every, None)
    levels = default_levels(target_gap) if levels is None else tuple(
        check_number("compare", "levels", lv, positive=True) for lv in levels)
    names = _check_solvers(solvers, problem)
    sigma = sigma.detach()  # (no solver is differentiated; see prepare)
    # one validation for every solver (each then runs with validate=False)
    em_rce(sigma, prior, lam, max_iter=0, certificate=False)
    positive = bool((sigma > 0).all())
    sigma3 = sigma if sigma.dim() == 3 else sigma.unsqueeze(0)
    from ..ops.checks import prior_vector

    u = prior_vector(prior, sigma.shape[-1], sigma3)
    setting = dict(problem=problem, shape="×".join(str(s) for s in sigma3.shape), dtype=str(sigma.dtype).split(".")[-1],
                   device=str(sigma.device), lam=lam, target_gap=target_gap, levels=list(levels),
                   time_limit=time_limit, check_every=check_every)
    out = Comparison(setting=setting)
    for name in names:
        if name in ("newton_rce", "dual_newton_rce") and not positive:
            out.rows.append(_skipped(name, levels, "needs sigma > 0"))
            continue
        if name == "sinkhorn_knopp":
            row, trace = _sinkhorn(sigma, prior, target_gap, levels, time_limit)
        else:
            row, trace = _measure(name, sigma, sigma3, prior, u, lam, target_gap, levels, time_limit, check_every,
                                  warmup)
        out.rows.append(row)
        out.traces[name] = trace
        if verbose:
            print(f"  {name}: {row['stop']} after {_fmt_s(row['seconds'])}", file=sys.stderr, flush=True)
    return out


def _skipped(name, levels, why):
    return dict(solver=name, objective_kind=PROBLEM_OF.get(name, "cce"), seconds=None, iterations=0, objective=None,
                fw_gap=None, duality_gap=None, relative_gap=None, converged=False, stop=f"not run: {why}", checks=0, check_s=None,
                setup_s=0.0, seconds_to={_key(lv): None for lv in levels},
                iterations_to={_key(lv): None for lv in levels})


def _measure(name, sigma, sigma3, prior, u, lam, target_gap, levels, time_limit, check_every, warmup):
    device = sigma.device
    max_iter = MAX_ITER.get(name, FIRST_ORDER_MAX_ITER)
    kind = PROBLEM_OF.get(name, "cce")  # pgd_cce@STEP
    setup = 0.0
    if name == "em_rce_compiled":
        t0 = time.perf_counter()
        try:
            em_rce_compiled(sigma3, u, lam, tol_gap=0.0, max_iter=20, check_every=10, callback=lambda s: False)
        except Exception as error:  # noqa: BLE001  the baseline needs torch.compile's C++ toolchain: its
            # failure is the baseline's, not the comparison's; the row says why and the others still run
            first = (str(error).strip().splitlines() or [""])[0][:120]
            return _skipped(name, levels, f"torch.compile failed ({type(error).__name__}: {first})"), []
        setup = time.perf_counter() - t0
    elif warmup:
        _run(name, sigma, prior, lam, target_gap, 2, 1, None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    recorder = _Recorder(time_limit, device)
    if name == "em_rce_compiled":
        res = em_rce_compiled(sigma3, u, lam, tol_gap=target_gap, max_iter=max_iter, check_every=check_every,
                              callback=recorder)
    else:
        res = _run(name, sigma, prior, lam, target_gap, max_iter, check_every, recorder)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - recorder.t0 - recorder.excluded
    # the price of one check, measured apart on the final point
    y3 = res.y if res.y.dim() == 3 else res.y.unsqueeze(0)
    t0 = time.perf_counter()
    objective, gap, dual = certify_gaps(kind, sigma3, y3, u, lam)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    check_s = time.perf_counter() - t0
    rel = relative_gap(best_gap(gap, dual), objective)
    finite = bool(torch.isfinite(rel).all())
    converged = finite and bool((rel <= target_gap).all())
    iterations = int(torch.as_tensor(res.iterations).max())
    if converged:
        stop = "target gap"
    elif not finite:
        stop = "not finite"
    elif recorder.timed_out:
        stop = "time limit"
    elif iterations >= max_iter:
        stop = "iteration limit"
    else:
        stop = "no progress"  # Newton: no step lowers the objective at float64 precision
    trace = recorder.trace
    row = dict(solver=name, objective_kind=kind, seconds=total, iterations=iterations,
               objective=float(objective.mean()), fw_gap=float(gap.max()),
               duality_gap=None if kind == "cce" else float(dual.max()), relative_gap=float(rel.max()) if finite
               else math.nan, converged=converged, stop=stop, checks=len(trace), check_s=check_s, setup_s=setup,
               seconds_to={}, iterations_to={})
    for lv in levels:
        hit = next(((t, it) for t, it, g, _ in trace if g <= lv), None)
        row["seconds_to"][_key(lv)] = None if hit is None else hit[0]
        row["iterations_to"][_key(lv)] = None if hit is None else hit[1]
    return row, trace


def _sinkhorn(sigma, prior, target_gap, levels, time_limit):
    """Sinkhorn-Knopp to its own criterion (row sums within ``target_gap`` of 1/N, relative), timed,
    stopped at the time limit; its trace holds the row-sum error in place of the gap, at the
    checks of ``check_every="auto"`` as the other solvers' (a callback every sweep costs 4-14
    sweeps' time on the CPU: one op call a sweep)."""
    sinkhorn(sigma, prior, tol=0.0, max_iter=2, validate=False, warn=False)  # warm-up
    trace, timed_out = [], [False]
    t0 = time.perf_counter()

    def callback(sweeps, error):
        seconds = time.perf_counter() - t0
        trace.append((seconds, sweeps, error, math.nan))
        timed_out[0] = seconds > time_limit
        return timed_out[0]

    iterations = sinkhorn(sigma, prior, tol=target_gap, max_iter=MAX_ITER["sinkhorn_knopp"], validate=False, warn=False,
                          callback=callback, check_every="auto").iterations
    if sigma.device.type == "cuda":
        torch.cuda.synchronize(sigma.device)
    seconds = time.perf_counter() - t0
    converged = bool(trace) and trace[-1][2] <= target_gap
    stop = "own criterion (row sums)" if converged else ("time limit" if timed_out[0] else "iteration limit")
    row = dict(solver="sinkhorn_knopp", objective_kind="own", seconds=seconds,
               iterations=int(torch.as_tensor(iterations).max()),  # (a batch's: its slowest problem's)
               objective=None, fw_gap=None, duality_gap=None, relative_gap=None, converged=converged, stop=stop,
               checks=0,
               check_s=None, setup_s=0.0, seconds_to={_key(lv): None for lv in levels},
               iterations_to={_key(lv): None for lv in levels}, own_error=trace[-1][2] if trace else None)
    return row, trace


__all__ = ["CCE_SOLVERS", "Comparison", "RCE_SOLVERS", "compare", "em_rce_compiled"]
