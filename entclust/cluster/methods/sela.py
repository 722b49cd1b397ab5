"""SeLa (Asano et al. 2020): hard pseudo-labels with exactly balanced clusters from
Sinkhorn-Knopp on ``sigma^lam_sk``, then forward cross-entropy ``H(y, sigma)``. Here the labels
are re-solved on every mini-batch (the "all variables per batch" variant of Zhang & Boykov 2023a Table 3),
in the same harness as the other methods, with the same margin term ``gamma ||v||^2``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ops import softmax_double
from ...solvers import sinkhorn
from ..registry import HeadLoss, HeadMethod, register


class SinkhornSelfLabelLoss(HeadLoss):
    def __init__(self, lam_sk: float, gamma: float, prior=None, max_iter: int = 100):
        super().__init__(gamma, prior)
        self.lam_sk, self.max_iter = float(lam_sk), int(max_iter)

    def forward(self, logits, head=None, reduction: str = "mean"):
        sigma = softmax_double(logits)
        # a per-batch solve capped at max_iter sweeps, as in SeLa: no warning when it is reached
        # (each problem of (B, N, K) logits its own transport problem)
        labels = sinkhorn(sigma, self.prior, lam_sk=self.lam_sk, tol=1e-6, max_iter=self.max_iter, validate=False,
                          warn=False).labels
        k = logits.shape[-1]
        per_row = F.cross_entropy(logits.reshape(-1, k), labels.reshape(-1), reduction="none")
        return self.with_margin(self.reduce(per_row.view(labels.shape), reduction), head)


@register("sela")
class SeLa(HeadMethod):
    """Sinkhorn-Knopp hard labels + forward CE."""

    defaults = {"lam_sk": 25.0, "max_iter": 100}

    def build(self, estimator, params):
        return SinkhornSelfLabelLoss(params["lam_sk"], estimator.gamma, estimator.prior, params["max_iter"])
