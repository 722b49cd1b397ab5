"""SeLa's balanced hard assignment by Sinkhorn-Knopp (Asano et al. 2020), the baseline of the
self-labeling papers: ``Q = diag(alpha) P diag(beta)``, ``P = sigma^lam_sk``, row sums 1/N and
column sums u, in the log domain."""
from __future__ import annotations

import math
import warnings

import torch

from ._problem import check_count, check_number, prepare


def sinkhorn_knopp(sigma: torch.Tensor, prior=None, *, lam_sk: float = 25.0, tol: float = 1e-9,
                   max_iter: int = 1000, validate: bool = True, warn: bool = True, callback=None):
    """Returns ``(Q, labels, iterations)``: the scaled ``Q`` (shape of sigma, rows sum to 1/N, columns
    to u), ``labels = argmax_k Q_ik`` and the number of scaling sweeps run (>= 1). Stops when every
    row sum is within ``tol / N`` of ``1/N``.

    Zeros in sigma (one-hot rows, a class no point predicts) are floored at the dtype's smallest
    normal number before the power: the transport problem then stays feasible and every value
    finite, and a class with no mass still receives its share u_k of the points (the ones it
    is least unlikely for). ``warn``: a RuntimeWarning when ``max_iter`` sweeps end before ``tol``.
    ``callback(sweeps, row_error)``: called after every sweep with the largest relative row-sum
    error (a float; its own criterion, SeLa's transport problem is not the pseudo-label problem
    of the other solvers); a true return stops. Composite PyTorch; ``sigma`` ``(N, K)`` or ``(B, N, K)``."""
    name = "sinkhorn_knopp"
    sigma3, u, _, _, batched = prepare(name, sigma, prior, 0.0, None, max_iter, None, validate, start=False)
    lam_sk = check_number(name, "lam_sk", lam_sk, positive=True)
    tol = check_number(name, "tol", tol)
    check_count(name, "max_iter", max_iter, 1)
    if callback is not None and not callable(callback):
        raise ValueError(f"{name}: callback must be callable or None, got {callback!r}")
    n = sigma3.shape[-2]
    log_p = lam_sk * torch.log(sigma3.clamp_min(torch.finfo(sigma3.dtype).tiny))
    # a zero prior entry is a class that receives no points: its column is left out (beta = -inf)
    log_u = torch.where(u > 0, torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)), -math.inf)
    log_beta = torch.zeros_like(sigma3[..., :1, :])
    converged = False
    for iterations in range(1, max_iter + 1):
        log_alpha = -math.log(n) - torch.logsumexp(log_p + log_beta, -1, keepdim=True)
        log_beta = log_u - torch.logsumexp(log_p + log_alpha, -2, keepdim=True)
        row = torch.logsumexp(log_p + log_alpha + log_beta, -1).exp()
        error = (row - 1.0 / n).abs() * n
        if bool((error <= tol).all()):
            converged = True
        stop = callback is not None and callback(iterations, float(error.max()))  # the last sweep's too
        if converged or stop:
            break
    if warn and not converged:
        warnings.warn(f"sinkhorn_knopp: row sums still off by more than tol={tol:g} (relative) after "
                      f"max_iter={max_iter} sweeps; raise max_iter or lower lam_sk", RuntimeWarning, stacklevel=2)
    q = (log_p + log_alpha + log_beta).exp()
    labels = q.argmax(-1)
    return (q, labels, iterations) if batched else (q[0], labels[0], iterations)
