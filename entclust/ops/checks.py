"""Input checks with messages that name the argument and what was received."""
from __future__ import annotations

import math

import torch
from torch._C._functorch import TransformType, get_interpreter_stack

from .build import check_device

# Default tolerance on |sum_k y_k - 1| per row, by dtype. They catch rows that were never
# normalised, not rounding: float64 accepts rows normalised in float32 and cast up (their sums
# are off by up to ~K eps_32 / 2 in the worst case, ~1e-7 typically), half precision its own rounding.
SUM_TOL = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def default_sum_tol(dtype: torch.dtype) -> float:
    return SUM_TOL.get(dtype, 1e-4)


def sum_tolerance(sum_tol, dtype: torch.dtype) -> float:
    """``sum_tol`` checked (a number >= 0, ``math.inf`` to accept unnormalised rows), or the default for ``dtype``."""
    if sum_tol is None:
        return default_sum_tol(dtype)
    if isinstance(sum_tol, bool) or not isinstance(sum_tol, (int, float)) or not sum_tol >= 0:
        raise ValueError(f"sum_tol must be a number >= 0 (math.inf accepts unnormalised rows), got {sum_tol!r}")
    return float(sum_tol)


def check_tensor(name: str, t, *, floating: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    check_device(name, t)


def check_reduction(reduction: str) -> None:
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def class_dim(name: str, t: torch.Tensor, dim: int) -> int:
    """Normalise ``dim`` and check that it indexes at least one class."""
    if t.dim() == 0:
        raise ValueError(f"{name} must have a class dimension, got a 0-d tensor")
    if not -t.dim() <= dim < t.dim():
        raise ValueError(f"dim={dim} is out of range for {name} of shape {tuple(t.shape)}")
    dim %= t.dim()
    if t.shape[dim] < 1:
        raise ValueError(f"{name} must have K >= 1 classes along dim={dim}, got shape {tuple(t.shape)}")
    return dim


def check_pair(op: str, logits, y) -> None:
    check_tensor("logits", logits)
    check_tensor("y", y)
    if y.dtype != logits.dtype:
        raise TypeError(f"{op}: y has dtype {y.dtype} but logits has dtype {logits.dtype}; cast one of them")
    if y.device != logits.device:
        raise ValueError(f"{op}: y is on {y.device} but logits is on {logits.device}")
    if y.shape != logits.shape:
        raise ValueError(f"{op}: y must have the shape of logits {tuple(logits.shape)}, got {tuple(y.shape)}")


def _first_row(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0, 0])


# Entries handled at once by the float64 passes over rows that run in PyTorch (here, in the
# certificate and in the sharded solver): torch's sum(dtype=float64) first makes a float64 copy
# of its whole input, which for a float32 (N, K) is twice the input's memory. On the CPU a block
# is a few MB of temporaries (1 MB of float64). On a GPU every block costs a few kernel launches
# (~5-10 us each) whatever its size: with the CPU's blocks a pass at N = 1e6, K = 1e4 would be
# 77 000 blocks, seconds of launch overhead for milliseconds of memory traffic (an estimate: no
# GPU has run this yet). There a block is 2^24 entries (128 MB of float64 temporaries at most).
CPU_BLOCK = 1 << 17
GPU_BLOCK = 1 << 24


def block_entries(device: torch.device) -> int:
    """Entries per block of the blocked float64 passes on ``device`` (see CPU_BLOCK, GPU_BLOCK)."""
    return CPU_BLOCK if torch.device(device).type == "cpu" else GPU_BLOCK


