"""MI-ADM (Jabi et al. 2021, TPAMI): ``mean_i H(y_i, sigma_i) + w KL(y_bar || u) + gamma ||v||^2``,
alternating an approximate y-step with a forward cross-entropy step on the network.

The y-step (sigma fixed) minimises ``F(y) = (1/N) sum_i H(y_i, sigma_i) + w KL(y_bar || u)``:
linear in each ``y_i`` plus a convex coupling, so its minimisers sit on faces of the simplex
and are degenerate. The approximate solver used here (our derivation, which reproduces the
closed form of Jabi et al. for ``w = 1`` and uniform ``u``, ``y_ik ∝ sigma_ik / sqrt(sum_j sigma_jk)``):

1. Replace ``H(y_i, sigma_i)`` by ``KL(y_i || sigma_i) = H(y_i, sigma_i) - H(y_i)`` (an entropic
   proximal term that makes the problem strictly convex). Stationarity, with a multiplier per
   row: ``ln(y_ik / sigma_ik) + w ln(y_bar_k / u_k) = const_i``, i.e.
   ``y_ik ∝ sigma_ik (u_k / y_bar_k)^w``.
2. Treat the row normalisers as equal. Averaging over i gives
   ``y_bar_k ∝ sigma_bar_k (u_k / y_bar_k)^w``, so ``y_bar_k ∝ (sigma_bar_k u_k^w)^(1/(1+w))``.
3. Put that ``y_bar`` into step 1 and normalise each row.

``refine`` > 0 then runs that many fixed-point sweeps ``y_ik ∝ sigma_ik (u_k / y_bar_k(y))^w`` of
step 1 without the approximation of step 2. Labels are re-solved on every mini-batch (the
variant marked * in Zhang & Boykov 2023a Table 3, better than once per epoch there).
"""
from __future__ import annotations

import torch

from ...ops.checks import prior_vector
from ..registry import HeadLoss, HeadMethod, register


def adm_pseudo_labels(sigma: torch.Tensor, prior=None, weight: float = 1.0, refine: int = 0,
                      hard: bool = False) -> torch.Tensor:
    """The approximate MI-ADM y-step above for ``sigma`` ``(N, K)`` (or ``(B, N, K)``, B problems);
    rows of the result sum to 1. ``hard=True`` returns the one-hot argmax of each row instead
    (step 4 in the module text)."""
    k = sigma.shape[-1]
    u = prior_vector(prior, k, sigma)
    tiny = torch.finfo(sigma.dtype).tiny
    mean = lambda t: t.mean(-2, keepdim=True).clamp_min(tiny)  # noqa: E731  (each problem's column means)
    log_ybar = (torch.log(mean(sigma)) + weight * torch.log(u.clamp_min(tiny))) / (1 + weight)
    y = torch.softmax(torch.log(sigma.clamp_min(tiny)) + weight * (torch.log(u.clamp_min(tiny)) - log_ybar), -1)
    for _ in range(refine):
        y = torch.softmax(torch.log(sigma.clamp_min(tiny)) + weight * torch.log(u.clamp_min(tiny) / mean(y)), -1)
    if hard:
        y = torch.nn.functional.one_hot(y.argmax(-1), k).to(sigma.dtype)
    return y


class ADMLoss(HeadLoss):
    # its loss is the forward CE to the current labels, not an objective the alternation descends:
    # it rises as sigma flattens (the baseline's collapse towards uniform predictions), so a rise
    # is not a diverging fit (EntropyClustering's check of the objective leaves it out)
    descends = False

    def __init__(self, weight: float, gamma: float, prior=None, refine: int = 0, hard: bool = False):
        super().__init__(gamma, prior)
        self.weight, self.refine, self.hard = float(weight), int(refine), bool(hard)

    def forward(self, logits, head=None, reduction: str = "mean"):
        y = adm_pseudo_labels(torch.softmax(logits.detach().double(), -1), self.prior, self.weight, self.refine, self.hard)
        per_row = -(y.to(logits.dtype) * torch.log_softmax(logits, -1)).sum(-1)
        return self.with_margin(self.reduce(per_row, reduction), head)


@register("mi-adm")
class MIADM(HeadMethod):
    """Forward CE to approximate soft pseudo-labels with weak fairness."""

    defaults = {"weight": 1.0, "refine": 0, "hard": False}

    def build(self, estimator, params):
        return ADMLoss(params["weight"], estimator.gamma, estimator.prior, params["refine"], params["hard"])
