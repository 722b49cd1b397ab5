"""Loss modules that behave like ``torch.nn.CrossEntropyLoss``."""
from __future__ import annotations

import torch
from torch import nn

from ..losses import (
    collision_cross_entropy,
    margin_penalty,
    prediction_fairness,
    reverse_cross_entropy,
    strong_fairness,
)
from ..ops.checks import check_reduction, check_tensor, prior_vector


class ReverseCrossEntropyLoss(nn.Module):
    """``H(softmax(logits), y)``; see :func:`entclust.reverse_cross_entropy`.

    Args: ``weight`` optional ``(K,)`` class weights (a buffer: moves with ``.to()``),
    ``reduction`` ``"mean" | "sum" | "none"``, ``dim`` of the classes, ``validate``, ``sum_tol``.
    Call: ``loss(logits, y)``.
    """

    def __init__(self, weight: torch.Tensor | None = None, reduction: str = "mean", *, dim: int = -1,
                 validate: bool = True, sum_tol: float | None = None):
        super().__init__()
        check_reduction(reduction)
        if weight is not None:  # checked here once, so that forward has no data-dependent branch
            check_tensor("weight", weight)
            if weight.dim() != 1:
                raise ValueError(f"weight must have shape (K,), got {tuple(weight.shape)}")
            if not bool(torch.isfinite(weight).all() & (weight >= 0).all()):
                raise ValueError("weight must be finite and non-negative")
        self.register_buffer("weight", weight)
        self.reduction, self.dim, self.validate, self.sum_tol = reduction, dim, validate, sum_tol

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return reverse_cross_entropy(logits, y, reduction=self.reduction, dim=self.dim, weight=self.weight,
                                     validate=self.validate, sum_tol=self.sum_tol)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, dim={self.dim}"


class CollisionCrossEntropyLoss(nn.Module):
    """``-ln(softmax(logits) . y)``; see :func:`entclust.collision_cross_entropy`.

    No class ``weight``: the classes meet inside one logarithm, so a per-class factor would not
    rescale a class's share of the loss the way it does for (reverse) cross-entropy.
    """

    def __init__(self, reduction: str = "mean", *, dim: int = -1, validate: bool = True,
                 sum_tol: float | None = None):
        super().__init__()
        check_reduction(reduction)
        self.reduction, self.dim, self.validate, self.sum_tol = reduction, dim, validate, sum_tol

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return collision_cross_entropy(logits, y, reduction=self.reduction, dim=self.dim,
                                       validate=self.validate, sum_tol=self.sum_tol)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, dim={self.dim}"


def _per_problem(term, rows: torch.Tensor) -> torch.Tensor:
    """A fairness term of ``(N, K)`` rows, or the mean of its values over the independent problems
    of ``(B, N, K)`` rows (each problem has its own mean prediction; the cross-entropy's mean
    over all rows is the same mean of per-problem means)."""
    if rows.dim() <= 2:
        return term(rows)
    return torch.stack([term(block) for block in rows.reshape(-1, *rows.shape[-2:])]).mean()


class SelfLabelingLoss(nn.Module):
    """The self-labeling objective for given pseudo-labels ``y`` (MATH.md, "Training objectives"):

    ``mean_i CE(sigma_i, y_i) + lam * KL(u || y_bar) + prediction_fairness * KL(u || sigma_bar)
    + gamma * ||v||^2``

    with CE the reverse (``method="rce"``, seeds 000/004) or collision (``method="cce"``,
    seed 003) cross-entropy, ``u`` the prior (uniform when None), ``sigma_bar`` the mean
    prediction of the batch, ``v`` the weight of the linear head (bias excluded). Call:
    ``loss(logits, y, head=None)``; ``head`` is required when ``gamma > 0``. The fairness term
    in ``y`` depends on ``y`` only: constant in a network step with fixed ``y``, it is part of
    the value reported and of the gradient in ``y``. The papers' objective is
    ``prediction_fairness=0``; the default 0.5 keeps classes from dying in network training
    (see :class:`SelfLabeling`).
    """

    def __init__(self, method: str = "rce", lam: float = 100.0, *, gamma: float = 0.0, prior=None,
                 prediction_fairness: float = 0.5, validate: bool = True):
        super().__init__()
        if method not in ("rce", "cce"):
            raise ValueError(f"method must be 'rce' or 'cce', got {method!r}")
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not prediction_fairness >= 0:
            raise ValueError(f"prediction_fairness must be >= 0, got {prediction_fairness}")
        self.method, self.lam, self.gamma, self.validate = method, float(lam), float(gamma), validate
        self.prediction_fairness = float(prediction_fairness)
        # checked and normalised in float64 now (a list, a float32 array: MATH.md's u)
        u = None if prior is None else prior_vector(prior, None, torch.zeros((), dtype=torch.float64))
        self.register_buffer("prior", u)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, head=None, *, fairness_y=None) -> torch.Tensor:
        """``fairness_y``: the pseudo-labels at full precision for the fairness term (which does
        not depend on the network), when ``y`` was rounded to the logits' dtype."""
        ce = reverse_cross_entropy if self.method == "rce" else collision_cross_entropy
        loss = ce(logits, y, validate=self.validate)
        if self.lam > 0:
            fair = _per_problem(lambda t: strong_fairness(t, self.prior, validate=False),
                                y if fairness_y is None else fairness_y)
            loss = loss + self.lam * fair.to(loss.dtype)
        if self.prediction_fairness > 0:
            fair = _per_problem(lambda t: prediction_fairness(t, self.prior), logits)
            loss = loss + self.prediction_fairness * fair.to(loss.dtype)
        if self.gamma > 0:
            if head is None:
                raise ValueError("gamma > 0 needs the linear head: call loss(logits, y, head=model.fc)")
            loss = loss + self.gamma * margin_penalty(head)
        return loss

    def extra_repr(self) -> str:
        return (f"method={self.method!r}, lam={self.lam}, gamma={self.gamma}, "
                f"prediction_fairness={self.prediction_fairness}")
