"""The reverse-CE pseudo-label problem over more points than one call holds: rows spread over
the processes of a ``torch.distributed`` group, or a block of rows solved against the column
sums of all the others (docs/maths.md, "RCE problem").

EM's only coupling between rows is the K-vector of column sums ``sum_j y_jk`` in the E-step:
with ``S_ik = y_ik / col_k`` the M-step is
``y_ik = (sigma_ik + (c u_k / col_k) y_ik) / (1 + sum_m (c u_m / col_m) y_im)``, ``c = lam N``,
row by row. So a problem sharded over ranks needs one all-reduce of a K-vector per iteration
(float64: 8 K bytes), plus one scalar (the largest change) for the stopping test, and its
iterates equal those of the single-process solve on the concatenated rows up to the order of
the floating-point sums. A block of rows ``B`` of a larger problem (incremental EM, Neal & Hinton
1998) uses ``col = rest + sum_{i in B} y_i``, where ``rest`` holds every other row's
contribution: each iteration then lowers the whole problem's objective with the other rows fixed.
Column sums and fairness weights are float64; the rows are updated in sigma's dtype (float64
arithmetic per entry), on the CPU by the fused op ``entclust::em_rce_rows``, elsewhere over blocks
of rows (no N x K float64 temporary beyond a block).
"""
from __future__ import annotations

import torch

from .. import ops
from .._dist import all_reduce
from ..ops.checks import block_rows, check_distributions, check_tensor, prior_vector
from ._checked import criterion_text, next_chunk
from ._problem import DEFAULT_TOL, START_MIX, check_count, check_gap_options, check_number, check_sigma
from .certificate import dual_distances, dual_row_sums, dual_total
from .result import SolverResult, best_gap, relative_gap

def column_sums(y: torch.Tensor) -> torch.Tensor:
    """``(K,)`` float64 column sums of ``y`` ``(N, K)``, block by block (no float64 copy of y)."""
    n, k = y.shape
    step = block_rows(y.device, k)
    out = torch.zeros(k, dtype=torch.float64, device=y.device)
    for i in range(0, n, step):
        out += y[i:i + step].sum(0, dtype=torch.float64)
    return out


def em_step_(sigma: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, *, delta: bool = True
             ) -> tuple[torch.Tensor, float]:
    """One reverse-CE M-step in place on ``y`` ``(N, K)`` with fairness weights
    ``weights_k = c u_k / col_k`` (float64): returns the new column sums of these rows and
    ``max |y_new - y|`` (0.0 when ``delta`` is False). On the CPU one pass of the fused op
    ``entclust::em_rce_rows``; elsewhere float64 PyTorch over blocks of rows."""
    if sigma.device.type == "cpu" and sigma.dtype == y.dtype:
        new, col = ops.em_rce_rows_kernel(sigma, y, weights)
        change = float((new - y).abs().max()) if delta and y.numel() else 0.0
        y.copy_(new)
        return col, change
    return _step_blocks_(sigma, y, weights, delta)


def _step_blocks_(sigma, y, weights, delta: bool) -> tuple[torch.Tensor, float]:
    """:func:`em_step_` in PyTorch over blocks of rows (any device; float64 arithmetic)."""
    n, k = y.shape
    step = block_rows(sigma.device, k)
    col = torch.zeros(k, dtype=torch.float64, device=y.device)
    change = torch.zeros((), dtype=torch.float64, device=y.device)
    for i in range(0, n, step):
        old = y[i:i + step].to(torch.float64)
        a = old * weights
        new = ((sigma[i:i + step].to(torch.float64) + a) / (1.0 + a.sum(1, keepdim=True))).to(y.dtype)
        col += new.sum(0, dtype=torch.float64)  # the sums of the values as stored, as the op does
        if delta:
            change = torch.maximum(change, (new.to(torch.float64) - old).abs().max())
        y[i:i + step] = new
    return col, float(change)


