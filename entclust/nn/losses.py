"""Loss modules that behave like ``torch.nn.CrossEntropyLoss``."""
from __future__ import annotations

import torch
from torch import nn

from ..losses import (
    check_label_smoothing,
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
    ``reduction`` ``"mean" | "sum" | "none"``, ``dim`` of the classes, ``validate``, ``sum_tol``,
    ``label_smoothing`` for class-index targets (needed > 0 for them, as in the function).
    Call: ``loss(logits, y)``, ``y`` rows on the simplex or class indices.
    """

    def __init__(self, weight: torch.Tensor | None = None, reduction: str = "mean", *, dim: int = -1,
                 validate: bool = True, sum_tol: float | None = None, label_smoothing: float = 0.0):
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
        self.label_smoothing = check_label_smoothing("ReverseCrossEntropyLoss", label_smoothing)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return reverse_cross_entropy(logits, y, reduction=self.reduction, dim=self.dim, weight=self.weight,
                                     validate=self.validate, sum_tol=self.sum_tol, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, dim={self.dim}"


class CollisionCrossEntropyLoss(nn.Module):
    """``-ln(softmax(logits) . y)``; see :func:`entclust.collision_cross_entropy`.

    No class ``weight``: the classes meet inside one logarithm, so a per-class factor would not
    rescale a class's share of the loss the way it does for (reverse) cross-entropy.
    """

    def __init__(self, reduction: str = "mean", *, dim: int = -1, validate: bool = True,
                 sum_tol: float | None = None, label_smoothing: float = 0.0):
        super().__init__()
        check_reduction(reduction)
        self.reduction, self.dim, self.validate, self.sum_tol = reduction, dim, validate, sum_tol
        self.label_smoothing = check_label_smoothing("CollisionCrossEntropyLoss", label_smoothing)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y``: rows on the simplex, or class indices (then with no smoothing, forward CE)."""
        return collision_cross_entropy(logits, y, reduction=self.reduction, dim=self.dim, validate=self.validate,
                                       sum_tol=self.sum_tol, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, dim={self.dim}"


class SelfLabelingLoss(nn.Module):
    """The self-labeling objective for given pseudo-labels ``y`` (docs/maths.md, "Training objectives"):

    ``mean_i CE(sigma_i, y_i) + lam * KL(u || y_bar) + prediction_fairness * KL(u || sigma_bar)
    + gamma * ||v||^2``

    with CE the reverse (``method="rce"``, Zhang & Boykov 2023a/2024) or collision (``method="cce"``,
    Zhang & Boykov 2023b) cross-entropy, ``u`` the prior (uniform when None), ``sigma_bar`` the mean
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
        # checked and normalised in float64 now (a list, a float32 array: docs/maths.md's u)
        u = None if prior is None else prior_vector(prior, None, torch.zeros((), dtype=torch.float64))
        self.register_buffer("prior", u)

    def forward(self, logits: torch.Tensor, y: torch.Tensor, head=None, *, fairness_y=None,
                reduction: str = "mean") -> torch.Tensor:
        """``fairness_y``: the pseudo-labels at full precision for the fairness term (which does
        not depend on the network), when ``y`` was rounded to the logits' dtype.

        ``(B, N, K)`` logits are B independent problems, each with its own mean prediction and
        mean label. ``reduction="mean"`` (default) returns the mean of their losses;
        ``"none"`` returns the ``(B,)`` losses, then ``head`` (when ``gamma > 0``) is the
        ``(B, K, D)`` weight of B heads, each problem's margin term its own head's (training B
        heads at once: ``loss.sum()`` gives every head the gradient of its own objective)."""
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        per_problem = reduction == "none"
        if per_problem and logits.dim() != 3:
            raise ValueError(f"reduction='none' needs (B, N, K) logits (B problems), got {tuple(logits.shape)}")
        ce = reverse_cross_entropy if self.method == "rce" else collision_cross_entropy
        if per_problem:
            loss = ce(logits, y, reduction="none", validate=self.validate).mean(-1)
        else:
            loss = ce(logits, y, validate=self.validate)
        if self.lam > 0:
            target = y if fairness_y is None else fairness_y  # each problem's own y_bar
            fair = strong_fairness(target, self.prior, validate=False, batched=target.dim() >= 3)
            loss = loss + self.lam * (fair if per_problem else fair.mean()).to(loss.dtype)
        if self.prediction_fairness > 0:
            fair = prediction_fairness(logits, self.prior, batched=logits.dim() >= 3)
            loss = loss + self.prediction_fairness * (fair if per_problem else fair.mean()).to(loss.dtype)
        if self.gamma > 0:
            if head is None:
                raise ValueError("gamma > 0 needs the linear head: call loss(logits, y, head=model.fc)")
            if per_problem:
                weight = head.weight if isinstance(head, nn.Linear) else head
                if not (isinstance(weight, torch.Tensor) and weight.dim() == 3 and weight.shape[0] == logits.shape[0]):
                    raise ValueError(f"reduction='none' with gamma > 0 needs head = the (B, K, D) weight of the B "
                                     f"problems' heads (B={logits.shape[0]}), got "
                                     f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(head).__name__}")
                loss = loss + self.gamma * weight.pow(2).sum((1, 2)).to(loss.dtype)
            else:
                loss = loss + self.gamma * margin_penalty(head)
        return loss

    def extra_repr(self) -> str:
        return (f"method={self.method!r}, lam={self.lam}, gamma={self.gamma}, "
                f"prediction_fairness={self.prediction_fairness}")
