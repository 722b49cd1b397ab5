"""``LinearSelfLabeling``: a linear head and its self-labeling step fused, for large K."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..losses import LinearSelfLabelingOutput, linear_self_labeling
from ..ops import argmax_rows
from .memory import ColumnMemory


class LinearSelfLabeling(nn.Module):
    """A linear head ``K x D`` (+ bias) and the reverse-CE self-labeling step of the papers'
    objective on it, in one fused op (:func:`entclust.linear_self_labeling`) whose memory does not
    grow like ``B x K``: the drop-in replacement for ``nn.Linear`` + :class:`SelfLabeling` when K
    is large (10^4 to 10^5 clusters).

    ``forward(x)`` returns ``(loss, labels, columns)``: the loss ``mean_i H(sigma_i, y_i)``, with
    y the batch's pseudo-labels solved (``iterations`` M-steps from ``y = sigma``) against the
    fairness weights of the global column sums held in :attr:`memory` (a
    :class:`ColumnMemory` over ``n_points`` points: ``lam KL(u || y_bar)`` over the whole
    dataset, not the batch); ``labels`` = ``argmax_k y_ik``. In training mode the memory then
    takes the batch's column sums (``columns <- columns (1 - b/N) + sum_i y_i``); in eval mode
    it is left unchanged. Add the margin ``gamma ||v||^2`` yourself
    (:func:`entclust.margin_penalty` of :attr:`weight`).

    The rows are solved against the column sums as they stand before the batch (the batch's old
    share included), where :meth:`ColumnMemory.update` also lets the batch's new rows move the
    sums between its EM steps; at ``b << N`` the two agree to ``O(b / N)``.

    ``iterations`` defaults to 10, not :class:`ColumnMemory`'s 3: in the fused kernel an M-step
    costs two multiply-adds per entry, and with 3 a class the head has stopped predicting stays
    empty (``y_k = sigma_k P(a_k)`` stays near 0 where ``sigma_k`` is, unless the polynomial in its
    fairness weight grows enough; 4 clusters in 2-d from a random head: 75 % or 50 % ACC with
    3, 100 % with 10, ``tests/test_linear_self_labeling.py``).

    Initialisation as the papers' (docs/maths.md, "Models and training"): Kaiming-uniform weight (as
    ``nn.Linear``), zero bias.

    Example::

        head = entclust.nn.LinearSelfLabeling(256, n_clusters=100_000, n_points=len(dataset), lam=100.0)
        for x in loader:
            loss, labels, _ = head(features(x))
            (loss + gamma * head.weight.square().sum()).backward()
            optimizer.step(); optimizer.zero_grad()
    """

    def __init__(self, in_features: int, n_clusters: int, n_points: int, lam: float = 100.0, *, prior=None,
                 iterations: int = 10, bias: bool = True, block_rows: int | None = None, group=None, device=None,
                 dtype=None):
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be an int >= 1, got {in_features!r}")
        self.memory = ColumnMemory(n_clusters, n_points, lam, prior=prior, iterations=iterations, group=group)
        self.in_features, self.n_clusters, self.block_rows = in_features, n_clusters, block_rows
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(n_clusters, in_features, **factory))
        self.bias = nn.Parameter(torch.zeros(n_clusters, **factory)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if device is not None:
            self.memory.to(device)

    def forward(self, x: torch.Tensor) -> LinearSelfLabelingOutput:
        out = linear_self_labeling(x, self.weight, self.bias, self.memory.weights(), iterations=self.memory.iterations,
                                   block_rows=self.block_rows)
        if self.training:
            self.memory.add_columns(out.columns, x.shape[0])
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor, block_rows: int = 1024) -> torch.Tensor:
        """``argmax_k`` of the logits (the head's own clusters, no pseudo-labels), ``block_rows``
        rows of logits at a time."""
        labels = [argmax_rows(torch.nn.functional.linear(x[i:i + block_rows], self.weight, self.bias))
                  for i in range(0, x.shape[0], block_rows)]
        return torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64, device=x.device)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, n_clusters={self.n_clusters}, bias={self.bias is not None}, "
                f"block_rows={self.block_rows}")


__all__ = ["LinearSelfLabeling"]
