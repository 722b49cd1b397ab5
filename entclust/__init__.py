"""entclust: fused losses and pseudo-label solvers for discriminative entropy clustering.

Layers, from the kernels up (each imports only those below it): :mod:`entclust.ops` (the
compiled ``torch.ops.entclust`` library, checks, build info), :mod:`entclust.losses`,
:mod:`entclust.solvers`, :mod:`entclust.nn`, :mod:`entclust.cluster` (estimators, methods,
comparison), :mod:`entclust.metrics` and :mod:`entclust.data`, :mod:`entclust.cli`; the ground
truth for tests and benchmarks is :mod:`entclust.testing`. Importing entclust loads the kernels
only: scikit-learn, SciPy and matplotlib are imported when a name that needs them is first used.
"""
import importlib
import warnings

from ._warn import DivergenceWarning, EmptyClusterWarning
from .losses import (
    collision_cross_entropy,
    linear_self_labeling,
    margin_penalty,
    mi_loss,
    prediction_fairness,
    renyi_entropy,
    reverse_cross_entropy,
    shannon_entropy,
    strong_fairness,
    weak_fairness,
)
from .nn import (
    CollisionCrossEntropyLoss,
    ColumnMemory,
    LinearSelfLabeling,
    ReverseCrossEntropyLoss,
    SelfLabeling,
    SelfLabelingLoss,
)
from .ops import available_cpu_capabilities, build_info, cpu_capability, set_cpu_capability, use_cpu_capability
from .solvers import (
    SolverResult,
    dual_newton_rce,
    duality_gap,
    em_cce,
    em_rce,
    fw_gap,
    newton_cce,
    newton_rce,
    objective,
    pgd_cce,
    project_simplex,
    sinkhorn,
    sinkhorn_knopp,
)

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself), imported on first use
_LAZY = {
    "EntropyClustering": ("entclust.cluster", "EntropyClustering"),
    "make_estimator": ("entclust.cluster", "make_estimator"),
    "clustering_accuracy": ("entclust.metrics", "clustering_accuracy"),
    "normalized_mutual_info": ("entclust.metrics", "normalized_mutual_info"),
    "adjusted_rand_index": ("entclust.metrics", "adjusted_rand_index"),
    "cluster": ("entclust.cluster", None),
    "metrics": ("entclust.metrics", None),
    "data": ("entclust.data", None),
    "images": ("entclust.images", None),
    "deep": ("entclust.deep", None),
    "DeepEntropyClustering": ("entclust.deep", "DeepEntropyClustering"),
    "testing": ("entclust.testing", None),
    "cli": ("entclust.cli", None),
}


# old names that still work, with a DeprecationWarning, until the next release: name -> (module, new name)
_DEPRECATED = {"methods": ("entclust.cluster", "entclust.cluster")}


def __getattr__(name: str):
    if name in _DEPRECATED:
        module, new = _DEPRECATED[name]
        warnings.warn(f"entclust.{name} is deprecated and goes in the next release; use {new}", DeprecationWarning,
                      stacklevel=2)
        return importlib.import_module(module)
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = importlib.import_module(module)
        value = value if attribute is None else getattr(value, attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'entclust' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "build_info",
    "cpu_capability",
    "available_cpu_capabilities",
    "set_cpu_capability",
    "use_cpu_capability",
    "reverse_cross_entropy",
    "collision_cross_entropy",
    "linear_self_labeling",
    "strong_fairness",
    "weak_fairness",
    "prediction_fairness",
    "mi_loss",
    "renyi_entropy",
    "shannon_entropy",
    "margin_penalty",
    "ReverseCrossEntropyLoss",
    "CollisionCrossEntropyLoss",
    "SelfLabelingLoss",
    "SelfLabeling",
    "ColumnMemory",
    "LinearSelfLabeling",
    "EntropyClustering",
    "DeepEntropyClustering",
    "make_estimator",
    "clustering_accuracy",
    "normalized_mutual_info",
    "adjusted_rand_index",
    "em_rce",
    "em_cce",
    "dual_newton_rce",
    "newton_rce",
    "newton_cce",
    "pgd_cce",
    "project_simplex",
    "sinkhorn",
    "sinkhorn_knopp",
    "objective",
    "fw_gap",
    "duality_gap",
    "SolverResult",
    "DivergenceWarning",
    "EmptyClusterWarning",
]
