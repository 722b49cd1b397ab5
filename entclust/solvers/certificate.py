"""The certificate of a pseudo-label solve: the objective and the Frank-Wolfe gap (docs/maths.md),
in float64 whatever the dtype of the solve, evaluated over blocks of rows so that it needs
O(block) memory on top of the inputs rather than several float64 copies of them.

Problems in mean form: ``f(y) = (1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar)``, with
``CE = H(sigma, y)`` (``"rce"``) or ``-ln(sigma . y)`` (``"cce"``). Gradient
``g_ik = dCE/dy_ik / N - lam u_k / (N y_bar_k)``; gap ``sum_i (y_i . g_i - min_k g_ik)``: >= 0,
0 exactly at the optimum, and >= f(y) - f*."""
from __future__ import annotations

import torch

from .. import ops
from ..ops.checks import block_rows, check_tensor
from ._problem import check_number, prepare
from .result import SolverResult

PROBLEMS = ("rce", "cce")


def certify(problem: str, sigma3: torch.Tensor, y3: torch.Tensor, u: torch.Tensor, lam: float):
    """``(objective, fw_gap)``, each ``(B,)`` float64, of ``y3`` for the problems ``sigma3`` ``(B, N, K)``:
    the fused CPU kernel (two passes, no N x K temporary), the blocked PyTorch version elsewhere."""
    if sigma3.device.type == "cpu" and sigma3.dtype == y3.dtype and sigma3.dtype in (torch.float32, torch.float64):
        return ops.certificate_kernel(sigma3, y3, u, float(lam), PROBLEMS.index(problem))
    return _certify_blocks(problem, sigma3, y3, u, lam)


def _certify_blocks(problem: str, sigma3: torch.Tensor, y3: torch.Tensor, u: torch.Tensor, lam: float):
    """:func:`certify` in float64 PyTorch over blocks of rows (any device)."""
    b, n, k = sigma3.shape
    u64 = u.to(torch.float64)
    rows = block_rows(sigma3.device, b * k)  # (B, rows, K) entries at once (ops.checks.block_entries)
    # (B, K) column means, block by block: sum(dtype=float64) of all of y would copy it to float64
    y_bar = sum(y3[:, i:i + rows].sum(-2, dtype=torch.float64) for i in range(0, n, rows)) / n
    ce = torch.zeros(b, dtype=torch.float64, device=sigma3.device)
    gap = torch.zeros_like(ce)
    if lam != 0:
        active = u64 > 0
        fair_grad = torch.where(active, -lam * u64 / (n * y_bar), 0.0).unsqueeze(1)  # (B, 1, K)
        fairness = torch.where(active, u64 * torch.log(u64 / y_bar), 0.0).sum(-1)
    for start in range(0, n, rows):
        s = sigma3[:, start:start + rows].to(torch.float64)
        y = y3[:, start:start + rows].to(torch.float64)
        if problem == "rce":
            positive = s > 0
            ce += torch.where(positive, -s * torch.log(y), 0.0).sum((-2, -1))
            g = torch.where(positive, -s / (n * y), 0.0)
        else:
            p = (s * y).sum(-1, keepdim=True)
            ce -= torch.log(p).sum((-2, -1))
            g = -s / (n * p)
        if lam != 0:
            g += fair_grad
        inner = torch.where(y > 0, y * g, 0.0).sum(-1)
        gap += (inner - g.amin(-1)).sum(-1)
    objective = ce / n + lam * fairness if lam != 0 else ce / n
    return objective, gap


def result(problem: str, sigma3, y, u, lam, iterations, converged, criterion: str, certificate: bool) -> SolverResult:
    """A batched :class:`SolverResult`; objective and gap NaN when ``certificate`` is False."""
    if certificate:
        objective, gap = certify(problem, sigma3, y, u, lam)
    else:
        objective = gap = torch.full(y.shape[:1], float("nan"), dtype=torch.float64, device=y.device)
    return SolverResult(y, iterations, objective, gap, converged, criterion)


def _pair(name: str, sigma, y, prior, lam, problem: str):
    if problem not in PROBLEMS:
        raise ValueError(f"{name}: problem must be 'rce' or 'cce', got {problem!r}")
    check_tensor("y", y)
    lam = check_number(name, "lam", lam)
    sigma3, u, _, y3, batched = prepare(name, sigma, prior, lam, None, 0, y, True, y_name="y")
    return sigma3, y3, u, lam, batched


def objective(sigma: torch.Tensor, y: torch.Tensor, prior=None, lam: float = 100.0, *, problem: str = "rce"):
    """Value of the pseudo-label problem at ``y``: ``(1/N) sum_i H(sigma_i, y_i) + lam KL(u || y_bar)``
    (``problem="rce"``) or ``-(1/N) sum_i ln(sigma_i . y_i) + lam KL(u || y_bar)`` (``"cce"``);
    a scalar, or ``(B,)`` for batched ``(B, N, K)`` inputs. Computed in float64."""
    sigma3, y3, u, lam, batched = _pair("objective", sigma, y, prior, lam, problem)
    out = certify(problem, sigma3, y3, u, lam)[0]
    return out if batched else out[0]


def fw_gap(sigma: torch.Tensor, y: torch.Tensor, prior=None, lam: float = 100.0, *, problem: str = "rce"):
    """Frank-Wolfe gap ``sum_i (sum_k y_ik g_ik - min_k g_ik)`` of the problem at ``y`` (docs/maths.md):
    >= 0, 0 exactly at the optimum, an upper bound on ``objective(y) - min``; needs no knowledge
    of the solver and holds on the simplex boundary. Computed in float64."""
    sigma3, y3, u, lam, batched = _pair("fw_gap", sigma, y, prior, lam, problem)
    out = certify(problem, sigma3, y3, u, lam)[1]
    return out if batched else out[0]
