"""Losses of discriminative entropy clustering (formulas: docs/maths.md).

``reverse_cross_entropy`` and ``collision_cross_entropy`` run fused C++/CUDA kernels straight
from logits; the others are compositions of PyTorch ops.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from typing import NamedTuple

from . import ops
from .ops.loss_autograd import FusedLoss, derivative_flags, under_transform
from .ops.checks import (
    check_distributions,
    check_loss_result,
    check_pair,
    check_reduction,
    check_rows,
    check_tensor,
    class_dim,
    prior_vector,
    sum_tolerance,
)


def _autocast(logits: torch.Tensor, y: torch.Tensor):
    """Under autocast both inputs in float32, as autocast does for ``F.cross_entropy`` (a loss
    is a reduction: float32 or wider); elsewhere unchanged."""
    if not isinstance(logits, torch.Tensor):
        return logits, y
    kind = logits.device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        cast = lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16) else t  # noqa: E731
        return cast(logits), cast(y)
    return logits, y


def check_label_smoothing(name: str, label_smoothing) -> float:
    """``label_smoothing`` as a float, or ``ValueError`` naming ``name`` unless it is a number in
    [0, 1] (a bool is not one)."""
    if not (isinstance(label_smoothing, (int, float)) and not isinstance(label_smoothing, bool)
            and 0.0 <= label_smoothing <= 1.0):
        raise ValueError(f"{name}: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    return float(label_smoothing)


def class_targets(name: str, logits: torch.Tensor, y, dim: int, label_smoothing: float):
    """``y`` as rows on the simplex: integer class indices (as ``F.cross_entropy`` takes them,
    the shape of ``logits`` without ``dim``) become one-hot rows of logits' dtype, smoothed
    towards uniform by ``label_smoothing``; probability rows pass through unchanged."""
    check_label_smoothing(name, label_smoothing)
    if isinstance(y, torch.Tensor) and y.dtype == torch.bool:
        raise ValueError(f"{name}: y is a bool tensor; pass probability rows (floating, logits' dtype) or "
                         f"integer class indices")
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex():
        if label_smoothing:
            raise ValueError(f"{name}: label_smoothing smooths class-index targets; y holds probabilities "
                             f"({getattr(y, 'dtype', type(y).__name__)})")
        return y
    check_tensor("logits", logits)
    d = class_dim("logits", logits, dim)
    k = logits.shape[d]
    expected = logits.shape[:d] + logits.shape[d + 1:]
    if y.shape != expected:
        raise ValueError(f"{name}: class-index targets must have the shape of logits without dim {d}, "
                         f"{tuple(expected)}, got {tuple(y.shape)}")
    if y.device != logits.device:
        raise ValueError(f"{name}: y is on {y.device}, logits on {logits.device}")

    def in_range(indices):
        if indices.numel() and bool(((indices < 0) | (indices >= k)).any()):
            raise ValueError(f"{name}: class indices must lie in 0 .. {k - 1}, got values in "
                             f"[{int(indices.min())}, {int(indices.max())}]")

    if not torch.compiler.is_compiling():  # data-dependent: eager only, as the losses' validation
        check_rows(y.reshape(-1), in_range)
    rows = (y.unsqueeze(-1) == torch.arange(k, device=y.device)).to(logits.dtype)  # one-hot, also under vmap
    if label_smoothing:
        rows = rows * (1.0 - label_smoothing) + label_smoothing / k
    return rows.movedim(-1, d)


def _fused(op_name: str, logits, y, reduction: str, dim: int, validate: bool, sum_tol):
    if sum_tol is None and isinstance(y, torch.Tensor):  # the tolerance of the dtype y came in
        sum_tol = sum_tolerance(None, y.dtype)
    logits, y = _autocast(logits, y)
    check_pair(op_name, logits, y)
    check_reduction(reduction)
    dim = class_dim("logits", logits, dim)
    if logits.dim() == 2 and dim == 1:  # the common (N, K) case: no views to build
        logits2, y2, batch_shape = logits, y, logits.shape[:1]
    else:
        k = logits.shape[dim]
        batch_shape = logits.movedim(dim, -1).shape[:-1]
        logits2 = logits.movedim(dim, -1).reshape(-1, k)
        y2 = y.movedim(dim, -1).reshape(-1, k)
    tol = sum_tolerance(sum_tol, y.dtype)
    transform, want_logits, want_y = derivative_flags(logits, y)
    flags = (ops.REDUCTIONS[reduction], want_logits, want_y, tol)
    if transform:  # torch.func: the op as a Function, validated inside (so under vmap)
        loss = FusedLoss.apply(logits2, y2, op_name, *flags, validate)[0]
    else:
        loss, stats, _, _ = getattr(ops, f"{op_name}_kernel")(logits2, y2, *flags)
        if validate and not torch.compiler.is_compiling():
            check_loss_result(op_name, logits2.detach(), y2.detach(), stats, tol)
    return loss.reshape(batch_shape) if reduction == "none" and loss.shape != batch_shape else loss


def reverse_cross_entropy(
    logits: torch.Tensor,
    y: torch.Tensor,
    *,
    reduction: str = "mean",
    dim: int = -1,
    weight: torch.Tensor | None = None,
    validate: bool = True,
    sum_tol: float | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Reverse cross-entropy ``H(sigma, y) = -sum_k sigma_k ln y_k`` with ``sigma = softmax(logits)``.

    Args:
        logits: ``(..., K, ...)`` raw scores, classes along ``dim``; finite or ``-inf`` (masked).
        y: pseudo-labels, same shape, dtype and device; rows on the probability simplex. Or
            integer class indices, the shape of ``logits`` without ``dim``, as
            ``F.cross_entropy`` takes them: then ``label_smoothing > 0`` is needed (the
            reverse CE to a hard label is ``+inf``: ``ln 0`` wherever ``sigma_k > 0``), and
            ``y`` is ``(1 - label_smoothing) onehot + label_smoothing / K``.
        reduction: ``"mean"`` over rows (default), ``"sum"``, or ``"none"`` (shape of logits
            without ``dim``). The mean over zero rows is NaN, as in ``torch.nn.functional.cross_entropy``.
        weight: optional ``(K,)`` non-negative class weights: ``-sum_k w_k sigma_k ln y_k``.
        validate: check inputs (one host sync, no extra pass over memory: the kernel returns
            row sums and minima of ``y``). Skipped inside ``torch.compile``.
        sum_tol: tolerance on ``|sum_k y_k - 1|`` per row; default 1e-8 (float64), 1e-4
            (float32), 1e-2 (float16/bfloat16); ``math.inf`` accepts unnormalised ``y``.

    Returns the loss; differentiable in ``logits`` and ``y`` (the fused first derivatives). Works
    under ``torch.func`` (``grad``, ``vmap``, ``jacrev``, ``jacfwd``, ``hessian``; ``vmap`` runs all
    its problems in one kernel call), where second derivatives work too; plain
    ``create_graph=True`` raises (the graph keeps the gradient, not the logits).
    Gradients: ``d/dl_j = sigma_j (-ln y_j - H)``, ``d/dy_k = -sigma_k / y_k``.

    Zeros in ``y``: a class with ``sigma_k = 0`` (its softmax underflows, or its logit is
    ``-inf``) contributes 0 to the value and to both gradients, whatever ``y_k`` is.
    A class with ``sigma_k > 0`` and ``y_k = 0`` makes the row's loss ``+inf`` (its true value):
    with ``validate=True`` that raises ``ValueError``; with ``validate=False`` the loss is
    ``inf`` and that row's gradients are not finite.
    """
    hard = isinstance(y, torch.Tensor) and not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool)
    if hard and label_smoothing == 0:
        raise ValueError("reverse_cross_entropy: the reverse cross-entropy to a hard label is +inf (ln 0 wherever "
                         "sigma_k > 0); class-index targets need label_smoothing > 0, e.g. 0.1")
    y = class_targets("reverse_cross_entropy", logits, y, dim, label_smoothing)
    if weight is None:
        return _fused("reverse_cross_entropy", logits, y, reduction, dim, validate, sum_tol)
    # -sum_k w_k sigma_k ln y_k = H(sigma, y ** w): same kernel on the (unnormalised) powers.
    if sum_tol is None and isinstance(y, torch.Tensor):
        sum_tol = sum_tolerance(None, y.dtype)
    logits, y = _autocast(logits, y)
    check_pair("reverse_cross_entropy", logits, y)
    check_tensor("weight", weight)
    d = class_dim("logits", logits, dim)
    if weight.shape != (logits.shape[d],):
        raise ValueError(f"weight must have shape ({logits.shape[d]},), got {tuple(weight.shape)}")
    if validate and not torch.compiler.is_compiling():  # data-dependent checks: eager only
        if not bool(torch.isfinite(weight).all() & (weight >= 0).all()):
            raise ValueError("weight must be finite and non-negative")
        check_distributions("y", y.detach().movedim(d, -1).reshape(-1, logits.shape[d]), sum_tol)
    shape = [1] * logits.dim()
    shape[d] = -1
    powered = y ** weight.to(y.dtype).reshape(shape)
    return _fused("reverse_cross_entropy", logits, powered, reduction, d, validate, math.inf)


