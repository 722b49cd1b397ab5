"""SeLa's balanced hard assignment by Sinkhorn-Knopp (Asano et al. 2020), the baseline of the
self-labeling papers: ``Q = diag(alpha) P diag(beta)``, ``P = sigma^lam_sk``, row sums 1/N and
column sums u, in the log domain."""
from __future__ import annotations

import math
import warnings

import torch

from ._problem import check_count, check_number, prepare, unbatch
from .result import SolverResult


def sinkhorn(sigma: torch.Tensor, prior=None, *, lam_sk: float = 25.0, tol: float = 1e-9, max_iter: int = 1000,
             validate: bool = True, warn: bool = True, callback=None) -> SolverResult:
    """SeLa's pseudo-labels: ``Q = diag(alpha) P diag(beta)`` with ``P = sigma^lam_sk``, rows
    summing to ``1/N`` and columns to the prior ``u``, by Sinkhorn-Knopp scaling in the log domain.

    Args:
        sigma: ``Tensor[N, K]`` predictions, or ``Tensor[B, N, K]`` for B independent problems.
        prior: ``Tensor[K]`` target proportions u (uniform when None).
        lam_sk: the power of sigma (SeLa's lambda; larger is closer to the hard assignment).
        tol: stop when every row sum is within ``tol / N`` of ``1/N``.
        max_iter: scaling sweeps at most (>= 1); ``warn``: a RuntimeWarning when they end before ``tol``.
        callback: ``callback(sweeps, row_error)`` after every sweep with the largest relative
            row-sum error; a true return stops.

    Returns:
        :class:`SolverResult` with ``y = N Q`` (each row on the simplex; ``result.labels`` is
        SeLa's hard assignment ``argmax_k Q_ik``), the sweeps run as ``iterations``, SeLa's loss
        ``mean_i H(y_i, sigma_i)`` as ``objective``, and ``fw_gap`` NaN: the transport problem is
        not the pseudo-label problem of the other solvers, so there is no Frank-Wolfe certificate;
        ``converged`` says whether the row sums met ``tol``.

    Zeros in sigma (one-hot rows, a class no point predicts) are floored at the dtype's smallest
    normal number before the power: the transport problem then stays feasible and every value
    finite, and a class with no mass still receives its share u_k of the points (the ones it is
    least unlikely for). Composite PyTorch.

    Example::

        >>> sigma = torch.softmax(torch.randn(100, 5, dtype=torch.float64), -1)
        >>> result = entclust.sinkhorn(sigma)
        >>> result.y.sum(0) / 100   # the prior, uniform: 0.2 each
    """
    name = "sinkhorn"
    sigma3, u, _, _, batched = prepare(name, sigma, prior, 0.0, None, max_iter, None, validate, start=False)
    lam_sk = check_number(name, "lam_sk", lam_sk, positive=True)
    tol = check_number(name, "tol", tol)
    check_count(name, "max_iter", max_iter, 1)
    if callback is not None and not callable(callback):
        raise ValueError(f"{name}: callback must be callable or None, got {callback!r}")
    n = sigma3.shape[-2]
    log_sigma = torch.log(sigma3.clamp_min(torch.finfo(sigma3.dtype).tiny))
    log_p = lam_sk * log_sigma
    # a zero prior entry is a class that receives no points: its column is left out (beta = -inf)
    log_u = torch.where(u > 0, torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)), -math.inf)
    log_beta = torch.zeros_like(sigma3[..., :1, :])
    converged = torch.zeros(sigma3.shape[0], dtype=torch.bool, device=sigma3.device)
    # row_lse = logsumexp_k(log_p + log_beta): the next sweep's alpha and, with this sweep's
    # alpha, its row sums exp(log_alpha + row_lse): two reductions a sweep, not three
    row_lse = torch.logsumexp(log_p + log_beta, -1, keepdim=True)
    for iterations in range(1, max_iter + 1):
        log_alpha = -math.log(n) - row_lse
        log_beta = log_u - torch.logsumexp(log_p + log_alpha, -2, keepdim=True)
        row_lse = torch.logsumexp(log_p + log_beta, -1, keepdim=True)
        error = ((log_alpha + row_lse).squeeze(-1).exp() - 1.0 / n).abs() * n
        converged = (error <= tol).all(-1)
        stop = callback is not None and callback(iterations, float(error.max()))  # the last sweep's too
        if bool(converged.all()) or stop:
            break
    if warn and not bool(converged.all()):
        warnings.warn(f"{name}: row sums still off by more than tol={tol:g} (relative) after "
                      f"max_iter={max_iter} sweeps; raise max_iter or lower lam_sk", RuntimeWarning, stacklevel=2)
    y = (log_p + log_alpha + log_beta + math.log(n)).exp()
    objective = -(y * log_sigma).sum(-1).mean(-1)
    b = sigma3.shape[0]
    return unbatch(SolverResult(y, torch.full((b,), iterations), objective, torch.full((b,), math.nan), converged,
                                f"row sums within tol={tol:g} of 1/N (relative)"), batched)


def sinkhorn_knopp(sigma: torch.Tensor, prior=None, *, lam_sk: float = 25.0, tol: float = 1e-9,
                   max_iter: int = 1000, validate: bool = True, warn: bool = True, callback=None):
    """Deprecated: use :func:`sinkhorn`, which returns a :class:`SolverResult` as every other
    solver does. Returns ``(Q, labels, iterations)``: ``Q = y / N`` (rows sum to 1/N, columns to
    u), ``labels = argmax_k Q_ik`` and the sweeps run."""
    warnings.warn("entclust.sinkhorn_knopp is deprecated and will be removed in the next release: use "
                  "entclust.sinkhorn, which returns a SolverResult (Q = result.y / N, labels = result.labels, "
                  "sweeps = result.iterations)", DeprecationWarning, stacklevel=2)
    result = sinkhorn(sigma, prior, lam_sk=lam_sk, tol=tol, max_iter=max_iter, validate=validate, warn=warn,
                      callback=callback)
    return result.y / result.y.shape[-2], result.labels, int(torch.as_tensor(result.iterations).max())
