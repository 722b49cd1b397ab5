"""Pure-PyTorch versions of every compiled op: the ground truth the kernels are tested against,
and the baseline the benchmarks compare with. Plain compositions; no care for speed.

The composite losses of :mod:`entclust.losses` (fairness, MI, Rényi, margin) are themselves
PyTorch compositions and have no separate reference.
"""
from __future__ import annotations

import torch


def _reduce(rows: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return rows
    return rows.mean() if reduction == "mean" else rows.sum()


def reverse_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean", dim: int = -1) -> torch.Tensor:
    """``-sum_k softmax(logits)_k ln y_k``, terms with ``sigma_k = 0`` counted as 0."""
    sigma = torch.softmax(logits, dim)
    terms = -sigma * torch.log(y)
    rows = torch.where(sigma > 0, terms, torch.zeros_like(terms)).sum(dim)
    return _reduce(rows, reduction)


def collision_cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean", dim: int = -1) -> torch.Tensor:
    """``-ln sum_k softmax(logits)_k y_k = logsumexp(l) - logsumexp(l + ln y)``."""
    rows = torch.logsumexp(logits, dim) - torch.logsumexp(logits + torch.log(y), dim)
    return _reduce(rows, reduction)