def block_rows(device: torch.device, row_entries: int) -> int:
    """Rows per block when a row holds ``row_entries`` entries: at least one."""
    return max(1, block_entries(device) // max(1, row_entries))


def row_sums64(p: torch.Tensor) -> torch.Tensor:
    """``p.sum(-1)`` in float64 for ``p`` (N, K), in blocks of rows: O(block) extra memory."""
    rows = block_rows(p.device, p.shape[-1])
    if p.shape[0] <= rows:
        return p.sum(-1, dtype=torch.float64)
    # into one preallocated output: block results kept alive between the blocks' float64
    # temporaries fragment the heap so that each temporary takes fresh pages (2x the input)
    out = torch.empty(p.shape[0], dtype=torch.float64, device=p.device)
    for i in range(0, p.shape[0], rows):
        torch.sum(p[i:i + rows], -1, dtype=torch.float64, out=out[i:i + rows])
    return out


def under_vmap() -> bool:
    """Whether a ``torch.func.vmap`` is active: a data-dependent check cannot run on its tensors.
    Never while compiling (Dynamo cannot trace the interpreter stack)."""
    if torch.compiler.is_compiling():
        return False
    stack = get_interpreter_stack()
    return bool(stack) and any(level.key() == TransformType.Vmap for level in stack)


class _RowCheck(torch.autograd.Function):
    """``check(rows)`` on the rows of a tensor, also under vmap: the vmap rule stacks the rows of
    every vmapped problem into one real tensor (level by level) and checks them all at once."""

    @staticmethod
    def forward(rows, check):
        check(rows)
        return rows.new_empty(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output)

    @staticmethod
    def backward(ctx, _):
        return None, None

    @staticmethod
    def vmap(info, in_dims, rows, check):
        if in_dims[0] is not None:
            rows = rows.movedim(in_dims[0], 0)
            rows = rows.flatten(0, 1) if rows.dim() > 2 else rows.reshape(-1)
        return _RowCheck.apply(rows, check), None


def check_rows(rows: torch.Tensor, check) -> None:
    """``check(rows)`` for ``rows`` ``(N, K)`` (or ``(N,)``), under vmap on the rows of all problems
    (row numbers in a message then count the problems' rows in order)."""
    if under_vmap():
        _RowCheck.apply(rows, check)
    else:
        check(rows)


def check_distributions(name: str, p: torch.Tensor, sum_tol: float | None = None, *, hint: bool = True) -> None:
    """``p``: (N, K) rows that must be finite, non-negative and sum to 1 within ``sum_tol``.

    Two reductions and an (N,) float64 temporary when the rows are fine (a NaN or Inf entry
    makes its row's sum non-finite); the precise diagnosis only runs when something is wrong.
    Under vmap it checks the rows of every problem (:func:`check_rows`)."""
    if under_vmap():
        check_rows(p, lambda rows: check_distributions(name, rows, sum_tol, hint=hint))
        return
    tol = sum_tolerance(sum_tol, p.dtype)
    if p.numel() == 0:
        return
    sums = row_sums64(p)
    off = (sums - 1).abs() > tol if math.isfinite(tol) else torch.zeros_like(sums, dtype=torch.bool)
    if bool(torch.isfinite(sums).all()) and not bool(off.any()) and not bool(p.amin() < 0):
        return
    bad = ~torch.isfinite(p)
    if bad.any():
        raise ValueError(f"{name} must be finite: {int(bad.sum())} NaN/Inf entries, first in row {_first_row(bad.any(1))}")
    if (p < 0).any():
        row = _first_row((p < 0).any(1))
        raise ValueError(f"{name} must be non-negative: row {row} has minimum {p[row].min().item():.6g}")
    if not bool(torch.isfinite(sums).all()):  # finite entries whose float64 sum overflows
        row = _first_row((~torch.isfinite(sums)).unsqueeze(1))
        raise ValueError(f"rows of {name} must sum to 1: row {row} overflows float64")
    row = _first_row(off.unsqueeze(1))
    advice = "normalise it, or pass sum_tol=math.inf to accept unnormalised rows" if hint else "normalise it"
    raise ValueError(f"rows of {name} must sum to 1 (tolerance {tol:g}): row {row} sums to {sums[row].item():.8g}; {advice}")


def check_loss_result(op: str, logits: torch.Tensor, y: torch.Tensor, stats: torch.Tensor, sum_tol: float) -> None:
    """One cheap check of the kernel's per-row verdicts (stats[2]); a precise diagnosis,
    with full passes over the inputs, only when some row was flagged."""
    if logits.shape[0] == 0 or not bool(stats[2].any()):
        return
    _diagnose(op, logits, y, sum_tol)


def _diagnose(op: str, logits: torch.Tensor, y: torch.Tensor, sum_tol: float) -> None:
    bad = torch.isnan(logits) | (logits == math.inf)
    if bad.any():
        raise ValueError(f"{op}: logits must not contain NaN or +inf: {int(bad.sum())} such entries, "
                         f"first in row {_first_row(bad.any(1))}")
    dead = (logits == -math.inf).all(1)
    if dead.any():
        raise ValueError(f"{op}: row {_first_row(dead.unsqueeze(1))} of logits is all -inf: softmax is undefined")
    check_distributions("y", y, sum_tol)
    sigma = torch.softmax(logits.double(), dim=1)
    if op == "reverse_cross_entropy":
        hole = (sigma > 0) & (y == 0)
        if hole.any():
            row = _first_row(hole.any(1))
            raise ValueError(
                f"{op}: y is 0 where softmax(logits) > 0 (row {row}, class {int(hole[row].nonzero()[0, 0])}), so "
                f"H(sigma, y) = +inf there. Smooth y, e.g. (1 - eps) * y + eps / K, or pass validate=False to get inf")
    else:
        no_overlap = (sigma * y.double()).sum(1) == 0
        if no_overlap.any():
            raise ValueError(
                f"{op}: sigma . y = 0 in row {_first_row(no_overlap.unsqueeze(1))} (y has no mass where "
                f"softmax(logits) > 0), so -ln(sigma . y) = +inf; pass validate=False to get inf")
    # The kernel flagged a row that the float64 checks above accept (a row sum at the edge of
    # sum_tol, say): still an error, not a silent pass.
    raise ValueError(f"{op}: the kernel flagged invalid input (non-finite loss or y off the simplex beyond "
                     f"sum_tol={sum_tol:g}); check logits and y, or pass validate=False")


def prior_vector(prior, k: int | None, like: torch.Tensor) -> torch.Tensor:
    """The prior u as a (K,) tensor of ``like``'s dtype and device; uniform when None (then ``k``
    is required; ``k=None`` takes K from the prior itself).

    Checked at the precision it came in (a Python list or float64 array at float64's
    tolerance, a float32 array or tensor at float32's), then normalised in float64, so that
    ``[0.2] * 5`` and ``np.full(5, 0.2, np.float32)`` are priors, not errors."""
    if prior is None:
        if k is None:
            raise ValueError("prior_vector: K is needed for a uniform prior")
        return torch.full((k,), 1.0 / k, dtype=like.dtype, device=like.device)
    if isinstance(prior, torch.Tensor):
        source = prior.detach()
    else:
        try:
            source = torch.as_tensor(prior)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"prior must be a (K,) sequence of numbers or a tensor, got {type(prior).__name__}: {err}") from None
        if source.dtype == torch.float32 and not _is_float32_array(prior):  # a Python list of floats
            source = torch.as_tensor(prior, dtype=torch.float64)
    if source.is_complex() or source.dtype == torch.bool:
        raise TypeError(f"prior must be real numbers, got dtype {source.dtype}")
    if k is None and source.dim() == 1 and source.shape[0] >= 1:
        k = source.shape[0]
    if tuple(source.shape) != (k,):
        raise ValueError(f"prior must have shape ({'K' if k is None else k},), got {tuple(source.shape)}")
    tol = default_sum_tol(source.dtype if source.is_floating_point() else torch.float64)
    u = source.to(device=like.device, dtype=torch.float64)
    if not torch.compiler.is_compiling():  # traced: a module's prior was checked when it was built
        check_distributions("prior", u.unsqueeze(0), tol, hint=False)
    return (u / u.sum()).to(like.dtype)


def _is_float32_array(obj) -> bool:
    dtype = getattr(obj, "dtype", None)
    return dtype is not None and str(dtype) in ("float32", "torch.float32")
