"""Rényi decisiveness (Zhang & Boykov 2024 Sec. 4.1, eq. 48, Table 2): plain gradient descent on
``mean_i R_alpha(sigma_i) + w KL(sigma_bar || u) + gamma ||v||^2``, no pseudo-labels.

With the uniform prior and ``w = 1`` this is eq. 48, ``gamma ||v||^2 + mean R_alpha(sigma) -
H(sigma_bar)``, up to the constant ``ln K``; ``alpha = 1`` is MI-GD with weight 1. The Rényi
entropy is computed from log-probabilities: ``logsumexp(alpha ln sigma) / (1 - alpha)``, and
``-max_k ln sigma_k`` for ``alpha = inf``."""
from __future__ import annotations

import math

import torch

from ...losses import renyi_entropy, weak_fairness
from ..registry import HeadLoss, HeadMethod, register


class RenyiMutualInformationLoss(HeadLoss):
    """Rényi decisiveness of order ``alpha`` plus weak fairness ``w KL(sigma_bar || u)`` plus margin."""

    def __init__(self, alpha: float, weight: float, gamma: float, prior=None):
        super().__init__(gamma, prior)
        alpha = float(alpha)
        if not alpha > 0:  # R_0 = ln |supp sigma| is constant for softmax outputs: no gradient
            raise ValueError(f"alpha must be > 0 (math.inf for -ln max sigma), got {alpha!r}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        self.alpha, self.weight = alpha, float(weight)

    def forward(self, logits, head=None, reduction: str = "mean"):
        log_sigma = torch.log_softmax(logits, -1)
        decisiveness = self.reduce(renyi_entropy(log_sigma, self.alpha, log_input=True), reduction)
        # ln sigma_bar of each problem ("none") or of all rows, as a log-sum-exp: a dying class keeps a gradient
        fair = weak_fairness(log_sigma, self.prior, validate=False, batched=reduction == "none", log_input=True)
        return self.with_margin(decisiveness + self.weight * fair, head)


@register("renyi")
class Renyi(HeadMethod):
    """Rényi-alpha decisiveness with Shannon fairness by gradient descent (Zhang & Boykov 2024 eq. 48)."""

    defaults = {"alpha": 2.0, "weight": 1.0}

    def build(self, estimator, params):
        return RenyiMutualInformationLoss(params["alpha"], params["weight"], estimator.gamma, estimator.prior)
