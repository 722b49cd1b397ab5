"""Clustering methods by name, in one harness (same data pipeline, same evaluation).

Every module in this package registers its methods with :func:`register`, and every module
here is imported when the package is, so adding a method is a one-file change: a new
``entclust/methods/<name>.py`` with a :class:`HeadMethod` (a training objective for the linear
softmax head that :class:`entclust.EntropyClustering` trains) or an :class:`EstimatorMethod`
(a complete scikit-learn style estimator, e.g. K-means).
"""
from __future__ import annotations

import importlib
import pkgutil

import torch
from torch import nn

from ..losses import margin_penalty

REGISTRY: dict[str, type] = {}


class HeadMethod:
    """A training objective for the linear head: :meth:`build` returns an ``nn.Module`` called
    as ``loss = module(logits, head)`` on every mini-batch. ``defaults`` lists the method's own
    parameters (``EntropyClustering(method_params=...)`` overrides them)."""

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

    def with_margin(self, loss, head):
        return loss + self.gamma * margin_penalty(head) if self.gamma > 0 and head is not None else loss


class EstimatorMethod:
    """A method that is an estimator of its own (``fit``/``predict``/``labels_``)."""

    name: str = ""
    defaults: dict = {}

    def make(self, n_clusters: int, *, random_state=None, standardize: str = "global", **params):
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


def make_estimator(name: str, n_clusters: int, *, random_state=None, **params):
    """An unfitted estimator for method ``name``: :class:`entclust.EntropyClustering` for head
    methods (``params`` are its arguments), the method's own estimator otherwise."""
    method = get(name)
    if isinstance(method, EstimatorMethod):
        return method.make(n_clusters, random_state=random_state, **params)
    from ..estimator import EntropyClustering

    return EntropyClustering(n_clusters, method=name, random_state=random_state, **params)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
