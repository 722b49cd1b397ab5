"""Pseudo-label solvers (sigma fixed, optimise y): MATH.md, "Pseudo-label problems and solvers".

Problems are in mean form, ``(1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar)``, so EM uses
``c = lam N`` (the papers' eq. 15 omits the N). ``sigma`` is ``(N, K)`` for one problem or
``(B, N, K)`` for B independent problems solved in one call.
"""
from __future__ import annotations

import math

import torch

from . import ops, reference
from ._validation import check_distributions, check_tensor, prior_vector
from .results import SolverResult

# Default stopping tolerance on max |y_new - y| per problem, by dtype: float32 cannot resolve
# changes much below 1e-7 of a probability.
DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-6}


def _prepare(name: str, sigma, prior, lam, tol, max_iter, y0, validate):
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
    if y0 is not None:
        check_tensor("y0", y0)
        if y0.shape != sigma.shape or y0.dtype != sigma.dtype or y0.device != sigma.device:
            raise ValueError(f"{name}: y0 must match sigma in shape, dtype and device; got {tuple(y0.shape)} "
                             f"{y0.dtype} on {y0.device}")
        if validate:
            check_distributions("y0", y0.reshape(-1, k))
        y0 = y0 if batched else y0.unsqueeze(0)
    return sigma3, u, tol, y0, batched


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
        y0: optional start, same shape as sigma.
        validate: check sigma/y0 are on the simplex and finite (one extra pass).

    Returns a :class:`~entclust.results.SolverResult` with the Frank-Wolfe gap computed in float64.
    """
    sigma3, u, tol, y0, batched = _prepare("em_rce", sigma, prior, lam, tol, max_iter, y0, validate)
    if sigma3.device.type != "cpu":
        raise NotImplementedError(
            "em_rce has CPU kernels only so far; move sigma to the CPU, or use entclust.reference.em_rce "
            "(pure PyTorch, any device)")
    y, iterations, converged = ops.em_rce(sigma3, u, float(lam), tol, max_iter, y0)
    return _certify("rce", sigma3, y, u, lam, iterations, converged, f"max|dy| <= {tol:g}", batched)
