"""SeLa's balanced hard assignment by Sinkhorn-Knopp (Asano et al. 2020), the baseline of the
self-labeling papers: ``Q = diag(alpha) P diag(beta)``, ``P = sigma^lam_sk``, row sums 1/N and
column sums u, in the log domain."""
from __future__ import annotations

import math
import warnings

import torch

from .. import ops
from ._checked import next_chunk
from ._problem import check_count, check_gap_options, check_number, prepare, unbatch
from .result import SolverResult


def sinkhorn(sigma: torch.Tensor, prior=None, *, lam_sk: float = 25.0, tol: float = 1e-3, max_iter: int = 10000,
             validate: bool = True, warn: bool = True, callback=None, check_every: int | str = 1) -> SolverResult:
    """SeLa's pseudo-labels: ``Q = diag(alpha) P diag(beta)`` with ``P = sigma^lam_sk``, rows
    summing to ``1/N`` and columns to the prior ``u``, by Sinkhorn-Knopp scaling in the log domain.

    Args:
        sigma: ``Tensor[N, K]`` predictions, or ``Tensor[B, N, K]`` for B independent problems.
        prior: ``Tensor[K]`` target proportions u (uniform when None).
        lam_sk: the power of sigma (SeLa's lambda; larger is closer to the hard assignment).
        tol: stop when every row sum is within ``tol / N`` of ``1/N``. SeLa's code stops when
            ``sum_i |c_i / c_new_i - 1| <= 0.1`` over its N points, the sum of these relative
            row errors: a mean of ``0.1 / N`` (4e-4 for a batch of 250). Sinkhorn-Knopp on
            ``sigma^25`` converges slowly where sigma is peaked (a trained network's): 1e-3
            takes up to a few thousand sweeps there, 1e-6 tens of thousands or more (the
            defaults were 1e-9 and 1000 sweeps until 2026-12-07, and warned on such inputs).
        max_iter: scaling sweeps at most (>= 1); ``warn``: a RuntimeWarning when they end before ``tol``.
        callback: ``callback(sweeps, row_error)`` after every ``check_every`` sweeps with the
            largest relative row-sum error; a true return stops.
        check_every: sweeps between two callbacks, an int >= 1 or ``"auto"`` (after 1, 2, ..., 8
            sweeps, then every 1/8 of those run so far, as the other solvers check). The sweeps
            between two callbacks run in one op call, warm-started from the last column shifts:
            the same sweeps and the result equal to rounding, the call's own cost once a call (at
            ``check_every=1``, 4-14 times the time of a sweep on the CPU at 250 x 20 to 2000, the most on
            short rows).

    Returns:
        :class:`SolverResult` with ``y = N Q`` (each row put on the simplex, so the columns sum
        to ``N u`` within about tol, relative; ``result.labels`` is
        SeLa's hard assignment ``argmax_k Q_ik``), the sweeps run as ``iterations``, SeLa's loss
        ``mean_i H(y_i, sigma_i)`` as ``objective``, and ``fw_gap`` NaN: the transport problem is
        not the pseudo-label problem of the other solvers, so there is no Frank-Wolfe certificate;
        ``converged`` says whether the row sums met ``tol``.

    Zeros in sigma (one-hot rows, a class no point predicts) are floored at the dtype's smallest
    normal number before the power: the transport problem then stays feasible and every value
    finite, and a class with no mass still receives its share u_k of the points (the ones it is
    least unlikely for). Each of B problems stops on its own (``iterations`` per problem), so a
    problem's result does not depend on the others of its batch. On the CPU the sweeps run in one
    fused op in float64 (``entclust.ops.sinkhorn_kernel``): a sweep is one pass of multiply-adds over
    the plan rescaled by the shifts absorbed so far (one more ``N x K`` float64 buffer), exponentials
    only when the shifts are absorbed afresh (docs/maths.md, "Sinkhorn-Knopp"); elsewhere in
    PyTorch, two ``logsumexp`` a sweep in sigma's dtype.

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
    check_gap_options(name, None, check_every, callback)
    n = sigma3.shape[-2]
    log_sigma = torch.log(sigma3.clamp_min(torch.finfo(sigma3.dtype).tiny))
    # the prior renormalised, on the CPU in float64 (the sweeps' type there): u in float32 (uniform
    # 1/10 sums to 1 + 1.5e-8) made the problem infeasible by that much, and the row error stalled
    # at 3e-8 for float32 sigma
    if sigma3.device.type == "cpu":
        u = u.to(torch.float64)
    u = u / u.sum(-1, keepdim=True)
    # a zero prior entry is a class that receives no points: its column is left out (beta = -inf)
    log_u = torch.where(u > 0, torch.log(u.clamp_min(torch.finfo(u.dtype).tiny)), -math.inf)
    if sigma3.device.type == "cpu":
        log_p = lam_sk * log_sigma.to(torch.float64)
        log_alpha, log_beta, sweeps, error = _solve(_op_sweep(log_p, log_u.to(torch.float64)), log_p, tol, max_iter,
                                                    callback, check_every)
    else:
        log_p = lam_sk * log_sigma
        log_alpha, log_beta, sweeps, error = _solve(_torch_sweep(log_p, log_u), log_p, tol, max_iter, callback,
                                                    check_every)
    converged = error <= tol
    if warn and not bool(converged.all()):
        warnings.warn(f"{name}: row sums still off by more than tol={tol:g} (relative) after "
                      f"max_iter={max_iter} sweeps; raise max_iter or lower lam_sk", RuntimeWarning, stacklevel=2)
    # the last sweep's column scaling leaves the columns at u and each row within tol of 1/N: its
    # rows are put on the simplex, as every solver's y, so the columns are within about tol of u
    y = (log_p + log_alpha[..., None] + log_beta[:, None, :] + math.log(n)).exp()
    y = (y / y.sum(-1, keepdim=True)).to(sigma3.dtype)
    objective = -(y * log_sigma).sum(-1).mean(-1)
    return unbatch(SolverResult(y, sweeps, objective, torch.full(sweeps.shape, math.nan), converged,
                                f"row sums within tol={tol:g} of 1/N (relative)"), batched)


def _solve(sweep, log_p, tol, max_iter, callback, check_every=1):
    """``(log_alpha (B, N), log_beta (B, K), sweeps (B,), error (B,))``: ``sweep(log_beta, m, tol)``
    runs at most m sweeps from the column shifts log_beta (each problem until it meets tol), and
    returns the same four; without a callback in one call of max_iter sweeps, with one in calls of
    ``check_every`` sweeps (:func:`~entclust.solvers._checked.next_chunk`), each warm-started from
    the last shifts, the callback told the sweeps so far and the largest error after each. Each
    problem stops on its own: one that meets tol keeps its shifts and sweep count."""
    b, _, k = log_p.shape
    log_beta = log_p.new_zeros((b, k))
    if callback is None:
        return sweep(log_beta, max_iter, tol)
    done = torch.zeros(b, dtype=torch.bool, device=log_p.device)
    sweeps = torch.zeros(b, dtype=torch.int64, device=log_p.device)
    log_alpha = error = None
    count = 0
    while count < max_iter:
        m = min(next_chunk(check_every, count), max_iter - count)
        count += m
        alpha, beta, ran, err = sweep(log_beta, m, tol)
        if log_alpha is None:
            log_alpha, log_beta, error, sweeps = alpha, beta, err, ran
        else:  # (a problem done before keeps its result; every problem runs, as one op call is simplest)
            log_alpha = torch.where(done[:, None], log_alpha, alpha)
            log_beta = torch.where(done[:, None], log_beta, beta)
            error = torch.where(done, error, err)
            sweeps = torch.where(done, sweeps, sweeps + ran)
        done = error <= tol
        stop = callback(count, float(error.max()))  # the last call's too
        if bool(done.all()) or stop:
            break
    return log_alpha, log_beta, sweeps, error


def _op_sweep(log_p, log_u):
    # the fused CPU op (float64 vectors and exp; csrc/cpu/solvers.cpp)
    return lambda log_beta, max_iter, tol: ops.sinkhorn_kernel(log_p, log_u, log_beta, tol, max_iter)


def _torch_sweep(log_p, log_u):
    # the same sweeps in PyTorch (any device); row_lse = logsumexp_k(log_p + log_beta): the next
    # sweep's alpha and, with this sweep's alpha, its row sums: two reductions a sweep, not three
    n = log_p.shape[-2]

    def sweep(log_beta, max_iter, tol):
        b = log_p.shape[0]
        row_lse = torch.logsumexp(log_p + log_beta[:, None, :], -1)
        done = torch.zeros(b, dtype=torch.bool, device=log_p.device)
        sweeps = torch.zeros(b, dtype=torch.int64, device=log_p.device)
        log_alpha, error = torch.empty_like(row_lse), torch.full((b,), math.inf, dtype=log_p.dtype, device=log_p.device)
        for iterations in range(1, max_iter + 1):
            alpha = -math.log(n) - row_lse
            beta = log_u - torch.logsumexp(log_p + alpha[..., None], -2)
            lse = torch.logsumexp(log_p + beta[:, None, :], -1)
            err = ((alpha + lse).exp() - 1.0 / n).abs().amax(-1) * n
            keep = done[:, None]
            log_alpha, log_beta = torch.where(keep, log_alpha, alpha), torch.where(keep, log_beta, beta)
            row_lse = torch.where(keep, row_lse, lse)
            error, sweeps = torch.where(done, error, err), torch.where(done, sweeps, iterations)
            done = error <= tol
            if bool(done.all()):
                break
        return log_alpha, log_beta, sweeps, error

    return sweep


def sinkhorn_knopp(sigma: torch.Tensor, prior=None, *, lam_sk: float = 25.0, tol: float = 1e-3,
                   max_iter: int = 10000, validate: bool = True, warn: bool = True, callback=None):
    """Deprecated: use :func:`sinkhorn`, which returns a :class:`SolverResult` as every other
    solver does. Returns ``(Q, labels, iterations)``: ``Q = y / N`` (rows sum to 1/N, columns to
    u within about tol), ``labels = argmax_k Q_ik`` and the sweeps run."""
    warnings.warn("entclust.sinkhorn_knopp is deprecated and will be removed in the next release: use "
                  "entclust.sinkhorn, which returns a SolverResult (Q = result.y / N, labels = result.labels, "
                  "sweeps = result.iterations)", DeprecationWarning, stacklevel=2)
    result = sinkhorn(sigma, prior, lam_sk=lam_sk, tol=tol, max_iter=max_iter, validate=validate, warn=warn,
                      callback=callback)
    return result.y / result.y.shape[-2], result.labels, int(torch.as_tensor(result.iterations).max())
