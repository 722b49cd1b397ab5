"""MI-GD (Bridle et al. 1991; Krause et al. 2010, RIM; IMSAT-style): plain gradient descent on
``mean_i H(sigma_i) + w KL(sigma_bar || u) + gamma ||v||^2`` (w = 1.3 in Zhang & Boykov 2023a E.3)."""
from __future__ import annotations

import torch

from ...losses import weak_fairness
from ..registry import HeadLoss, HeadMethod, register


class MutualInformationLoss(HeadLoss):
    """Decisiveness ``mean_i H(sigma_i)`` plus weak fairness ``w KL(sigma_bar || u)`` plus margin."""

    def __init__(self, weight: float, gamma: float, prior=None):
        super().__init__(gamma, prior)
        self.weight = float(weight)

    def forward(self, logits, head=None, reduction: str = "mean"):
        log_sigma = torch.log_softmax(logits, -1)
        sigma = log_sigma.exp()
        decisiveness = self.reduce(-(sigma * log_sigma).sum(-1), reduction)
        # "none": each problem's own mean prediction
        fair = weak_fairness(sigma, self.prior, validate=False, batched=reduction == "none")
        return self.with_margin(decisiveness + self.weight * fair, head)


@register("mi-gd")
class MIGD(HeadMethod):
    """MI loss by gradient descent, no pseudo-labels."""

    defaults = {"weight": 1.3}

    def build(self, estimator, params):
        return MutualInformationLoss(params["weight"], estimator.gamma, estimator.prior)
