"""The registry of clustering methods: every method, ours or a baseline, by name, so that one
harness (same data pipeline, same evaluation) runs them all. A method is a :class:`HeadMethod`
(a training objective for the linear softmax head that :class:`~entclust.EntropyClustering`
trains) or an :class:`EstimatorMethod` (a complete scikit-learn style estimator, e.g. K-means).
The built-in methods live in :mod:`entclust.cluster.methods`, one file each."""
from __future__ import annotations

import torch
from torch import nn

from ..losses import margin_penalty

REGISTRY: dict[str, type] = {}
# The methods `entclust compare` and `make demo` run by default: K-means and a Gaussian mixture
# (what users try first), the papers' baselines, ours, and selective pseudo-label clustering (Mahon & Lukasiewicz 2021).
DEFAULT_METHODS = ("kmeans", "gmm", "mi-gd", "sela", "mi-adm", "rce", "cce", "spc")


class HeadMethod:
    """A training objective for the linear head: :meth:`build` returns an ``nn.Module`` called
    as ``loss = module(logits, head)`` on every mini-batch. ``defaults`` lists the method's own
    parameters (``EntropyClustering(method_params=...)`` overrides them). A module that also
    takes ``module(logits, weight, reduction="none")`` for ``(B, N, K)`` logits of B heads with
    weights ``(B, K, D)``, returning their ``(B,)`` losses, lets the estimator train its
    restarts side by side (set ``batched = True`` on the module)."""

    name: str = ""
    defaults: dict = {}

    def build(self, estimator, params: dict) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError


class HeadLoss(nn.Module):
    """Base of the baselines' per-batch losses: the prior as a float64 buffer (None: uniform)
    and the margin term ``gamma ||v||^2`` shared by every head method."""

    def __init__(self, gamma: float, prior=None):
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("prior", None if prior is None else torch.as_tensor(prior, dtype=torch.float64))

    batched = True  # forward takes (B, N, K) logits with reduction="none" (see HeadMethod)

    def with_margin(self, loss, head):
        """``loss + gamma ||v||^2``; for per-problem losses ``(B,)``, ``head`` is the ``(B, K, D)``
        weight of the B heads and each problem gets its own head's term."""
        if self.gamma == 0 or head is None:
            return loss
        if loss.dim() == 1:
            return loss + self.gamma * head.pow(2).sum((1, 2))
        return loss + self.gamma * margin_penalty(head)

    @staticmethod
    def reduce(per_row: torch.Tensor, reduction: str) -> torch.Tensor:
        """The mean over rows of a ``(..., N)`` per-row loss: of each problem (``"none"``, for
        ``(B, N)``) or of all rows (``"mean"``)."""
        if reduction == "none":
            if per_row.dim() != 2:
                raise ValueError(f"reduction='none' needs (B, N, K) logits (B problems), got {per_row.dim() + 1} dims")
            return per_row.mean(-1)
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        return per_row.mean()


class EstimatorMethod:
    """A method that is an estimator of its own (``fit``/``predict``/``labels_``)."""

    name: str = ""
    defaults: dict = {}

    def make(self, n_clusters: int, *, random_state=None, standardize: str = "auto", **params):
        raise NotImplementedError  # pragma: no cover - interface


def register(name: str):
    """Class decorator: ``@register("my-method")`` on a HeadMethod or EstimatorMethod subclass."""

    def wrap(cls):
        if name in REGISTRY:
            raise ValueError(f"a clustering method named {name!r} is already registered")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    """Names of the registered methods."""
    return sorted(REGISTRY)


def get(name: str):
    """The registered method (an instance) called ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown clustering method {name!r}; available: {', '.join(available())}")
    return REGISTRY[name]()
