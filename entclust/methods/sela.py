"""SeLa (Asano et al. 2020): hard pseudo-labels with exactly balanced clusters from
Sinkhorn-Knopp on ``sigma^lam_sk``, then forward cross-entropy ``H(y, sigma)``. Here the labels
are re-solved on every mini-batch (the "all variables per batch" variant of seed 000 Table 3),
in the same harness as the other methods, with the same margin term ``gamma ||v||^2``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import reference
from ..losses import margin_penalty
from . import HeadMethod, register


class SinkhornSelfLabelLoss(nn.Module):
    def __init__(self, lam_sk: float, gamma: float, prior=None, max_iter: int = 100):
        super().__init__()
        self.lam_sk, self.gamma, self.max_iter = float(lam_sk), float(gamma), int(max_iter)
        self.register_buffer("prior", None if prior is None else torch.as_tensor(prior, dtype=torch.float64))

    def forward(self, logits, head=None):
        sigma = torch.softmax(logits.detach().double(), -1)
        _, labels, _ = reference.sinkhorn_knopp(sigma, self.prior, lam_sk=self.lam_sk, tol=1e-6,
                                                max_iter=self.max_iter)
        loss = F.cross_entropy(logits, labels)
        if self.gamma > 0 and head is not None:
            loss = loss + self.gamma * margin_penalty(head)
        return loss


@register("sela")
class SeLa(HeadMethod):
    """Sinkhorn-Knopp hard labels + forward CE."""

    defaults = {"lam_sk": 25.0, "max_iter": 100}

    def build(self, estimator, params):
        return SinkhornSelfLabelLoss(params["lam_sk"], estimator.gamma, estimator.prior, params["max_iter"])
