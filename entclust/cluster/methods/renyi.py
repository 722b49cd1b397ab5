"""Rényi decisiveness (seed 004 Sec. 4.1, eq. 48, Table 2): plain gradient descent on
``mean_i R_alpha(sigma_i) + w KL(sigma_bar || u) + gamma ||v||^2``, no pseudo-labels.

With the uniform prior and ``w = 1`` this is eq. 48, ``gamma ||v||^2 + mean R_alpha(sigma) -
H(sigma_bar)``, up to the constant ``ln K``; ``alpha = 1`` is MI-GD with weight 1. The Rényi
entropy is computed from log-probabilities: ``logsumexp(alpha ln sigma) / (1 - alpha)``, and
``-max_k ln sigma_k`` for ``alpha = inf``."""
from __future__ import annotations

import math

import torch

from ...ops.checks import prior_vector
from ..registry import HeadLoss, HeadMethod, register


def renyi_decisiveness(log_sigma: torch.Tensor, alpha: float) -> torch.Tensor:
    """``R_alpha(sigma_i)`` of each row of ``(..., N, K)`` log-probabilities, ``(..., N)``."""
    if alpha == 1.0:
        return -(log_sigma.exp() * log_sigma).sum(-1)
    if alpha == math.inf:
        return -log_sigma.amax(-1)
    return torch.logsumexp(alpha * log_sigma, -1) / (1.0 - alpha)


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
        decisiveness = self.reduce(renyi_decisiveness(log_sigma, self.alpha), reduction)
        # ln sigma_bar of each problem ("none") or of all rows, as a log-sum-exp: a dying class keeps a gradient
        rows = log_sigma if reduction == "none" else log_sigma.reshape(-1, log_sigma.shape[-1])
        log_bar = torch.logsumexp(rows, -2) - math.log(rows.shape[-2])
        u = prior_vector(self.prior, log_sigma.shape[-1], log_bar)
        fair = (log_bar.exp() * (log_bar - u.log())).sum(-1)
        return self.with_margin(decisiveness + self.weight * fair, head)


@register("renyi")
class Renyi(HeadMethod):
    """Rényi-alpha decisiveness with Shannon fairness by gradient descent (seed 004 eq. 48)."""

    defaults = {"alpha": 2.0, "weight": 1.0}

    def build(self, estimator, params):
        return RenyiMutualInformationLoss(params["alpha"], params["weight"], estimator.gamma, estimator.prior)
