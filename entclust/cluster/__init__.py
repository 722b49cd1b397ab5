"""Clustering of feature vectors: the scikit-learn estimator :class:`EntropyClustering`, the
registry of methods (ours and the papers' baselines, one harness), :func:`make_estimator` by
name, and the comparison harness (:mod:`.compare`).

The registry itself is light; the built-in methods (and scikit-learn with them) are imported
when a method is first looked up, so that the command line answers a bad argument at once."""
import importlib

from . import registry
from .registry import DEFAULT_METHODS, REGISTRY, EstimatorMethod, HeadLoss, HeadMethod, register


def _load_builtin() -> None:
    importlib.import_module(f"{__name__}.methods")


def available() -> list[str]:
    """Names of the registered methods, the built-in ones included."""
    _load_builtin()
    return registry.available()


def get(name: str):
    """The registered method (an instance) called ``name``."""
    _load_builtin()
    return registry.get(name)


def __getattr__(name: str):
    if name in ("EntropyClustering", "make_estimator"):
        value = getattr(importlib.import_module(f"{__name__}.estimator"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_METHODS", "EntropyClustering", "EstimatorMethod", "HeadLoss", "HeadMethod", "REGISTRY", "available",
           "get", "make_estimator", "register"]
