"""The pseudo-label solve of :class:`~entclust.SelfLabeling`: which solver function each
``solver=`` names, the default stopping rule of a per-batch solve, and the solve as one opaque
custom op (``entclust::self_labeling_solve``) that ``torch.compile`` traces a training step around."""
from __future__ import annotations

import json

import torch

from .. import solvers
from ..ops import softmax_double

# Pseudo-label solvers SelfLabeling can use, per problem, and their functions in entclust.solvers.
SOLVERS = {"rce": ("em", "newton", "dual_newton"), "cce": ("em", "newton", "pgd")}
SOLVER_FUNCTIONS = {"em": "em_{method}", "newton": "newton_{method}", "dual_newton": "dual_newton_rce", "pgd": "pgd_cce"}
# The default stopping rule of a per-batch solve (see the class doc): a relative gap (the duality gap,
# or the Frank-Wolfe gap where that is smaller), or a gap within half the decrease made (two thirds
# of the best step), for every solver.
DEFAULT_TOL_GAP = 1e-2
DEFAULT_TOL_PROGRESS = 0.5
DEFAULT_MAX_ITER = 1000
# Iterations between two certificates of a chunked (EM, PGD) solve: a check costs ~0.27 ms against
# ~8 us an EM iteration at 250 x 10. Measured 2026-12-05 under tol_gap=1e-2 alone (solves of
# 170-300 iterations): 5.0 ms a solve (median of 20) with 25, 7.9 ms with the solvers' 10, 12.7
# with "auto"; under the default rule a solve of an ordinary batch stops at the first check.
CHECK_EVERY = 25


def solver_kwargs(solver: str, options: dict, tol, tol_gap, tol_progress, max_iter: int) -> dict:
    """The keyword arguments of one solve: ``solver_options`` first, then the module's criterion."""
    kwargs = dict(options)
    kwargs.setdefault("tol", tol)
    kwargs.setdefault("tol_gap", tol_gap)
    kwargs.setdefault("max_iter", max_iter)
    kwargs.setdefault("tol_progress", tol_progress)
    if solver in ("em", "pgd") and (kwargs["tol_gap"] is not None or kwargs["tol_progress"] is not None):
        kwargs.setdefault("check_every", CHECK_EVERY)
    return kwargs


@torch.library.custom_op("entclust::self_labeling_solve", mutates_args=())
def solve_op(logits: torch.Tensor, prior: torch.Tensor, lam: float, method: str, solver: str, max_iter: int,
             tol: float, tol_gap: float, tol_progress: float,
             options: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The solve of :meth:`SelfLabeling.solve` as one opaque op, so that ``torch.compile`` traces a
    training step around it (the solvers' checks, loops and certificates are data-dependent).
    ``tol``, ``tol_gap`` or ``tol_progress < 0``: not given; ``options``: the solver's extra keyword arguments as
    JSON. Returns ``(y float64, converged, gap)`` (the certificate, :attr:`SolverResult.gap`)."""
    sigma = softmax_double(logits)  # as SelfLabeling.solve: the same labels eager and compiled
    given = lambda value: None if value < 0 else value  # noqa: E731
    kwargs = solver_kwargs(solver, json.loads(options), given(tol), given(tol_gap), given(tol_progress), max_iter)
    res = getattr(solvers, SOLVER_FUNCTIONS[solver].format(method=method))(sigma, prior, lam, validate=False, **kwargs)
    return (res.y, torch.as_tensor(res.converged, device=res.y.device).clone(),
            torch.as_tensor(res.gap, dtype=torch.float64, device=res.y.device).clone())


@solve_op.register_fake
def _(logits, prior, lam, method, solver, max_iter, tol, tol_gap, tol_progress, options):
    batch = logits.shape[:-2]
    return (logits.new_empty(logits.shape, dtype=torch.float64), logits.new_empty(batch, dtype=torch.bool),
            logits.new_empty(batch, dtype=torch.float64))
