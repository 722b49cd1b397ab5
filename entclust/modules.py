"""``nn.Module`` wrappers that behave like ``torch.nn.CrossEntropyLoss``."""
from __future__ import annotations

import torch
from torch import nn

from .losses import collision_cross_entropy, margin_penalty, reverse_cross_entropy, strong_fairness
from ._validation import check_reduction, check_tensor


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


class SelfLabelingLoss(nn.Module):
    """The self-labeling objective for given pseudo-labels ``y`` (MATH.md, "Training objectives"):

    ``mean_i CE(sigma_i, y_i) + lam * KL(u || y_bar) + gamma * ||v||^2``

    with CE the reverse (``method="rce"``, seeds 000/004) or collision (``method="cce"``,
    seed 003) cross-entropy, ``u`` the prior (uniform when None), ``v`` the weight of the linear
    head (bias excluded). Call: ``loss(logits, y, head=None)``; ``head`` is required when
    ``gamma > 0``. The fairness term depends on ``y`` only: constant in a network step with
    fixed ``y``, it is part of the value reported and of the gradient in ``y``.
    """

    def __init__(self, method: str = "rce", lam: float = 100.0, gamma: float = 0.0, prior=None, *,
                 validate: bool = True):
        super().__init__()
        if method not in ("rce", "cce"):
            raise ValueError(f"method must be 'rce' or 'cce', got {method!r}")
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.method, self.lam, self.gamma, self.validate = method, float(lam), float(gamma), validate
        self.register_buffer("prior", None if prior is None else torch.as_tensor(prior))

    def forward(self, logits: torch.Tensor, y: torch.Tensor, head=None) -> torch.Tensor:
        ce = reverse_cross_entropy if self.method == "rce" else collision_cross_entropy
        loss = ce(logits, y, validate=self.validate)
        if self.lam > 0:
            loss = loss + self.lam * strong_fairness(y, self.prior, validate=False)
        if self.gamma > 0:
            if head is None:
                raise ValueError("gamma > 0 needs the linear head: call loss(logits, y, head=model.fc)")
            loss = loss + self.gamma * margin_penalty(head)
        return loss

    def extra_repr(self) -> str:
        return f"method={self.method!r}, lam={self.lam}, gamma={self.gamma}"


# Pseudo-label solvers SelfLabeling can use, per problem (name -> function in entclust.solvers).
SOLVERS = {"rce": ("em", "newton", "dual_newton"), "cce": ("em", "pgd")}


class SelfLabeling(nn.Module):
    """Self-labeling in one line of a training loop (the papers' "batch version"): for each
    batch of logits, solve the pseudo-labels on the detached predictions with a fused solver,
    then return the :class:`SelfLabelingLoss` for those labels (MATH.md, "Training objectives").

    ``y = argmin_y (1/N) sum_i CE(sigma_i, y_i) + lam KL(u || y_bar)`` with ``sigma = softmax(logits)``
    held fixed, ``CE`` reverse (``method="rce"``) or collision (``"cce"``) cross-entropy, solved by
    ``solver`` (``"em"``; for RCE also ``"newton"`` and the exact ``"dual_newton"``; for CCE also
    ``"pgd"``) from ``y = sigma`` (warm start). The solve runs in float64 with the fused kernels on
    the logits' device (the pure-PyTorch reference solver where this build has none). The returned loss is
    ``mean_i CE(sigma_i, y_i) + lam KL(u || y_bar) + gamma ||v||^2``; its gradient reaches the
    logits (and the head when ``gamma > 0``), not y.

    Call: ``loss = criterion(logits, head=None)`` or, with ``return_labels=True``,
    ``loss, y = criterion(logits, return_labels=True)``. The last solve's
    :class:`~entclust.SolverResult` is kept in ``criterion.last_result``.

    Example::

        criterion = entclust.SelfLabeling("rce", lam=100.0, gamma=0.01)
        for x in loader:
            loss = criterion(model(x), head=model.fc)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    """

    def __init__(self, method: str = "rce", lam: float = 100.0, prior=None, solver: str = "em", *,
                 gamma: float = 0.0, max_iter: int = 100, tol: float | None = None, solver_options=None):
        super().__init__()
        if method not in SOLVERS:
            raise ValueError(f"method must be 'rce' or 'cce', got {method!r}")
        if solver not in SOLVERS[method]:
            raise ValueError(f"solver must be one of {SOLVERS[method]} for method={method!r}, got {solver!r}")
        if not (isinstance(max_iter, int) and max_iter >= 0):
            raise ValueError(f"max_iter must be an int >= 0, got {max_iter!r}")
        self.loss = SelfLabelingLoss(method, lam, gamma, prior)
        self.method, self.lam, self.gamma, self.solver = method, float(lam), float(gamma), solver
        self.max_iter, self.tol, self.solver_options = max_iter, tol, dict(solver_options or {})
        self.last_result = None

    @property
    def prior(self):
        return self.loss.prior

    def solve(self, logits: torch.Tensor):
        """The pseudo-label solve alone: a :class:`~entclust.SolverResult` for ``softmax(logits)``
        (``(N, K)`` or ``(B, N, K)``), in float64."""
        from . import reference, solvers

        check_tensor("logits", logits)
        if logits.dim() not in (2, 3):
            raise ValueError(f"logits must have shape (N, K) or (B, N, K), got {tuple(logits.shape)}")
        sigma = torch.softmax(logits.detach().double(), dim=-1)
        name = {"em": f"em_{self.method}", "newton": "newton_rce", "dual_newton": "dual_newton_rce",
                "pgd": "pgd_cce"}[self.solver]
        kwargs = dict(self.solver_options)
        if self.solver != "dual_newton":
            kwargs.setdefault("tol", self.tol)
        kwargs.setdefault("max_iter", self.max_iter)
        prior = self.prior
        if not solvers.has_kernels(sigma.device) and name in ("em_rce", "em_cce", "pgd_cce"):
            # no fused kernels for this device in this build: the pure-PyTorch solver runs there
            if kwargs.get("tol") is None:
                kwargs["tol"] = solvers.DEFAULT_TOL[torch.float64]
            return getattr(reference, name)(sigma, prior, self.lam, **kwargs)
        return getattr(solvers, name)(sigma, prior, self.lam, validate=False, **kwargs)

    def forward(self, logits: torch.Tensor, head=None, *, return_labels: bool = False):
        result = self.solve(logits)
        self.last_result = result
        y = result.y.to(logits.dtype)
        if self.method == "rce":
            # A y_ik below the dtype's range would become 0 where sigma_ik > 0 (H = +inf).
            y = y.clamp_min(torch.finfo(y.dtype).tiny)
        loss = self.loss(logits, y, head)
        return (loss, y) if return_labels else loss

    def extra_repr(self) -> str:
        return f"method={self.method!r}, lam={self.lam}, gamma={self.gamma}, solver={self.solver!r}, max_iter={self.max_iter}"