def collision_cross_entropy(
    logits: torch.Tensor,
    y: torch.Tensor,
    *,
    reduction: str = "mean",
    dim: int = -1,
    validate: bool = True,
    sum_tol: float | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Collision cross-entropy ``H2(y, sigma) = -ln sum_k sigma_k y_k``, ``sigma = softmax(logits)``.

    Computed in the log domain: when ``sigma . y`` underflows the row is recomputed as
    ``logsumexp(logits) - logsumexp(logits + ln y)`` in float64. Arguments as in
    :func:`reverse_cross_entropy`. Gradients: ``d/dl_j = sigma_j (1 - y_j / p)``,
    ``d/dy_k = -sigma_k / p`` with ``p = sigma . y``; a uniform ``y`` has zero gradient in the logits.

    Zeros in ``y``: a class with ``sigma_k = 0`` (its softmax underflows, or its logit is
    ``-inf``) contributes 0 to the value and to both gradients, whatever ``y_k`` is.
    Zeros in ``y`` are otherwise harmless; only ``sigma . y = 0`` (no overlap) gives ``+inf``,
    which raises with ``validate=True``. Integer class indices as ``y`` (``F.cross_entropy``'s
    targets, with its ``label_smoothing``) are one-hot rows: with no smoothing the loss is then
    ``-ln sigma_target``, the forward cross-entropy.
    """
    y = class_targets("collision_cross_entropy", logits, y, dim, label_smoothing)
    return _fused("collision_cross_entropy", logits, y, reduction, dim, validate, sum_tol)


def _rows(name: str, p: torch.Tensor, dim: int) -> torch.Tensor:
    check_tensor(name, p)
    dim = class_dim(name, p, dim)
    return p.movedim(dim, -1).reshape(-1, p.shape[dim])


def _problems(name: str, p: torch.Tensor, dim: int, batched: bool) -> torch.Tensor:
    """``p`` as ``(..., N, K)``: with ``batched`` the class dim moved last (every leading dim a
    problem), else all rows as one problem ``(N, K)``."""
    if not batched:
        return _rows(name, p, dim)
    check_tensor(name, p)
    dim = class_dim(name, p, dim)
    if p.dim() < 3:
        raise ValueError(f"batched=True needs {name} of shape (B, ..., N, K) (problems of N rows), got "
                         f"{tuple(p.shape)}")
    return p.movedim(dim, -1)


def _mean_and_prior(p: torch.Tensor, prior, dim: int, validate: bool, batched: bool = False):
    """``p_bar``, the mean of the distributions ``p`` over every dim but ``dim`` (``batched``: over
    each problem's N rows, ``(..., K)``), and the prior, both in float32 at least: a bfloat16 mean
    of N rows has ~1e-2 relative error, which KL(u || p_bar) at lam = 100 turns into a visible loss
    (0.0117 instead of 0.0002)."""
    rows = _problems("p", p, dim, batched)
    if validate:
        check_distributions("p", rows.detach().reshape(-1, rows.shape[-1]))
    wide = torch.promote_types(rows.dtype, torch.float32)
    p_bar = rows.mean(-2, dtype=wide)
    return p_bar, prior_vector(prior, rows.shape[-1], p_bar)


def strong_fairness(p: torch.Tensor, prior=None, *, dim: int = -1, validate: bool = True,
                    batched: bool = False) -> torch.Tensor:
    """``KL(u || p_bar)`` with ``p_bar`` the mean of the distributions ``p`` over every dim but ``dim``.

    Zero prior entries contribute 0; a class with ``u_k > 0`` and ``p_bar_k = 0`` gives ``+inf``.
    ``batched=True``: ``p`` is ``Tensor[B, ..., N, K]``, problems of N rows, each with its own
    mean; returns ``Tensor[B, ...]`` (the same as the unbatched value of each problem).
    """
    p_bar, u = _mean_and_prior(p, prior, dim, validate, batched)
    return (torch.special.xlogy(u, u) - torch.special.xlogy(u, p_bar)).sum(-1)


def prediction_fairness(logits: torch.Tensor, prior=None, *, dim: int = -1, batched: bool = False) -> torch.Tensor:
    """``KL(u || sigma_bar)`` straight from logits: strong fairness of the network's mean
    prediction ``sigma_bar`` (the mean of ``softmax(logits)`` over every dim but ``dim``).

    ``ln sigma_bar`` is a log-sum-exp of the log-probabilities, in float32 at least, so a class
    whose mean prediction underflows still has a finite value and gradient; the gradient in a
    class's logits is ``u_k sigma_ik / (N sigma_bar_k)``-scaled and does not fade as the class
    empties. :class:`SelfLabeling` adds it with weight ``prediction_fairness``. ``batched``: as
    in :func:`strong_fairness`. On the CPU (float32 and float64; half types computed in float32)
    a kernel forms the value and its gradient in one call (``benchmarks/bench_prediction_fairness.py``);
    elsewhere, and under torch.func transforms, the same formula in PyTorch ops.
    """
    rows = _problems("logits", logits, dim, batched)
    wide = torch.promote_types(rows.dtype, torch.float32)
    if rows.device.type == "cpu" and wide in (torch.float32, torch.float64) and not under_transform(rows):
        # the CPU kernel (value and gradient in one call, csrc/cpu/fairness.cpp): PyTorch's
        # reductions along a short last dim took ~0.7 ms of a linear head's ~4.5 ms SGD step
        problems = rows.to(wide).reshape(-1, *rows.shape[-2:])
        u = prior_vector(prior, rows.shape[-1], torch.zeros((), dtype=torch.float64))
        want = torch.is_grad_enabled() and problems.requires_grad
        return ops.prediction_fairness_kernel(problems, u, want)[0].reshape(rows.shape[:-2])
    log_sigma = torch.log_softmax(rows.to(wide), dim=-1)
    log_bar = torch.logsumexp(log_sigma, dim=-2) - math.log(rows.shape[-2])
    u = prior_vector(prior, rows.shape[-1], log_bar.detach())
    # zero prior entries contribute 0 (not 0 * -inf)
    return (torch.special.xlogy(u, u) - torch.where(u > 0, u * log_bar, 0.0)).sum(-1)


def weak_fairness(p: torch.Tensor, prior=None, *, dim: int = -1, validate: bool = True,
                  batched: bool = False, log_input: bool = False) -> torch.Tensor:
    """``KL(p_bar || u)`` (prior work's fairness term), ``p_bar`` and ``batched`` as in :func:`strong_fairness`.

    ``log_input=True``: ``p`` holds log-probabilities (``log_softmax`` of logits) and ``ln p_bar``
    is a log-sum-exp of them, so a class whose mean probability underflows keeps a gradient.
    """
    if not log_input:
        p_bar, u = _mean_and_prior(p, prior, dim, validate, batched)
        return (torch.special.xlogy(p_bar, p_bar) - torch.special.xlogy(p_bar, u)).sum(-1)
    rows = _problems("p", p, dim, batched)
    if validate:
        check_distributions("p", rows.detach().reshape(-1, rows.shape[-1]).exp())
    rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
    log_bar = torch.logsumexp(rows, -2) - math.log(rows.shape[-2])
    u = prior_vector(prior, rows.shape[-1], log_bar)
    # 0 ln 0 = 0 for a class no row predicts, with a finite gradient (masked before the product)
    return (log_bar.exp() * torch.where(log_bar > -math.inf, log_bar - u.log(), 0.0)).sum(-1)


def shannon_entropy(p: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """``H(p) = -sum_k p_k ln p_k`` along ``dim`` (``0 ln 0 = 0``)."""
    check_tensor("p", p)
    return -torch.special.xlogy(p, p).sum(dim)


def mi_loss(logits: torch.Tensor, *, dim: int = -1) -> torch.Tensor:
    """Bridle's mutual-information loss ``mean_i H(sigma_i) - H(sigma_bar)`` (minimised; <= 0)."""
    rows = _rows("logits", logits, dim)
    log_sigma = torch.log_softmax(rows, dim=1)
    sigma = log_sigma.exp()
    # 0 ln 0 = 0 where a logit is -inf (masked classes), with finite gradients: the log is
    # replaced by 0 there before the product, not after it (0 * -inf would be NaN)
    decisiveness = -(sigma * torch.where(sigma > 0, log_sigma, 0.0)).sum(1).mean()
    sigma_bar = sigma.mean(0)
    log_bar = torch.log(torch.where(sigma_bar > 0, sigma_bar, 1.0))
    return decisiveness + (sigma_bar * log_bar).sum()


def renyi_entropy(p: torch.Tensor, alpha: float, *, dim: int = -1, log_input: bool = False) -> torch.Tensor:
    """Rényi entropy ``R_alpha(p) = ln(sum_k p_k^alpha) / (1 - alpha)`` along ``dim``.

    The limits are exact: ``alpha = 1`` Shannon, ``alpha = inf`` ``-ln max_k p_k``,
    ``alpha = 0`` ``ln |supp p|``. ``alpha`` must be >= 0. ``log_input=True``: ``p`` holds
    log-probabilities, and the entropy is ``logsumexp(alpha ln p) / (1 - alpha)`` (no underflow
    of ``p^alpha``: Rényi decisiveness of a network's predictions, Zhang et al. 2023, eq. 48).
    """
    check_tensor("p", p)
    alpha = float(alpha)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if log_input:
        if alpha == 1.0:
            return -(p.exp() * torch.where(p > -math.inf, p, 0.0)).sum(dim)
        if alpha == math.inf:
            return -p.amax(dim)
        if alpha == 0.0:
            return torch.log((p > -math.inf).sum(dim).to(p.dtype))
        return torch.logsumexp(alpha * p, dim) / (1.0 - alpha)
    if alpha == 1.0:
        return shannon_entropy(p, dim=dim)
    if alpha == math.inf:
        return -torch.log(p.amax(dim))
    if alpha == 0.0:
        return torch.log((p > 0).sum(dim).to(p.dtype))
    tiny = torch.finfo(p.dtype).tiny
    # alpha ln p with zeros masked (not -inf * 0) so that gradients stay finite.
    scaled = torch.where(p > 0, alpha * torch.log(p.clamp_min(tiny)), -math.inf)
    return torch.logsumexp(scaled, dim) / (1.0 - alpha)


class LinearSelfLabelingOutput(NamedTuple):
    """What :func:`linear_self_labeling` returns: the loss (differentiable), each row's label
    ``argmax_k y_ik`` (``(B,)`` int64) and the column sums of the batch's pseudo-labels
    (``(K,)`` float64, for the global column memory)."""

    loss: torch.Tensor
    labels: torch.Tensor
    columns: torch.Tensor


def linear_self_labeling(x: torch.Tensor, weight: torch.Tensor, bias, fairness: torch.Tensor, *, iterations: int = 10,
                         reduction: str = "mean", block_rows: int | None = None) -> LinearSelfLabelingOutput:
    """The self-labeling step of a linear head, fused: logits ``x weight^T + bias``, their
    softmax sigma, the pseudo-labels y (``iterations`` reverse-CE M-steps from ``y = sigma``
    against the fixed fairness weights ``fairness_k = c u_k / col_k`` of the global column sums;
    docs/maths.md, "RCE problem"), and the loss ``H(sigma_i, y_i)`` with y held fixed, reduced by
    ``"mean"`` or ``"sum"``.

    The ``(B, K)`` logits are never materialised: they exist ``block_rows`` rows at a time
    (default: about 2^25 entries per block, 335 rows at K = 10^5), and the gradients to ``x``, ``weight`` and
    ``bias`` are formed in the same pass (backward is a multiplication by the upstream
    gradient), as Liger-Kernel's fused linear cross-entropy does for vocabularies. Memory:
    two blocks of ``block_rows x K`` plus the gradients' own size, whatever B.

    ``fairness`` is float64 ``(K,)``, finite and ``>= 0``; :meth:`ColumnMemory.weights` gives it
    from a column memory, and :class:`entclust.nn.LinearSelfLabeling` wires the two together.
    float16/bfloat16 inputs (and autocast) compute in float32. First derivatives only.

    Example::

        memory = entclust.ColumnMemory(n_clusters=K, n_points=len(dataset), lam=100.0)
        out = entclust.linear_self_labeling(x, head.weight, head.bias, memory.weights())
        out.loss.backward()
        memory.add_columns(out.columns, x.shape[0])
    """
    check_tensor("x", x)
    check_tensor("weight", weight)
    if bias is not None:
        check_tensor("bias", bias)
    check_tensor("fairness", fairness)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum' (the gradients are formed in the forward pass), "
                         f"got {reduction!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1):
        raise ValueError(f"block_rows must be None or an int >= 1, got {block_rows!r}")
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (B, D) with B >= 1, got {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[1] != x.shape[1] or weight.shape[0] < 1:
        raise ValueError(f"weight must have shape (K, {x.shape[1]}) with K >= 1, got {tuple(weight.shape)}")
    k = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"bias must have shape ({k},), got {tuple(bias.shape)}")
    if tuple(fairness.shape) != (k,):
        raise ValueError(f"fairness must have shape ({k},), got {tuple(fairness.shape)}")
    for name, t in (("weight", weight), ("bias", bias), ("fairness", fairness)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if under_transform(x, weight, *(() if bias is None else (bias,))):
        raise NotImplementedError("linear_self_labeling does not run under torch.func transforms or forward-mode AD "
                                  "(its pseudo-labels couple the rows of the batch, and it has first derivatives only); "
                                  "reverse_cross_entropy of the logits and labels does")
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        if not (x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)):
            raise TypeError(f"x, weight and bias must have one dtype, got {x.dtype}, {weight.dtype}"
                            f"{'' if bias is None else ', ' + str(bias.dtype)}")
        compute = torch.float32
    if not torch.compiler.is_compiling():
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf")
        if not bool(((fairness >= 0) & torch.isfinite(fairness)).all()):
            raise ValueError("fairness must be finite and >= 0 (c u_k / col_k of the column sums)")
    cast = lambda t: None if t is None else (t if t.dtype == compute else t.to(compute))  # noqa: E731
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    loss, labels, columns, *_ = ops.linear_rce_kernel(cast(x), cast(weight), cast(bias), fairness.to(torch.float64),
                                               iterations, ops.REDUCTIONS[reduction], grad, block_rows or 0)
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(loss)):
        raise ValueError("linear_self_labeling: the loss is not finite: weight or bias holds NaN/Inf, or the logits "
                         "overflow (the head diverged?)")
    return LinearSelfLabelingOutput(loss, labels, columns)


def margin_penalty(head) -> torch.Tensor:
    """``||v||^2`` of a linear head (an ``nn.Linear`` or its weight tensor); the bias is excluded."""
    if isinstance(head, nn.Linear):
        return head.weight.pow(2).sum()
    if isinstance(head, torch.Tensor):
        return head.pow(2).sum()
    raise TypeError(f"head must be an nn.Linear or a weight tensor, got {type(head).__name__}")
