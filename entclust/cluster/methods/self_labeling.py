"""Ours: self-labeling with reverse cross-entropy (seeds 000/004) and collision cross-entropy
(seed 003), pseudo-labels re-solved on every mini-batch by the fused solvers."""
from __future__ import annotations

from ...nn import SelfLabeling
from ..registry import HeadMethod, register


class _Ours(HeadMethod):
    method = ""
    defaults = {"solver": "em", "max_iter": None, "tol": None}

    def build(self, estimator, params):
        return SelfLabeling(self.method, lam=estimator.lam, prior=estimator.prior, solver=params["solver"],
                            gamma=estimator.gamma, max_iter=params["max_iter"], tol=params["tol"],
                            on_unconverged="ignore", n_points=getattr(estimator, "n_points", None),
                            group=getattr(estimator, "group", None))  # counted per epoch in the estimator's history


@register("rce")
class ReverseCE(_Ours):
    """``mean_i H(sigma_i, y_i) + lam KL(u || y_bar) + gamma ||v||^2``, y by EM (seed 004 eq. 13)."""

    method = "rce"


@register("cce")
class CollisionCE(_Ours):
    """``mean_i -ln(sigma_i . y_i) + lam KL(u || y_bar) + gamma ||v||^2``, y by EM with the Newton
    M-step (seed 003 eq. 11)."""

    method = "cce"