def fairness_weights(col: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
    """The M-step's fairness weights ``c u_k / col_k`` (``cu = c u``), 0 for a class with no mass."""
    # a class with no mass anywhere (and y = 0 in every row) gets none: its weight is irrelevant
    return torch.where(col > 0, cu / col.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def em_rce_block_(sigma: torch.Tensor, y: torch.Tensor, rest: torch.Tensor, lam: float, n_total: int, u: torch.Tensor,
                  iterations: int, group=None) -> torch.Tensor:
    """``iterations`` EM steps in place on the rows ``y`` (start: their stored labels) of a problem of
    ``n_total`` points whose other rows contribute the column sums ``rest`` ``(K,)`` float64.
    With ``group``, every rank passes its own block and ``rest``; the blocks' column sums are
    all-reduced each step (``rest`` must then be the same on every rank: the rows outside all blocks).
    Returns the new column sums of the whole problem (``rest`` plus the blocks)."""
    cu = u.to(torch.float64) * (lam * n_total)
    col = rest + all_reduce(column_sums(y), group)
    for _ in range(iterations):
        block, _ = em_step_(sigma, y, fairness_weights(col, cu), delta=False)
        col = rest + all_reduce(block, group)
    return col


def _certificate(sigma, y, col, u, lam, n, group):
    """Objective, Frank-Wolfe gap and duality gap of the whole (sharded) problem: per-rank sums with
    the multipliers of the global column sums ``col``, all-reduced."""
    u64 = u.to(torch.float64)
    y_bar = col / n
    active = u64 > 0
    fair_grad = torch.where(active, -lam * u64 / (n * y_bar), 0.0)
    fairness = float(torch.where(active, u64 * torch.log(u64 / y_bar), 0.0).sum()) if lam != 0 else 0.0
    omega_max, d = dual_distances(y_bar, u64, lam)
    sums = torch.zeros(3, dtype=torch.float64, device=y.device)  # sum of CE, Frank-Wolfe gap, duality gap
    step = block_rows(y.device, y.shape[1])
    for i in range(0, y.shape[0], step):
        s = sigma[i:i + step].to(torch.float64)
        yy = y[i:i + step].to(torch.float64)
        positive = s > 0
        sums[0] += torch.where(positive, -s * torch.log(yy), 0.0).sum()
        g = torch.where(positive, -s / (n * yy), 0.0) + (fair_grad if lam != 0 else 0.0)
        sums[1] += (torch.where(yy > 0, yy * g, 0.0).sum(1) - g.amin(1)).sum()
        sums[2] += dual_row_sums(s.unsqueeze(0), yy.unsqueeze(0), d.unsqueeze(0))[0]
    sums = all_reduce(sums, group)
    dual = float(dual_total(sums[2], n, omega_max, y_bar, u64, lam))
    return float(sums[0]) / n + lam * fairness, float(sums[1]), dual


def em_rce_sharded(sigma: torch.Tensor, prior=None, lam: float = 100.0, *, group=None, tol: float | None = None,
                   max_iter: int = 1000, y0: torch.Tensor | None = None, tol_gap: float | None = None,
                   check_every: int | str = 10, validate: bool = True, certificate: bool = True) -> SolverResult:
    """:func:`~entclust.em_rce` for one problem whose rows are split over the ranks of ``group``
    (a ``torch.distributed`` process group; None: this process holds every row). Every rank
    calls it with its own rows ``sigma`` ``(N_r, K)`` (shards may differ in size; N_r = 0 is
    allowed) and gets its rows of the solution; ``iterations``, ``objective``, ``fw_gap``,
    ``duality_gap`` and ``converged`` are those of the whole problem, the same on every rank. ``N = sum_r N_r``,
    ``c = lam N``; the stopping test ``max |y_new - y| <= tol`` is taken over all rows.

    Communication per iteration: one all-reduce of K float64 column sums and one of a scalar.
    The iterates equal the single-process solve on the concatenated rows up to the order of the
    floating-point sums (tested at world sizes 2 and 3 with uneven shards).

    ``tol_gap``: stop when the relative duality gap ``gap / (1 + |objective|)`` is <= it (as
    :func:`~entclust.em_rce`: the smaller of the duality and the Frank-Wolfe gap),
    checked every ``check_every`` iterations (or ``"auto"``, as in :func:`~entclust.em_rce`; one
    certificate and two more all-reduces a check); ``tol``
    then defaults to no step criterion. Scalars of the result are Python numbers."""
    name = "em_rce_sharded"
    check_tensor("sigma", sigma)
    if sigma.dim() != 2:
        raise ValueError(f"{name}: sigma must have shape (N_r, K) (this rank's rows), got {tuple(sigma.shape)}")
    if sigma.shape[0] > 0:
        check_sigma(name, sigma)
    elif sigma.dtype not in DEFAULT_TOL:
        raise TypeError(f"{name}: sigma must be float32 or float64, got {sigma.dtype}")
    lam = check_number(name, "lam", lam)
    check_count(name, "max_iter", max_iter)
    tol_gap = check_gap_options(name, tol_gap, check_every, None)
    if tol is None:
        tol = DEFAULT_TOL[sigma.dtype] if tol_gap is None else 0.0
    else:
        tol = check_number(name, "tol", tol, allow_inf=True)
    k = sigma.shape[1]
    if validate and sigma.shape[0]:
        check_distributions("sigma", sigma)
    u = prior_vector(prior, k, sigma)
    n = int(all_reduce(torch.tensor([sigma.shape[0]], dtype=torch.float64, device=sigma.device), group))
    if n < 1:
        raise ValueError(f"{name}: the problem has no rows on any rank")
    if y0 is None:
        # the default start of em_rce, decided over the whole problem: sigma, or mixed with u
        # when some rank's sigma has an exact zero
        zero = torch.tensor([float(bool((sigma <= 0).any())) if sigma.numel() else 0.0], dtype=torch.float64,
                            device=sigma.device)
        mixed = bool(all_reduce(zero, group, "max") > 0)
        y = (1 - START_MIX) * sigma + START_MIX * u.to(sigma.dtype) if mixed else sigma.clone()
    else:
        check_tensor("y0", y0)
        if y0.shape != sigma.shape or y0.dtype != sigma.dtype or y0.device != sigma.device:
            raise ValueError(f"{name}: y0 must match sigma in shape, dtype and device; got {tuple(y0.shape)} "
                             f"{y0.dtype} on {y0.device}")
        if validate and y0.shape[0]:
            check_distributions("y0", y0)
        y = y0.clone()
    y = y.contiguous()
    cu = u.to(torch.float64) * (lam * n)
    col = all_reduce(column_sums(y), group)
    def gap_met() -> bool:  # one certificate over all ranks
        objective, gap, dual = _certificate(sigma, y, col, u, lam, n, group)
        return relative_gap(best_gap(gap, dual), objective) <= tol_gap

    iterations, converged, stepped, next_check = 0, False, False, next_chunk(check_every, 0)
    if tol_gap is not None:
        converged = gap_met()
    for it in range(1, max_iter + 1):
        if converged or stepped:
            break
        block, delta = em_step_(sigma, y, fairness_weights(col, cu))
        col = all_reduce(block, group)
        if group is not None:
            delta = float(all_reduce(torch.tensor([delta], dtype=torch.float64, device=y.device), group, "max"))
        iterations = it
        if tol_gap is None:
            converged = delta <= tol
        else:
            stepped = delta <= tol
            if it == next_check or stepped or it == max_iter:
                next_check = it + next_chunk(check_every, it)
                converged = gap_met()
    converged = bool(converged) and bool(torch.isfinite(col).all())
    if certificate:
        objective, gap, dual = _certificate(sigma, y, col, u, lam, n, group)
    else:
        objective = gap = dual = float("nan")
    return SolverResult(y, iterations, float(objective), float(gap), converged,
                        criterion_text(tol_gap, tol) + " over all ranks", float(dual))


__all__ = ["column_sums", "em_rce_block_", "em_rce_sharded", "em_step_", "fairness_weights"]
