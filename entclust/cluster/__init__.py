"""Clustering of feature vectors: the scikit-learn estimator :class:`EntropyClustering`, the
registry of methods (ours and the papers' baselines, one harness), :func:`make_estimator` by
name, and the comparison harness (:mod:`.compare`)."""
from .estimator import EntropyClustering, make_estimator
from .registry import REGISTRY, EstimatorMethod, HeadLoss, HeadMethod, available, get, register

__all__ = ["EntropyClustering", "EstimatorMethod", "HeadLoss", "HeadMethod", "REGISTRY", "available", "get",
           "make_estimator", "register"]
