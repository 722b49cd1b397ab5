"""What every pseudo-label solver checks and prepares: sigma, the prior, the numbers that
control the solve, and the start (docs/maths.md, "Pseudo-label problems and solvers")."""
from __future__ import annotations

import math

import torch

from ..ops.checks import check_distributions, check_tensor, prior_vector
from .result import SolverResult

# Default stopping tolerance on max |y_new - y| per problem, by dtype: float32 cannot resolve
# changes much below 1e-7 of a probability.
DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-6}
# Share of the prior mixed into the default start of a problem whose sigma has exact zeros.
START_MIX = 0.01


def check_count(name: str, arg: str, value, low: int = 0) -> int:
    """An int ``>= low`` (not a bool), else ValueError naming the solver and the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: {arg} must be an int >= {low}, got {value!r}")
    return value


def check_number(name: str, arg: str, value, *, positive: bool = False, allow_inf: bool = False) -> float:
    """A real number ``>= 0`` (``> 0`` when ``positive``), finite unless ``allow_inf``; NaN is an error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {arg} must be a number, got {value!r}")
    value = float(value)
    ok = (value > 0 if positive else value >= 0) and (allow_inf or math.isfinite(value))
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name}: {arg} must be a {'' if allow_inf else 'finite '}number {bound}, got {value!r}")
    return value


def check_sigma(name: str, sigma) -> None:
    check_tensor("sigma", sigma)
    if sigma.dtype not in DEFAULT_TOL:
        raise TypeError(f"{name}: sigma must be float32 or float64, got {sigma.dtype}")
    if sigma.dim() not in (2, 3):
        raise ValueError(f"{name}: sigma must have shape (N, K) or (B, N, K), got {tuple(sigma.shape)}")
    if sigma.shape[-1] < 1:
        raise ValueError(f"{name}: sigma must have K >= 1 classes, got shape {tuple(sigma.shape)}")
    if sigma.shape[-2] < 1:
        raise ValueError(f"{name}: sigma must have N >= 1 points, got shape {tuple(sigma.shape)}")
    if sigma.dim() == 3 and sigma.shape[0] < 1:
        raise ValueError(f"{name}: a batched sigma must hold B >= 1 problems, got shape {tuple(sigma.shape)}")


def default_start(sigma3: torch.Tensor, u: torch.Tensor):
    """``None`` (start at sigma) when every problem's sigma is positive; otherwise sigma for the
    positive problems and ``(1 - START_MIX) sigma + START_MIX u`` for those with exact zeros.

    EM's updates are multiplicative: a y_ik that starts at 0 stays 0, so from y = sigma a class
    that sigma gives no mass could never receive any (objective +inf when u_k > 0). The start
    is decided per problem, so that one problem's zeros do not move another's start."""
    has_zero = (sigma3 <= 0).flatten(1).any(1)
    if not bool(has_zero.any()):
        return None
    mixed = START_MIX * u + (1 - START_MIX) * sigma3
    return torch.where(has_zero[:, None, None], mixed, sigma3)


def prepare(name: str, sigma, prior, lam, tol, max_iter, y0, validate, y_name: str = "y0", *, start: bool = True,
            step_tol: bool = True):
    """Checked inputs as ``(sigma3, u, tol, y0_3, batched)``: sigma as ``(B, N, K)``, the prior in
    sigma's dtype, the tolerance (when None: the dtype's default, or 0 when ``step_tol`` is False,
    a solve that stops on the gap), and the start (None: sigma itself).
    ``start=False``: a solver that makes its own start (Newton, Sinkhorn) skips the default one."""
    check_sigma(name, sigma)
    lam = check_number(name, "lam", lam)
    check_count(name, "max_iter", max_iter)
    if tol is None:
        tol = DEFAULT_TOL[sigma.dtype] if step_tol else 0.0
    else:
        tol = check_number(name, "tol", tol, allow_inf=True)
    if not isinstance(validate, bool):
        raise ValueError(f"{name}: validate must be True or False, got {validate!r}")
    batched = sigma.dim() == 3
    # a solve is not differentiated: a sigma that requires grad (softmax(model(x)) without
    # .detach()) is read as its value, and no result field carries a graph
    sigma = sigma.detach()
    sigma3 = sigma if batched else sigma.unsqueeze(0)
    k = sigma.shape[-1]
    if validate:
        check_distributions("sigma", sigma3.reshape(-1, k))
    u = prior_vector(prior, k, sigma3)
    if y0 is None:
        y0 = default_start(sigma3, u) if start else None
    else:
        check_tensor(y_name, y0)
        if y0.shape != sigma.shape or y0.dtype != sigma.dtype or y0.device != sigma.device:
            raise ValueError(f"{name}: {y_name} must match sigma in shape, dtype and device; got {tuple(y0.shape)} "
                             f"{y0.dtype} on {y0.device}")
        if validate:
            check_distributions(y_name, y0.reshape(-1, k))
        y0 = y0.detach() if batched else y0.detach().unsqueeze(0)
    return sigma3, u, tol, y0.contiguous() if y0 is not None else None, batched


def unbatch(res: SolverResult, batched: bool) -> SolverResult:
    """A batched result as the caller's shape: for one problem, y as ``(N, K)`` and the
    per-problem fields as Python numbers (int iterations, float objective and gaps, bool converged)."""
    if batched:
        return res
    dual = res.duality_gap
    return SolverResult(res.y[0], int(res.iterations[0]), float(res.objective[0]), float(res.fw_gap[0]),
                        bool(res.converged[0]), res.criterion,
                        float(dual[0]) if isinstance(dual, torch.Tensor) else float(dual))


def as_input(res: SolverResult, dtype: torch.dtype, batched: bool) -> SolverResult:
    """A float64 result of a composite solver with y in the input's dtype, unbatched if it was."""
    return unbatch(res._replace(y=res.y.to(dtype)), batched)


def check_gap_options(name: str, tol_gap, check_every, callback):
    """The options every solver shares for stopping on the certificate: ``tol_gap`` None or a
    number >= 0, ``check_every`` an int >= 1 or ``"auto"``, ``callback`` None or callable."""
    if tol_gap is not None:
        tol_gap = check_number(name, "tol_gap", tol_gap)
    if check_every != "auto" and (isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1):
        raise ValueError(f"{name}: check_every must be an int >= 1 or 'auto', got {check_every!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"{name}: callback must be callable or None, got {callback!r}")
    return tol_gap


def finite_problems(y: torch.Tensor) -> torch.Tensor:
    """(B,) True where a problem's y (or sigma) is finite: ``converged`` is never True for a NaN
    result. One sum in y's own dtype (probabilities: no overflow), no copy of y."""
    return torch.isfinite(y.sum((-2, -1)))
